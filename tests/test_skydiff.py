"""SKYDIFF diagnostic (issue 14 item 3): the history rules, the simulated truth (noise-free
and with noise), L1 and the quick-look, configuration and CLI, and both orchestration modes
on a session with broken scans (the one test that runs the real snakemake)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from faults import missing_off, sky_hotter_than_hot_load

from calpipe import l1
from calpipe.config import CalibrationConfig
from calpipe.errors import ConfigError
from calpipe.l0 import open_session
from calpipe.physics import skydiff as sky
from calpipe.physics.skydiff import SkyHistory
from calpipe.pipeline import calibrate_store
from calpipe.simulate import truth_path_for
from calpipe.testing import analytic_table, copy_session, make_session

#: a tiny session: 6 scans (load, TP, OTF, load, TP, OTF), 32 channels, 2 dumps, 1 x 2 pixels;
#: one frontend/backend id for every subscan; the sky gets a standing wave growing with time
TINY = {"n_channels": 32, "n_dumps": 2, "n_receivers": 1, "n_arrays": 2,
        "frontend_backend": "SIM_FE", "sky_ripple_k_per_hour": 20.0}


@pytest.fixture(scope="module")
def ripple_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_session(tmp_path_factory.mktemp("skydiff") / "s.zarr", noise=False, **TINY)


@pytest.fixture(scope="module")
def ripple_l1(ripple_session: Path) -> Path:
    out = ripple_session.parent / "l1.zarr"
    result = calibrate_store(ripple_session, out, CalibrationConfig(skydiff=3),
                             table=analytic_table())
    assert not result.failures
    return out


def _truth_s_obs(session: Path) -> Any:
    """S_obs of OFF ``off`` of ``scan`` from the simulator's own quantities: T'_sky of the
    subscan + the ripple - T'_hot  [C] (or [C, R, A])."""
    truth = zarr.open_group(str(truth_path_for(session)), mode="r")
    t_hot = np.asarray(truth["t_hot_eff"][...])

    def s_obs(scan: int, off: int) -> np.ndarray:
        g = truth[f"scan_{scan:06d}"]
        tsky = np.asarray(g["t_sky_eff"][...])
        ripple = np.asarray(g["sky_ripple"][...]) if "sky_ripple" in g else 0.0
        return tsky[..., off] + ripple - t_hot

    return s_obs


def _history_chain(session: Path, config: CalibrationConfig) -> list[Any]:
    """resolve -> prepare -> skydiff over the science scans in order (in memory)."""
    from calpipe import stages

    s = open_session(session)
    history = SkyHistory.empty(config.skydiff)
    out = []
    for n in s.source_scans():
        data = s.load_scan(n)
        load = stages.resolve(data, s.load_calibration(n, data.meta.lloadsn), config)
        prepared = stages.prepare(data, config)
        history, diffs = stages.skydiff(load, prepared, stages.ScanGeometry.of(data), history,
                                        config)
        out.append((n, load, prepared, history, diffs))
    return out


# -- the history rules (pure numpy) ------------------------------------------------------------

def _obs(value: float, shape: tuple[int, int, int] = (3, 1, 2)) -> np.ndarray:
    return np.full(shape + (1,), value)


def test_history_rules_fifo_layouts_and_order() -> None:
    h = SkyHistory.empty(2)
    h, d = sky.update(h, 1, _obs(1.0), ["A"], np.array([0]), np.array([10.0]))
    assert d.n_diffs == 0 and d.diff.shape == (3, 1, 2, 0)  # the first OFF of a layout
    # two OFFs of one scan, given out of time order: the earlier one is "previous" for the later
    s2 = np.concatenate([_obs(5.0), _obs(3.0)], axis=-1)
    h, d = sky.update(h, 2, s2, ["A", "A"], np.array([4, 0]), np.array([21.0, 20.0]))
    assert d.current_off.tolist() == [0, 4, 4] and d.ref_off.tolist() == [0, 0, 0]
    assert d.ref_scan.tolist() == [1, 2, 1]  # most recent reference first
    assert np.allclose(d.diff[0, 0, 0], [3.0 - 1.0, 5.0 - 3.0, 5.0 - 1.0])
    assert len(h) == 2 and h.scan.tolist() == [2, 2]  # the FIFO keeps N = 2 of layout A
    # another layout (other pixel count, other key) is never mixed with A
    h, d = sky.update(h, 3, _obs(7.0, (3, 2, 2)), ["B"], np.array([0]), np.array([30.0]))
    h, d2 = sky.update(h, 3, _obs(7.0), ["C"], np.array([2]), np.array([31.0]))
    assert d.n_diffs == 0 and d2.n_diffs == 0 and sorted(set(h.keys.tolist())) == ["A", "B", "C"]
    h, d = sky.update(h, 4, _obs(9.0), ["A"], np.array([0]), np.array([40.0]))
    assert d.ref_scan.tolist() == [2, 2] and np.allclose(d.diff[0, 0, 0], [9 - 5, 9 - 3])
    assert h.entry(int(np.flatnonzero(h.keys == "B")[0])).shape == (3, 2, 2)


