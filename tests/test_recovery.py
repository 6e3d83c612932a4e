"""End-to-end recovery of the simulated truth through the stage functions (DESIGN 6).

Noise-free sessions must give back T_A*, T_rec, gamma and pwv to float32 / fit precision;
noisy ones must be unbiased within their scatter. The shipped atmosphere table is used when
present (it is what users get), else the analytic test table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import zarr

from calpipe import testing
from calpipe.config import CalibrationConfig
from calpipe.l0 import scan_group_name
from calpipe.simulate import truth_path_for
from calpipe.testing import make_session


@pytest.fixture(scope="module")
def atm_table():
    """The shipped am table when it exists (what users get), else the analytic test table."""
    from calpipe.atmosphere.tableio import default_table_path, load_default_table
    from calpipe.testing import analytic_table

    return load_default_table() if default_table_path().exists() else analytic_table()


@dataclass
class Recovered:
    scan: int
    kind: str
    load: object
    atm: object
    result: object
    truth: object


#: sessions here are simulated with one zenith table and calibrated with the same one
ZENITH = CalibrationConfig(sky_model="zenith")


def run_stages(path, table, config=ZENITH):
    """The stages of every science scan (calpipe.testing.run_stages) with its truth group."""
    truth = zarr.open_group(str(truth_path_for(path)), mode="r")
    out = []
    for s in testing.run_stages(path, config, table):
        tg = truth[scan_group_name(s.scan)]
        out.append(Recovered(s.scan, tg.attrs["kind"], s.load, s.atm, s.result, tg))
    return out, truth


CASES = [(f, sb, pwv) for f in (230.538, 345.796, 461.041, 691.473)
         for sb in ("dsb", "2sb") for pwv in (0.3, 4.0)] + [(230.538, "dsb", 1.0)]


@pytest.mark.parametrize(("freq", "sideband", "pwv"), CASES)
def test_noise_free_recovery_is_exact(tmp_path, atm_table, freq, sideband, pwv):
    path = make_session(tmp_path / "s.zarr", table=atm_table, noise=False, frequency_ghz=freq,
                        sideband=sideband, pwv_mm=pwv, n_scans=3, load_every=3)
    # the algebra is checked down to opaque skies (tr_s ~ 1e-3 at 690 GHz, 4 mm), so the
    # low-transmission guard (tests/test_uncertainty.py) is off here
    # and the zenith table the session was simulated with is used as given (sky_model: zenith;
    # the shipped sky tables of these tunings are tested in tests/test_sky_table.py)
    recovered, truth = run_stages(path, atm_table, ZENITH.replace(min_transmission=0.0))
    kinds = {r.kind for r in recovered}
    assert kinds == {"tp", "otf"}
    t_rec = truth["t_rec"][...]
    gamma = truth["gamma"][...]
    for r in recovered:
        good = ~r.load.bad_channel
        assert good.all()
        np.testing.assert_allclose(r.load.t_rec, t_rec, rtol=1e-6)
        np.testing.assert_allclose(r.load.gamma, gamma, rtol=1e-6)
        assert r.atm.pwv_mm[0, 0] == pytest.approx(pwv, rel=1e-3)
        ta_true = r.truth["ta_star"][...]
        peak = np.abs(ta_true).max()
        err = np.abs(r.result.spectra - ta_true)
        # L0 counts are integers: rounding (+-0.5 count in ON and in the reference) is a floor
        # on the T_A* error of 1 / (gamma w_s f_eff tr_s) K, which matters only where the sky
        # is nearly opaque (690 GHz at 4 mm pwv: tr_s ~ 1e-3); it is not a calibration error.
        quantum = 1.0 / (gamma[:, None, :, :, None] * r.load.w_s * r.load.f_eff
                         * r.result.tr_signal[:, None, None, None, :])
        bound = 1e-4 * peak + quantum
        worst = np.unravel_index(np.argmax(err - bound), err.shape)
        assert np.all(err <= bound), (f"scan {r.scan} ({r.kind}): error {err[worst]:.3g} K > "
                                      f"{bound[worst]:.3g} K at {worst}")
        assert r.result.mode == r.kind


def test_per_pixel_fit_matches_joint_on_a_uniform_sky(tmp_path, atm_table):
    path = make_session(tmp_path / "s.zarr", table=atm_table, noise=False, n_scans=2,
                        load_every=2, modes=("otf",))
    joint, _ = run_stages(path, atm_table)
    per_pixel, _ = run_stages(path, atm_table, ZENITH.replace(pwv_per_pixel=True))
    assert per_pixel[0].atm.pwv_mm.shape == (2, 2)
    np.testing.assert_allclose(per_pixel[0].atm.pwv_mm, joint[0].atm.pwv_mm[0, 0], rtol=1e-6)
    assert per_pixel[0].result.tr_signal.shape[1:3] == (2, 2)


def test_fixed_pwv_is_used_as_given(tmp_path, atm_table):
    path = make_session(tmp_path / "s.zarr", table=atm_table, noise=False, n_scans=2,
                        load_every=2, pwv_mm=1.0)
    rec, _ = run_stages(path, atm_table, ZENITH.replace(pwv_fixed_mm=1.0))
    assert rec[0].atm.method == "fixed"
    assert rec[0].atm.pwv_mm[0, 0] == 1.0
    assert rec[0].atm.residual_rms_k[0, 0] < 1e-3  # the right pwv fits the sky


def test_recovery_with_noise_over_20_seeds(tmp_path, atm_table):
    errors, pwv_rel = [], []
    for seed in range(20):
        path = make_session(tmp_path / f"s{seed}.zarr", table=atm_table, seed=seed,
                            n_scans=2, load_every=2, modes=("tp",), pwv_mm=1.5,
                            n_channels=256, n_dumps=8)
        (r,), _ = run_stages(path, atm_table)
        ta_true = r.truth["ta_star"][...]
        line = ta_true.mean(axis=(1, 2, 3, 4)) > 0.01 * ta_true.max()
        measured = np.nanmean(r.result.spectra[line], axis=(1, 2, 3, 4)).sum()
        truth = ta_true[line].mean(axis=(1, 2, 3, 4)).sum()
        errors.append(measured - truth)
        pwv_rel.append(r.atm.pwv_mm[0, 0] / 1.5 - 1)
    errors = np.array(errors)
    stderr = errors.std(ddof=1) / np.sqrt(errors.size)
    assert abs(errors.mean()) < 3 * stderr, (errors.mean(), stderr)
    assert np.max(np.abs(pwv_rel)) < 0.02, pwv_rel


def test_linear_off_interpolation_beats_nearest_under_gain_drift(tmp_path, atm_table):
    path = make_session(tmp_path / "s.zarr", table=atm_table, noise=False, n_scans=2,
                        load_every=2, modes=("tp",), gain_drift_per_hour=0.5, n_on_tp=3)
    lin, _ = run_stages(path, atm_table, ZENITH.replace(reference="linear"))
    near, _ = run_stages(path, atm_table, ZENITH.replace(reference="nearest"))

    def baseline_rms(r):
        """rms of the dump-averaged error in line-free channels (the drift within a subscan
        averages out; what is left is the reference's error at the subscan mid-time)."""
        ta_true = r.truth["ta_star"][...]
        free = ta_true.max(axis=(1, 2, 3, 4)) < 1e-3
        err = (r.result.spectra[free] - ta_true[free]).mean(axis=1)
        return float(np.sqrt(np.mean(err**2)))

    assert baseline_rms(lin[0]) < 0.05 * baseline_rms(near[0])


def test_dead_channels_are_nan_and_flagged_rest_exact(tmp_path, atm_table):
    path = make_session(tmp_path / "s.zarr", table=atm_table, noise=False, n_scans=2,
                        load_every=2, dead_channels=3)
    (r,), truth = run_stages(path, atm_table)
    dead = truth["dead"][...]
    np.testing.assert_array_equal(r.load.bad_channel, dead)
    assert np.isnan(r.result.spectra.transpose(0, 2, 3, 1, 4)[dead]).all()
    assert np.all(r.result.flags.transpose(0, 2, 3, 1, 4)[dead] & 1)
    ta_true = r.truth["ta_star"][...]
    good = np.broadcast_to(~dead[:, None, :, :, None], ta_true.shape)
    assert np.abs(r.result.spectra[good] - ta_true[good]).max() <= 1e-4 * ta_true.max()
