"""Tests of the atmosphere-table subsystem (calpipe.atmosphere)."""

from __future__ import annotations

import numpy as np
import pytest

from calpipe.atmosphere import (
    T_CMB,
    AtmosphereTable,
    default_table_path,
    from_linear_form,
    load_default_table,
    load_linear_table,
    load_table,
    planck_j,
    planck_j_inverse,
    save_table,
)
from calpipe.errors import AtmosphereError, CalibrationError, ConfigError


def _toy_table(with_tatm: bool = True) -> AtmosphereTable:
    """Smooth synthetic table: tau = c(nu) P^2 + b(nu) P pwv + a pwv^2, T_atm smooth in ln pwv."""
    f = np.linspace(200e9, 300e9, 101)
    w = np.geomspace(0.02, 12.0, 16)
    p = np.geomspace(140.0, 820.0, 8)
    ff = f[None, None, :] / 1e11
    ww = w[None, :, None]
    pp = p[:, None, None] / 500.0
    tau = 0.02 * ff**2 * pp**2 + 0.05 * ff * pp * ww + 0.002 * ww**2
    tatm = 250.0 + 5.0 * np.log(ww) * pp + 0.1 * ff + 0.0 * tau if with_tatm else None
    return AtmosphereTable(f, w, p, tau, tatm, "toy", {"note": "test"})


def _sky(f: np.ndarray, tau: np.ndarray, tatm: np.ndarray, airmass: float) -> np.ndarray:
    tr = np.exp(-tau * airmass)
    return planck_j(f, tatm) * (1 - tr) + planck_j(f, T_CMB) * tr


# ---------------------------------------------------------------- interface


def test_planck_j_roundtrip_and_rj_limit() -> None:
    f = np.array([80e9, 345e9, 1.2e12])
    t = np.array([3.0, 100.0, 290.0])
    assert np.allclose(planck_j_inverse(f, planck_j(f, t)), t, rtol=1e-13)
    # J -> T - x/2 + x^2/(12 T), x = h nu / k, for h nu << k T
    x = 6.62607015e-34 * 1e9 / 1.380649e-23
    assert planck_j(1e9, 300.0) == pytest.approx(300.0 - x / 2 + x**2 / 3600.0, rel=1e-12)


def test_slab_shape_and_node_values() -> None:
    tab = _toy_table()
    f = np.array([[210e9, 250e9, 299e9], [200e9, 300e9, 255.5e9]])
    slab = tab.slab(f, tab.pressure_hpa[3])
    tau, tatm = slab.evaluate(tab.pwv_mm[5])
    assert tau.shape == f.shape and tatm is not None and tatm.shape == f.shape
    # on a frequency node, pressure node and pwv node: exact
    t2, a2 = tab.slab(np.array([tab.frequency_hz[40]]), tab.pressure_hpa[3]).evaluate(
        tab.pwv_mm[5])
    assert t2[0] == pytest.approx(tab.tau[3, 5, 40], rel=1e-12)
    assert a2 is not None and a2[0] == pytest.approx(tab.t_atm[3, 5, 40], rel=1e-12)
    assert slab.pwv_range == (tab.pwv_mm[0], tab.pwv_mm[-1])
    # scalar frequency keeps shape ()
    ts, _ = tab.slab(np.float64(250e9), 500.0).evaluate(1.0)
    assert np.shape(ts) == ()


def test_interpolation_accuracy_on_smooth_function() -> None:
    tab = _toy_table()
    f = np.array([205.3e9, 277.77e9])
    p, w = 433.0, 0.777
    tau, tatm = tab.slab(f, p).evaluate(w)
    ff, pp = f / 1e11, p / 500.0
    exact = 0.02 * ff**2 * pp**2 + 0.05 * ff * pp * w + 0.002 * w**2
    assert np.allclose(tau, exact, rtol=2e-3)
    assert tatm is not None
    assert np.allclose(tatm, 250.0 + 5.0 * np.log(w) * pp + 0.1 * ff, atol=2e-3)


