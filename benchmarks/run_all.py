"""Run every benchmark once and print the ratios the quality bars are stated in.

  python benchmarks/run_all.py [--quick] [--out benchmarks/out]

Writes one JSON per benchmark into --out and prints a summary table. --quick uses smaller
sessions (for a smoke test; the numbers in docs/performance.md come from the full run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

FULL = {
    "floor": ["--scans", "8", "--channels", "8192", "--dumps", "80", "--repeat", "2"],
    "snakemake": ["--scans", "8", "--channels", "8192", "--dumps", "80"],
    "memory": [],
    "scaling": ["--counts", "10,50,200"],
    "dag": ["--scans", "1000,10000"],
}
QUICK = {
    "floor": ["--scans", "2", "--channels", "2048", "--dumps", "20", "--repeat", "1"],
    "snakemake": ["--scans", "2", "--channels", "2048", "--dumps", "20"],
    "memory": ["--channels", "4096", "--dumps", "20", "--scans", "2"],
    "scaling": ["--counts", "5,10", "--no-ccat"],
    "dag": ["--scans", "100"],
}
SCRIPTS = {"floor": "bench_floor.py", "snakemake": "bench_snakemake.py",
           "memory": "bench_memory.py", "scaling": "bench_scaling.py", "dag": "bench_dag.py"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--only", help="comma-separated subset of " + ",".join(SCRIPTS))
    ns = ap.parse_args()
    ns.out.mkdir(parents=True, exist_ok=True)
    plan = QUICK if ns.quick else FULL
    names = ns.only.split(",") if ns.only else list(SCRIPTS)
    results = {}
    for name in names:
        out = ns.out / f"{name}.json"
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, str(HERE / SCRIPTS[name]), *plan[name], "--json",
                        str(out)], check=True)
        results[name] = json.loads(out.read_text())
        print(f"   ({time.perf_counter() - t0:.0f} s)")
    print("\nsummary")
    if "floor" in results:
        print(f"  calibrate_store / I/O floor      {results['floor']['ratio']:.2f}  (<= 1.25)")
    if "snakemake" in results:
        print(f"  snakemake --cores 2 / in-process {results['snakemake']['ratio']:.2f}  (<= 1.5)")
    if "memory" in results:
        print(f"  peak memory / scan working set   {results['memory']['ratio']:.2f}  (<= 2)")
    if "scaling" in results:
        per = [r["s_per_scan"] for r in results["scaling"]["scaling"]]
        print(f"  s/scan at {[r['science_scans'] for r in results['scaling']['scaling']]}: "
              f"{[round(p, 3) for p in per]}")
    if "dag" in results:
        for r in results["dag"]["runs"]:
            print(f"  dry-run DAG {r['scans']} scans: {r['wall_s']:.1f} s wall")
    (ns.out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
