"""Per-pair atmosphere (issue 14 item 4): one pwv per OFF subscan, each ON at its reference's pwv.

The simulator lets pwv change linearly in time (``pwv_rate_mm_per_hour``), each subscan at the
pwv of its mid-time. A per-pair fit must recover every OFF's pwv and give each ON the
transmission at its own pwv; the joint fit, one pwv per scan, cannot.

What the truth of a calibrated ON is when the sky changes during the scan: the reference is
the OFF counts interpolated to the ON's mid-time, so the ON keeps the position-switching
residual (T'_sky,ON - T'_sky,REF) / (w_s f_eff tr_s,ON) (T'_sky is not linear in pwv). The
tests compute that residual from the simulator's truth (its per-subscan sky), not from the
pipeline, and compare the calibrated spectra with T_A*(truth) + residual.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

from calpipe import l1
from calpipe.atmosphere.tableio import save_table
from calpipe.config import CalibrationConfig
from calpipe.errors import AtmosphereError, ConfigError
from calpipe.l0 import scan_group_name
from calpipe.simulate import truth_path_for
from calpipe.testing import analytic_table, calibrate_both_modes, make_session, run_stages

#: the simulated session uses the analytic zenith table; calibrate with the same one
ZENITH = CalibrationConfig(sky_model="zenith", min_transmission=0.0)
PAIR = ZENITH.replace(pwv_per_pair=True)
#: long subscans (4 dumps of 30 s) and 2 mm/h: pwv rises by 0.33 mm across one TP scan
DRIFTING = {"exptime_s": 30.0, "scan_seconds": 700.0, "pwv_rate_mm_per_hour": 2.0,
            "pwv_mm": 1.0, "frequency_ghz": 691.473, "n_scans": 3, "load_every": 3,
            "noise": False}


def _truth(path):
    return zarr.open_group(str(truth_path_for(path)), mode="r")


def expected_spectra(r, truth_scan):
    """T_A*(truth) + (T'_sky,ON - T'_sky,REF) / (w_s f_eff tr_s,ON), all from the truth store
    ([C, D, R, A, S_on]); the reference weights are the scan's own (its subscan times)."""
    ta = truth_scan["ta_star"][...]
    tsky = truth_scan["t_sky_eff"][...]  # [C, S]: pixel-independent sideband weights here
    tr = truth_scan["tr_signal"][...]  # [C, S_on]
    p = r.prepared
    off = p.off_index
    t_ref = (tsky[:, off[p.ref_lo]] * (1.0 - p.ref_weight)
             + tsky[:, off[p.ref_hi]] * p.ref_weight)
    residual = (tsky[:, p.on_index] - t_ref) / (r.load.w_s * r.load.f_eff * tr)  # [C, S_on]
    return ta + residual[:, None, None, None, :]


