"""calibrate_store against the I/O floor, measured in one run (DESIGN 6, issue 7).

floor  = for every science scan: read its source data_5d and its calibration data_5d from L0
         (as the pipeline does, int32 -> float64 with fill -> NaN), then write arrays shaped
         like L1 spectra (f4) and flags (u2) with calpipe's L1 codecs and chunks.
ratio  = calibrate_store wall time / floor wall time     (target <= 1.25, aim 1.1)

Prints a table and writes JSON. Usage:
  python benchmarks/bench_floor.py [--scans 8 --channels 8192 --dumps 80] [--json F]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def make_session(path: Path, scans: int, channels: int, dumps: int) -> None:
    from calpipe.simulate import SimulationConfig, simulate_session
    from calpipe.testing import analytic_table

    cfg = replace(SimulationConfig(), n_scans=scans + 2, load_every=(scans + 2) // 2,
                  n_channels=channels, n_dumps=dumps, n_receivers=2, n_arrays=4,
                  write_truth=False, line_width_channels=40.0, seed=3)
    simulate_session(path, cfg, table=analytic_table(), overwrite=True)


def io_floor(store: Path, out: Path) -> float:
    """Read what calibrate_store reads, write what it writes (big arrays), same codecs."""
    import zarr

    from calpipe import l1
    from calpipe.l0 import open_session

    t0 = time.perf_counter()
    session = open_session(store)
    root = zarr.open_group(str(out), mode="w", zarr_format=3)
    codecs = l1._codecs(True)
    for n in session.source_scans():
        scan = session.load_scan(n)
        cal = session.load_calibration(n, scan.meta.lloadsn)
        c, d, r, a, s = scan.counts.shape
        n_on = int(np.isin(scan.meta.sobsmode, ("ON", "OTF-ON")).sum())
        spectra = scan.counts[..., :n_on].astype(np.float32)
        flags = np.zeros(spectra.shape, np.uint16)
        del scan, cal
        g = root.create_group(f"scan_{n:06d}")
        for name, values in (("spectra", spectra), ("flags", flags)):
            shape = (c, d * n_on, r, a)  # L1 format 2: [frequency, time, pixel, array]
            arr = g.create_array(name, shape=shape, dtype=values.dtype,
                                 chunks=l1.l1_chunks(shape, values.dtype.itemsize, d),
                                 dimension_names=l1.DIMS[name], **codecs)
            for k in range(n_on):  # one ON subscan per write, as calpipe.l1.write_scan
                arr[:, k * d:(k + 1) * d] = values[..., k]
    return time.perf_counter() - t0


def pipeline_time(store: Path, out: Path) -> float:
    from calpipe.config import CalibrationConfig
    from calpipe.pipeline import calibrate_store
    from calpipe.testing import analytic_table

    table = analytic_table()
    t0 = time.perf_counter()
    result = calibrate_store(store, out, CalibrationConfig(), table=table)
    wall = time.perf_counter() - t0
    assert result.exit_code == 0, result.failures
    return wall


def measure(scans: int, channels: int, dumps: int, workdir: Path, repeat: int = 1) -> dict:
    store = workdir / "session.zarr"
    t = time.perf_counter()
    make_session(store, scans, channels, dumps)
    sim_s = time.perf_counter() - t
    raw_mb = channels * dumps * 8 * 5 * 4 / 2**20
    floors, pipes = [], []
    for k in range(repeat):  # interleave to share the machine's noise
        floors.append(io_floor(store, workdir / f"floor{k}.zarr"))
        pipes.append(pipeline_time(store, workdir / f"l1_{k}.zarr"))
        shutil.rmtree(workdir / f"floor{k}.zarr")
        shutil.rmtree(workdir / f"l1_{k}.zarr")
    floor, pipe = min(floors), min(pipes)
    return {"scans": scans, "channels": channels, "dumps": dumps, "pixels": 8,
            "raw_int32_mb_per_scan": raw_mb, "simulate_s": sim_s, "floor_s": floor,
            "calibrate_store_s": pipe, "ratio": pipe / floor, "floor_runs": floors,
            "pipeline_runs": pipes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=8)
    ap.add_argument("--channels", type=int, default=8192)
    ap.add_argument("--dumps", type=int, default=80)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path)
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=ns.workdir) as tmp:
        r = measure(ns.scans, ns.channels, ns.dumps, Path(tmp), ns.repeat)
    print(f"{'scans':>6} {'MB/scan':>8} {'floor s':>8} {'pipeline s':>10} {'ratio':>6}")
    print(f"{r['scans']:>6} {r['raw_int32_mb_per_scan']:>8.0f} {r['floor_s']:>8.2f} "
          f"{r['calibrate_store_s']:>10.2f} {r['ratio']:>6.2f}")
    if ns.json:
        ns.json.write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
