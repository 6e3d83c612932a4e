"""Telescope profiles (issue 14 item 6): shipped YAML, selection precedence, site checks, and
the profile's values in the L1 attributes and on the T_mb scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from calpipe import telescopes
from calpipe.atmosphere.tableio import save_table
from calpipe.config import CalibrationConfig
from calpipe.errors import ConfigError, MetadataError
from calpipe.physics.beam import GainCurve
from calpipe.simulate import truth_path_for
from calpipe.testing import analytic_table, make_session, run_stages

ZENITH = CalibrationConfig(sky_model="zenith")
APEX_CURVE = (0.75, 0.01, -1.0e-4)  # the apex-like profile's gain curve


def test_shipped_profiles_load() -> None:
    assert telescopes.known_profiles() == ["apex-like", "ccat-fyst", "generic"]
    fyst = telescopes.load_profile("ccat-fyst")
    assert fyst.frequency_ghz == (200.0, 1200.0) and fyst.pressure_hpa == (480.0, 540.0)
    assert fyst.options["f_eff"] == 0.95 and fyst.options["eta_mb"] is None
    apex = telescopes.load_profile("apex-like")
    assert apex.options["eta_mb"] == 0.75
    assert apex.options["gain_curve"] == (GainCurve(APEX_CURVE),)
    generic = telescopes.load_profile("generic")
    assert all(v is None for v in generic.options.values())
    assert generic.frequency_ghz is None and generic.pressure_hpa is None


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="known profiles: apex-like, ccat-fyst, generic"):
        telescopes.load_profile("alma")
    with pytest.raises(ConfigError, match="'alma'"):
        telescopes.select(CalibrationConfig(telescope="alma"), "FYST")


@pytest.mark.parametrize(("option", "attribute", "expect", "how"), [
    (None, "FYST", "ccat-fyst", "scan attribute telescope"),
    (None, "ccat", "ccat-fyst", "scan attribute telescope"),  # aliases, any case
    (None, " apex-like ", "apex-like", "scan attribute telescope"),
    (None, "FYST (simulated)", None, "none"),  # not a name nor an alias: no profile
    (None, "", None, "none"),
    (None, 3, None, "none"),
    ("generic", "FYST", "generic", "config"),  # the configuration wins over the attribute
    ("apex-like", None, "apex-like", "config"),
])
def test_selection_precedence(option: str | None, attribute: object, expect: str | None,
                              how: str) -> None:
    profile, source = telescopes.select(CalibrationConfig(telescope=option), attribute)
    assert (None if profile is None else profile.name) == expect
    assert source == how


def test_explicit_options_override_the_profile() -> None:
    apex = telescopes.load_profile("apex-like")
    filled = telescopes.apply(CalibrationConfig(), apex)
    assert (filled.f_eff, filled.eta_mb) == (0.95, 0.75)
    assert filled.gain_curve == (GainCurve(APEX_CURVE),)
    own = telescopes.apply(CalibrationConfig(eta_mb=0.6, f_eff=0.9, gain_curve=[1.0]), apex)
    assert (own.f_eff, own.eta_mb, own.gain_curve) == (0.9, 0.6, (GainCurve((1.0,)),))


def test_site_ranges() -> None:
    fyst = telescopes.load_profile("ccat-fyst")
    fyst.check_scan(1, (460.0, 461.0), 510.0)
    with pytest.raises(MetadataError, match="1250.000 GHz is outside the 200-1200 GHz"):
        fyst.check_scan(1, (1249.0, 1250.0), 510.0)
    with pytest.raises(MetadataError, match="550.0 hPa is outside the site range 480-540"):
        fyst.check_scan(1, (460.0, 461.0), 550.0)
    telescopes.load_profile("generic").check_scan(1, (1.0, 5000.0), 1.0)


# -- through the stages ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def apex_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Simulated with the apex-like efficiencies, the scan attribute naming the profile
    (pressure 550 hPa, 230.5 GHz: inside its ranges)."""
    path = tmp_path_factory.mktemp("apex") / "s.zarr"
    return make_session(path, noise=False, n_scans=3, load_every=3, telescope="apex-like",
                        eta_mb=0.75, gain_curves=(APEX_CURVE,), elevation_start_deg=80.0,
                        elevation_end_deg=30.0)


def _calibrate(path: Path, config: CalibrationConfig) -> list:
    return [s.result for s in run_stages(path, config)]


def test_profile_from_the_scan_attribute_reaches_l1(apex_session: Path) -> None:
    truth = zarr.open_group(str(truth_path_for(apex_session)), mode="r")
    results = _calibrate(apex_session, ZENITH.replace(scale="tmb"))
    assert len(results) == 2
    for result in results:
        prof = result.attrs["telescope_profile"]
        assert prof["name"] == "apex-like" and prof["selected_by"] == "scan attribute telescope"
        assert prof["eta_mb"] == 0.75 and prof["pressure_hpa"] == [530.0, 570.0]
        assert prof["gain_curve"] == [{"coefficients": list(APEX_CURVE), "arrays": None,
                                       "band_ghz": None}]
        scale = result.attrs["scale"]
        assert scale["eta_mb"] == 0.75 and scale["gain_curve"][0] == list(APEX_CURVE)
        t_mb = truth[f"scan_{result.scan:06d}"]["t_mb"][...]
        err = np.nanmax(np.abs(result.spectra - t_mb))
        assert err <= 1e-4 * np.nanmax(np.abs(t_mb)), err


def test_explicit_eta_mb_wins_in_l1(apex_session: Path) -> None:
    (result, *_) = _calibrate(apex_session, ZENITH.replace(scale="tmb", eta_mb=0.5))
    assert result.attrs["scale"]["eta_mb"] == 0.5
    assert result.attrs["telescope_profile"]["eta_mb"] == 0.75  # what the profile said


def test_wrong_site_is_a_scan_error(apex_session: Path) -> None:
    """ccat-fyst's 480-540 hPa against the session's 550 hPa: the resolve stage refuses it."""
    with pytest.raises(MetadataError, match="site range 480-540 hPa of telescope profile "
                                            "'ccat-fyst'"):
        _calibrate(apex_session, ZENITH.replace(telescope="ccat-fyst"))


def test_no_profile_no_attribute(apex_session: Path, tmp_path: Path) -> None:
    plain = make_session(tmp_path / "p.zarr", noise=False, n_scans=2, load_every=2)
    (result,) = _calibrate(plain, ZENITH)
    assert "telescope_profile" not in result.attrs
    assert result.attrs["scale"]["scale"] == "ta_star"


def test_cli_telescope_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from calpipe.cli import main

    save_table(analytic_table(), tmp_path / "table.npz")
    make_session(tmp_path / "s.zarr", table=analytic_table(), n_scans=2, load_every=2,
                 noise=False)
    args = ["-q", "calibrate", str(tmp_path / "s.zarr"), str(tmp_path / "l1.zarr"),
            "--atmosphere-table", str(tmp_path / "table.npz")]
    assert main([*args, "--telescope", "nope"]) == 1
    assert "known profiles: apex-like, ccat-fyst, generic" in capsys.readouterr().err
    assert main([*args, "--telescope", "apex-like", "--scale", "tmb"]) == 0
    group = zarr.open_group(str(tmp_path / "l1.zarr" / "scan_001001"), mode="r")
    assert group.attrs["telescope_profile"]["selected_by"] == "config"
    assert group.attrs["scale"]["eta_mb"] == 0.75
