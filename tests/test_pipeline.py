"""In-process pipeline: failure contract, L1 equality, prefetch overlap, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from calpipe import calibrate_single_scan, calibrate_store, l1, stages
from calpipe.config import CalibrationConfig
from calpipe.errors import StoreError
from calpipe.l0 import open_session, scan_group_name
from calpipe.physics.calibrate import calibrate_full
from calpipe.pipeline import output_lock
from calpipe.testing import analytic_table, make_session


def set_strings(store: Path, scan: int, path: str, values: list[str]) -> None:
    """Overwrite a string array of one scan (e.g. sobsmode) in place."""
    group = zarr.open_group(str(store / scan_group_name(scan)), mode="r+")
    arr = group[path]
    assert arr.shape == (len(values),)
    arr[...] = np.array(values, dtype=object)


@pytest.fixture
def session(tmp_path):
    return make_session(tmp_path / "session.zarr", table=analytic_table())


def run(store, out, **kw):
    return calibrate_store(store, out, CalibrationConfig(), table=analytic_table(), **kw)


def test_clean_session_exit_0_and_empty_failures(session, tmp_path):
    out = tmp_path / "l1.zarr"
    result = run(session, out)
    assert result.exit_code == 0
    assert [s.scan for s in result.successes] == [1001, 1002, 1004, 1005]
    assert json.loads((out / "failures.json").read_text()) == []
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["n_succeeded"] == 4 and summary["n_failed"] == 0
    assert set(summary["scans"][0]["timings_s"]) >= {"load", "resolve", "prepare",
                                                     "atmosphere", "calibrate", "write"}
    for n in l1.list_scans(out):
        ds = xr.open_zarr(str(out), group=scan_group_name(n), consolidated=False)
        assert ds["spectra"].dims == ("frequency", "time", "pixel", "array")
        assert ds["t_sys"].dims == ("frequency", "pixel", "array", "subscan")
        assert ds.attrs["scan_number"] == n
        prov = ds.attrs["provenance"]
        assert {"calpipe_version", "config_digest", "input_store", "atmosphere_table",
                "content_digest", "utc"} <= set(prov)
    assert zarr.open_group(str(out), mode="r").attrs["format"] == "calpipe-l1"


def test_two_broken_scans_are_recorded_and_the_rest_calibrated(session, tmp_path):
    # scan 1002 takes its loads from scan 1000: remove COLD there -> 1001 and 1002 both fail,
    # so break the own loads of a later block instead: 1004 uses 1003's loads.
    set_strings(session, 1003, "calibration/sobsmode", ["HOT", "HOT"])  # no COLD for 1004, 1005
    set_strings(session, 1001, "source/sobsmode", ["ON"] * 5)  # no OFF
    clean = run(make_session(tmp_path / "clean.zarr", table=analytic_table()),
                tmp_path / "clean_l1.zarr")
    out = tmp_path / "l1.zarr"
    result = run(session, out)
    assert result.exit_code == 2
    failures = json.loads((out / "failures.json").read_text())
    assert [(f["scan"], f["stage"], f["error"]) for f in failures] == [
        (1001, "prepare", "NoReferenceError"),
        (1004, "resolve", "MissingLoadError"),
        (1005, "resolve", "MissingLoadError"),
    ]
    assert "scan 1004" in failures[1]["message"] and "sobsmode" in failures[1]["message"]
    assert l1.list_scans(out) == [1002]
    good = l1.read_scan(out, 1002)
    ref = l1.read_scan(tmp_path / "clean_l1.zarr", 1002)
    np.testing.assert_array_equal(good.spectra, ref.spectra)
    assert clean.exit_code == 0


def test_all_broken_exit_1(session, tmp_path):
    for n in (1000, 1003):
        set_strings(session, n, "calibration/sobsmode", ["COLD", "COLD"])
    result = run(session, tmp_path / "l1.zarr")
    assert result.exit_code == 1
    assert len(result.failures) == 4 and not result.successes


def test_l1_equals_calibrate_full_on_the_same_inputs(session, tmp_path):
    out = tmp_path / "l1.zarr"
    run(session, out)
    config = CalibrationConfig()
    s = open_session(session)
    scan = s.load_scan(1002)
    cal = s.load_calibration(1002, scan.meta.lloadsn)
    load = stages.resolve(scan, cal, config)
    prepared = stages.prepare(scan, config)
    atm = stages.atmosphere(stages.ScanGeometry.of(scan), load, prepared, config,
                            analytic_table())
    direct = calibrate_full(scan.counts, prepared.on_index, prepared.c_ref, load.gamma,
                            load.bad_channel, load.w_s, load.f_eff, atm.tr_signal,
                            float(scan.meta.freq_res[0]), scan.meta.exptime[prepared.on_index],
                            ref_factor=prepared.reference_variance_factor(),
                            min_transmission=config.min_transmission)
    written = l1.read_scan(out, 1002)
    for name in ("spectra", "flags", "t_sys", "weight"):
        np.testing.assert_array_equal(getattr(written, name), getattr(direct, name))
    np.testing.assert_array_equal(written.t_rec, load.t_rec.astype(np.float32))
    assert written.attrs["pwv_mm"] == pytest.approx(float(atm.pwv_mm[0, 0]))


def test_single_scan_equals_store_run(session, tmp_path):
    run(session, tmp_path / "a.zarr")
    calibrate_single_scan(session, 1005, tmp_path / "b.zarr", table=analytic_table())
    a, b = l1.read_scan(tmp_path / "a.zarr", 1005), l1.read_scan(tmp_path / "b.zarr", 1005)
    for name in l1.DIMS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_prefetch_loads_next_scan_before_current_finishes(session, tmp_path):
    result = run(session, tmp_path / "l1.zarr")
    events = {(e, n): t for e, n, t in result.timeline}
    scans = [s.scan for s in result.successes]
    for cur, nxt in zip(scans, scans[1:], strict=False):
        assert events[("load_start", nxt)] < events[("process_end", cur)], (cur, nxt)


def test_at_most_two_scans_resident(session, tmp_path, monkeypatch):
    """Count the raw count buffers actually alive (weakref finalizers on every array the
    loader returns): never more than two scans' worth, and the prefetch does use two."""
    import threading
    import weakref

    from calpipe import pipeline

    lock = threading.Lock()
    alive = {"now": 0, "peak": 0, "loads": 0}
    n_scans = len(open_session(session).source_scans())

    def gone() -> None:
        with lock:
            alive["now"] -= 1

    real = pipeline.load_scan_and_calibration

    def tracked(sess, scan):
        data, cal = real(sess, scan)
        with lock:  # one scan = its source counts + its calibration counts
            alive["loads"] += 1
            alive["now"] += 1
            alive["peak"] = max(alive["peak"], alive["now"])
        # the scan counts as resident until BOTH of its buffers are freed
        pending = {"n": 2}

        def one_freed() -> None:
            pending["n"] -= 1
            if pending["n"] == 0:
                gone()

        weakref.finalize(data.counts, one_freed)
        weakref.finalize(cal.counts, one_freed)
        return data, cal

    def slow_resolve(*args, **kwargs):
        """Hold the scan until the prefetch has loaded the next one (or there is none), then
        a little longer: a prefetch allowed a third scan would load it meanwhile."""
        import time

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with lock:
                if alive["now"] >= 2 or alive["loads"] == n_scans:
                    break
            time.sleep(0.01)
        time.sleep(0.3)
        return real_resolve(*args, **kwargs)

    real_resolve = pipeline.resolve
    monkeypatch.setattr(pipeline, "load_scan_and_calibration", tracked)
    monkeypatch.setattr(pipeline, "resolve", slow_resolve)
    run(session, tmp_path / "l1.zarr")
    import gc

    gc.collect()  # a buffer only held by a reference cycle (e.g. a traceback) is freed here
    assert alive["now"] == 0
    assert alive["peak"] == 2