def test_layout_key_rounds_to_the_channel_width() -> None:
    nu = 230e9 + np.arange(8) * 1e6
    key = sky.layout_key(nu, 2, 4, "FE")
    assert sky.layout_key(nu + 0.3e6, 2, 4, "FE") == key  # < half a channel: same band
    assert sky.layout_key(nu + 1e6, 2, 4, "FE") != key
    assert sky.layout_key(nu[:7], 2, 4, "FE") != key
    assert sky.layout_key(nu, 2, 2, "FE") != key and sky.layout_key(nu, 2, 4, "X") != key


def test_observed_sky_is_nan_in_bad_channels() -> None:
    off = np.full((4, 1, 1, 2), 300.0)
    bad = np.zeros((4, 1, 1), bool)
    bad[1] = True
    s = sky.observed_sky(off, np.full((4, 1, 1), 500.0), np.full((4, 1, 1), 2.0), bad)
    assert np.isnan(s[1]).all() and np.allclose(s[[0, 2, 3]], -100.0)


# -- the simulated truth ---------------------------------------------------------------------

def test_noise_free_s_obs_and_diffs_recover_the_truth(ripple_session: Path,
                                                      ripple_l1: Path) -> None:
    truth = _truth_s_obs(ripple_session)
    chain = _history_chain(ripple_session, CalibrationConfig(skydiff=3))
    for n, _load, prepared, _h, diffs in chain:  # every S_obs entry: 1e-4 relative
        s = sky.observed_sky(prepared.off_mean, _load.c_hot, _load.gamma, _load.bad_channel)
        for k, off in enumerate(prepared.off_index.tolist()):
            expect = np.broadcast_to(np.asarray(truth(n, off))[:, None, None]
                                     if np.ndim(truth(n, off)) == 1 else truth(n, off),
                                     s.shape[:3])
            np.testing.assert_allclose(s[..., k], expect, rtol=1e-4)
        assert diffs.scan == n
    n_cross = 0
    for scan in l1.list_scans(ripple_l1):
        r = l1.read_scan(ripple_l1, scan)
        if r.skydiff is None:
            continue
        for k in range(r.skydiff.shape[-1]):
            want = (truth(int(r.skydiff_current_scan[k]), int(r.skydiff_current_off[k]))
                    - truth(int(r.skydiff_ref_scan[k]), int(r.skydiff_ref_off[k])))
            want = np.broadcast_to(np.asarray(want)[:, None, None], r.skydiff.shape[:3])
            scale = max(float(np.max(np.abs(want))), 1e-3)
            assert np.max(np.abs(r.skydiff[..., k] - want)) <= 1e-4 * scale, (scan, k)
            n_cross += int(r.skydiff_ref_scan[k] != scan)
            assert scale > 0.5 or r.skydiff_ref_scan[k] == scan  # a real change was seen
    assert n_cross >= 10


