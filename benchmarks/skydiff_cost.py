"""What SKYDIFF (issue 14 item 3) costs.

1. The stage alone: resolve -> prepare -> skydiff over a simulated session at the simulator's
   default size (2048 channels, 2 x 4 pixels, 12 scans), N = 3; milliseconds per scan and
   the size of the history artifact.
2. The workflow: wall time of ``snakemake --cores 2`` (default profile) on a 24-scan session
   of the test size (calpipe.testing.small_config: 256 channels, 4 dumps, 2 x 2 pixels) with
   ``skydiff: 0`` and ``skydiff: 3`` (the chain of skydiff jobs, one per scan).

Usage:
  python benchmarks/skydiff_cost.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def stage_cost(work: Path) -> None:
    from calpipe import stages
    from calpipe.config import CalibrationConfig
    from calpipe.l0 import open_session
    from calpipe.physics.skydiff import SkyHistory
    from calpipe.simulate import SimulationConfig, simulate_session
    from calpipe.testing import analytic_table

    path = work / "big.zarr"
    simulate_session(path, SimulationConfig(n_scans=12, frontend_backend="FE"),
                     table=analytic_table(), overwrite=True)
    session, config = open_session(path), CalibrationConfig(skydiff=3)
    history, seconds = SkyHistory.empty(3), []
    for n in session.source_scans():
        data = session.load_scan(n)
        load = stages.resolve(data, session.load_calibration(n, data.meta.lloadsn), config)
        prepared = stages.prepare(data, config)
        geometry = stages.ScanGeometry.of(data)
        t0 = time.perf_counter()
        history, _ = stages.skydiff(load, prepared, geometry, history, config)
        seconds.append(time.perf_counter() - t0)
    print(f"stage skydiff: {1e3 * sum(seconds) / len(seconds):.2f} ms per scan "
          f"(max {1e3 * max(seconds):.2f}); history {len(history)} entries, "
          f"{history.values.nbytes / 1e6:.2f} MB")


def workflow_cost(work: Path, repeat: int) -> None:
    from calpipe.atmosphere.tableio import save_table
    from calpipe.testing import analytic_table, make_session, run_snakemake

    make_session(work / "s.zarr", n_scans=24, load_every=6, frontend_backend="FE")
    save_table(analytic_table(), work / "table.npz")
    for _ in range(repeat):
        for n in (0, 3):
            shutil.rmtree(work / "results", ignore_errors=True)
            shutil.rmtree(work / ".snakemake", ignore_errors=True)
            (work / "config.yaml").write_text(
                "stores:\n  s: s.zarr\nreport: false\ncalibration:\n"
                f"  skydiff: {n}\n  atmosphere_table: table.npz\n")
            t0 = time.perf_counter()
            run_snakemake(work, "--cores", "2")
            print(f"workflow, 24 scans, skydiff {n}: {time.perf_counter() - t0:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stage_cost(Path(tmp))
        workflow_cost(Path(tmp), ns.repeat)


if __name__ == "__main__":
    main()
