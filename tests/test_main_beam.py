"""Main-beam and elevation-gain scaling (issue 14 item 5): L1 on the T_mb scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from calpipe.atmosphere.tableio import save_table
from calpipe.config import CalibrationConfig
from calpipe.errors import ConfigError, MetadataError
from calpipe.l0 import scan_group_name
from calpipe.physics import beam
from calpipe.simulate import truth_path_for
from calpipe.testing import analytic_table, assert_l1_equal, make_session, run_stages

ZENITH = CalibrationConfig(sky_model="zenith")
#: per-array gain curves of the simulation (ascending powers of el in deg): array 0 peaks at
#: 50 deg, array 1 falls linearly with elevation
CURVES = ((0.75, 0.01, -1.0e-4), (1.1, -0.004))


# -- the pure functions ---------------------------------------------------------------------

def test_gain_curve_is_a_polynomial_in_degrees() -> None:
    curve = beam.GainCurve((0.75, 0.01, -1.0e-4))
    g = curve.evaluate(np.radians([20.0, 50.0, 80.0]))
    np.testing.assert_allclose(g, [0.91, 1.0, 0.91], rtol=1e-12)


def test_curves_are_selected_per_array_and_band() -> None:
    a0 = beam.GainCurve((1.0,), arrays=(0,), band_ghz=(200.0, 300.0))
    a0_high = beam.GainCurve((0.9,), arrays=(0,), band_ghz=(600.0, 700.0))
    rest = beam.GainCurve((0.8,))
    assert beam.select_curves([a0, a0_high, rest], 2, 230.0) == [a0, rest]
    assert beam.select_curves([a0, a0_high, rest], 2, 690.0) == [a0_high, rest]
    assert beam.select_curves([], 3, 230.0) == [None, None, None]
    with pytest.raises(MetadataError, match="array 1 at 230.000 GHz"):
        beam.select_curves([a0], 2, 230.0)


def test_gain_must_be_positive() -> None:
    with pytest.raises(MetadataError, match="G = -0.1"):
        beam.elevation_gain([beam.GainCurve((-0.1,))], np.radians([45.0]))


def test_scaling_keeps_the_signal_to_noise() -> None:
    rng = np.random.default_rng(1)
    spectra = rng.normal(size=(5, 3, 2, 2, 4)).astype(np.float32)
    t_sys = rng.uniform(100, 200, size=(5, 2, 2, 4)).astype(np.float32)
    weight = (1.0 / t_sys**2).astype(np.float32)
    factor = rng.uniform(1.1, 1.5, size=(2, 4))
    s, t, w = beam.scale_arrays(spectra, t_sys, weight, factor)
    assert s.dtype == np.float32 and t.dtype == np.float32 and w.dtype == np.float32
    np.testing.assert_allclose(s, spectra * factor[None, None, None], rtol=1e-6)
    np.testing.assert_allclose(t, t_sys * factor[None, None], rtol=1e-6)
    # the SNR of every sample, T sqrt(w), is unchanged
    np.testing.assert_allclose(s * np.sqrt(w)[:, None], spectra * np.sqrt(weight)[:, None],
                               rtol=1e-5)
    np.testing.assert_allclose(beam.main_beam_factor(0.95, 0.8, np.array([[1.0, 0.5]])),
                               [[0.95 / 0.8, 0.95 / 0.4]])


# -- configuration ----------------------------------------------------------------------------

def test_gain_curve_option_forms() -> None:
    flat = CalibrationConfig(gain_curve=[1.0, 0.0])
    assert flat.gain_curve == (beam.GainCurve((1.0, 0.0)),)
    entries = CalibrationConfig.from_mapping({"gain_curve": [
        {"coefficients": [0.9], "arrays": [1], "band_ghz": [200, 300]}]})
    assert entries.gain_curve == (beam.GainCurve((0.9,), (1,), (200.0, 300.0)),)
    # the round trip the workflow does (to_dict -> from_mapping) keeps value and digest
    again = CalibrationConfig.from_mapping(entries.to_dict())
    assert again == entries and again.digest == entries.digest


@pytest.mark.parametrize(("values", "match"), [
    ({"scale": "tr"}, "scale"),
    ({"eta_mb": 0.0}, "eta_mb"),
    ({"eta_mb": 1.2}, "eta_mb"),
    ({"eta_fss": True}, "eta_fss"),
    ({"gain_curve": "1 + el"}, "gain_curve"),
    ({"gain_curve": [{"coefficients": []}]}, "coefficients"),
    ({"gain_curve": [{"coefficients": [1], "arrays": [-1]}]}, "arrays"),
    ({"gain_curve": [{"coefficients": [1], "band_ghz": [300, 200]}]}, "band_ghz"),
    ({"gain_curve": [{"coefficients": [1], "elevation": 3}]}, "unknown key"),
])
def test_bad_options_are_config_errors(values: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CalibrationConfig.from_mapping(values)


# -- recovery of the simulated truth ------------------------------------------------------

def _tmb_config(**changes: object) -> CalibrationConfig:
    return ZENITH.replace(scale="tmb", eta_mb=0.8, gain_curve=[
        {"coefficients": list(CURVES[0]), "arrays": [0]},
        {"coefficients": list(CURVES[1]), "arrays": [1]}], **changes)


def _run(path: Path, config: CalibrationConfig) -> list[tuple[object, object, object]]:
    truth = zarr.open_group(str(truth_path_for(path)), mode="r")
    out = [(s.result, s.load, truth[scan_group_name(s.scan)]) for s in run_stages(path, config)]
    return out


@pytest.fixture(scope="module")
def tmb_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tmb") / "s.zarr"
    return make_session(path, noise=False, eta_mb=0.8, gain_curves=CURVES,
                        elevation_start_deg=75.0, elevation_end_deg=25.0)


def test_noise_free_recovery_on_the_tmb_scale(tmb_session: Path) -> None:
    ta = {r.scan: (r, ld) for r, ld, _ in _run(tmb_session, ZENITH)}
    for result, load, truth in _run(tmb_session, _tmb_config()):
        t_mb = truth["t_mb"][...]
        peak = np.nanmax(np.abs(t_mb))
        err = np.abs(result.spectra - t_mb)
        assert np.nanmax(err) <= 1e-4 * peak, (result.scan, np.nanmax(err) / peak)
        attrs = result.attrs["scale"]
        assert attrs["scale"] == "tmb" and attrs["eta_mb"] == 0.8
        assert attrs["eta_fss"] == load.f_eff == 0.95 and attrs["eta_fss_source"] == "f_eff"
        el = np.degrees(result.elevation.astype(np.float64))
        gain = np.array([np.polynomial.polynomial.polyval(el, c) for c in CURVES])
        np.testing.assert_allclose(attrs["gain"], gain, rtol=1e-6)
        factor = np.asarray(attrs["factor"])
        np.testing.assert_allclose(factor, 0.95 / (0.8 * gain), rtol=1e-6)
        # t_sys x K, weight / K^2 against the T_A* run of the same scan
        base, _ = ta[result.scan]
        np.testing.assert_allclose(result.t_sys, base.t_sys * factor[None, None], rtol=1e-5)
        np.testing.assert_allclose(result.weight, base.weight / factor[None, None] ** 2,
                                   rtol=1e-5)
        assert base.attrs["scale"] == {"scale": "ta_star", "quantity": "T_A*"}


def test_eta_fss_replaces_f_eff_in_the_factor(tmb_session: Path) -> None:
    (result, _, truth), *_ = _run(tmb_session, _tmb_config(eta_fss=0.9))
    assert result.attrs["scale"]["eta_fss"] == 0.9
    np.testing.assert_allclose(result.spectra, truth["t_mb"][...] * 0.9 / 0.95, rtol=1e-4,
                               atol=1e-4 * float(np.nanmax(truth["t_mb"][...])))


def test_tmb_without_eta_mb_is_a_scan_error(tmb_session: Path) -> None:
    with pytest.raises(MetadataError, match="eta_mb"):
        _run(tmb_session, ZENITH.replace(scale="tmb"))


def test_both_modes_write_the_same_tmb_l1_with_a_profile(tmp_path: Path) -> None:
    from calpipe import l1
    from calpipe.testing import calibrate_both_modes

    save_table(analytic_table(), tmp_path / "table.npz")
    make_session(tmp_path / "s.zarr", table=analytic_table(), n_scans=3, load_every=3,
                 eta_mb=0.8, gain_curves=CURVES)
    # eta_mb from the telescope profile (issue 14 item 6), the gain curves given explicitly
    section = {"atmosphere_table": "table.npz", "scale": "tmb", "telescope": "apex-like",
               "gain_curve": [{"coefficients": list(CURVES[0]), "arrays": [0]},
                              {"coefficients": list(CURVES[1]), "arrays": [1]}]}
    inproc, workflow = calibrate_both_modes(tmp_path, section)
    assert l1.list_scans(workflow) == [1001, 1002]
    assert_l1_equal(inproc, workflow)
    group = zarr.open_group(str(workflow / "scan_001001"), mode="r")
    assert group.attrs["scale"]["scale"] == "tmb" and group.attrs["scale"]["eta_mb"] == 0.75
    assert group.attrs["telescope_profile"]["name"] == "apex-like"
    assert group["spectra"].attrs["long_name"].startswith("main-beam brightness temperature")


def test_cli_scale_option(tmp_path: Path) -> None:
    from calpipe.cli import main

    save_table(analytic_table(), tmp_path / "table.npz")
    make_session(tmp_path / "s.zarr", table=analytic_table(), n_scans=2, load_every=2,
                 noise=False, eta_mb=0.8)
    out = tmp_path / "l1.zarr"
    code = main(["-q", "calibrate", str(tmp_path / "s.zarr"), str(out), "--scale", "tmb",
                 "--eta-mb", "0.8", "--atmosphere-table", str(tmp_path / "table.npz")])
    assert code == 0
    group = zarr.open_group(str(out / "scan_001001"), mode="r")
    assert group.attrs["scale"]["eta_mb"] == 0.8
    truth = zarr.open_group(str(truth_path_for(tmp_path / "s.zarr")), mode="r")
    t_mb = truth["scan_001001"]["t_mb"][...]  # [C, D, R, A, S_on]; L1: [C, T, R, A]
    spectra = group["spectra"][...]
    expect = np.concatenate([t_mb[..., k] for k in range(t_mb.shape[-1])], axis=1)
    assert np.nanmax(np.abs(spectra - expect)) <= 1e-4 * np.nanmax(np.abs(t_mb))


def test_exports_and_quicklook_name_the_scale(tmp_path: Path) -> None:
    """SDFITS BUNIT and the quick-look axis say T_mb for a T_mb L1 (T_A* otherwise)."""
    from astropy.io import fits

    from calpipe.export.sdfits import export_sdfits
    from calpipe.pipeline import calibrate_store
    from calpipe.quicklook import XAxis, _data_panel, _read_scan

    make_session(tmp_path / "s.zarr", n_scans=3, load_every=3, modes=("otf", "tp"))
    for scale, word in (("tmb", "T_mb"), ("ta_star", "T_A*")):
        out = tmp_path / f"{scale}.zarr"
        calibrate_store(tmp_path / "s.zarr", out, ZENITH.replace(
            scale=scale, eta_mb=0.8, atmosphere_table=None), table=analytic_table())
        export_sdfits(out, tmp_path / f"{scale}.fits")
        with fits.open(tmp_path / f"{scale}.fits") as hdul:
            assert hdul[1].header.comments["BUNIT"].startswith(word)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        for scan in (1001, 1002):
            data = _read_scan(zarr.open_group(str(out / f"scan_{scan:06d}"), mode="r"))
            fig, ax = plt.subplots()
            _data_panel(fig, ax, XAxis.of(data, "frequency"), data)
            assert word in ax.get_title()
            plt.close(fig)


def test_tmb_with_noise_is_unbiased_over_20_seeds(tmp_path: Path) -> None:
    """Radiometer noise: the T_mb line integral has no bias beyond 3 standard errors over 20
    seeds (eta_mb 0.8, per-array gain curves)."""
    errors = []
    for seed in range(20):
        path = make_session(tmp_path / f"s{seed}.zarr", seed=seed, n_scans=2, load_every=2,
                            modes=("tp",), pwv_mm=1.5, n_channels=256, n_dumps=8,
                            eta_mb=0.8, gain_curves=CURVES)
        ((result, _, truth),) = _run(path, _tmb_config())
        t_mb = truth["t_mb"][...]
        line = t_mb.mean(axis=(1, 2, 3, 4)) > 0.01 * t_mb.max()
        measured = np.nanmean(result.spectra[line], axis=(1, 2, 3, 4)).sum()
        errors.append(measured / t_mb[line].mean(axis=(1, 2, 3, 4)).sum() - 1)
    e = np.array(errors)
    stderr = e.std(ddof=1) / np.sqrt(e.size)
    assert abs(e.mean()) < 3 * stderr, (e.mean(), stderr)