@pytest.mark.parametrize(
    "freq, pres, match",
    [
        (np.array([250e9, 310e9]), 500.0, "310.000000 GHz"),
        (np.array([150e9]), 500.0, "150.000000 GHz"),
        (np.array([250e9]), 900.0, "900 hPa"),
        (np.array([250e9]), 100.0, "100 hPa"),
        (np.array([np.nan]), 500.0, "non-finite"),
    ],
)
def test_out_of_range_raises_atmosphere_error(freq: np.ndarray, pres: float, match: str) -> None:
    tab = _toy_table()
    with pytest.raises(AtmosphereError, match=match) as ei:
        tab.slab(freq, pres)
    assert isinstance(ei.value, CalibrationError)


def test_pwv_out_of_range_raises() -> None:
    slab = _toy_table().slab(np.array([250e9]), 500.0)
    with pytest.raises(AtmosphereError, match="pwv 0.001 mm"):
        slab.evaluate(0.001)
    with pytest.raises(AtmosphereError, match="pwv 13 mm"):
        slab.derivative(13.0)
    slab.evaluate(12.0)  # the end nodes themselves are inside
    slab.evaluate(0.02)


def test_derivative_matches_finite_difference() -> None:
    tab = _toy_table()
    slab = tab.slab(np.linspace(201e9, 299e9, 7), 612.0)
    for w in (0.03, 0.5, 1.37, 7.9):
        dtau, dtatm = slab.derivative(w)
        h = w * 1e-6
        tp, ap = slab.evaluate(w + h)
        tm, am_ = slab.evaluate(w - h)
        assert np.allclose(dtau, (tp - tm) / (2 * h), rtol=1e-5, atol=1e-10)
        assert dtatm is not None and ap is not None and am_ is not None
        assert np.allclose(dtatm, (ap - am_) / (2 * h), rtol=1e-5, atol=1e-8)


def test_linear_form_exact() -> None:
    f = np.linspace(80e9, 1200e9, 50)
    p = np.array([300.0, 550.0])
    b = np.vstack([0.01 + f / 1e13, 0.02 + f / 1e13])
    c = np.vstack([0.005 + f / 1e14, 0.01 + f / 1e14])
    tab = from_linear_form(f, p, b, c)
    assert tab.t_atm is None and tab.model == "ccat-linear"
    slab = tab.slab(f, 550.0)
    for w in (0.001, 0.013, 0.5, 2.345, 9.99, 20.0):
        tau, tatm = slab.evaluate(w)
        assert tatm is None
        assert np.allclose(tau, b[1] * w + c[1], rtol=1e-12, atol=1e-15)
        dtau, dt = slab.derivative(w)
        assert dt is None and np.allclose(dtau, b[1], rtol=1e-10)
    # between frequency channels: linear in frequency too
    fm = 0.5 * (f[3] + f[4])
    tau, _ = tab.slab(np.array([fm]), 300.0).evaluate(1.5)
    assert tau[0] == pytest.approx(0.5 * (b[0, 3] + b[0, 4]) * 1.5 + 0.5 * (c[0, 3] + c[0, 4]))


def test_linear_form_single_layer_1d() -> None:
    f = np.array([100e9, 200e9])
    tab = from_linear_form(f, 550.0, np.array([0.1, 0.2]), np.array([0.01, 0.02]))
    tau, _ = tab.slab(np.array([150e9]), 550.0).evaluate(2.0)
    assert tau[0] == pytest.approx(0.15 * 2.0 + 0.015)
    with pytest.raises(AtmosphereError, match="hPa"):
        tab.slab(f, 600.0)
    with pytest.raises(ConfigError):
        from_linear_form(f, 550.0, np.array([0.1]), np.array([0.01, 0.02]))


