"""Time per scan of calibrate_store for 10, 50 and 200 scans (should be flat), and one
CCAT-size scan end to end (16384 channels, 2 x 7 pixels, 10 OTF subscans x 50 dumps).

Usage: python benchmarks/bench_scaling.py [--counts 10,50,200] [--no-ccat] [--json F]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def _calibrate(store: Path, out: Path) -> tuple[float, int]:
    from calpipe.config import CalibrationConfig
    from calpipe.pipeline import calibrate_store
    from calpipe.testing import analytic_table

    table = analytic_table()
    t0 = time.perf_counter()
    result = calibrate_store(store, out, CalibrationConfig(), table=table)
    return time.perf_counter() - t0, len(result.successes)


def scaling(counts: list[int], workdir: Path) -> list[dict]:
    from calpipe.simulate import SimulationConfig, simulate_session
    from calpipe.testing import analytic_table

    rows = []
    for n in counts:
        n_total = n + (n + 9) // 10  # a load scan every 10 scans
        cfg = replace(SimulationConfig(), n_scans=n_total, load_every=11, n_channels=2048,
                      n_dumps=20, write_truth=False, seed=n)
        store = workdir / f"scaling_{n}.zarr"
        simulate_session(store, cfg, table=analytic_table(), overwrite=True)
        wall, done = _calibrate(store, workdir / f"scaling_{n}_l1.zarr")
        rows.append({"science_scans": done, "wall_s": wall, "s_per_scan": wall / done})
    return rows


def ccat_scan(workdir: Path) -> dict:
    from calpipe.simulate import SimulationConfig, simulate_session
    from calpipe.testing import analytic_table

    cfg = replace(SimulationConfig(), n_scans=2, load_every=2, n_channels=16384, n_dumps=50,
                  n_receivers=2, n_arrays=7, modes=("otf",), n_on_otf=10, write_truth=False,
                  bandwidth_ghz=4.0, line_width_channels=80.0)
    store = workdir / "ccat.zarr"
    t0 = time.perf_counter()
    simulate_session(store, cfg, table=analytic_table(), overwrite=True)
    sim = time.perf_counter() - t0
    wall, _ = _calibrate(store, workdir / "ccat_l1.zarr")
    summary = json.loads((workdir / "ccat_l1.zarr" / "run_summary.json").read_text())
    values = 16384 * 50 * 14 * 12
    return {"raw_int32_mb": values * 4 / 2**20, "simulate_s": sim, "calibrate_store_s": wall,
            "stage_timings_s": summary["scans"][0]["timings_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="10,50,200")
    ap.add_argument("--no-ccat", action="store_true")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path)
    ns = ap.parse_args()
    out: dict = {}
    with tempfile.TemporaryDirectory(dir=ns.workdir) as tmp:
        out["scaling"] = scaling([int(x) for x in ns.counts.split(",")], Path(tmp))
        print(f"{'scans':>6} {'wall s':>8} {'s/scan':>8}")
        for r in out["scaling"]:
            print(f"{r['science_scans']:>6} {r['wall_s']:>8.2f} {r['s_per_scan']:>8.3f}")
        if not ns.no_ccat:
            out["ccat"] = ccat_scan(Path(tmp))
            c = out["ccat"]
            print(f"CCAT-size scan ({c['raw_int32_mb']:.0f} MB int32): calibrate_store "
                  f"{c['calibrate_store_s']:.1f} s; stages {c['stage_timings_s']}")
    if ns.json:
        ns.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
