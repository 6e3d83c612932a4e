"""Reliability and security (issue 6; DESIGN 2.3, 4, 6 "Robustness"), in both modes.

- In-process table: every ``calpipe.faults.SCAN_FAULTS`` entry alone on a copy of
  ``tiny_session`` (scans 1001 TP with own loads, 1002 OTF and 1003 TP on the loads of 1000):
  the failure record (scan, stage, error class, message naming scan, array and problem), the
  other scans bit-identical to a clean run, no partial / stray L1 group, no hang.
- Shared session: one larger session with ONE fault per scan (every class at once, plus group
  names that are not ``scan_`` + digits), calibrated once by the CLI ``calpipe calibrate``
  (in-process mode, checked for tracebacks) and once by the Snakemake workflow; every scan's
  outcome is checked in both modes and the two failures.json files must agree word for word.
- Store-level damage: exit 1 with a clear message, in both modes.
- Crash safety: kill -9 during an L1 write and during a stage artifact (Snakemake), and during
  an L1 write in-process (across two real processes, with the output lock); rerun; compare.
- Reproducibility and provenance; concurrency; security (no code from data, no path from data).

Processes are hung at a chosen point by a ``sitecustomize`` hook put on PYTHONPATH (see
``HOOK``): it reaches the Snakemake jobs, which are separate Python processes.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tokenize
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zarr
from faults import (
    HOSTILE_ATTRIBUTES,
    HUGE_ATTRIBUTE_BYTES,
    NESTED_GROUP,
    ODD_GROUP_NAMES,
    SCAN_FAULTS,
    STORE_FAULTS,
    ScanFault,
    odd_group_names,
    pickle_codec,
    pickle_marker,
)

import calpipe
from calpipe import l1
from calpipe import workflow as cw
from calpipe.atmosphere.table import AtmosphereTable
from calpipe.atmosphere.tableio import load_table, save_table
from calpipe.config import CalibrationConfig
from calpipe.l0 import open_session, parse_scan_group, scan_group_name
from calpipe.pipeline import FAILURES_FILE, LOCK_FILE, SUMMARY_FILE, calibrate_store
from calpipe.testing import copy_session, make_session

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CALPIPE = str(BIN / "calpipe")
SNAKEMAKE = str(BIN / "snakemake")
SNAKEFILE = REPO / "workflow" / "Snakefile"
PROFILE = REPO / "profiles" / "default"
RUN_TIMEOUT = 120.0  # one in-process run of a small session (seconds)
SNAKEMAKE_TIMEOUT = 600.0
TINY_SCIENCE = [1001, 1002, 1003]
#: attributes allowed to differ between two runs on the same inputs
VOLATILE_ATTRS = ("timings_s",)
VOLATILE_PROVENANCE = ("utc", "mode")  # "mode" is only written by the Snakemake rule
PWNED = (Path("/tmp/calpipe-pwned"), Path("/tmp/calpipe-escape"))


# -- helpers ----------------------------------------------------------------------------------

def bounded(fn: Callable[..., Any], *args: Any, timeout: float = RUN_TIMEOUT, **kw: Any) -> Any:
    """``fn(*args, **kw)`` in a daemon thread: a hang fails the test instead of the suite."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kw)
        except BaseException as exc:  # re-raised in the test thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{fn.__name__} did not finish within {timeout} s (hang)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def l1_arrays(out: Path, scan: int) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(out / scan_group_name(scan)), mode="r")
    return {name: np.asarray(group[name][...]) for name in group.array_keys()}


def l1_attrs(out: Path, scan: int) -> dict[str, Any]:
    return dict(zarr.open_group(str(out / scan_group_name(scan)), mode="r").attrs)


def assert_scans_equal(out: Path, ref: Path, scans: list[int]) -> None:
    """Every L1 array of ``scans`` identical (dtype, shape, values; NaN == NaN)."""
    for scan in scans:
        a, b = l1_arrays(out, scan), l1_arrays(ref, scan)
        assert sorted(a) == sorted(b), scan
        for name, x in a.items():
            y = b[name]
            assert x.dtype == y.dtype and x.shape == y.shape, (scan, name)
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), (scan, name)


