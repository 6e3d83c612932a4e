"""Snakemake (--cores 2) against calibrate_store on the same session, in one run (issues 7, 11).

Both use the shipped atmosphere tables. The Snakemake time is the whole `snakemake` command
(manifest, DAG, every job, aggregation; the campaign report is switched off, as the in-process
run makes none); the in-process time is `calibrate_store`.
ratio = snakemake wall / calibrate_store wall (targets: <= 1.5 on 8 scans of 100 MB, <= 1.2 on
4 CCAT-size scans). Also the bytes of L0 read per scan in each mode (from run_summary.json,
`l0_bytes_read_total`; target: Snakemake <= 1.1 x in-process).

Usage: python benchmarks/bench_snakemake.py [--scans 8 --channels 8192 --dumps 80] [--ccat]
       [--json F]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def make_session(path: Path, scans: int, channels: int, dumps: int, ccat: bool = False) -> None:
    from calpipe.simulate import SimulationConfig, simulate_session

    cfg = replace(SimulationConfig(), n_scans=scans + 2, load_every=(scans + 2) // 2,
                  n_channels=channels, n_dumps=dumps, n_receivers=2, n_arrays=4,
                  write_truth=False, line_width_channels=40.0, seed=5)
    if ccat:  # 16384 channels, 2 x 7 pixels, 10 OTF subscans x 50 dumps (bench_scaling.py)
        cfg = replace(cfg, n_channels=16384, n_dumps=50, n_receivers=2, n_arrays=7,
                      modes=("otf",), n_on_otf=10, bandwidth_ghz=4.0, line_width_channels=80.0)
    simulate_session(path, cfg, overwrite=True)


def run_inprocess(store: Path, out: Path) -> float:
    from calpipe.pipeline import calibrate_store

    t0 = time.perf_counter()
    result = calibrate_store(store, out)
    wall = time.perf_counter() - t0
    assert result.exit_code == 0, result.failures
    return wall


def run_snakemake(store: Path, workdir: Path, cores: int = 2) -> float:
    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump({"stores": {"bench": str(store)},
                                                         "report": False}))
    cmd = [str(SNAKEMAKE), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(workdir / "config.yaml"), "--workflow-profile",
           str(REPO / "profiles" / "default"), "--cores", str(cores), "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=workdir, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0


def _bytes_read(summary_path: Path) -> int:
    return int(json.loads(summary_path.read_text())["l0_bytes_read_total"])


def measure(scans: int, channels: int, dumps: int, workdir: Path, repeat: int,
            ccat: bool = False) -> dict:
    store = workdir / "session.zarr"
    make_session(store, scans, channels, dumps, ccat)
    inproc, smk, bytes_in, bytes_smk = [], [], 0, 0
    for k in range(repeat):
        inproc.append(run_inprocess(store, workdir / f"l1_{k}.zarr"))
        smk.append(run_snakemake(store, workdir / f"smk_{k}"))
        bytes_in = _bytes_read(workdir / f"l1_{k}.zarr" / "run_summary.json")
        bytes_smk = _bytes_read(workdir / f"smk_{k}" / "results/bench/l1.zarr/run_summary.json")
        shutil.rmtree(workdir / f"l1_{k}.zarr")
        shutil.rmtree(workdir / f"smk_{k}")
    from calpipe.l0 import open_session

    sess = open_session(store)
    shape = sess.load_scan(sess.source_scans()[0], subscans=()).counts.shape
    return {"scans": scans, "shape_cdras": list(shape),
            "raw_int32_mb_per_scan": float(np.prod(shape)) * 4 / 2**20,
            "calibrate_store_s": min(inproc), "snakemake_s": min(smk),
            "ratio": min(smk) / min(inproc), "inprocess_runs": inproc, "snakemake_runs": smk,
            "l0_bytes_inprocess": bytes_in, "l0_bytes_snakemake": bytes_smk,
            "bytes_ratio": bytes_smk / bytes_in}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=8)
    ap.add_argument("--channels", type=int, default=8192)
    ap.add_argument("--dumps", type=int, default=80)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--ccat", action="store_true",
                    help="CCAT-size scans (16384 ch, 2 x 7 px, 10 OTF subscans x 50 dumps)")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path)
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=ns.workdir) as tmp:
        r = measure(ns.scans, ns.channels, ns.dumps, Path(tmp), ns.repeat, ns.ccat)
    print(f"{'scans':>6} {'MB/scan':>8} {'in-process s':>12} {'snakemake s':>11} {'ratio':>6} "
          f"{'L0 bytes smk/in':>15}")
    print(f"{r['scans']:>6} {r['raw_int32_mb_per_scan']:>8.0f} {r['calibrate_store_s']:>12.2f} "
          f"{r['snakemake_s']:>11.2f} {r['ratio']:>6.2f} {r['bytes_ratio']:>15.3f}")
    if ns.json:
        ns.json.write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