def test_noise_identical_skies_differ_by_zero_over_20_seeds(tmp_path: Path) -> None:
    """Within a TP scan the OFFs see the same sky: their SKYDIFF is noise only. The mean
    over channels, pixels and within-scan pairs, over 20 seeds, is within 3 standard errors
    of zero; the scatter matches the radiometer equation."""
    means, scatter = [], []
    config = CalibrationConfig(skydiff=2)
    for seed in range(20):
        path = make_session(tmp_path / f"s{seed}.zarr", seed=seed, n_scans=3, load_every=3,
                            modes=("tp",), n_channels=64, n_dumps=2, n_receivers=1,
                            n_arrays=2, frontend_backend="SIM_FE", write_truth=False)
        for _n, load, prepared, _h, d in _history_chain(path, config):
            same = d.ref_scan == d.current_scan
            x = d.diff[..., same][~load.bad_channel]
            means.append(float(np.mean(x)))
            # radiometer: var(S_obs) = (C_OFF / gamma)^2 / (dnu t_off) per OFF, two OFFs
            t_off = float(prepared.off_time_s[0])
            dnu = float(abs(np.diff(load.nu_sig)[0]))
            c_off = prepared.off_mean[..., 0] / load.gamma
            scatter.append(float(np.std(x) / np.sqrt(2 * np.mean(c_off ** 2) / (dnu * t_off))))
        shutil.rmtree(path)
    m = np.asarray(means)
    assert abs(m.mean()) < 3 * m.std(ddof=1) / np.sqrt(m.size), m
    assert 0.8 < float(np.median(scatter)) < 1.2, scatter


# -- L1, quick-look, configuration --------------------------------------------------------------

def test_l1_variables_coordinates_and_round_trip(ripple_session: Path, ripple_l1: Path) -> None:
    chain = {n: d for n, _l, _p, _h, d in _history_chain(ripple_session,
                                                         CalibrationConfig(skydiff=3))}
    first = l1.read_scan(ripple_l1, 1001)
    assert first.attrs["skydiff"]["depth"] == 3
    for scan in l1.list_scans(ripple_l1):
        r = l1.read_scan(ripple_l1, scan)
        d = chain[scan]
        assert r.attrs["skydiff"]["n_diffs"] == d.n_diffs
        if d.n_diffs == 0:
            assert r.skydiff is None
            continue
        r.check()
        np.testing.assert_array_equal(r.skydiff, d.diff.astype(np.float32))
        for name in ("current_scan", "current_off", "ref_scan", "ref_off"):
            np.testing.assert_array_equal(getattr(r, f"skydiff_{name}"), getattr(d, name))
        np.testing.assert_array_equal(r.skydiff_current_mjd, d.current_mjd)
        np.testing.assert_array_equal(r.skydiff_ref_mjd, d.ref_mjd)
    ds = l1.open_scan(ripple_l1, 1004)
    assert ds["skydiff"].dims == ("frequency", "pixel", "array", l1.DIM_SKYDIFF)
    assert ds["skydiff"].attrs["units"] == "K" and ds["skydiff"].attrs["skydiff_depth"] == 3
    assert "gamma" in ds["skydiff"].attrs["formula"]
    assert ds["skydiff_ref_mjd"].dtype.kind == "M"  # decoded to UTC times
    assert int(ds["skydiff_current_scan"][0]) == 1004


def test_skydiff_off_writes_nothing(ripple_session: Path, tmp_path: Path) -> None:
    out = tmp_path / "l1.zarr"
    calibrate_store(ripple_session, out, CalibrationConfig(), table=analytic_table(),
                    scans=[1001, 1002])
    group = l1.open_group(out, 1002)
    assert not any(k.startswith("skydiff") for k in group.array_keys())
    assert "skydiff" not in dict(group.attrs)
    assert l1.read_scan(out, 1002).skydiff is None
    from calpipe.quicklook import build_figure

    assert not any(ax.get_title().startswith("SKYDIFF")  # no SKYDIFF: no panel
                   for ax in build_figure(out, 1002).axes)


def test_quicklook_has_a_skydiff_panel(ripple_l1: Path) -> None:
    from calpipe.quicklook import build_figure

    panel = [ax for ax in build_figure(ripple_l1, 1004).axes
             if ax.get_title().startswith("SKYDIFF")]
    assert len(panel) == 1 and "N = 3" in panel[0].get_title()
    labels = [t.get_text() for t in panel[0].get_legend().get_texts()]
    r = l1.read_scan(ripple_l1, 1004)
    assert labels[0] == (f"scan 1004 OFF {r.skydiff_current_off[0]} - scan "
                         f"{r.skydiff_ref_scan[0]} OFF {r.skydiff_ref_off[0]}")
    assert len(labels) == r.skydiff.shape[-1]