def stable_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes without the volatile ones (timings, provenance utc / mode)."""
    out = {k: v for k, v in attrs.items() if k not in VOLATILE_ATTRS}
    out["provenance"] = {k: v for k, v in attrs["provenance"].items()
                         if k not in VOLATILE_PROVENANCE}
    return out


def assert_clean_layout(out: Path, scans: list[int]) -> None:
    """Exactly the groups of ``scans``, complete; no partial group; nothing unexpected."""
    assert l1.list_scans(out) == sorted(scans)
    names = {p.name for p in out.iterdir()}
    assert not [n for n in names if n.startswith(l1.PARTIAL_PREFIX)], names
    allowed = {"zarr.json", FAILURES_FILE, SUMMARY_FILE, LOCK_FILE}
    assert names - allowed == {scan_group_name(s) for s in scans}, names


def check_failure(row: dict[str, Any], scan: int, fault: ScanFault) -> None:
    """One failures.json row against the fault's promised outcome."""
    expected = fault.expected
    assert expected is not None
    assert (row["scan"], row["stage"], row["error"]) == (scan, expected.stage, expected.error), \
        (fault.name, row)
    message = row["message"]
    assert f"scan {scan}" in message, (fault.name, message)
    assert expected.array in message, (fault.name, message)
    assert expected.problem.lower() in message.lower(), (fault.name, message)


def victim_for(fault: ScanFault) -> int:
    """The scan of tiny_session to break: load faults need the own loads of 1001."""
    return 1001 if fault.needs_own_calibration else 1002


def run_cli(store: Path, out: Path, table: Path, *extra: str, timeout: float = RUN_TIMEOUT,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CALPIPE, "calibrate", str(store), str(out), "--atmosphere-table",
                           str(table), *extra], capture_output=True, text=True,
                          timeout=timeout, env=env)


def write_workflow_config(wd: Path, store: Path, table: Path) -> Path:
    wd.mkdir(parents=True, exist_ok=True)
    config = {"stores": {"s": str(store)}, "calibration": {"atmosphere_table": str(table)}}
    (wd / "config.yaml").write_text(yaml.safe_dump(config))
    return wd


def snakemake_cmd(wd: Path, *args: str) -> list[str]:
    return [SNAKEMAKE, "--snakefile", str(SNAKEFILE), "--directory", str(wd), "--configfile",
            str(wd / "config.yaml"), "--workflow-profile", str(PROFILE), *args]


def snakemake(wd: Path, *args: str, check: bool = True, timeout: float = SNAKEMAKE_TIMEOUT,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(snakemake_cmd(wd, *args), cwd=wd, capture_output=True, text=True,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def workflow_config(table: Path) -> CalibrationConfig:
    """The CalibrationConfig the workflow builds from write_workflow_config's section."""
    return cw.calibration_config({"atmosphere_table": str(table)})


# -- the hang hook ------------------------------------------------------------------------------

HOOK = '''"""tests/test_reliability.py: hang a calpipe process at a chosen point, to kill it there.

CALPIPE_TEST_HANG = "write:<group>": inside the L1 write of that group (arrays written and
fsynced, before the publishing rename); "artifact:<dir>/<file>": half-way through writing that
stage artifact (a temporary file holds half the bytes). The process writes its pid to
CALPIPE_TEST_MARKER, sleeps, and exits without going on (in case a kill missed it).
"""
import os

_SPEC = os.environ.get("CALPIPE_TEST_HANG", "")
if _SPEC:
    import time
    from pathlib import Path

    def _hang(where):
        Path(os.environ["CALPIPE_TEST_MARKER"]).write_text(f"{os.getpid()} {where}\\n")
        time.sleep(120)
        os._exit(3)

    _KIND, _, _TARGET = _SPEC.partition(":")
    if _KIND == "write":
        import calpipe.l1 as _l1

        _orig_fsync = _l1._fsync_tree

        def _fsync_tree(directory):
            _orig_fsync(directory)
            if _TARGET in Path(directory).name:
                _hang(directory)

        _l1._fsync_tree = _fsync_tree
    elif _KIND == "artifact":
        import io
        import tempfile

        import calpipe.artifacts as _art

        _orig_write = _art.atomic_write_bytes

        def atomic_write_bytes(path, write):
            p = Path(path)
            if f"{p.parent.name}/{p.name}" == _TARGET:
                buf = io.BytesIO()
                write(buf)
                data = buf.getvalue()
                fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
                os.write(fd, data[: len(data) // 2])
                os.close(fd)
                _hang(tmp)
            return _orig_write(path, write)

        _art.atomic_write_bytes = atomic_write_bytes
'''


@pytest.fixture(scope="module")
def hook_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hook")
    (path / "sitecustomize.py").write_text(HOOK)
    return path


def hang_env(hook_dir: Path, spec: str, marker: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook_dir), env.get("PYTHONPATH")]))
    env["CALPIPE_TEST_HANG"] = spec
    env["CALPIPE_TEST_MARKER"] = str(marker)
    return env