def test_rerun_is_bit_identical(session, tmp_path):
    run(session, tmp_path / "a.zarr")
    run(session, tmp_path / "b.zarr")
    for n in l1.list_scans(tmp_path / "a.zarr"):
        a, b = l1.read_scan(tmp_path / "a.zarr", n), l1.read_scan(tmp_path / "b.zarr", n)
        for name in l1.DIMS:
            if getattr(a, name) is None and getattr(b, name) is None:  # optional, absent
                continue
            assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
        # the attributes too, except the two docs/l1-format.md names: provenance.utc, timings_s
        attrs_a, attrs_b = json.loads(json.dumps(a.attrs)), json.loads(json.dumps(b.attrs))
        assert attrs_a.pop("timings_s") != {} and "timings_s" in attrs_b
        attrs_b.pop("timings_s")
        assert attrs_a["provenance"].pop("utc") and attrs_b["provenance"].pop("utc")
        assert attrs_a == attrs_b


def test_second_writer_is_refused(session, tmp_path):
    out = tmp_path / "l1.zarr"
    with output_lock(out):
        with pytest.raises(StoreError, match="another calpipe run"):
            run(session, out)


def test_kill_during_write_then_rerun_gives_complete_store(session, tmp_path):
    out = tmp_path / "l1.zarr"
    table_file = tmp_path / "table.npz"
    from calpipe.atmosphere.tableio import save_table

    save_table(analytic_table(), table_file)
    code = (
        "import sys, time\n"
        "import calpipe.l1 as l1\n"
        "orig = l1.write_scan\n"
        "def slow(path, result, extra):\n"
        "    if result.scan == 1004:\n"
        "        import zarr, numpy as np\n"
        "        orig_fsync = l1._fsync_tree\n"
        "        def hang(d):\n"
        "            print('WRITING', flush=True); time.sleep(60)\n"
        "        l1._fsync_tree = hang\n"
        "    return orig(path, result, extra)\n"
        "l1.write_scan = slow\n"
        "import calpipe.pipeline as p\n"
        "p.l1.write_scan = slow\n"
        "from calpipe import calibrate_store, CalibrationConfig\n"
        f"calibrate_store({str(session)!r}, {str(out)!r},"
        f" CalibrationConfig(atmosphere_table={str(table_file)!r}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "WRITING" in line
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert l1.list_scans(out) == [1001, 1002]  # 1004 was mid-write: not visible
    assert any(p.name.startswith(".partial-") for p in out.iterdir())
    result = calibrate_store(session, out, CalibrationConfig(atmosphere_table=str(table_file)))
    assert result.exit_code == 0
    assert l1.list_scans(out) == [1001, 1002, 1004, 1005]
    assert not any(p.name.startswith(".partial-") for p in out.iterdir())
    calibrate_store(session, tmp_path / "clean.zarr",
                    CalibrationConfig(atmosphere_table=str(table_file)))
    for n in l1.list_scans(out):
        a, b = l1.read_scan(out, n), l1.read_scan(tmp_path / "clean.zarr", n)
        for name in l1.DIMS:
            if getattr(a, name) is None and getattr(b, name) is None:  # optional, absent
                continue
            assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True)


