"""The calibration equation (calpipe.physics.calibrate.calibrate_full)."""

import numpy as np

from calpipe.physics import flags as fl
from calpipe.physics.calibrate import calibrate_full


def _inputs(c=40, d=3, r=2, a=2, s=4, rng=None):
    rng = rng or np.random.default_rng(0)
    counts = rng.uniform(1e6, 2e6, (c, d, r, a, s))
    on = np.array([1, 3])
    c_ref = rng.uniform(1e6, 2e6, (c, r, a, on.size))
    gamma = rng.uniform(1e3, 2e3, (c, r, a))
    bad = np.zeros((c, r, a), bool)
    tr = rng.uniform(0.5, 0.9, (c, 1, 1, on.size))
    return counts, on, c_ref, gamma, bad, tr


def test_equation_per_element_against_a_scalar_loop():
    counts, on, c_ref, gamma, bad, tr = _inputs()
    w_s, f_eff = 0.5, 0.95
    out = calibrate_full(counts, on, c_ref, gamma, bad, w_s, f_eff, tr, 1e6,
                         np.array([0.5, 0.25]), channel_block=7)
    c, d, r, a = 5, 2, 1, 0
    for k, s in enumerate(on):
        expected = (counts[c, d, r, a, s] - c_ref[c, r, a, k]) / (
            gamma[c, r, a] * w_s * f_eff * tr[c, 0, 0, k])
        assert np.isclose(out.spectra[c, d, r, a, k], expected, rtol=1e-6)
        t_sys = c_ref[c, r, a, k] / gamma[c, r, a] / (w_s * f_eff * tr[c, 0, 0, k])
        assert np.isclose(out.t_sys[c, r, a, k], t_sys, rtol=1e-6)
        exp = [0.5, 0.25][k]
        assert np.isclose(out.weight[c, r, a, k], 1e6 * exp / t_sys**2, rtol=1e-5)
    assert out.spectra.dtype == np.float32 and out.flags.dtype == np.uint16


def test_channel_blocking_does_not_change_results():
    counts, on, c_ref, gamma, bad, tr = _inputs()
    one = calibrate_full(counts, on, c_ref, gamma, bad, 0.5, 0.95, tr, 1e6, np.ones(2),
                         channel_block=1000)
    many = calibrate_full(counts, on, c_ref, gamma, bad, 0.5, 0.95, tr, 1e6, np.ones(2),
                          channel_block=3)
    np.testing.assert_array_equal(one.spectra, many.spectra)
    np.testing.assert_array_equal(one.flags, many.flags)


def test_flags_and_nan_contract():
    counts, on, c_ref, gamma, bad, tr = _inputs()
    bad[4, 1, 0] = True
    gamma[4, 1, 0] = np.nan
    counts[7, 2, 0, 1, 3] = np.nan  # fill value in an ON dump
    c_ref[9, 1, 1, 0] = np.nan  # reference missing (all OFF dumps were fill)
    out = calibrate_full(counts, on, c_ref, gamma, bad, 0.5, 0.95, tr, 1e6, np.ones(2))
    assert np.all(out.flags[4, :, 1, 0] & fl.BAD_CHANNEL)
    assert np.isnan(out.spectra[4, :, 1, 0]).all()
    assert out.flags[7, 2, 0, 1, 1] == fl.FILL_VALUE
    assert np.all(out.flags[9, :, 1, 1, 0] == fl.FILL_VALUE)
    blank = (out.flags & fl.BLANKING) != 0
    assert np.array_equal(np.isnan(out.spectra), blank)
    assert blank.sum() == 3 * 2 + 1 + 3  # bad channel (D x S_on) + one dump + one reference


def test_per_pixel_transmission_broadcasts():
    counts, on, c_ref, gamma, bad, _ = _inputs()
    tr = np.random.default_rng(1).uniform(0.5, 0.9, (40, 2, 2, 2))
    out = calibrate_full(counts, on, c_ref, gamma, bad, 0.5, 0.95, tr, 1e6, np.ones(2))
    expected = (counts[3, 0, 1, 1, on[1]] - c_ref[3, 1, 1, 1]) / (
        gamma[3, 1, 1] * 0.5 * 0.95 * tr[3, 1, 1, 1])
    assert np.isclose(out.spectra[3, 0, 1, 1, 1], expected, rtol=1e-6)