def wait_for_marker(marker: Path, proc: subprocess.Popen[Any], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert proc.poll() is None, f"the run ended ({proc.returncode}) before the hang point"
        assert time.monotonic() < deadline, "the hang point was never reached"
        time.sleep(0.05)


def kill_tree(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL the process group we started (start_new_session=True): the run + its jobs."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


# -- sessions and reference runs --------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_ref(tiny_session: Path, atm_table: AtmosphereTable,
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean in-process run of tiny_session (the reference for every table test)."""
    out = tmp_path_factory.mktemp("tiny_ref") / "l1.zarr"
    result = calibrate_store(tiny_session, out, CalibrationConfig(), table=atm_table)
    assert result.exit_code == 0 and l1.list_scans(out) == TINY_SCIENCE
    return out


@dataclass(frozen=True)
class Mini:
    """A two-science-scan session (1001 TP with own loads, 1002 OTF on 1000's loads), its
    table file and a clean Snakemake run of it (the crash / reproducibility reference)."""

    root: Path
    store: Path
    table: Path
    wd: Path

    @property
    def l1(self) -> Path:
        return self.wd / "results/s/l1.zarr"


MINI_SCIENCE = [1001, 1002]


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory, atm_table: AtmosphereTable,
         small_session_kwargs: dict[str, Any]) -> Mini:
    root = tmp_path_factory.mktemp("mini")
    store = make_session(root / "mini.zarr", table=atm_table, n_scans=3, load_every=3,
                         **small_session_kwargs)
    save_table(atm_table, root / "table.npz")
    wd = write_workflow_config(root / "ref", store, root / "table.npz")
    snakemake(wd, "--cores", "2")
    return Mini(root, store, root / "table.npz", wd)


# == 1. the fault table, in process ============================================================

@pytest.mark.parametrize("name", list(SCAN_FAULTS))
def test_scan_fault_in_process(name: str, broken_session: Path, tiny_ref: Path,
                               atm_table: AtmosphereTable, scratch: Path) -> None:
    fault = SCAN_FAULTS[name]
    victim = victim_for(fault)
    fault.inject(broken_session, victim)
    out = scratch / "l1.zarr"
    result = bounded(calibrate_store, broken_session, out, CalibrationConfig(), table=atm_table)
    rows = json.loads((out / FAILURES_FILE).read_text())
    if fault.expected is None:  # benign: the scan calibrates as in a clean run
        assert rows == [] and result.exit_code == 0
        good = TINY_SCIENCE
    else:
        assert len(rows) == 1, rows
        check_failure(rows[0], victim, fault)
        assert result.exit_code == 2
        good = [s for s in TINY_SCIENCE if s != victim]
    assert [s.scan for s in result.successes] == good
    assert_clean_layout(out, good)
    assert_scans_equal(out, tiny_ref, good)
    assert not pickle_marker(broken_session).exists()


def test_every_fault_is_distinct_and_documented() -> None:
    """The registry and docs/reliability.md agree: every class has a row in the doc."""
    doc = (REPO / "docs" / "reliability.md").read_text()
    for name, fault in SCAN_FAULTS.items():
        assert fault.doc, name
        assert f"`{name}`" in doc, f"{name} is not in docs/reliability.md"
    for name in STORE_FAULTS:
        assert f"`{name}`" in doc, f"{name} is not in docs/reliability.md"


def test_fault_injector_refuses_a_shared_load_scan(broken_session: Path) -> None:
    with pytest.raises(ValueError, match="no calibration/ group of its own"):
        SCAN_FAULTS["missing_hot"].inject(broken_session, 1002)


def test_huge_attribute_costs_bounded_memory(broken_session: Path, scratch: Path,
                                             atm_table_file: Path) -> None:
    """Peak RSS of `calpipe calibrate` with a 50 MB attribute on one scan, versus without."""

    def peak_mb(store: Path, out: Path) -> float:
        proc = subprocess.Popen([CALPIPE, "-q", "calibrate", str(store), str(out),
                                 "--atmosphere-table", str(atm_table_file)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        timer = threading.Timer(RUN_TIMEOUT, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        assert os.waitstatus_to_exitcode(status) == 0
        return usage.ru_maxrss / 1024

    clean = peak_mb(broken_session, scratch / "clean.zarr")
    SCAN_FAULTS["huge_attribute"].inject(broken_session, 1002)
    huge = peak_mb(broken_session, scratch / "huge.zarr")
    print(f"\npeak RSS: clean {clean:.0f} MB, with a 50 MB attribute {huge:.0f} MB")
    assert huge - clean < 4 * HUGE_ATTRIBUTE_BYTES / 2**20
    # the attribute is not copied into L1
    assert (scratch / "huge.zarr" / "scan_001002" / "zarr.json").stat().st_size < 1 << 20
    assert_scans_equal(scratch / "huge.zarr", scratch / "clean.zarr", TINY_SCIENCE)


# == 2. one fault per scan of one larger session, in both modes ================================

N_CLEAN = 2  # clean science scans at the end, on the shared loads of scan 1000


@dataclass(frozen=True)
class Shared:
    root: Path
    store: Path  # the broken session
    table: Path
    clean_l1: Path  # in-process run of the unbroken session
    victims: dict[int, str]  # scan -> fault name
    clean: list[int]  # scans without a fault

    @property
    def science(self) -> list[int]:
        return sorted([*self.victims, *self.clean])

    @property
    def good(self) -> list[int]:
        return sorted([*self.clean, *(s for s, n in self.victims.items()
                                      if SCAN_FAULTS[n].expected is None)])


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, atm_table: AtmosphereTable,
           small_session_kwargs: dict[str, Any]) -> Shared:
    root = tmp_path_factory.mktemp("shared")
    n_faults = len(SCAN_FAULTS)
    n_scans = 1 + n_faults + N_CLEAN
    options = {**small_session_kwargs, "own_calibration": tuple(range(n_faults))}
    pristine = make_session(root / "pristine.zarr", table=atm_table, n_scans=n_scans,
                            load_every=n_scans, **options)
    save_table(atm_table, root / "table.npz")
    science = open_session(pristine).source_scans()
    victims = dict(zip(science, SCAN_FAULTS, strict=False))
    clean = science[n_faults:]
    # the clean reference of every scan that must calibrate (the others are not compared)
    must_pass = sorted([*clean, *(s for s, n in victims.items()
                                  if SCAN_FAULTS[n].expected is None)])
    clean_l1 = root / "clean_l1.zarr"
    result = calibrate_store(pristine, clean_l1, workflow_config(root / "table.npz"),
                             scans=must_pass)
    assert result.exit_code == 0 and l1.list_scans(clean_l1) == must_pass
    store = copy_session(pristine, root / "s.zarr")
    odd_group_names(store, template_scan=clean[0])
    for scan, name in victims.items():
        SCAN_FAULTS[name].inject(store, scan)
    return Shared(root, store, root / "table.npz", clean_l1, victims, clean)


@pytest.fixture(scope="module")
def shared_cli(shared: Shared) -> subprocess.CompletedProcess[str]:
    return run_cli(shared.store, shared.root / "cli_l1.zarr", shared.table)


@pytest.fixture(scope="module")
def shared_snakemake(shared: Shared) -> tuple[subprocess.CompletedProcess[str], Path]:
    wd = write_workflow_config(shared.root / "wf", shared.store, shared.table)
    t0 = time.perf_counter()
    proc = snakemake(wd, "--cores", "2")
    print(f"\nshared session, Snakemake --cores 2: {time.perf_counter() - t0:.1f} s "
          f"({len(shared.science)} scans)")
    return proc, wd


def check_shared_rows(rows: list[dict[str, Any]], shared: Shared) -> None:
    failed = {s: n for s, n in shared.victims.items() if SCAN_FAULTS[n].expected is not None}
    assert [r["scan"] for r in rows] == sorted(failed)
    for row in rows:
        check_failure(row, row["scan"], SCAN_FAULTS[failed[row["scan"]]])


def test_shared_session_in_process_cli(shared: Shared,
                                       shared_cli: subprocess.CompletedProcess[str]) -> None:
    out = shared.root / "cli_l1.zarr"
    assert shared_cli.returncode == 2, shared_cli.stderr[-3000:]
    assert "Traceback" not in shared_cli.stderr
    rows = json.loads((out / FAILURES_FILE).read_text())
    check_shared_rows(rows, shared)
    assert_clean_layout(out, shared.good)
    assert_scans_equal(out, shared.clean_l1, shared.good)
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert sorted(summary["ignored_groups"]) == sorted(ODD_GROUP_NAMES)
    assert (summary["n_failed"], summary["n_succeeded"]) == (len(rows), len(shared.good))


def test_shared_session_snakemake(
        shared: Shared, shared_snakemake: tuple[subprocess.CompletedProcess[str], Path],
        shared_cli: subprocess.CompletedProcess[str]) -> None:
    proc, wd = shared_snakemake
    assert "Traceback" not in proc.stdout + proc.stderr
    out = wd / "results/s/l1.zarr"
    rows = json.loads((wd / "results/s/l1.zarr/failures.json").read_text())
    check_shared_rows(rows, shared)
    # parity: the in-process run recorded the same failures, word for word
    assert rows == json.loads((shared.root / "cli_l1.zarr" / FAILURES_FILE).read_text())
    assert_clean_layout(out, shared.good)
    assert_scans_equal(out, shared.clean_l1, shared.good)
    summary = json.loads((wd / "results/run_summary.json").read_text())
    assert (summary["exit_code"], summary["n_failed"]) == (2, len(rows))
    manifest = json.loads((wd / "results/s/manifest.json").read_text())
    assert sorted(manifest["ignored_groups"]) == sorted(ODD_GROUP_NAMES)
    assert manifest["scans"] == [cw.scan_id(s) for s in shared.science]
    status = sorted(p.name for p in (wd / "results/s/status").iterdir())
    assert status == [f"{cw.scan_id(s)}.json" for s in shared.science]
    # nothing was written outside the working directory's results/ tree
    assert sorted(p.name for p in (wd / "results").iterdir()) == [
        "failures.json", "logs", "run_summary.json", "s"]
    assert sorted(p.name for p in wd.iterdir() if not p.name.startswith(".")) == [
        "config.yaml", "results"]


def test_shared_session_huge_attribute_job_memory(
        shared: Shared, shared_snakemake: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """The Snakemake jobs of the scan with the 50 MB attribute stay within bounds, and the
    other scans' jobs do not pay for it (the store listing does not parse scan metadata)."""
    _, wd = shared_snakemake
    huge = next(s for s, n in shared.victims.items() if n == "huge_attribute")

    def max_rss(rule: str, scan: int) -> float:
        lines = (wd / f"results/s/benchmarks/{rule}/{cw.scan_id(scan)}.tsv").read_text()
        header, values = (line.split("\t") for line in lines.strip().splitlines()[:2])
        return float(values[header.index("max_rss")])

    for rule in ("resolve", "prepare", "calibrate"):
        others = [max_rss(rule, s) for s in shared.clean]
        extra = max_rss(rule, huge) - max(others)
        print(f"\n{rule}: max RSS {max(others):.0f} MB, with a 50 MB attribute +{extra:.0f} MB")
        assert extra < 4 * HUGE_ATTRIBUTE_BYTES / 2**20, (rule, extra)


def test_shared_session_paths_stay_inside(shared: Shared,
                                          shared_cli: subprocess.CompletedProcess[str]) -> None:
    """Odd group names ('scan_..', '..scan_1', nested, non-ASCII digits) and hostile attribute
    values never become paths: the run's parent directory holds only what the test made."""
    assert sorted(p.name for p in shared.root.iterdir()) == sorted([
        "pristine.zarr", "pristine.truth.zarr", "table.npz", "clean_l1.zarr", "s.zarr",
        "cli_l1.zarr", *(["wf"] if (shared.root / "wf").exists() else [])])
    for path in PWNED:
        assert not path.exists()
    hostile = next(s for s, n in shared.victims.items() if n == "hostile_attributes")
    attrs = l1_attrs(shared.root / "cli_l1.zarr", hostile)
    assert attrs["scan_number"] == hostile  # from the group name, not the attribute
    assert attrs["source"] == HOSTILE_ATTRIBUTES["source"]  # kept as inert text
    assert attrs["passthrough"]["obs_id"] == HOSTILE_ATTRIBUTES["obs_id"]


# == 3. store-level damage: a clear fatal error, exit 1, in both modes ==========================

@pytest.mark.parametrize("name", [n for n, f in STORE_FAULTS.items() if f.fatal])
def test_fatal_store_fault_both_modes(name: str, broken_session: Path, scratch: Path,
                                      atm_table_file: Path) -> None:
    fault = STORE_FAULTS[name]
    fault.inject(broken_session)
    out = scratch / "l1.zarr"
    cli = run_cli(broken_session, out, atm_table_file)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert fault.message in cli.stderr and "Traceback" not in cli.stderr
    assert not out.exists()
    wd = write_workflow_config(scratch / "wf", broken_session, atm_table_file)
    proc = snakemake(wd, "--cores", "2", check=False, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "StoreError" in output and fault.message in output, output
    assert "Traceback" not in output
    assert not (wd / "results/s/l1.zarr").exists()


def test_odd_group_names_are_ignored_not_fatal(broken_session: Path) -> None:
    created = odd_group_names(broken_session)
    assert (broken_session / NESTED_GROUP / "source" / "data_5d").is_dir()
    session = open_session(broken_session)
    assert session.scans() == [1000, *TINY_SCIENCE]
    assert sorted(session.ignored_groups) == sorted(created)


# == 4. crash safety ============================================================================

def test_snakemake_kill_during_l1_write_then_second_run_refused_then_rerun(
        mini: Mini, hook_dir: Path, scratch: Path) -> None:
    """kill -9 of the whole Snakemake tree while scan 1002's L1 group is being written; while
    it hangs, a second snakemake on the same directory is refused (Snakemake's lock)."""
    wd = write_workflow_config(scratch / "wd", mini.store, mini.table)
    marker = scratch / "marker"
    env = hang_env(hook_dir, "write:scan_001002", marker)
    proc = subprocess.Popen(snakemake_cmd(wd, "--cores", "2"), cwd=wd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for_marker(marker, proc)
        second = snakemake(wd, "--cores", "1", check=False, timeout=120)
        assert second.returncode != 0
        assert "cannot be locked" in second.stdout + second.stderr
    finally:
        kill_tree(proc)
    out = wd / "results/s/l1.zarr"
    assert 1002 not in l1.list_scans(out)  # mid-write: invisible
    assert any(p.name.startswith(".partial-scan_001002") for p in out.iterdir())
    snakemake(wd, "--unlock")
    snakemake(wd, "--cores", "2")
    assert_clean_layout(out, MINI_SCIENCE)
    assert_scans_equal(out, mini.l1, MINI_SCIENCE)
    assert json.loads((wd / "results/failures.json").read_text()) == []


def test_snakemake_kill_during_stage_artifact_then_rerun(mini: Mini, hook_dir: Path,
                                                         scratch: Path) -> None:
    """kill -9 half-way through writing scan 1001's atmosphere checkpoint (.npz)."""
    wd = write_workflow_config(scratch / "wd", mini.store, mini.table)
    marker = scratch / "marker"
    env = hang_env(hook_dir, "artifact:001001/atmosphere.npz", marker)
    proc = subprocess.Popen(snakemake_cmd(wd, "--cores", "2"), cwd=wd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for_marker(marker, proc)
    finally:
        kill_tree(proc)
    work = wd / "results/s/work/001001"
    assert not (work / "atmosphere.npz").exists()  # only the half-written temporary file
    assert list(work.glob(".atmosphere.npz.*.tmp"))
    snakemake(wd, "--unlock")
    snakemake(wd, "--cores", "2")
    out = wd / "results/s/l1.zarr"
    assert_clean_layout(out, MINI_SCIENCE)
    assert_scans_equal(out, mini.l1, MINI_SCIENCE)


def test_in_process_lock_across_processes_then_kill_and_rerun(
        mini: Mini, hook_dir: Path, scratch: Path) -> None:
    """Two real `calpipe calibrate` processes on one output: the second is refused with a
    clear message while the first hangs in an L1 write; the first is then killed (-9) and a
    rerun completes the store, identical to a clean run."""
    out = scratch / "l1.zarr"
    marker = scratch / "marker"
    env = hang_env(hook_dir, "write:scan_001002", marker)
    first = subprocess.Popen([CALPIPE, "-q", "calibrate", str(mini.store), str(out),
                              "--atmosphere-table", str(mini.table)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        wait_for_marker(marker, first)
        second = run_cli(mini.store, out, mini.table)
        assert second.returncode == 1
        assert f"another calpipe run (pid {first.pid}) is writing" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        kill_tree(first)
    assert l1.list_scans(out) == [1001]
    rerun = run_cli(mini.store, out, mini.table)
    assert rerun.returncode == 0, rerun.stderr
    assert_clean_layout(out, MINI_SCIENCE)
    assert_scans_equal(out, mini.l1, MINI_SCIENCE)


# == 5. reproducibility and provenance ==========================================================

def check_provenance(attrs: dict[str, Any], store: Path, scan: int, table: Path) -> None:
    """Provenance names the input (path + content digest), version, config and table."""
    prov = attrs["provenance"]
    session = open_session(store)
    data = session.load_scan(scan)
    cal = session.load_calibration(scan, data.meta.lloadsn)
    assert prov["input_store"] == str(store.resolve())
    assert prov["content_digest"] == {"scan": data.content_digest,
                                      "calibration": cal.content_digest,
                                      "calibration_scan": cal.scan}
    assert prov["calpipe_version"] == calpipe.__version__
    assert prov["config_digest"] == workflow_config(table).digest
    assert prov["atmosphere_table"]["digest"] == load_table(table).digest
    assert prov["utc"]


def test_snakemake_rerun_is_bit_identical_and_provenance(mini: Mini, scratch: Path) -> None:
    wd = write_workflow_config(scratch / "again", mini.store, mini.table)
    snakemake(wd, "--cores", "2")
    out = wd / "results/s/l1.zarr"
    assert_scans_equal(out, mini.l1, MINI_SCIENCE)
    inproc = scratch / "inproc.zarr"
    calibrate_store(mini.store, inproc, workflow_config(mini.table))
    assert_scans_equal(inproc, mini.l1, MINI_SCIENCE)
    for scan in MINI_SCIENCE:
        a, b, c = l1_attrs(out, scan), l1_attrs(mini.l1, scan), l1_attrs(inproc, scan)
        assert stable_attrs(a) == stable_attrs(b) == stable_attrs(c)
        for attrs in (a, b, c):
            check_provenance(attrs, mini.store, scan, mini.table)


def test_content_digest_changes_with_the_input(mini: Mini, scratch: Path) -> None:
    """The provenance digest identifies the data: one changed count changes it."""
    store = copy_session(mini.store, scratch / "changed.zarr")
    arr = zarr.open_array(str(store / "scan_001002/source/data_5d"), mode="r+")
    arr[0, 0, 0, 0, 1] = int(arr[0, 0, 0, 0, 1]) + 1
    before = open_session(mini.store).load_scan(1002).content_digest
    assert open_session(store).load_scan(1002).content_digest != before


# == 6. security ================================================================================

BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve"}
BANNED_CALLS = {"eval", "exec", "compile", "__import__"}


def banned_constructs(source: str) -> list[str]:
    """Code (not strings or comments) that could run data: pickle & co, eval / exec / compile,
    ``allow_pickle=True``, ``yaml.load`` / ``unsafe_load``, ``shell=True``, ``os.system``."""
    toks = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
            if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT,
                              tokenize.INDENT, tokenize.DEDENT)]
    hits = []
    for i, tok in enumerate(toks):
        if tok.type != tokenize.NAME:
            continue
        prev = toks[i - 1].string if i else ""
        nxt = toks[i + 1].string if i + 1 < len(toks) else ""
        nxt2 = toks[i + 2].string if i + 2 < len(toks) else ""
        where = f"line {tok.start[0]}: {tok.line.strip()}"
        if tok.string in BANNED_MODULES and prev != ".":
            hits.append(where)
        elif tok.string in BANNED_CALLS and nxt == "(" and prev != ".":
            hits.append(where)
        elif tok.string in ("allow_pickle", "shell") and nxt == "=" and nxt2 == "True":
            hits.append(where)
        elif prev == "." and toks[i - 2].string == "yaml" and tok.string in (
                "load", "unsafe_load", "full_load", "load_all", "unsafe_load_all"):
            hits.append(where)
        elif prev == "." and toks[i - 2].string == "os" and tok.string in ("system", "popen"):
            hits.append(where)
    return hits


def test_banned_constructs_detector_can_fail() -> None:
    bad = ("import pickle\nx = eval('1')\nnp.load(f, allow_pickle=True)\nyaml.load(s)\n"
           "subprocess.run(c, shell=True)\nos.system('x')\nexec(code)\n")
    assert len(banned_constructs(bad)) == 7
    ok = ("p = re.compile('x')\ns = 'eval(1) pickle'\n# exec(x)\nnp.load(f, allow_pickle=False)\n"
          "yaml.safe_load(s)\nself.eval(x)\n")
    assert banned_constructs(ok) == []


def test_library_never_unpickles_or_evaluates() -> None:
    files = sorted((REPO / "calpipe").rglob("*.py")) + sorted((REPO / "workflow").rglob("*.py"))
    assert len(files) > 20
    found = {str(f.relative_to(REPO)): hits for f in files
             if (hits := banned_constructs(f.read_text()))}
    assert found == {}
    for smk in [REPO / "workflow/Snakefile", *(REPO / "workflow/rules").glob("*.smk")]:
        text = smk.read_text()
        for word in ("pickle", "eval(", "exec(", "allow_pickle=True", "shell=True"):
            assert word not in text, (smk.name, word)


@pytest.mark.parametrize("fmt", [3, 2])
def test_pickle_codec_is_never_unpickled(fmt: int, tiny_session: Path, scratch: Path,
                                         atm_table: AtmosphereTable,
                                         small_session_kwargs: dict[str, Any]) -> None:
    """An array whose codec is pickle (v3 numcodecs.pickle, v2 pickle filter) holding a pickle
    program that would create a directory: the scan fails, nothing is unpickled."""
    if fmt == 3:
        store = copy_session(tiny_session, scratch / "s.zarr")
    else:
        store = make_session(scratch / "s.zarr", table=atm_table, n_scans=4, load_every=4,
                             zarr_format=2, **small_session_kwargs)
    pickle_codec(store, 1002)
    result = bounded(calibrate_store, store, scratch / "l1.zarr", CalibrationConfig(),
                     table=atm_table)
    assert [(f.scan, f.error) for f in result.failures] == [(1002, "L0FormatError")]
    assert "source/sobsmode" in result.failures[0].message
    assert not pickle_marker(store).exists()
    assert l1.list_scans(scratch / "l1.zarr") == [1001, 1003]


@pytest.mark.parametrize("name", ["scan_..", "..scan_1", "scan_12a", "scan_1/../x",
                                  "scan_../scan_000001", "scan_\u0661\u0660", "scan_001001\n",
                                  "scan_1234567890", "scan_-1", " scan_1", "scan_1 ",
                                  "scan_\uff11"])
def test_scan_numbers_are_ascii_digits_only(name: str) -> None:
    assert parse_scan_group(name) is None


@pytest.mark.parametrize("value", [-1, "1001", "../x", 1.5, None])
def test_output_group_names_need_a_validated_scan_number(value: Any) -> None:
    with pytest.raises(ValueError):
        scan_group_name(value)
    assert scan_group_name(7) == "scan_000007"


def test_hostile_attributes_stay_inert_in_both_modes(shared: Shared,
                                                      shared_snakemake: tuple[Any, Path]
                                                      ) -> None:
    _, wd = shared_snakemake
    hostile = next(s for s, n in shared.victims.items() if n == "hostile_attributes")
    attrs = l1_attrs(wd / "results/s/l1.zarr", hostile)
    assert attrs["scan_number"] == hostile
    assert attrs["line"] == HOSTILE_ATTRIBUTES["line"]
    assert attrs["telescope"] == HOSTILE_ATTRIBUTES["telescope"]
    for path in PWNED:
        assert not path.exists()


@pytest.fixture(autouse=True, scope="module")
def _no_pwned_leftovers() -> Iterator[None]:
    """The hostile payloads name these paths: they must not exist before or after."""
    for path in PWNED:
        assert not path.exists(), f"{path} exists before the tests; remove it"
    yield
    for path in PWNED:
        assert not path.exists()