@pytest.mark.parametrize("value", [-1, True, 1.5, "2"])
def test_config_rejects_bad_skydiff(value: Any) -> None:
    with pytest.raises(ConfigError, match="skydiff"):
        CalibrationConfig(skydiff=value)


def test_cli_skydiff_option(ripple_session: Path, tmp_path: Path) -> None:
    from calpipe import cli

    out = tmp_path / "l1.zarr"
    table = tmp_path / "t.npz"
    from calpipe.atmosphere.tableio import save_table

    save_table(analytic_table(), table)
    code = cli.main(["calibrate", str(ripple_session), str(out), "--skydiff", "1",
                     "--atmosphere-table", str(table), "--scans", "1001,1002", "-q"])
    assert code == 0
    r = l1.read_scan(out, 1002)
    assert r.attrs["skydiff"]["depth"] == 1 and r.skydiff is not None
    assert r.attrs["provenance"]["config"]["skydiff"] == 1
    assert set(r.skydiff_ref_scan.tolist()) <= {1001, 1002}  # the scans of this run only
    assert 1001 in r.skydiff_ref_scan.tolist()


def test_workflow_config_schema_and_stage_digest() -> None:
    import yaml

    from calpipe.workflow import calibration_config, stage_digest

    schema = yaml.safe_load((Path(__file__).parents[1] / "workflow" / "schemas"
                             / "config.schema.yaml").read_text())
    entry = schema["properties"]["calibration"]["properties"]["skydiff"]
    assert entry["type"] == "integer" and entry["minimum"] == 0 and entry["default"] == 0
    a, b = calibration_config({"skydiff": 2}), calibration_config({"skydiff": 3})
    assert stage_digest(a, "skydiff") != stage_digest(b, "skydiff")
    assert stage_digest(a, "atmosphere") == stage_digest(b, "atmosphere")


# -- both orchestration modes ----------------------------------------------------------------

def test_both_modes_identical_with_broken_scans(tmp_path: Path) -> None:
    """9 scans; 1002 has no OFF (fails in prepare: adds nothing to the history), 1004's OFFs
    are hotter than the hot load (fails in atmosphere: its OFFs are in the history), 1007 has
    a truncated ON chunk (the in-process full read fails; the workflow never reads its ONs
    before calibrate: both add its OFFs). Both modes write the same L1, skydiff included."""
    from calpipe.atmosphere.tableio import save_table
    from calpipe.testing import (
        assert_l1_equal,
        calibrate_both_modes,
        truncate_chunk,
    )

    store = copy_session(make_session(tmp_path / "pristine.zarr", n_scans=9, noise=True,
                                      modes=("tp",), **TINY), tmp_path / "s.zarr")
    missing_off(store, 1002)
    sky_hotter_than_hot_load(store, 1004)
    truncate_chunk(store, 1007, "source/data_5d", 1)  # one chunk per subscan: ON 1
    save_table(analytic_table(), tmp_path / "table.npz")
    section = {"skydiff": 2, "atmosphere_table": "table.npz"}
    inproc, wf = calibrate_both_modes(tmp_path, section)
    assert_l1_equal(inproc, wf)
    fails = {f["scan"]: f["stage"] for f in json.loads((inproc / "failures.json").read_text())}
    assert fails == {1002: "prepare", 1004: "atmosphere", 1007: "load"}
    assert json.loads((wf / "failures.json").read_text()) == json.loads(
        (inproc / "failures.json").read_text())
    refs = {s: set(l1.read_scan(inproc, s).skydiff_ref_scan.tolist())
            for s in l1.list_scans(inproc)}
    assert 1002 not in set().union(*refs.values())  # failed in prepare: never a reference
    assert 1004 in refs[1005] and 1007 in refs[1008]  # failed later: their OFFs count
    # a change to scan 1005 reruns the chain from 1005 on, and only those scans' calibrate
    os.utime(store / "scan_001005" / "zarr.json")  # its input stamp changes (file stats)
    stats = _dry_run_jobs(tmp_path)
    assert stats["skydiff"] == stats["calibrate"] == 3, stats  # 1005, 1007, 1008
    # SLURM: the profile's group "scan" cannot hold the chain; the documented override can
    slurm = ["--workflow-profile", str(Path(__file__).parents[1] / "profiles" / "slurm")]
    assert _dry_run_jobs(tmp_path, *slurm, *SLURM_SKYDIFF_GROUPS)["skydiff"] == 3
    # with skydiff 0 the skydiff rule is not in the DAG
    (tmp_path / "config.yaml").write_text(json.dumps(
        {"stores": {"s": "s.zarr"}, "report": False,
         "calibration": dict(section, skydiff=0)}))
    stats = _dry_run_jobs(tmp_path)
    assert stats.get("calibrate") == 6 and "skydiff" not in stats, stats