@pytest.mark.parametrize("mode", ["tp", "otf"])
def test_per_pair_recovers_pwv_per_off_and_the_truth(tmp_path, mode):
    path = make_session(tmp_path / "s.zarr", modes=(mode,), **DRIFTING)
    truth = _truth(path)
    pair = run_stages(path, PAIR)
    joint = run_stages(path, ZENITH)
    assert len(pair) == 2
    for rp, rj in zip(pair, joint, strict=True):
        tg = truth[scan_group_name(rp.scan)]
        pwv_true = tg["pwv_mm"][...]  # [S]
        off, on = rp.prepared.off_index, rp.prepared.on_index
        assert rp.atm.per_pair and rp.atm.pwv_off_mm.shape == (1, 1, off.size)
        np.testing.assert_allclose(rp.atm.pwv_off_mm[0, 0], pwv_true[off], rtol=1e-6)
        # the ONs lie between their OFFs and pwv is linear in time: interpolation is exact
        np.testing.assert_allclose(rp.atm.pwv_on_mm[0, 0], pwv_true[on], rtol=1e-6)
        assert np.ptp(pwv_true[on]) > 0.1  # the sky really changes within the scan
        np.testing.assert_allclose(rp.result.tr_signal, tg["tr_signal"][...], rtol=1e-5)
        # tau is per ON now: [C, S_on], and tr = exp(-tau A)
        assert rp.result.tau_signal.shape == rp.result.tr_signal.shape
        airmass = 1.0 / np.sin(rp.result.elevation.astype(np.float64))
        np.testing.assert_allclose(np.exp(-rp.result.tau_signal * airmass),
                                   rp.result.tr_signal, rtol=1e-5)
        expected = expected_spectra(rp, tg)
        peak = np.abs(tg["ta_star"][...]).max()
        gamma = truth["gamma"][...]
        quantum = 1.0 / (gamma[:, None, :, :, None] * rp.load.w_s * rp.load.f_eff
                         * rp.result.tr_signal[:, None, None, None, :])
        err = np.abs(rp.result.spectra - expected)
        assert np.all(err <= 1e-4 * peak + quantum), float(np.max(err / peak))
        # the joint fit: one pwv for the scan, so every ON's transmission is off
        err_joint = np.abs(rj.result.spectra - expected)
        line = tg["ta_star"][...] > 0.5 * peak
        assert np.max(err_joint[line]) > 100 * np.max(err[line])
        assert np.max(np.abs(rj.result.tr_signal / tg["tr_signal"][...] - 1)) > 0.01


def test_per_pair_equals_joint_when_the_sky_is_steady(tmp_path):
    path = make_session(tmp_path / "s.zarr", modes=("tp",), n_scans=2, load_every=2,
                        noise=False)
    (rp,), (rj,) = run_stages(path, PAIR), run_stages(path, ZENITH)
    np.testing.assert_allclose(rp.atm.pwv_off_mm[0, 0], rj.atm.pwv_mm[0, 0], rtol=1e-6)
    np.testing.assert_allclose(rp.result.spectra, rj.result.spectra, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rp.result.tau_signal,
                               np.repeat(rj.result.tau_signal[:, None], 2, axis=1), rtol=1e-6)


def test_per_pair_and_per_pixel_combine(tmp_path):
    path = make_session(tmp_path / "s.zarr", modes=("tp",), **{**DRIFTING, "n_scans": 2,
                                                                "load_every": 2})
    (r,) = run_stages(path, PAIR.replace(pwv_per_pixel=True))
    tg = _truth(path)[scan_group_name(r.scan)]
    pwv_true = tg["pwv_mm"][...]
    assert r.atm.pwv_off_mm.shape == (2, 2, r.prepared.off_index.size)
    np.testing.assert_allclose(r.atm.pwv_off_mm,
                               np.broadcast_to(pwv_true[r.prepared.off_index], (2, 2, 3)),
                               rtol=1e-6)
    assert r.result.tau_signal.shape == r.result.tr_signal.shape  # [C, R, A, S_on]
    assert r.result.tr_signal.ndim == 4
    np.testing.assert_allclose(r.result.spectra, expected_spectra(r, tg), rtol=0,
                               atol=1e-4 * np.abs(tg["ta_star"][...]).max())


def test_per_pair_with_noise_is_unbiased_over_20_seeds(tmp_path):
    """Line integral of the dump-averaged spectra minus its truth (with the switching residual),
    over 20 noise seeds: no bias beyond 3 standard errors; the per-OFF pwv stays within 5 %."""
    errors, pwv_rel = [], []
    for seed in range(20):
        path = make_session(tmp_path / f"s{seed}.zarr", seed=seed, modes=("tp",),
                            n_channels=256, n_dumps=8,
                            **{**DRIFTING, "noise": True, "n_scans": 2, "load_every": 2,
                               "frequency_ghz": 345.796, "exptime_s": 5.0,
                               "pwv_rate_mm_per_hour": 20.0})
        (r,) = run_stages(path, PAIR)
        tg = _truth(path)[scan_group_name(r.scan)]
        ta_true = tg["ta_star"][...]
        expected = expected_spectra(r, tg)
        line = ta_true.mean(axis=(1, 2, 3, 4)) > 0.01 * ta_true.max()
        errors.append(np.nanmean(r.result.spectra[line] - expected[line], axis=(1, 2, 3, 4))
                      .sum())
        pwv_rel.append(r.atm.pwv_off_mm[0, 0] / tg["pwv_mm"][...][r.prepared.off_index] - 1)
    errors = np.array(errors)
    stderr = errors.std(ddof=1) / np.sqrt(errors.size)
    assert abs(errors.mean()) < 3 * stderr, (errors.mean(), stderr)
    assert np.max(np.abs(pwv_rel)) < 0.05, np.max(np.abs(pwv_rel))


