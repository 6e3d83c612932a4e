"""The workflow on a real SLURM cluster through profiles/slurm (snakemake-executor-plugin-slurm).

Needs a controller: `.ci/start-slurm.sh` starts a one-node cluster on this machine (root,
Debian); `.ci/run` does so before the tests. Skipped with the reason when none answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_workflow import (  # tests/ is on sys.path (pytest rootdir-relative import)
    BIN,
    BROKEN,
    REPO,
    SCANS,
    SNAKEFILE,
    SNAKEMAKE,
    assert_l1_equal,
    in_process,
    make_workspace,
)

pytestmark = pytest.mark.slurm


def _controller_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "sinfo is not available (no SLURM client; run .ci/start-slurm.sh as root)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                              timeout=20)
    except subprocess.TimeoutExpired:
        return "no SLURM controller answers (sinfo timed out)"
    states = proc.stdout.split()
    if proc.returncode != 0 or not states:
        return f"no SLURM controller answers: {proc.stderr.strip() or 'no partition'}"
    if not any(s.rstrip("*~#").lower() in ("idle", "mixed", "allocated") for s in states):
        return f"no usable SLURM node (states: {', '.join(states)})"
    return None


def test_workflow_on_slurm_matches_local(tmp_path: Path) -> None:
    problem = _controller_problem()
    if problem:
        pytest.skip(problem)
    wd = make_workspace(tmp_path / "slurm")
    env = dict(os.environ)
    # the jobs run `python -m snakemake`: the venv's python must come first on PATH
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    cmd = [SNAKEMAKE, "--snakefile", str(SNAKEFILE), "--directory", str(wd), "--configfile",
           str(wd / "config.yaml"), "--workflow-profile", str(REPO / "profiles" / "slurm")]
    proc = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    assert "has been submitted with SLURM jobid" in out  # really went through sbatch
    assert "2 of 4 scans failed, see failures.json" in out
    rows = json.loads((wd / "results/failures.json").read_text())
    assert [(r["scan"], r["stage"]) for r in rows] == sorted(BROKEN.items())
    in_process(wd, wd / "inproc.zarr")
    assert json.loads((wd / "results/s/l1.zarr/failures.json").read_text()) == json.loads(
        (wd / "inproc.zarr/failures.json").read_text())
    assert_l1_equal(wd / "inproc.zarr", wd / "results/s/l1.zarr",
                    [s for s in SCANS if s not in BROKEN])


def test_skydiff_on_slurm_with_the_documented_groups(tmp_path: Path) -> None:
    """SKYDIFF (issue 14) through sbatch: the profile's one-group-per-scan cannot hold the
    skydiff chain, so docs/workflow.md "SLURM" regroups (load = resolve + prepare, cal =
    atmosphere + calibrate); the L1, skydiff arrays included, equals the in-process run."""
    problem = _controller_problem()
    if problem:
        pytest.skip(problem)
    wd = make_workspace(tmp_path / "slurm", skydiff=2)
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    cmd = [SNAKEMAKE, "--snakefile", str(SNAKEFILE), "--directory", str(wd), "--configfile",
           str(wd / "config.yaml"), "--workflow-profile", str(REPO / "profiles" / "slurm"),
           "--groups", "resolve=load", "prepare=load", "atmosphere=cal", "calibrate=cal",
           "--group-components", "load=4", "cal=4"]
    proc = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    assert "has been submitted with SLURM jobid" in out
    in_process(wd, wd / "inproc.zarr")
    good = [s for s in SCANS if s not in BROKEN]
    assert_l1_equal(wd / "inproc.zarr", wd / "results/s/l1.zarr", good)
    import zarr

    with_pairs = [s for s in good if "skydiff" in zarr.open_group(
        str(wd / "results/s/l1.zarr" / f"scan_{s:06d}"), mode="r").array_keys()]
    assert with_pairs, "no scan got SKYDIFF pairs"
