"""The Snakemake workflow, run for real (the venv's snakemake binary, no mocks).

One simulated session with two broken scans (1002: no OFF subscan -> prepare fails;
1005: lloadsn points to a missing scan -> load fails) is calibrated by the workflow and by
the in-process pipeline; the tests then repair a scan, change a parameter, interrupt a run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from calpipe import testing
from calpipe import workflow as cw
from calpipe.atmosphere.tableio import save_table
from calpipe.pipeline import calibrate_store
from calpipe.testing import analytic_table, make_session, write_synthetic_manifest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
SNAKEFILE = REPO / "workflow" / "Snakefile"
BROKEN = {1002: "prepare", 1005: "load"}
SCANS = [1001, 1002, 1004, 1005]


# -- helpers ----------------------------------------------------------------------------------

def break_no_off(store: Path, scan: int) -> list[str]:
    """Make every source subscan ON (no OFF -> NoReferenceError); returns the old modes."""
    arr = zarr.open_array(str(store / f"scan_{scan:06d}" / "source" / "sobsmode"), mode="r+")
    old = [str(v) for v in arr[...].tolist()]
    arr[...] = np.array(["ON"] * len(old), dtype=arr.dtype)
    return old


def set_sobsmode(store: Path, scan: int, modes: list[str]) -> None:
    arr = zarr.open_array(str(store / f"scan_{scan:06d}" / "source" / "sobsmode"), mode="r+")
    arr[...] = np.array(modes, dtype=arr.dtype)


def break_lloadsn(store: Path, scan: int) -> None:
    """Point lloadsn at a scan that is not in the store (MissingLoadError while loading)."""
    arr = zarr.open_array(str(store / f"scan_{scan:06d}" / "source" / "lloadsn"), mode="r+")
    arr[...] = 999


def make_workspace(path: Path, broken: bool = True, **calibration: object) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_table(analytic_table(), path / "table.npz")
    make_session(path / "s.zarr", table=analytic_table())
    if broken:
        break_no_off(path / "s.zarr", 1002)
        break_lloadsn(path / "s.zarr", 1005)
    write_config(path, **calibration)
    return path


def write_config(path: Path, **calibration: object) -> None:
    config = {"stores": {"s": "s.zarr"},
              "calibration": {"atmosphere_table": "table.npz", **calibration}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake(wd: Path, *args: str, check: bool = True, timeout: float = 300
              ) -> subprocess.CompletedProcess[str]:
    cmd = [SNAKEMAKE, "--snakefile", str(SNAKEFILE), "--directory", str(wd), "--configfile",
           str(wd / "config.yaml"), "--workflow-profile", str(REPO / "profiles" / "default"),
           *args]
    proc = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def planned_jobs(wd: Path) -> dict[str, list[str]]:
    """Dry run: {rule: [scan ids]} of the jobs snakemake would run."""
    proc = snakemake(wd, "-n", "--cores", "2")
    jobs: dict[str, list[str]] = {}
    rule = None
    for line in (proc.stdout + proc.stderr).splitlines():
        line = line.strip()
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
            jobs.setdefault(rule, [])
        elif line.startswith("wildcards:") and rule is not None:
            for part in line[len("wildcards:"):].split(","):
                key, _, value = part.strip().partition("=")
                if key == "scan":
                    jobs[rule].append(value)
    return jobs


def assert_l1_equal(a: Path, b: Path, scans: list[int],
                    provenance_ignore: tuple[str, ...] = ("utc",)) -> None:
    """calpipe.testing.assert_l1_equal with this module's scan list."""
    testing.assert_l1_equal(a, b, scans, provenance_ignore=provenance_ignore)


def in_process(wd: Path, out: Path) -> object:
    config = cw.calibration_config(yaml.safe_load((wd / "config.yaml").read_text())
                                   ["calibration"])
    cwd = Path.cwd()
    os.chdir(wd)  # the table path is relative to the working directory, as in the workflow
    try:
        return calibrate_store(wd / "s.zarr", out, config)
    finally:
        os.chdir(cwd)


