"""Sky tables: T_atm vs airmass and ground temperature (issue 13, item 1)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import zarr

from calpipe import stages
from calpipe.atmosphere.skyio import find_sky_table, load_sky_table, save_sky_table
from calpipe.config import CalibrationConfig
from calpipe.errors import AtmosphereError, ConfigError
from calpipe.l0 import scan_group_name
from calpipe.simulate import truth_path_for
from calpipe.testing import analytic_sky_table, analytic_table, make_session, run_stages


def _exact(table, f, p, a, tg, pwv):
    ghz = f / 1e9
    b = 0.02 * (ghz / 230.0) ** 2 + 2.0 * np.exp(-0.5 * ((ghz - 557.0) / 8.0) ** 2)
    c = 0.01 + 0.02 * (ghz / 500.0) ** 2
    tau = (p / 550.0) * (1 + 0.002 * (tg - 270.0)) * (c + b * pwv + 0.01 * b * pwv**2)
    tatm = 255.0 + 3.0 * np.log(pwv) + 4.0 * np.log(a) + 0.8 * (tg - 270.0)
    return tau, tatm


def test_slab_interpolates_airmass_and_ground_temperature():
    table = analytic_sky_table()
    f = table.frequency_hz[[100, 1500, 3000]]
    a = np.array([1.0, 1.3, 2.0, 3.7])
    tg = np.array([270.0, 255.5, 283.0, 299.0])
    for p in (450.0, 650.0):  # pressure nodes (the test table is not linear in ln P)
        slab = table.slab(f, p, a, tg)
        for pwv in (0.1, 0.77, 3.0):
            tau, tatm = slab.evaluate(pwv)
            assert tau.shape == (3, 4)
            et, ea = _exact(table, f[:, None], p, a[None], tg[None], pwv)
            np.testing.assert_allclose(tau, et, rtol=1e-6)
            # linear in ln pwv, ln A and T_g: the splines / polynomials reproduce it exactly
            np.testing.assert_allclose(tatm, np.broadcast_to(ea, tatm.shape), rtol=1e-9)


def test_ranges_and_windows_are_enforced():
    table = analytic_sky_table(((224.0, 236.0), (338.0, 350.0)))
    ok = np.array([230e9, 345e9])
    table.slab(ok, 500.0, np.array([1.5]), np.array([270.0]))
    with pytest.raises(AtmosphereError, match="300.000000 GHz outside the sky table"):
        table.slab(np.array([230e9, 300e9]), 500.0, np.array([1.5]), np.array([270.0]))
    with pytest.raises(AtmosphereError, match="ground temperature"):
        table.slab(ok, 500.0, np.array([1.5]), np.array([320.0]))
    with pytest.raises(AtmosphereError, match="airmass"):
        table.slab(ok, 500.0, np.array([7.0]), np.array([270.0]))
    with pytest.raises(AtmosphereError, match="pressure"):
        table.slab(ok, 800.0, np.array([1.5]), np.array([270.0]))


def test_save_load_round_trip_and_corruption(tmp_path):
    table = analytic_sky_table(((224.0, 236.0),))
    stored = save_sky_table(table, tmp_path / "t.npz")
    back = load_sky_table(tmp_path / "t.npz")
    assert back.digest == stored.digest
    np.testing.assert_array_equal(back.t_atm, stored.t_atm)
    with np.load(tmp_path / "t.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["tau"] = arrays["tau"] * np.float32(1.001)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ConfigError, match="digest mismatch"):
        load_sky_table(tmp_path / "bad.npz")
    assert find_sky_table(np.array([230e9]), np.array([226e9]), 500.0, str(tmp_path))
    assert find_sky_table(np.array([230e9]), np.array([218e9]), 500.0, str(tmp_path)) is None


def _run(path, config, table):
    return [(s.scan, s.atm, s.result) for s in run_stages(path, config, table)]


@pytest.mark.parametrize("sideband", ["dsb", "2sb"])
def test_noise_free_recovery_with_a_sky_table(tmp_path, sideband):
    """Simulated with the sky table (T_atm at each scan's airmass and tamb, tamb changing by
    6 K per scan) and calibrated with it: T_A* to 1e-4, pwv to 1e-4; the zenith table in its
    place (a different model) would not match -- checked below."""
    sky = analytic_sky_table(((215.0, 232.0),))
    save_sky_table(sky, tmp_path / "sky" / "t.npz")
    path = make_session(tmp_path / "s.zarr", table=sky, noise=False, sideband=sideband,
                        n_scans=4, load_every=4, tamb_step_k=6.0, pwv_mm=1.2,
                        elevation_start_deg=60.0, elevation_end_deg=25.0)
    truth = zarr.open_group(str(truth_path_for(path)), mode="r")
    config = CalibrationConfig(sky_table_dir=str(tmp_path / "sky"))
    for n, atm, res in _run(path, config, analytic_table()):
        assert atm.t_atm_source == "model(A, T_ground)"
        assert "sky table t.npz" in atm.table_model
        assert atm.pwv_mm[0, 0] == pytest.approx(1.2, rel=1e-4)
        ta = truth[scan_group_name(n)]["ta_star"][...]
        assert np.abs(res.spectra - ta).max() <= 1e-4 * ta.max()
    zen = _run(path, CalibrationConfig(sky_model="zenith"), analytic_table())
    assert all(abs(atm.pwv_mm[0, 0] / 1.2 - 1) > 1e-3 for _, atm, _ in zen)


def test_zenith_and_linear_tables_warn_naming_the_approximation(tmp_path, caplog):
    from calpipe.atmosphere.table import from_linear_form

    path = make_session(tmp_path / "s.zarr", noise=False, n_scans=2, load_every=2,
                        frequency_ghz=460.0)
    stages._WARNED.clear()
    with caplog.at_level(logging.WARNING, logger="calpipe.stages"):
        (_, atm, _), = _run(path, CalibrationConfig(), analytic_table())
    assert atm.t_atm_source == "model"
    assert "zenith T_atm" in caplog.text and "every airmass" in caplog.text
    base = analytic_table(t_atm=False)
    linear = from_linear_form(base.frequency_hz, base.pressure_hpa,
                              base.tau[:, 3] * 0 + 0.05, base.tau[:, 0], model="ccat-linear")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="calpipe.stages"):
        try:
            _run(path, CalibrationConfig(pwv_fixed_mm=1.0), linear)
        except AtmosphereError:
            pass
    assert "isothermal approximation" in caplog.text and "CCAT linear" in caplog.text


def test_single_pressure_node_uses_the_zenith_table_correction():
    """A one-node table (450 hPa) used at 465 hPa: the zenith-table tau correction gives the
    two-node table's values (here exactly linear in P) to the size of the neglected T_g
    factor in tau (0.2 %/K x 30 K x 3 %); T_atm (no P dependence here) is not corrected."""
    full = analytic_sky_table(((224.0, 236.0),))
    from calpipe.atmosphere.skytable import SkyTable

    one = SkyTable(full.frequency_hz, full.windows_hz, full.pwv_mm, full.pressure_hpa[:1],
                   full.t_ground_k, full.airmass, full.tau[:1], full.t_atm[:1], "one-node")
    f = np.array([230e9, 231e9])
    a, tg = np.array([1.2, 2.5]), np.array([260.0, 285.0])
    with pytest.raises(AtmosphereError, match="single node"):
        one.slab(f, 465.0, a, tg)
    assert not one.covers(f, 470.0)
    zen = analytic_table()
    corr = stages._pressure_correction(one, zen, f, 465.0)
    got = one.slab(f, 465.0, a, tg, corr).evaluate(1.0)
    exact = _exact(full, f[:, None], 465.0, a[None], tg[None], 1.0)
    np.testing.assert_allclose(got[0], exact[0], rtol=3e-3)
    np.testing.assert_allclose(got[1], np.broadcast_to(exact[1], got[1].shape), rtol=1e-9)


def test_shipped_sky_tables_load_and_cover_the_benchmark_tunings():
    from calpipe.atmosphere.skyio import shipped_sky_dir

    paths = sorted(shipped_sky_dir().glob("*.npz"))
    assert len(paths) == 5
    for f in (230.538, 345.796, 460.0, 691.473, 850.0):
        sig = f * 1e9 + np.linspace(-0.5e9, 0.5e9, 5)
        found = find_sky_table(sig, 2 * f * 1e9 - 12e9 - sig, 550.0, shipped=True)
        assert found is not None, f
        table, _ = found
        assert table.airmass[0] == 1.0 and table.airmass[-1] >= 4.0
        assert table.t_ground_k[0] <= 260 and table.t_ground_k[-1] >= 285
        assert np.diff(table.frequency_hz).min() == pytest.approx(2e6, rel=1e-6)


def test_default_simulation_and_calibration_use_the_shipped_sky_table(tmp_path):
    """No table given: the simulator and the pipeline both take the shipped 460 GHz sky table
    (T_atm at each scan's airmass and tamb): exact recovery; the zenith table on the same data
    is off by percents."""
    from calpipe.atmosphere.skyio import load_sky_table, shipped_sky_dir
    from calpipe.atmosphere.tableio import load_default_table
    from calpipe.simulate import simulate_session
    from calpipe.testing import small_config

    path = tmp_path / "s.zarr"
    simulate_session(path, small_config(noise=False, frequency_ghz=460.0, n_scans=3,
                                        load_every=3, pwv_mm=0.7, tamb_step_k=5.0,
                                        elevation_start_deg=50.0, elevation_end_deg=25.0),
                     table=None)
    truth = zarr.open_group(str(truth_path_for(path)), mode="r")
    shipped = load_sky_table(shipped_sky_dir() / "sky_460.0.npz")
    assert truth.attrs["table_digest"] == shipped.digest
    default = load_default_table()
    for n, atm, res in _run(path, CalibrationConfig(min_transmission=0.0), default):
        assert atm.t_atm_source == "model(A, T_ground)"
        assert "sky table sky_460.0.npz" in atm.table_model
        ta = truth[scan_group_name(n)]["ta_star"][...]
        assert np.abs(res.spectra - ta).max() <= 1e-4 * ta.max()
        assert atm.pwv_mm[0, 0] == pytest.approx(0.7, rel=1e-3)
    zen = _run(path, CalibrationConfig(sky_model="zenith", min_transmission=0.0), default)
    worst = max(float(np.nanmax(np.abs(res.spectra - truth[scan_group_name(n)]["ta_star"][...])))
                for n, _, res in zen)
    assert worst > 0.02 * 2.0  # > 2 % of the 2 K line peak