def test_save_load_roundtrip_keeps_digest(tmp_path) -> None:
    tab = _toy_table()
    path = tmp_path / "t.npz"
    save_table(tab, path)
    back = load_table(path)
    # float32 on disk: the digest changes once, then is stable
    path2 = tmp_path / "t2.npz"
    save_table(back, path2)
    again = load_table(path2)
    assert back.digest == again.digest
    assert back.model == "toy" and back.meta["note"] == "test"
    assert np.allclose(back.tau, tab.tau, rtol=1e-6)
    assert back.t_atm is not None and np.allclose(back.t_atm, tab.t_atm, rtol=1e-6)
    # float64 round trip keeps the original digest
    save_table(tab, path, dtype="float64")
    assert load_table(path).digest == tab.digest
    # linear table without t_atm
    lin = from_linear_form([1e11, 2e11], 500.0, [0.1, 0.2], [0.01, 0.02])
    save_table(lin, path, dtype="float64")
    lb = load_table(path)
    assert lb.t_atm is None and lb.digest == lin.digest
    assert not list(tmp_path.glob(".*.tmp"))


def test_digest_depends_on_content() -> None:
    a = _toy_table()
    b = AtmosphereTable(a.frequency_hz, a.pwv_mm, a.pressure_hpa, a.tau * (1 + 1e-9), a.t_atm,
                        a.model, a.meta)
    c = AtmosphereTable(a.frequency_hz, a.pwv_mm, a.pressure_hpa, a.tau, a.t_atm, "other", a.meta)
    assert len({a.digest, b.digest, c.digest}) == 3
    assert len(a.digest) == 64


def test_load_errors_are_config_errors(tmp_path) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(ConfigError, match="nope.npz"):
        load_table(missing)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ConfigError, match="junk.npz"):
        load_table(junk)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    with pytest.raises(ConfigError, match="missing keys"):
        load_table(other)
    # corrupt payload -> digest mismatch
    tab = _toy_table()
    good = tmp_path / "good.npz"
    save_table(tab, good)
    with np.load(good) as z:
        d = {k: z[k] for k in z.files}
    d["tau"] = d["tau"] * 1.01
    bad = tmp_path / "bad.npz"
    np.savez(bad, **d)
    with pytest.raises(ConfigError, match="digest mismatch"):
        load_table(bad)
    with pytest.raises(ConfigError):
        AtmosphereTable(tab.frequency_hz[::-1], tab.pwv_mm, tab.pressure_hpa, tab.tau, None, "x",
                        {})


def test_load_linear_csv_and_npz(tmp_path) -> None:
    csv = tmp_path / "lin.csv"
    csv.write_text(
        "# CCAT linear table\n"
        "pressure_hpa,freq_ghz,b,c\n"
        "550,300,0.10,0.010\n550,200,0.05,0.005\n"
        "600,200,0.06,0.006\n600,300,0.12,0.012\n"
    )
    tab = load_linear_table(csv)
    assert list(tab.pressure_hpa) == [550.0, 600.0]
    tau, tatm = tab.slab(np.array([250e9]), 550.0).evaluate(1.0)
    assert tatm is None and tau[0] == pytest.approx(0.075 + 0.0075)
    one = tmp_path / "one.csv"
    one.write_text("# pressure_hpa = 555\nfreq_ghz b c\n100 0.01 0.001\n200 0.02 0.002\n")
    t1 = load_linear_table(one)
    assert t1.pressure_hpa.tolist() == [555.0]
    npz = tmp_path / "lin.npz"
    np.savez(npz, freq_ghz=[100.0, 200.0], pressure_hpa=[500.0], b=[[0.01, 0.02]],
             c=[[0.001, 0.002]])
    t2 = load_linear_table(npz)
    assert t2.slab(np.array([150e9]), 500.0).evaluate(2.0)[0][0] == pytest.approx(0.0315)
    bad = tmp_path / "bad.csv"
    bad.write_text("freq_ghz,b\n100,0.1\n")
    with pytest.raises(ConfigError, match="bad.csv"):
        load_linear_table(bad)
    nop = tmp_path / "nop.csv"
    nop.write_text("freq_ghz,b,c\n100,0.1,0.01\n")
    with pytest.raises(ConfigError, match="pressure"):
        load_linear_table(nop)


# ---------------------------------------------------------------- shipped table