def test_per_pair_uncertainties_per_on(tmp_path):
    path = make_session(tmp_path / "s.zarr", modes=("tp",), n_scans=2, load_every=2,
                        exptime_s=5.0, n_dumps=8)
    (rp,), (rj,) = run_stages(path, PAIR), run_stages(path, ZENITH)
    err_on = rp.atm.pwv_on_err_mm
    assert err_on.shape == (1, 1, rp.prepared.on_index.size) and np.all(err_on > 0)
    # an ON between two OFFs averages two independent fits: its error is below one OFF's,
    # and each OFF alone knows its pwv less well than all OFFs together
    assert np.all(err_on < 1.0 * np.sqrt(3) * rj.atm.pwv_err_mm[0, 0])
    assert np.all(err_on > rj.atm.pwv_err_mm[0, 0])
    assert rp.result.scale_uncertainty.shape == rp.result.tr_signal.shape


def test_per_pair_with_fixed_pwv_is_a_config_error():
    with pytest.raises(ConfigError, match="pwv_per_pair and pwv_fixed_mm"):
        CalibrationConfig(pwv_per_pair=True, pwv_fixed_mm=1.0)
    with pytest.raises(ConfigError, match="pwv_per_pair"):
        CalibrationConfig(pwv_per_pair="yes")  # type: ignore[arg-type]


def test_a_failing_off_names_the_subscan_and_the_fallback_is_joint(tmp_path):
    from calpipe.testing import replace_array

    path = make_session(tmp_path / "s.zarr", modes=("tp",), n_scans=2, load_every=2,
                        noise=False)
    scan = 1001
    counts = zarr.open_group(str(path), mode="r")[scan_group_name(scan)]["source/data_5d"][...]
    hot = counts.copy()
    hot[..., 2] = (counts[..., 2] * 3).clip(max=2_000_000_000)  # OFF 2: hotter than the load
    replace_array(path, scan, "source/data_5d", hot)
    with pytest.raises(AtmosphereError, match=r"per-pair pwv fit of OFF subscan 2"):
        run_stages(path, PAIR)
    (r,) = run_stages(path, PAIR.replace(pwv_fallback_mm=1.0))
    assert r.atm.method == "fallback" and not r.atm.per_pair
    assert "OFF subscan 2" in r.atm.message
    assert r.result.tau_signal.ndim == 1


@pytest.mark.slow
def test_both_modes_write_the_same_per_pair_l1(tmp_path):
    """In process and Snakemake: identical L1; xarray sees tau per ON subscan."""
    from calpipe.simulate import simulate_session
    from calpipe.testing import assert_l1_equal, small_config

    simulate_session(tmp_path / "s.zarr", small_config(**{**DRIFTING, "n_scans": 4}),
                     table=analytic_table())
    save_table(analytic_table(), tmp_path / "table.npz")
    section = {"pwv_per_pair": True, "sky_model": "zenith", "min_transmission": 0.0,
               "atmosphere_table": "table.npz"}
    inproc, workflow = calibrate_both_modes(tmp_path, section)
    assert_l1_equal(inproc, workflow)
    for scan in l1.list_scans(inproc):
        ds = l1.open_scan(inproc, scan)
        assert isinstance(ds, xr.Dataset)
        assert ds["tau_signal"].dims == ("frequency", "subscan")
        assert ds.attrs["atmosphere_fit"]["per_pair"] is True
        assert len(ds.attrs["atmosphere_fit"]["pwv_on_mm"]) == ds.sizes["subscan"]