#: docs/workflow.md "SLURM": the grouping of profiles/slurm for runs with skydiff > 0
SLURM_SKYDIFF_GROUPS = ("--groups", "resolve=load", "prepare=load", "atmosphere=cal",
                        "calibrate=cal", "--group-components", "load=4", "cal=4")


def _dry_run_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Jobs per rule of ``snakemake -n`` (its job-count table)."""
    from calpipe.testing import run_snakemake

    dry = run_snakemake(workdir, "-n", "--cores", "1", *args)
    out = dry.stdout + dry.stderr
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", out, re.M)}


def test_a_skydiff_failure_fails_only_that_scan(ripple_session: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Not possible for valid inputs; if it happens (a bug), the scan fails in stage
    "skydiff" the runner's way, its OFFs are not in the history, and the run goes on."""
    from calpipe import pipeline

    real = pipeline.skydiff

    def broken(load: Any, *args: Any) -> Any:
        if load.scan == 1002:
            raise ValueError("injected")
        return real(load, *args)

    monkeypatch.setattr(pipeline, "skydiff", broken)
    out = tmp_path / "l1.zarr"
    result = calibrate_store(ripple_session, out, CalibrationConfig(skydiff=3),
                             table=analytic_table())
    assert [(f.scan, f.stage, f.error) for f in result.failures] == [
        (1002, "skydiff", "ValueError")]
    refs = set(l1.read_scan(out, 1004).skydiff_ref_scan.tolist())
    assert 1002 not in refs and 1001 in refs


def test_skydiff_is_a_data_variable_in_xarray(ripple_l1: Path) -> None:
    """Why the pair dimension is not called "skydiff" (docs/l1-format.md)."""
    import xarray as xr

    assert "skydiff" in l1.open_scan(ripple_l1, 1004).data_vars
    named = xr.Dataset({"skydiff": (("frequency", "skydiff"), np.zeros((2, 3)))})
    assert "skydiff" not in named.data_vars  # a variable named like its dimension


def test_a_scan_with_a_corrupt_on_chunk_still_contributes_in_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process loader repeats the workflow's partial reads after a failed full read
    (pipeline.skydiff_inputs); without them the scan's OFFs would be missing."""
    from calpipe import pipeline
    from calpipe.testing import truncate_chunk

    store = make_session(tmp_path / "s.zarr", n_scans=4, load_every=4, modes=("tp",),
                         noise=False, **TINY)
    truncate_chunk(store, 1002, "source/data_5d", 1)  # ON subscan 1 of scan 1002
    config = CalibrationConfig(skydiff=3)

    def refs_of_1003(out: Path) -> set[int]:
        result = calibrate_store(store, out, config, table=analytic_table())
        assert [(f.scan, f.stage) for f in result.failures] == [(1002, "load")]
        return set(l1.read_scan(out, 1003).skydiff_ref_scan.tolist())

    assert 1002 in refs_of_1003(tmp_path / "a.zarr")
    monkeypatch.setattr(pipeline, "skydiff_inputs", lambda *args: None)
    assert 1002 not in refs_of_1003(tmp_path / "b.zarr")


def test_calpipe_run_skydiff_writes_a_config_copy(tmp_path: Path) -> None:
    import yaml

    from calpipe.cli import _config_with

    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(
        {"stores": {"s": "s.zarr"}, "calibration": {"reference": "nearest"}}))
    out = _config_with(tmp_path, None, {"skydiff": 4})
    assert out == (tmp_path / "results" / "calpipe-run.config.yaml").resolve()
    assert yaml.safe_load(out.read_text()) == {
        "stores": {"s": "s.zarr"}, "calibration": {"reference": "nearest", "skydiff": 4}}