def test_cli_exit_codes(session, tmp_path):
    from calpipe.atmosphere.tableio import save_table

    table_file = tmp_path / "table.npz"
    save_table(analytic_table(), table_file)
    exe = Path(sys.executable).parent / "calpipe"
    args = [str(exe), "calibrate", str(session), "--atmosphere-table", str(table_file)]
    ok = subprocess.run(args + [str(tmp_path / "a.zarr")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "all 4 scans calibrated" in ok.stdout
    set_strings(session, 1001, "source/sobsmode", ["ON"] * 5)
    partial = subprocess.run(args + [str(tmp_path / "b.zarr")], capture_output=True, text=True)
    assert partial.returncode == 2
    assert "1 of 4 scans failed" in partial.stdout
    assert "Traceback" not in partial.stderr
    bad = subprocess.run([str(exe), "calibrate", str(tmp_path / "nope.zarr"),
                          str(tmp_path / "c.zarr")], capture_output=True, text=True)
    assert bad.returncode == 1 and "does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_workflow_writers_share_the_lock_and_exclude_an_in_process_run(tmp_path):
    out = tmp_path / "l1.zarr"
    with output_lock(out, shared=True), output_lock(out, shared=True):  # two workflow jobs
        with pytest.raises(StoreError, match="a workflow job"):
            with output_lock(out):
                pass
    with output_lock(out):
        with pytest.raises(StoreError, match=r"another calpipe run \(pid \d+\)"):
            with output_lock(out, shared=True):
                pass