def test_per_pair_on_chopped_scans_with_the_pair_merge(tmp_path):
    """OTF-chopped (issue 14 item 1): the two chop phases of a pair are simultaneous, so each
    ON takes its partner OFF's pwv; merged A/B pairs recover the truth, the joint fit not."""
    path = make_session(tmp_path / "s.zarr", modes=("otf-chopped",), noise=False, n_scans=2,
                        load_every=2, pwv_rate_mm_per_hour=20.0, exptime_s=5.0)
    tg = _truth(path)[scan_group_name(1001)]
    ta = tg["ta_star"][...]
    beams = list(tg.attrs["beam"])
    first_of_pair = [k for k, b in enumerate(beams) if b == "A"]
    merge = PAIR.replace(dbs_merge=True)
    (r,) = run_stages(path, merge)
    (j,) = run_stages(path, merge.replace(pwv_per_pair=False))
    np.testing.assert_allclose(r.atm.pwv_on_mm[0, 0], tg["pwv_mm"][...][r.prepared.on_index],
                               rtol=1e-6)
    assert r.result.tau_signal.shape == r.result.tr_signal.shape  # merged: one per pair
    assert len(r.result.attrs["atmosphere_fit"]["pwv_on_mm"]) == len(first_of_pair)
    err = np.abs(r.result.spectra - ta[..., first_of_pair]).max() / ta.max()
    err_joint = np.abs(j.result.spectra - ta[..., first_of_pair]).max() / ta.max()
    assert err < 1e-4 and err_joint > 1e-3, (err, err_joint)


def test_per_pair_per_pixel_with_a_pixel_missing_in_one_off(tmp_path):
    """Review finding: one pixel all fill in OFF 0 only. That OFF's pwv of the pixel is
    interpolated from its other OFFs (the ONs referenced to OFF 0 are fill for that pixel
    anyway) and the message says so; the other pixels and the scan are calibrated."""
    from calpipe.l0 import FILL_VALUE
    from calpipe.testing import replace_array

    path = make_session(tmp_path / "s.zarr", modes=("tp",), n_scans=2, load_every=2,
                        noise=False)
    counts = zarr.open_group(str(path), mode="r")["scan_001001"]["source/data_5d"][...]
    counts[:, :, 1, 0, 0] = FILL_VALUE
    replace_array(path, 1001, "source/data_5d", counts)
    (r,) = run_stages(path, PAIR.replace(pwv_per_pixel=True))
    assert np.all(np.isfinite(r.atm.pwv_off_mm))
    np.testing.assert_allclose(r.atm.pwv_off_mm, 1.0, rtol=1e-6)
    assert "1 (pixel, OFF) without data" in r.atm.message
    good = np.ones(r.result.spectra.shape, bool)
    good[:, :, 1, 0, 0] = False  # the first ON of pixel (1, 0): its reference is fill
    assert np.isfinite(r.result.spectra[good]).all()
    # a pixel without data in any OFF (a dead pixel): its spectra are fill; the other pixels
    # and the scan are calibrated, its pwv is the other pixels' median, the message names it
    counts[:, :, 1, 0, :] = FILL_VALUE
    replace_array(path, 1001, "source/data_5d", counts)
    for config in (PAIR.replace(pwv_per_pixel=True), ZENITH.replace(pwv_per_pixel=True)):
        (r,) = run_stages(path, config)
        assert "pixel(s) (r=1, a=0) without data in any OFF" in r.atm.message
        assert np.isnan(r.result.spectra[:, :, 1, 0]).all()
        assert np.isfinite(np.delete(r.result.spectra.reshape(
            r.result.spectra.shape[:2] + (-1,) + r.result.spectra.shape[4:]), 2, axis=2)).all()
