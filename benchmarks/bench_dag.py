"""Dry-run DAG build time of the Snakemake workflow over synthetic manifests of N scans.

The manifest (and per-scan stamps) are written directly, for a store that does not exist:
only Snakemake's parse + DAG construction is measured (`snakemake -n --quiet`).
Usage: python benchmarks/bench_dag.py [--scans 1000,10000] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from calpipe.testing import write_synthetic_manifest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def dry_run(n: int, tmp: Path) -> dict:
    wd = tmp / f"dag{n}"
    wd.mkdir()
    write_synthetic_manifest(wd, n)
    cmd = [str(SNAKEMAKE), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory",
           str(wd), "--configfile", str(wd / "config.yaml"), "-n", "--quiet", "--cores", "2"]
    c0 = os.times()
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=wd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    c1 = os.times()
    cpu = c1.children_user + c1.children_system - c0.children_user - c0.children_system
    return {"scans": n, "jobs": 4 * n + 2, "wall_s": wall, "cpu_s": cpu}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", default="1000,10000")
    ap.add_argument("--json", type=Path)
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [dry_run(int(n), Path(tmp)) for n in ns.scans.split(",")]
    for r in runs:
        print(f"{r['scans']:>6} scans ({r['jobs']} jobs): {r['wall_s']:.1f} s wall, "
              f"{r['cpu_s']:.1f} s CPU")
    if ns.json:
        ns.json.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
