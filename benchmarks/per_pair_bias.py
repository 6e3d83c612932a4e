"""T_A* error of the joint and the per-pair pwv fit when pwv changes during a scan (issue 14).

Noise-free simulated TP sessions (analytic zenith table, calibrated with the same table) whose
pwv rises by --rate mm per hour (long subscans: 4 dumps of 30 s, so one TP scan of five
subscans lasts about 10 minutes). Each science scan is calibrated with the joint fit (one pwv
per scan) and the per-pair fit (one pwv per OFF, each ON at its interpolated pwv). Printed per
frequency: the pwv change across the scan's ONs, and the largest relative error in line
channels (truth > 50 % of the peak) of T_A* against the truth plus the position-switching
residual (T'_sky,ON - T'_sky,REF) / (w_s f_eff tr_s), which no pwv fit can remove.

Usage:
  python benchmarks/per_pair_bias.py [--rate 2.0] [--pwv 1.0] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import zarr

from calpipe.config import CalibrationConfig
from calpipe.l0 import scan_group_name
from calpipe.simulate import truth_path_for
from calpipe.testing import make_session, run_stages

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_per_pair import expected_spectra  # noqa: E402  (the test's truth, one definition)

FREQUENCIES = (230.538, 345.796, 461.041, 691.473)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2.0, help="pwv change, mm per hour")
    parser.add_argument("--pwv", type=float, default=1.0, help="pwv at the session start")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    joint = CalibrationConfig(sky_model="zenith", min_transmission=0.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for freq in FREQUENCIES:
            path = make_session(Path(tmp) / f"s{freq}.zarr", modes=("tp",), noise=False,
                                exptime_s=30.0, scan_seconds=700.0, n_scans=3, load_every=3,
                                pwv_mm=args.pwv, pwv_rate_mm_per_hour=args.rate,
                                frequency_ghz=freq)
            truth = zarr.open_group(str(truth_path_for(path)), mode="r")
            errors = {}
            for name, config in (("joint", joint), ("per_pair", joint.replace(
                    pwv_per_pair=True))):
                worst = 0.0
                for r in run_stages(path, config):
                    tg = truth[scan_group_name(r.scan)]
                    expected = expected_spectra(r, tg)
                    line = tg["ta_star"][...] > 0.5 * tg["ta_star"][...].max()
                    worst = max(worst, float(np.max(np.abs(
                        r.result.spectra[line] / expected[line] - 1))))
                    dpwv = float(np.ptp(tg["pwv_mm"][...][r.prepared.on_index]))
                errors[name] = worst
            rows.append({"freq_ghz": freq, "pwv_change_across_ons_mm": dpwv, **errors})
            print(f"{freq:8.3f} GHz  pwv change across ONs {dpwv:.3f} mm   max line error: "
                  f"joint {errors['joint']:.2%}   per-pair {errors['per_pair']:.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
