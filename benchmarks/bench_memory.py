"""Peak resident memory of calibrate_store against one scan's float64 working set.

Runs the calibration in a fresh subprocess (so ru_maxrss is its own) on a session of
``--scans`` science scans of a known size and prints one JSON object:

  working_set_mb  = one scan's counts as float64 (source + its HOT/COLD calibration snapshot)
                    + its L1 spectra (f4) and flags (u2)
  baseline_mb     = RSS of the child after imports and the atmosphere table, before the run
  peak_mb         = ru_maxrss of the child at the end
  ratio           = (peak_mb - baseline_mb) / working_set_mb      (target <= 2)

Usage: python benchmarks/bench_memory.py [--channels 16384 --dumps 120 --scans 4] [--json F]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from calpipe.testing import analytic_table
from calpipe.pipeline import calibrate_store
from calpipe.config import CalibrationConfig
table = analytic_table()
def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
baseline = rss_mb()
t = time.perf_counter()
result = calibrate_store(sys.argv[1], sys.argv[2], CalibrationConfig(), table=table)
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"baseline_mb": baseline, "peak_mb": peak, "wall_s": wall,
                  "exit_code": result.exit_code}))
"""


def measure(channels: int, dumps: int, scans: int, workdir: Path) -> dict:
    from dataclasses import replace

    from calpipe.simulate import SimulationConfig, simulate_session
    from calpipe.testing import analytic_table

    cfg = replace(SimulationConfig(), n_scans=scans + 1, load_every=scans + 1,
                  n_channels=channels, n_dumps=dumps, n_receivers=2, n_arrays=4,
                  modes=("tp",), noise=False, write_truth=False, line_width_channels=50.0)
    store = workdir / "session.zarr"
    t = time.perf_counter()
    simulate_session(store, cfg, table=analytic_table(), overwrite=True)
    sim_s = time.perf_counter() - t
    n_sub = 2 * cfg.n_on_tp + 1
    values = channels * dumps * 8 * n_sub
    on_values = channels * dumps * 8 * cfg.n_on_tp
    raw_mb = values * 4 / 2**20
    cal_values = channels * dumps * 8 * 2  # HOT + COLD subscans
    working_set_mb = ((values + cal_values) * 8 + on_values * (4 + 2)) / 2**20
    proc = subprocess.run([sys.executable, "-c", CHILD, str(store), str(workdir / "l1.zarr")],
                          capture_output=True, text=True, check=True)
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "scans": scans, "channels": channels, "dumps": dumps, "pixels": 8,
        "subscans": n_sub, "raw_int32_mb_per_scan": raw_mb,
        "working_set_mb": working_set_mb, "simulate_s": sim_s, **child,
        "ratio": (child["peak_mb"] - child["baseline_mb"]) / working_set_mb,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=16384)
    ap.add_argument("--dumps", type=int, default=120)
    ap.add_argument("--scans", type=int, default=4)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path, help="also write the result here")
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=ns.workdir) as tmp:
        result = measure(ns.channels, ns.dumps, ns.scans, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if ns.json:
        ns.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
