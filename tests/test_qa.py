"""QA metrics and the TSYS_OUTLIER flag (issue 8, docs/qa.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calpipe import l1, qa
from calpipe.config import CalibrationConfig
from calpipe.l0 import FILL_VALUE
from calpipe.physics import flags as fl
from calpipe.pipeline import calibrate_store
from calpipe.testing import analytic_table, read_array, replace_array


def _tsys(n_c: int = 64, shape: tuple[int, int, int] = (2, 3, 2)) -> np.ndarray:
    rng = np.random.default_rng(3)
    return (150.0 + rng.normal(0, 2, (n_c, *shape))).astype(np.float32)


def test_tsys_outliers_high_and_low() -> None:
    t = _tsys()
    t[:, 1, 2, :] *= 3.0  # high
    t[:, 0, 0, 1] /= 2.5  # low, one subscan only
    t[:5, 0, 1, 0] = np.nan  # bad channels do not matter
    mask, per_spec, median = qa.tsys_outliers(t)
    expect = np.zeros((2, 3, 2), dtype=bool)
    expect[1, 2, :] = True
    expect[0, 0, 1] = True
    np.testing.assert_array_equal(mask, expect)
    assert median == pytest.approx(150.0, rel=0.02)
    assert per_spec[1, 2, 0] == pytest.approx(450.0, rel=0.05)


def test_tsys_below_factor_is_not_an_outlier() -> None:
    t = _tsys()
    t[:, 1, 1, :] *= 0.9 * qa.TSYS_OUTLIER_FACTOR
    assert not qa.tsys_outliers(t)[0].any()


def test_flag_sets_bit_4_on_whole_spectra_only() -> None:
    flags = np.zeros((8, 3, 2, 2, 2), dtype=np.uint16)
    flags[0] = fl.BAD_CHANNEL
    mask = np.zeros((2, 2, 2), dtype=bool)
    mask[1, 0, 1] = True
    qa.flag_tsys_outliers(flags, mask)
    bit = (flags & fl.TSYS_OUTLIER) != 0
    assert bit[:, :, 1, 0, 1].all()
    assert bit.sum() == 8 * 3
    assert (flags[0] & fl.BAD_CHANNEL).all()  # other bits kept


def test_line_free_channels_and_baseline_rms() -> None:
    rng = np.random.default_rng(7)
    n_c, n_d, sigma = 512, 20, 0.3
    c = np.arange(n_c)
    line = 2.0 * np.exp(-0.5 * ((c - 200) / 5.0) ** 2)
    ripple = 0.5 * np.sin(2 * np.pi * c / n_c)  # a slow baseline ripple is not a line
    spectra = (line + ripple)[:, None, None, None, None] + rng.normal(
        0, sigma, (n_c, n_d, 2, 1, 1))
    spectra = spectra.astype(np.float32)
    spectra[300:304] = np.nan  # blanked channels
    free, counts = qa.line_free_channels(qa.dump_average(spectra))
    assert not free[185:216].any()  # the line (+-3 sigma) is excluded
    assert not free[:10].any() and not free[-10:].any()  # band edges
    assert free[250:290].all() and free[400:450].all()
    assert counts["edge_channels"] == 2 * round(qa.EDGE_FRACTION * n_c)
    rms = qa.baseline_rms(spectra, free)
    assert rms.shape == (2, 1, 1)
    # per-dump rms about the mean includes the ripple's spread over the line-free channels
    expected = np.sqrt(sigma**2 + np.var(ripple[free]))
    np.testing.assert_allclose(rms, expected, rtol=0.08)
    weight = np.full((n_c, 2, 1, 1), 1 / sigma**2, dtype=np.float32)
    np.testing.assert_allclose(qa.radiometer_noise(weight, free), sigma, rtol=1e-6)


def test_assess_scan_metrics_are_json_ready() -> None:
    rng = np.random.default_rng(1)
    spectra = rng.normal(0, 0.1, (128, 4, 2, 2, 1)).astype(np.float32)
    flags = np.zeros(spectra.shape, dtype=np.uint16)
    flags[:3] = fl.BAD_CHANNEL
    spectra[:3] = np.nan
    t_sys = np.full((128, 2, 2, 1), 100.0, dtype=np.float32)
    t_sys[:, 0, 1] = 400.0
    weight = np.full(t_sys.shape, 100.0, dtype=np.float32)
    m = qa.assess_scan(spectra, flags, t_sys, weight, np.array([[0.2]]))
    assert m["tsys_outliers"] == [[0, 1, 0]] and m["n_tsys_outliers"] == 1
    assert m["tsys_scan_median_k"] == pytest.approx(100.0)
    assert m["pwv_fit_residual_rms_k"] == pytest.approx(0.2)
    assert m["radiometer_ratio"] == pytest.approx(1.0, rel=0.15)
    assert m["blanked_fraction"] == pytest.approx(3 / 128)
    assert m["flagged_fraction"] > m["blanked_fraction"]  # + the outlier spectrum
    assert any("T_sys outlier" in w for w in m["warnings"])
    assert m["thresholds"]["tsys_outlier_factor"] == qa.TSYS_OUTLIER_FACTOR


def test_injected_high_tsys_pixel_gets_bit_4(broken_session: Path, scratch: Path) -> None:
    """Scan 1001 has its own loads: dividing one pixel's load counts by 3 divides its gain
    by 3 and so triples its t_sys (pwv fixed, the fit would see the odd pixel too)."""
    scan, pix = 1001, (1, 0)
    raw = read_array(broken_session, scan, "calibration/data_5d")
    mod = raw.copy()
    sl = (slice(None), slice(None), pix[0], pix[1])
    mod[sl] = np.where(raw[sl] == FILL_VALUE, raw[sl], raw[sl] // 3)
    replace_array(broken_session, scan, "calibration/data_5d", mod)
    out = scratch / "l1.zarr"
    result = calibrate_store(broken_session, out, CalibrationConfig().replace(pwv_fixed_mm=1.0),
                             scans=[scan, 1002], table=analytic_table())
    assert not result.failures
    res = l1.read_scan(out, scan)
    res.check()  # TSYS_OUTLIER does not blank: the NaN/flag contract holds
    bit = (res.flags & fl.TSYS_OUTLIER) != 0
    n_on = res.flags.shape[-1]
    assert bit[:, :, pix[0], pix[1], :].all()
    others = np.ones(res.flags.shape[2:4], dtype=bool)
    others[pix] = False
    assert not bit[:, :, others, :].any()
    blank = (res.flags & fl.BLANKING) != 0
    assert np.isfinite(res.spectra[:, :, pix[0], pix[1]][~blank[:, :, pix[0], pix[1]]]).all()
    q = res.attrs["qa"]
    assert q["n_tsys_outliers"] == n_on
    assert q["tsys_outliers"] == [[pix[0], pix[1], s] for s in range(n_on)]
    # the untouched scan (other loads) has no outlier
    clean = l1.read_scan(out, 1002)
    assert clean.attrs["qa"]["n_tsys_outliers"] == 0
    assert not ((clean.flags & fl.TSYS_OUTLIER) != 0).any()


def test_clean_session_qa(small_session: Path, scratch: Path) -> None:
    out = scratch / "l1.zarr"
    calibrate_store(small_session, out, scans=[1001, 1002], table=analytic_table())
    for scan in (1001, 1002):
        q = l1.open_scan(out, scan).attrs["qa"]
        assert q["n_tsys_outliers"] == 0
        assert 0.0 < q["flagged_fraction"] < 0.3  # fill_fraction 0.1 + 2 dead channels
        assert 0.7 < q["radiometer_ratio"] < 1.3
        assert q["line_channels"] > 0 and q["line_free_channels"] > 100
        assert q["baseline_rms_median_k"] > 0


@pytest.mark.parametrize("n_channels", [64, 2048])
def test_simulated_noise_never_warns(n_channels: int, scratch: Path) -> None:
    """Simulated sessions (radiometer noise, a 20-channel line that covers most of a
    64-channel band, ripple in the gain): the radiometer ratio is 1 within a few percent and
    no scan gets a noise warning (with the old rms-about-the-mean ratio, 64 channels gave
    3.7-7.7 and a warning on every scan)."""
    from calpipe.testing import make_session

    session = make_session(scratch / "s.zarr", table=analytic_table(), n_scans=4,
                           load_every=4, n_channels=n_channels, n_receivers=2, n_arrays=2,
                           n_dumps=8)
    out = scratch / "l1.zarr"
    calibrate_store(session, out, table=analytic_table())
    scans = l1.list_scans(out)
    assert len(scans) == 3
    for scan in scans:
        q = l1.open_scan(out, scan).attrs["qa"]
        assert 0.9 < q["radiometer_ratio"] < 1.1, (scan, q["radiometer_ratio"])
        assert not any("radiometer noise" in w for w in q["warnings"]), q["warnings"]


def test_noise_ratio_sees_excess_noise_not_lines() -> None:
    rng = np.random.default_rng(5)
    n_c, n_d, sigma = 64, 30, 0.05
    c = np.arange(n_c)
    broad = 2.0 * np.exp(-0.5 * ((c - 32) / 20.0) ** 2)  # wider than the band
    weight = np.full((n_c, 1, 1, 2), 1 / sigma**2, dtype=np.float32)
    spectra = broad[:, None, None, None, None] + rng.normal(0, sigma, (n_c, n_d, 1, 1, 2))
    spectra[:, :, :, :, 1] += rng.normal(0, 1.5 * sigma, (n_c, n_d, 1, 1))  # 3.25x the var.
    free = np.ones(n_c, dtype=bool)
    free[:3] = free[-3:] = False
    ratio = qa.noise_ratio(spectra, weight, free)
    assert ratio[0, 0, 0] == pytest.approx(1.0, abs=0.08)
    assert ratio[0, 0, 1] == pytest.approx(np.sqrt(3.25), abs=0.1)
    # the rms about the mean sees the line: ~14x here
    assert qa.baseline_rms(spectra, free)[0, 0, 0] / sigma > 5
    flags = np.zeros(spectra.shape, dtype=np.uint16)
    t_sys = np.full((n_c, 1, 1, 2), 100.0, dtype=np.float32)
    noisy = np.repeat(spectra[..., 1:], 2, axis=-1)
    m = qa.assess_scan(noisy.astype(np.float32), flags, t_sys, weight)
    assert m["radiometer_ratio"] == pytest.approx(np.sqrt(3.25), abs=0.1)
    assert any("radiometer noise" in w for w in m["warnings"])
