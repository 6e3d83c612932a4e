"""HOT/COLD loads: gamma, T_rec, bad channels (calpipe.physics.loads)."""

import numpy as np
import pytest

from calpipe.errors import BadLoadError, MissingLoadError
from calpipe.physics.loads import BadChannelRule, resolve_loads
from calpipe.physics.radiometry import EXACT, sideband_weighted

C, D, R, A = 128, 3, 2, 1
NU_S = np.linspace(229.5e9, 230.5e9, C)
NU_I = np.linspace(218.5e9, 217.5e9, C)


def _loads(gamma, t_rec_ssb, w_s=0.5, t_hot=293.0, t_cold=80.0):
    """counts [C, D, R, A, 2] (HOT, COLD) from the forward model."""
    th = sideband_weighted(NU_S, NU_I, t_hot, w_s)[:, None, None]
    tc = sideband_weighted(NU_S, NU_I, t_cold, w_s)[:, None, None]
    trx = w_s * t_rec_ssb
    hot = gamma * (trx + th)
    cold = gamma * (trx + tc)
    counts = np.stack([hot, cold], axis=-1)[:, None].repeat(D, axis=1)
    return counts, np.array(["HOT", "COLD"]), np.array([t_hot, t_hot]), np.array([t_cold] * 2)


def _resolve(counts, modes, thot, tcold, w_s=0.5, **kw):
    gi = (1 - w_s) / w_s * 0.5
    return resolve_loads(scan=7, cal_scan=5, counts=counts, sobsmode=modes, thot=thot,
                         tcold=tcold, nu_sig=NU_S, nu_img=NU_I, gs_xs=0.5, gi_xi=gi,
                         f_eff=0.95, constants=EXACT, **kw)


@pytest.mark.parametrize("w_s", [0.5, 0.95])
def test_gamma_and_trec_recovered_exactly(w_s):
    gamma = np.full((C, R, A), 3e5) * (1 + 0.1 * np.sin(np.arange(C)))[:, None, None]
    t_rec = np.full((C, R, A), 90.0) + np.arange(R)[None, :, None]
    load = _resolve(*_loads(gamma, t_rec, w_s), w_s=w_s)
    np.testing.assert_allclose(load.gamma, gamma, rtol=1e-12)
    np.testing.assert_allclose(load.t_rec, t_rec, rtol=1e-10)
    np.testing.assert_allclose(load.t_rec_dsb, w_s * t_rec, rtol=1e-10)
    assert load.w_s == pytest.approx(w_s)
    assert not load.bad_channel.any()


def test_bad_channels_flagged_rest_unaffected():
    gamma = np.full((C, R, A), 3e5)
    t_rec = np.full((C, R, A), 90.0)
    counts, modes, th, tc = _loads(gamma, t_rec)
    counts[10, :, 0, 0, :] = 1000.0  # dead: HOT == COLD
    counts[20, :, 1, 0, 1] = counts[20, :, 1, 0, 0] + 5  # HOT < COLD
    counts[30, :, 0, 0, 0] = counts[30, :, 0, 0, 1] + 1e-3 * (counts[31, 0, 0, 0, 0]
                                                             - counts[31, 0, 0, 0, 1])  # weak
    counts[40, :, 1, 0, :] = np.nan  # all fill
    load = _resolve(counts, modes, th, tc)
    expected = np.zeros((C, R, A), bool)
    expected[10, 0, 0] = expected[20, 1, 0] = expected[30, 0, 0] = expected[40, 1, 0] = True
    np.testing.assert_array_equal(load.bad_channel, expected)
    assert np.isnan(load.gamma[expected]).all()
    np.testing.assert_allclose(load.t_rec[~expected], 90.0, rtol=1e-10)


def test_trec_outlier_rule():
    gamma = np.full((C, R, A), 3e5)
    t_rec = np.full((C, R, A), 90.0)
    t_rec[50, 0, 0] = 90.0 * 6  # > clip_trec (5) x median
    t_rec[51, 0, 0] = 90.0 * 4  # below the clip: kept
    load = _resolve(*_loads(gamma, t_rec), rule=BadChannelRule(clip_trec=5.0))
    assert load.bad_channel[50, 0, 0] and not load.bad_channel[51, 0, 0]
    assert load.bad_channel.sum() == 1


def test_missing_cold_is_missing_load_error_naming_scan_and_array():
    counts, _, th, tc = _loads(np.full((C, R, A), 3e5), np.full((C, R, A), 90.0))
    with pytest.raises(MissingLoadError, match=r"scan 7.*calibration of scan 5/sobsmode.*COLD"):
        _resolve(counts, np.array(["HOT", "HOT"]), th, tc)


def test_hot_not_above_cold_everywhere_fails():
    counts, modes, th, tc = _loads(np.full((C, R, A), 3e5), np.full((C, R, A), 90.0))
    swapped = counts[..., ::-1].copy()
    with pytest.raises(BadLoadError, match="no usable channel"):
        _resolve(swapped, modes, th, tc)


@pytest.mark.parametrize("t_hot", [np.nan, 0.0, -5.0])
def test_bad_load_temperature(t_hot):
    counts, modes, _, tc = _loads(np.full((C, R, A), 3e5), np.full((C, R, A), 90.0))
    with pytest.raises(BadLoadError, match="thot"):
        _resolve(counts, modes, np.array([t_hot, t_hot]), tc)


def test_col_is_a_cold_load():
    counts, _, th, tc = _loads(np.full((C, R, A), 3e5), np.full((C, R, A), 90.0))
    load = _resolve(counts, np.array(["HOT", "COL"]), th, tc)
    np.testing.assert_allclose(load.t_rec, 90.0, rtol=1e-10)