# -- lint / format ----------------------------------------------------------------------------

def test_lint_and_snakefmt(tmp_path: Path) -> None:
    wd = make_workspace(tmp_path / "lint", broken=False)
    proc = snakemake(wd, "--lint")
    assert "Congratulations, your workflow is in a good condition" in proc.stdout + proc.stderr
    fmt = subprocess.run([str(BIN / "snakefmt"), "--check", str(REPO / "workflow")],
                         capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_config_schema_defaults_and_digest() -> None:
    import jsonschema

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    defaults = {k: v["default"] for k, v in schema["properties"]["calibration"]
                ["properties"].items()}
    assert cw.calibration_config(defaults).digest == cw.calibration_config({}).digest
    # every calibration option is in the schema, and nothing else
    import dataclasses

    from calpipe.config import CalibrationConfig

    assert set(defaults) == {f.name for f in dataclasses.fields(CalibrationConfig)}
    assert cw.calibration_config({"clip_trec": 5}).digest == cw.calibration_config({}).digest
    jsonschema.validate(yaml.safe_load((REPO / "config/config.yaml").read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"stores": {"../x": "a"}}, schema)
    # per-stage digests: an atmosphere option leaves resolve and prepare alone
    base, changed = cw.calibration_config({}), cw.calibration_config({"pwv_fixed_mm": 1.0})
    assert cw.stage_digest(base, "resolve") == cw.stage_digest(changed, "resolve")
    assert cw.stage_digest(base, "prepare") == cw.stage_digest(changed, "prepare")
    assert cw.stage_digest(base, "atmosphere") != cw.stage_digest(changed, "atmosphere")
    assert cw.stage_digest(base, "calibrate") != cw.stage_digest(changed, "calibrate")


# -- the main scenario ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    wd = make_workspace(tmp_path_factory.mktemp("wf"))
    t0 = time.perf_counter()
    proc = snakemake(wd, "--cores", "2")
    wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = in_process(wd, wd / "inproc.zarr")
    return {"wd": wd, "proc": proc, "wall": wall, "inproc_wall": time.perf_counter() - t0,
            "result": result}


def test_failures_json_lists_exactly_the_broken_scans(run: dict[str, object]) -> None:
    wd = run["wd"]
    assert isinstance(wd, Path)
    rows = json.loads((wd / "results/failures.json").read_text())
    assert [(r["scan"], r["stage"]) for r in rows] == sorted(BROKEN.items())
    assert [r["error"] for r in rows] == ["NoReferenceError", "MissingLoadError"]
    assert all(r["session"] == "s" for r in rows)
    per_session = json.loads((wd / "results/s/l1.zarr/failures.json").read_text())
    assert [sorted(r) for r in per_session] == [["error", "message", "scan", "stage"]] * 2
    # the in-process pipeline records the same failures, word for word
    inproc = json.loads((wd / "inproc.zarr/failures.json").read_text())
    assert per_session == inproc
    summary = json.loads((wd / "results/run_summary.json").read_text())
    assert (summary["n_scans"], summary["n_failed"], summary["exit_code"]) == (4, 2, 2)
    proc = run["proc"]
    assert isinstance(proc, subprocess.CompletedProcess)
    assert "2 of 4 scans failed, see failures.json" in proc.stdout + proc.stderr
    status = json.loads((wd / "results/s/status/001002.json").read_text())
    assert status["ok"] is False
    assert (status["failure"]["stage"], status["failure"]["error"]) == ("prepare",
                                                                         "NoReferenceError")
    assert set(status["timings_s"]) >= {"load", "prepare"}
    ok = json.loads((wd / "results/s/status/001001.json").read_text())
    assert ok["ok"] and set(ok["timings_s"]) >= {"load", "resolve", "prepare", "atmosphere",
                                                 "calibrate", "write"}
    # intermediates are temporary by default; logs and benchmarks are kept
    assert not list((wd / "results/s/work").rglob("*.npz"))
    assert (wd / "results/s/logs/calibrate/001001.log").exists()
    assert (wd / "results/s/benchmarks/calibrate/001001.tsv").exists()
    print(f"\nworkflow --cores 2: {run['wall']:.1f} s; in-process: {run['inproc_wall']:.1f} s")


@pytest.fixture
def run_copy(run: dict[str, object], tmp_path: Path) -> dict[str, object]:
    """A private copy of the module run (mtimes kept), for tests that change the inputs: the
    tests of this module pass in any order (issue 17)."""
    src = run["wd"]
    assert isinstance(src, Path)
    wd = tmp_path / "wf"
    shutil.copytree(src, wd, symlinks=True)
    return {**run, "wd": wd}


def test_l1_equals_in_process(run: dict[str, object]) -> None:
    wd = run["wd"]
    assert isinstance(wd, Path)
    ok = [s for s in SCANS if s not in BROKEN]
    assert_l1_equal(wd / "inproc.zarr", wd / "results/s/l1.zarr", ok)
    assert not [p for p in (wd / "results/s/l1.zarr").iterdir() if p.name.startswith(".partial-")]


def test_nothing_to_do_then_calpipe_run_exit_code(run: dict[str, object]) -> None:
    wd = run["wd"]
    assert isinstance(wd, Path)
    assert planned_jobs(wd) == {}
    proc = subprocess.run([str(BIN / "calpipe"), "run", "--directory", str(wd), "--configfile",
                           str(wd / "config.yaml"), "--cores", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "2 of 4 scans failed, see failures.json" in proc.stdout


def test_repair_reruns_only_that_scan(run_copy: dict[str, object]) -> None:
    wd = run_copy["wd"]
    assert isinstance(wd, Path)
    session = wd / "s.zarr"
    # repair scan 1002: give it back its OFF subscans (the modes the simulator wrote)
    inproc_modes = zarr.open_array(str(session / "scan_001001/source/sobsmode"))[...].tolist()
    set_sobsmode(session, 1002, [str(m) for m in inproc_modes])
    before = {s: (wd / f"results/s/status/{s:06d}.json").stat().st_mtime_ns for s in SCANS}
    jobs = planned_jobs(wd)
    for rule in ("resolve", "prepare", "atmosphere", "calibrate"):
        assert jobs.get(rule) == ["001002"], jobs
    snakemake(wd, "--cores", "2")
    after = {s: (wd / f"results/s/status/{s:06d}.json").stat().st_mtime_ns for s in SCANS}
    assert [s for s in SCANS if before[s] != after[s]] == [1002]
    rows = json.loads((wd / "results/failures.json").read_text())
    assert [r["scan"] for r in rows] == [1005]
    shutil.rmtree(wd / "inproc.zarr")
    in_process(wd, wd / "inproc.zarr")
    # the unchanged scans' groups come from the module run in the original directory
    assert_l1_equal(wd / "inproc.zarr", wd / "results/s/l1.zarr", [1001, 1002, 1004],
                    provenance_ignore=("utc", "input_store"))


def test_parameter_change_reruns_affected_rules(run_copy: dict[str, object]) -> None:
    wd = run_copy["wd"]
    assert isinstance(wd, Path)
    write_config(wd, reference="nearest")
    jobs = planned_jobs(wd)
    # intermediates are temporary, so every stage of every scan reruns
    for rule in ("resolve", "prepare", "atmosphere", "calibrate"):
        assert sorted(jobs.get(rule, [])) == [f"{s:06d}" for s in SCANS], jobs
    write_config(wd)
    assert planned_jobs(wd) == {}


def test_keep_intermediate_and_stage_digests(tmp_path: Path) -> None:
    """With kept artifacts an atmosphere option reruns atmosphere + calibrate only."""
    wd = make_workspace(tmp_path / "keep", broken=False)
    config = yaml.safe_load((wd / "config.yaml").read_text())
    config["keep_intermediate"] = True
    (wd / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(wd, "--cores", "2")
    assert len(list((wd / "results/s/work").rglob("*.npz"))) == 4 * len(SCANS)
    config["calibration"]["pwv_fixed_mm"] = 1.0
    (wd / "config.yaml").write_text(yaml.safe_dump(config))
    jobs = planned_jobs(wd)
    assert "resolve" not in jobs and "prepare" not in jobs, jobs
    assert len(jobs["atmosphere"]) == len(jobs["calibrate"]) == len(SCANS)


def test_interrupted_run_resumes(tmp_path: Path) -> None:
    wd = make_workspace(tmp_path / "kill", broken=False)
    cmd = [SNAKEMAKE, "--snakefile", str(SNAKEFILE), "--directory", str(wd), "--configfile",
           str(wd / "config.yaml"), "--workflow-profile", str(REPO / "profiles" / "default"),
           "--cores", "1"]
    proc = subprocess.Popen(cmd, cwd=wd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    status_dir = wd / "results/s/status"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            # two statuses: the first scan's job is then complete in snakemake's metadata too
            if status_dir.exists() and len(list(status_dir.iterdir())) >= 2:
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own process group: snakemake + its jobs
        proc.wait()
    done = sorted(p.name for p in status_dir.iterdir())
    assert 0 < len(done) < len(SCANS), "the run was not interrupted mid-way"
    snakemake(wd, "--unlock")
    jobs = planned_jobs(wd)
    assert len(jobs["calibrate"]) < len(SCANS)  # finished scans are not redone
    snakemake(wd, "--cores", "2")
    in_process(wd, wd / "inproc.zarr")
    assert_l1_equal(wd / "inproc.zarr", wd / "results/s/l1.zarr", SCANS)
    assert json.loads((wd / "results/failures.json").read_text()) == []


def test_campaign_report_names_every_scan_and_failure(run: dict[str, object]) -> None:
    """The report rule's HTML, parsed: one row per scan (status from the run), one row per
    failure with its stage and error class (issue 17: not just a size check)."""
    from html.parser import HTMLParser

    wd = run["wd"]
    assert isinstance(wd, Path)

    class Rows(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.table = ""
            self.rows: dict[str, list[tuple[str, str]]] = {"scans": [], "failures": []}

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "table":
                self.table = a.get("id") or ""
            elif tag == "tr" and "data-scan" in a and self.table in self.rows:
                self.rows[self.table].append((str(a["data-scan"]), str(a.get("class"))))

    html = (wd / "results/s/report.html").read_text()
    parser = Rows()
    parser.feed(html)
    scans = dict(parser.rows["scans"])
    assert sorted(int(k) for k in scans) == SCANS
    assert {int(k) for k, v in scans.items() if v == "failed"} == set(BROKEN)
    assert sorted(int(k) for k, _ in parser.rows["failures"]) == sorted(BROKEN)
    for scan, stage in BROKEN.items():
        assert f'data-scan="{scan}"' in html and stage in html
    assert "NoReferenceError" in html and "MissingLoadError" in html


def test_report(run: dict[str, object]) -> None:
    wd = run["wd"]
    assert isinstance(wd, Path)
    snakemake(wd, "--report", str(wd / "report.html"))
    assert (wd / "report.html").stat().st_size > 10_000


# -- DAG size ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("n", [int(os.environ.get("CALPIPE_DAG_SCANS", "1000"))])
def test_dry_run_dag_time(tmp_path: Path, n: int) -> None:
    write_synthetic_manifest(tmp_path, n)
    t0 = time.perf_counter()
    cpu0 = os.times()
    proc = snakemake(tmp_path, "-n", "--quiet", "--cores", "2", timeout=1800)
    cpu1 = os.times()
    wall = time.perf_counter() - t0
    cpu = cpu1.children_user + cpu1.children_system - cpu0.children_user - cpu0.children_system
    print(f"\ndry run over {n} scans ({4 * n + 2} jobs): {wall:.1f} s wall, {cpu:.1f} s CPU")
    assert proc.returncode == 0