def test_default_table_loads_and_covers_requirements() -> None:
    assert default_table_path().is_file()
    tab = load_default_table()
    assert load_default_table() is tab  # cached
    assert tab.frequency_hz[0] <= 80e9 and tab.frequency_hz[-1] >= 1200e9
    assert np.max(np.diff(tab.frequency_hz)) <= 50e6 * (1 + 1e-9)
    assert tab.pressure_hpa[0] <= 150.0 and tab.pressure_hpa[-1] >= 800.0
    assert tab.pwv_mm[0] <= 0.05 and tab.pwv_mm[-1] >= 8.0
    assert tab.t_atm is not None
    assert tab.model.startswith("am ")
    assert "command_line" in tab.meta and tab.meta["command_line"].startswith("calpipe atm-table")
    assert default_table_path().stat().st_size < 21e6


# (frequency GHz, pwv mm, ground pressure hPa): off-node points in windows and line wings,
# away from narrow stratospheric lines (CO, O3), which 50 MHz channels do not resolve
_CHECK_POINTS = [
    (86.123, 0.37, 612.0),
    (231.9, 1.13, 552.0),
    (344.2, 0.71, 480.0),
    (492.161, 0.23, 560.0),
    (807.3, 0.43, 545.0),
]


@pytest.mark.parametrize("point", [
    pytest.param(pt, marks=[] if k == 0 else [pytest.mark.slow]) for k, pt in
    enumerate(_CHECK_POINTS)])
def test_shipped_table_matches_direct_am(point: tuple[float, float, float]) -> None:
    """An independent path (am run directly) against the shipped table: one point in
    `make test` (about 15 s of am), every point with -m slow (issue 17: 104 s unmarked)."""
    pytest.importorskip("am")
    from calpipe.atmosphere.am_builder import direct_model

    tab = load_default_table()
    for fg, w, p in [point]:
        f = np.array([fg * 1e9])
        tau_d, tatm_d, tb_d = direct_model(f, w, p)
        tau_t, tatm_t = tab.slab(f, p).evaluate(w)
        assert tatm_t is not None
        sky_t = _sky(f, tau_t, tatm_t, 1.0)
        sky_d = planck_j(f, tb_d)
        # direct T_atm reproduces am's zenith J(Tb) exactly (definition)
        assert np.allclose(_sky(f, tau_d, tatm_d, 1.0), sky_d, atol=1e-9)
        assert abs(sky_t[0] - sky_d[0]) < 0.1, (fg, w, p, sky_t, sky_d)
        assert abs(tau_t[0] - tau_d[0]) < 0.01 * tau_d[0] + 1e-4


@pytest.mark.slow
def test_tiny_build_and_direct_model(tmp_path) -> None:
    pytest.importorskip("am")
    from calpipe.atmosphere.am_builder import build_table, direct_model, main, standard_profile

    amc = standard_profile(550.0)
    assert "Nscale h2o %5" in amc and amc.count("layer") > 10
    tab = build_table(230.0, 230.2, 50.0, [0.5, 1.0, 2.0], [500.0, 600.0], workers=1,
                      progress=False)
    assert tab.tau.shape == (2, 3, 5)
    assert np.allclose(tab.frequency_hz, np.arange(230.0, 230.21, 0.05) * 1e9)
    assert tab.t_atm is not None and np.all((tab.t_atm > 200) & (tab.t_atm < 300))
    assert np.all(np.diff(tab.tau, axis=1) > 0)  # more water, more opacity
    tau_d, tatm_d, _ = direct_model(np.array([230.1e9]), 1.0, 600.0)
    assert tau_d[0] == pytest.approx(tab.tau[1, 1, 2], rel=1e-6)
    assert tatm_d[0] == pytest.approx(tab.t_atm[1, 1, 2], rel=1e-6)
    out = tmp_path / "tiny.npz"
    assert main([str(out), "--fmin", "345", "--fmax", "345.05", "--pwv-nodes", "2",
                 "--pressures", "550", "--workers", "1", "-q"]) == 0
    t2 = load_table(out)
    assert t2.tau.shape == (1, 2, 2) and "atm-table build" in t2.meta["command_line"]
