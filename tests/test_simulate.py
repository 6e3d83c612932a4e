"""The simulator (calpipe.simulate, DESIGN 5, docs/simulation.md): determinism, the planned
layout, the forward model (noise-free counts reproduced from the truth store), noise, drift,
fill values, dead channels, the truth store, and the ``calpipe simulate`` command.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr

from calpipe.l0 import FILL_VALUE, scan_group_name
from calpipe.physics.radiometry import sideband_weighted
from calpipe.simulate import (
    MAX_COUNTS,
    SimulationConfig,
    plan_session,
    simulate_session,
    truth_path_for,
)
from calpipe.testing import make_session, small_config

DEAD_COUNTS = 1000  # what the simulator writes into dead channels


def arrays(path: Path) -> dict[str, np.ndarray]:
    root = zarr.open_group(str(path), mode="r")
    return {name: node[...] for name, node in root.members(max_depth=None)
            if isinstance(node, zarr.Array)}


def group_attrs(path: Path) -> dict[str, dict]:
    root = zarr.open_group(str(path), mode="r")
    out = {"": dict(root.attrs)}
    out.update({name: dict(node.attrs) for name, node in root.members(max_depth=None)
                if isinstance(node, zarr.Group)})
    return out


def assert_same_store(a: Path, b: Path) -> None:
    xa, xb = arrays(a), arrays(b)
    assert sorted(xa) == sorted(xb)
    for name in xa:
        assert xa[name].dtype == xb[name].dtype, name
        np.testing.assert_array_equal(xa[name], xb[name], err_msg=name)
    assert group_attrs(a) == group_attrs(b)


def science_scans(path: Path) -> list[int]:
    root = zarr.open_group(str(path), mode="r")
    return sorted(int(n[5:]) for n, g in root.groups() if "source" in g)


# -- determinism -------------------------------------------------------------------------------

def test_same_seed_gives_identical_stores(scratch, atm_table):
    opts = dict(seed=5, fill_fraction=0.2, dead_channels=1, gain_drift_per_hour=0.1, n_scans=3,
                own_calibration=(1,))
    a = make_session(scratch / "a.zarr", table=atm_table, **opts)
    b = make_session(scratch / "b.zarr", table=atm_table, **opts)
    assert len(arrays(a)) > 50
    assert_same_store(a, b)
    assert_same_store(truth_path_for(a), truth_path_for(b))


def test_different_seed_gives_different_noise(scratch, atm_table):
    a = make_session(scratch / "a.zarr", table=atm_table, seed=1, n_scans=3)
    b = make_session(scratch / "b.zarr", table=atm_table, seed=2, n_scans=3)
    xa, xb = arrays(a), arrays(b)
    assert sorted(xa) == sorted(xb)
    for name in xa:
        if name.endswith("data_5d"):
            assert np.mean(xa[name] != xb[name]) > 0.9, name  # noise differs nearly everywhere
        elif name.endswith(("/mjd", "/elevation", "/signal_freq")):
            np.testing.assert_array_equal(xa[name], xb[name], err_msg=name)


# -- layout ---------------------------------------------------------------------------------------

def test_default_plan():
    plans = plan_session(SimulationConfig())
    assert [p.scan for p in plans] == list(range(1000, 1012))
    kinds = [p.kind for p in plans]
    assert kinds.count("load") == 2 and kinds[0] == "load" and kinds[6] == "load"
    assert {"tp", "otf"} <= set(kinds)
    assert kinds[1:6] == ["tp", "otf", "tp", "otf", "tp"]
    for p in plans:
        last_load = max(q.scan for q in plans if q.kind == "load" and q.scan <= p.scan)
        assert p.load_scan == last_load
        assert not p.own_calibration
    els = [p.elevation_rad for p in plans]
    assert np.isclose(np.degrees(els[0]), 60) and np.isclose(np.degrees(els[-1]), 40)


def test_own_calibration_plan():
    plans = plan_session(small_config(own_calibration=(0, 2)))
    assert [p.own_calibration for p in plans] == [False, True, False, False, True, False]


@pytest.mark.parametrize(("changes", "message"), [
    ({"sideband": "ssb"}, "sideband"), ({"n_scans": 1}, "n_scans"),
    ({"load_every": 1}, "load_every"), ({"zarr_format": 4}, "zarr_format")])
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        replace(SimulationConfig(), **changes)


def test_refuses_to_overwrite(scratch, atm_table):
    cfg = small_config(n_scans=2, load_every=2, n_channels=16)
    simulate_session(scratch / "s.zarr", cfg, table=atm_table)
    with pytest.raises(FileExistsError):
        simulate_session(scratch / "s.zarr", cfg, table=atm_table)
    simulate_session(scratch / "s.zarr", cfg, table=atm_table, overwrite=True)


def test_no_truth(scratch, atm_table):
    out = scratch / "s.zarr"
    simulate_session(out, small_config(n_scans=2, load_every=2, n_channels=16,
                                       write_truth=False), table=atm_table)
    assert out.exists() and not truth_path_for(out).exists()
    assert truth_path_for(out).name == "s.truth.zarr"


def test_zarr_v2_output(scratch, atm_table):
    out = scratch / "s.zarr"
    simulate_session(out, small_config(n_scans=2, load_every=2, n_channels=16, zarr_format=2),
                     table=atm_table)
    assert (out / ".zgroup").exists() and (out / "scan_001001" / "source" / "data_5d"
                                           / ".zarray").exists()
    assert (truth_path_for(out) / ".zgroup").exists()


# -- counts and the forward model ---------------------------------------------------------------

@pytest.mark.parametrize("changes", [
    {},
    {"sideband": "2sb", "frequency_ghz": 690.0, "t_rec_k": 600.0, "thot_k": 350.0,
     "pwv_mm": 3.0, "line_peak_k": 50.0},
])
def test_counts_are_int32_without_overflow(scratch, atm_table, changes):
    path = make_session(scratch / "s.zarr", table=atm_table, n_scans=3, **changes)
    for name, values in arrays(path).items():
        if not name.endswith("data_5d"):
            continue
        assert values.dtype == np.int32, name
        valid = values[values != FILL_VALUE]
        assert valid.min() > 0, name
        assert valid.max() < MAX_COUNTS, name  # headroom below 2**31 - 1 for the noise


def _truth(path: Path):
    t = zarr.open_group(str(truth_path_for(path)), mode="r")
    w_s = t.attrs["gs_xs"] / (t.attrs["gs_xs"] + t.attrs["gi_xi"])
    return t, w_s


def _load_expected(path: Path, temperature: float) -> np.ndarray:
    t, w_s = _truth(path)
    t_eff = sideband_weighted(t["frequency_signal"][...], t["frequency_image"][...],
                              temperature, w_s)
    return t["gamma"][...] * (w_s * t["t_rec"][...] + t_eff[:, None, None])  # [C, R, A]


@pytest.fixture(scope="module")
def noise_free(tmp_path_factory, atm_table) -> Path:
    return make_session(tmp_path_factory.mktemp("nf") / "s.zarr", table=atm_table, noise=False,
                        fill_fraction=0.1, dead_channels=2, sideband="2sb")


def test_noise_free_counts_follow_the_forward_model(noise_free):
    t, w_s = _truth(noise_free)
    gamma, t_rec, dead = t["gamma"][...], t["t_rec"][...], t["dead"][...]
    f_eff = t.attrs["f_eff"]
    assert np.isclose(w_s, 0.95)
    root = zarr.open_group(str(noise_free), mode="r")
    checked_on = 0
    for scan in science_scans(noise_free):
        src = root[scan_group_name(scan)]["source"]
        counts = src["data_5d"][...].astype(np.float64)
        modes = list(src["sobsmode"][...])
        tg = t[scan_group_name(scan)]
        tsky, ta, tr = tg["t_sky_eff"][...], tg["ta_star"][...], tg["tr_signal"][...]
        assert tg.attrs["on_index"] == [s for s, m in enumerate(modes) if m.endswith("ON")]
        for s, mode in enumerate(modes):
            base = w_s * t_rec + tsky[:, s, None, None]  # [C, R, A]
            if mode.endswith("OFF"):
                expected = np.broadcast_to((gamma * base)[:, None], counts[..., s].shape)
            else:
                k = tg.attrs["on_index"].index(s)
                expected = gamma[:, None] * (base[:, None]
                                             + w_s * f_eff * tr[:, k, None, None, None]
                                             * ta[..., k])
                checked_on += 1
            good = ~np.broadcast_to(dead[:, None], expected.shape) & np.isfinite(expected)
            np.testing.assert_allclose(counts[..., s][good], np.rint(expected[good]),
                                       rtol=0, atol=1, err_msg=f"scan {scan} subscan {s}")
    assert checked_on >= 8


def test_noise_free_loads_follow_the_forward_model(noise_free):
    t, _ = _truth(noise_free)
    dead = t["dead"][...]
    root = zarr.open_group(str(noise_free), mode="r")
    cfg = SimulationConfig()
    for name in ("scan_001000", "scan_001003"):
        cal = root[name]["calibration"]
        assert list(cal["sobsmode"][...]) == ["HOT", "COLD"]
        counts = cal["data_5d"][...]
        for s, temp in enumerate((cfg.thot_k, cfg.tcold_k)):
            assert np.all(cal["thot"][...] == cfg.thot_k) and np.all(cal["tcold"][...] == 80)
            expected = np.rint(_load_expected(noise_free, temp))
            for d in range(counts.shape[1]):
                np.testing.assert_allclose(counts[:, d, :, :, s][~dead], expected[~dead],
                                           rtol=0, atol=1)


def test_noise_free_offs_and_loads_are_constant_over_dumps(noise_free):
    root = zarr.open_group(str(noise_free), mode="r")
    for name, group in root.groups():
        for part in ("source", "calibration"):
            if part not in group:
                continue
            g = group[part]
            counts = g["data_5d"][...]
            for s, mode in enumerate(g["sobsmode"][...]):
                if mode in ("OFF", "OTF-OFF", "HOT", "COLD"):
                    assert np.all(counts[..., s] == counts[:, :1, ..., s]), (name, part, s)


def test_radiometer_noise_level(scratch, atm_table):
    path = make_session(scratch / "s.zarr", table=atm_table, n_scans=3, n_dumps=8)
    cfg = small_config()
    expected = 1.0 / np.sqrt(cfg.freq_res_hz * cfg.exptime_s)
    root = zarr.open_group(str(path), mode="r")
    rel = []
    for group, part in ((root["scan_001000"], "calibration"), (root["scan_001001"], "source")):
        g = group[part]
        counts = g["data_5d"][...].astype(np.float64)
        for s, mode in enumerate(g["sobsmode"][...]):
            if mode in ("OFF", "HOT", "COLD"):
                c = counts[..., s]
                rel.append(np.mean(np.var(c, axis=1, ddof=1) / np.mean(c, axis=1) ** 2))
    measured = np.sqrt(np.mean(rel))
    assert measured == pytest.approx(expected, rel=0.05)


def test_gain_drift(scratch, atm_table):
    drift = 0.5  # per hour
    path = make_session(scratch / "s.zarr", table=atm_table, noise=False, n_scans=3,
                        gain_drift_per_hour=drift)
    cfg = small_config()
    g = zarr.open_group(str(path), mode="r")["scan_001002/source"]
    counts = g["data_5d"][...].astype(np.float64)
    mjd = g["mjd"][...]
    load_start = cfg.mjd_start  # scan 1000, the load scan of 1002
    s = 4  # the last OFF
    times = mjd[s] + (np.arange(cfg.n_dumps) + 0.5) * cfg.exptime_s / 86400
    factor = 1 + drift * (times - load_start) * 24
    ratio = counts[:, -1, :, :, s] / counts[:, 0, :, :, s]
    np.testing.assert_allclose(ratio, factor[-1] / factor[0], rtol=1e-8)
    assert factor[-1] / factor[0] > 1 + 1e-5


# -- fill values, dead channels -------------------------------------------------------------------

def test_fill_values_and_dead_channels(small_session, small_session_kwargs):
    t = zarr.open_group(str(truth_path_for(small_session)), mode="r")
    dead = t["dead"][...]
    assert dead.dtype == bool
    np.testing.assert_array_equal(dead.sum(axis=0), small_session_kwargs["dead_channels"])
    root = zarr.open_group(str(small_session), mode="r")
    n_fill = n_spectra = 0
    for name, group in root.groups():
        for part in ("source", "calibration"):
            if part not in group:
                continue
            g = group[part]
            counts = g["data_5d"][...]
            modes = list(g["sobsmode"][...])
            fill = counts == FILL_VALUE
            # fill replaces whole dump spectra, and only of ON subscans
            np.testing.assert_array_equal(fill.all(axis=0), fill.any(axis=0))
            for s, mode in enumerate(modes):
                if mode.endswith("ON"):
                    n_fill += int(fill[0, ..., s].sum())
                    n_spectra += fill[0, ..., s].size
                else:
                    assert not fill[..., s].any(), (name, mode)
            # dead channels: constant counts everywhere (so HOT == COLD there)
            dead_counts = counts[np.broadcast_to(dead[:, None, :, :, None], counts.shape)
                                 & ~fill]
            assert np.all(dead_counts == DEAD_COUNTS), (name, part)
            assert np.all(counts[~np.broadcast_to(dead[:, None, :, :, None], counts.shape)]
                          != DEAD_COUNTS)
            if part == "source":
                ta = t[name]["ta_star"][...]
                on = t[name].attrs["on_index"]
                np.testing.assert_array_equal(np.isnan(ta), fill[..., on])
    fraction = n_fill / n_spectra
    assert 0.03 < fraction < 0.2, fraction  # configured 0.1


def test_fill_fraction(scratch, atm_table):
    # many dumps, few channels: ~1000 ON dump spectra, so the fraction is measured to ~1 %
    path = make_session(scratch / "s.zarr", table=atm_table, n_scans=3, n_dumps=64,
                        n_channels=16, fill_fraction=0.1, line_width_channels=2.0)
    n_fill = n_spectra = 0
    root = zarr.open_group(str(path), mode="r")
    for scan in science_scans(path):
        src = root[scan_group_name(scan)]["source"]
        fill = src["data_5d"][0] == FILL_VALUE  # [D, R, A, S]
        on = [s for s, m in enumerate(src["sobsmode"][...]) if m.endswith("ON")]
        n_fill += int(fill[..., on].sum())
        n_spectra += fill[..., on].size
    assert n_spectra >= 1000
    assert n_fill / n_spectra == pytest.approx(0.1, abs=0.03)


def test_no_fill_no_dead_by_default(scratch, atm_table):
    path = make_session(scratch / "s.zarr", table=atm_table, n_scans=3)
    t = zarr.open_group(str(truth_path_for(path)), mode="r")
    assert not t["dead"][...].any()
    for name, values in arrays(path).items():
        if name.endswith("data_5d"):
            assert not np.any(values == FILL_VALUE) and not np.any(values == DEAD_COUNTS)


# -- truth store --------------------------------------------------------------------------------

def test_truth_store_contents(small_session, atm_table):
    t = zarr.open_group(str(truth_path_for(small_session)), mode="r")
    root = zarr.open_group(str(small_session), mode="r")
    cfg_dict = json.loads(t.attrs["simulation"])
    cfg_dict["modes"] = tuple(cfg_dict["modes"])
    cfg_dict["own_calibration"] = tuple(cfg_dict["own_calibration"])
    cfg = SimulationConfig(**cfg_dict)
    assert t.attrs["simulation"] == root.attrs["simulation"]
    assert t.attrs["pwv_mm"] == cfg.pwv_mm
    assert (t.attrs["gs_xs"], t.attrs["gi_xi"], t.attrs["f_eff"]) == (0.5, 0.5, 0.95)
    assert t.attrs["table_digest"] == atm_table.digest
    assert t.attrs["table_model"] == atm_table.model
    c, r, a = cfg.n_channels, cfg.n_receivers, cfg.n_arrays
    for name in ("t_rec", "gamma", "dead"):
        assert t[name].shape == (c, r, a)
        assert t[name].metadata.dimension_names == ("C", "R", "A")
    assert t["frequency_signal"].shape == t["frequency_image"].shape == (c,)
    t_rec = t["t_rec"][...]
    assert np.all(t_rec >= cfg.t_rec_k) and np.all(t_rec < 2 * cfg.t_rec_k)
    assert sorted(n for n, _ in t.groups()) == [scan_group_name(s) for s in (1001, 1002, 1004,
                                                                            1005)]
    for name, tg in t.groups():
        src = root[name]["source"]
        modes = list(src["sobsmode"][...])
        on = [s for s, m in enumerate(modes) if m.endswith("ON")]
        assert tg.attrs["on_index"] == on
        assert tg.attrs["kind"] == {"TP": "tp", "OTF": "otf"}[root[name].attrs["instmode"]]
        assert tg.attrs["load_scan"] == int(src["lloadsn"][0])
        assert np.isclose(tg.attrs["elevation_rad"], src["elevation"][0])
        assert tg["ta_star"].shape == src["data_5d"].shape[:4] + (len(on),)
        assert tg["tr_signal"].shape == (c, len(on))
        assert tg["t_sky_eff"].shape == (c, len(modes))
        tr = tg["tr_signal"][...]
        assert np.all((tr > 0) & (tr < 1))
        tsky = tg["t_sky_eff"][...]
        assert np.all((tsky > 0) & (tsky < cfg.tamb_k))
        peak = np.nanmax(tg["ta_star"][...])
        assert cfg.line_peak_k * 0.5 < peak <= cfg.line_peak_k * 1.1 + 1e-9


# -- the command line ---------------------------------------------------------------------------

def _calpipe() -> list[str]:
    exe = Path(sys.executable).parent / "calpipe"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "calpipe.cli"]


@pytest.fixture(scope="module")
def cli_session(tmp_path_factory, atm_table_file) -> Iterator[Path]:
    """``calpipe simulate`` with the default session size, run once; removed afterwards."""
    out = tmp_path_factory.mktemp("cli") / "OUT.zarr"
    cmd = _calpipe() + ["simulate", str(out), "--n-channels", "2048", "--n-receivers", "2",
                        "--n-arrays", "4", "--atmosphere-table", str(atm_table_file)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - t0
    print(f"\ncalpipe simulate (12 scans, 2048 ch, 2 x 4 pixels): {elapsed:.2f} s")
    assert proc.returncode == 0, proc.stderr
    assert "12 scans (2 load scans, 10 science)" in proc.stdout
    yield out
    shutil.rmtree(out.parent, ignore_errors=True)


def test_cli_writes_a_12_scan_session(cli_session):
    root = zarr.open_group(str(cli_session), mode="r")
    names = sorted(n for n, _ in root.groups())
    assert names == [scan_group_name(s) for s in range(1000, 1012)]
    assert truth_path_for(cli_session).exists()
    loads = [1000, 1006]
    kinds = set()
    for scan in range(1000, 1012):
        g = root[scan_group_name(scan)]
        if scan in loads:
            assert "source" not in g and "calibration" in g  # calibration-only
            assert g.attrs["instmode"] == "CAL"
            continue
        assert "source" in g and "calibration" not in g
        src = g["source"]
        assert src["data_5d"].shape == (2048, 10, 2, 4, 5)
        assert src["data_5d"].dtype == np.int32
        last_load = max(x for x in loads if x < scan)
        assert set(src["lloadsn"][...].tolist()) == {last_load}
        kinds.add(g.attrs["instmode"])
        modes = list(src["sobsmode"][...])
        if g.attrs["instmode"] == "TP":
            assert modes == ["OFF", "ON", "OFF", "ON", "OFF"]
            assert src["otf_lon"].shape == (5,)
        else:
            assert modes == ["OTF-OFF"] + ["OTF-ON"] * 3 + ["OTF-OFF"]
            assert src["otf_lon"].shape == (10, 5) and np.any(src["otf_lon"][...] != 0)
    assert kinds == {"TP", "OTF"}


def test_cli_refuses_to_overwrite(cli_session, capsys):
    from calpipe.cli import main

    assert main(["simulate", str(cli_session), "--n-scans", "2"]) == 1
    assert "exists" in capsys.readouterr().err
    assert len(list(zarr.open_group(str(cli_session), mode="r").groups())) == 12


def test_cli_with_shipped_table(scratch):
    from calpipe.atmosphere.tableio import default_table_path

    if not default_table_path().exists():
        pytest.skip("the shipped atmosphere table is not built yet")
    out = scratch / "s.zarr"
    proc = subprocess.run(_calpipe() + ["simulate", str(out), "--n-channels", "64",
                                        "--n-scans", "3", "--load-every", "3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    t = zarr.open_group(str(truth_path_for(out)), mode="r")
    assert t.attrs["table_model"] != "analytic-test"
