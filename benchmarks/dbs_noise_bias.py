"""Line-integral bias of OTF-chopped (DBS) calibration with noise, over many seeds (issue 14).

The session of tests/test_dbs.py (64 channels at 230.538 GHz, 4 dumps, 1 x 2 pixels, two rows
per beam, a 0.05 K chopper-beam imbalance ripple, a 1 % per-dump sky fluctuation, the analytic
test atmosphere) is simulated with radiometer noise for seeds 0..N-1 and calibrated through the
stage functions. Per seed, over the channels where the truth exceeds 1 % of its peak, the sum
over channels of the mean over dumps, pixels and ON subscans is compared with the truth's:

  merged   dbs_merge: true, against T_A*
  beam A   the A ONs of the unmerged run, against T_A* + eps (their own truth)
  otf      for comparison: a plain OTF scan of the same size (4 ONs), against T_A*

It prints the mean difference and its standard error (K x channels) for each.

Usage:
  python benchmarks/dbs_noise_bias.py [--seeds 80]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from calpipe.config import CalibrationConfig
from calpipe.simulate import truth_path_for
from calpipe.testing import make_session, run_stages

TINY: dict[str, Any] = {"modes": ("otf-chopped",), "n_scans": 2, "load_every": 2,
                        "n_channels": 64, "n_dumps": 4, "n_receivers": 1, "n_arrays": 2,
                        "n_on_otf": 2, "line_width_channels": 4.0}


def _truth(path: Path, name: str) -> np.ndarray:
    group: Any = zarr.open_group(str(truth_path_for(path)), mode="r")
    return np.asarray(group["scan_001001"][name][...])


def _integral(x: np.ndarray, line: np.ndarray) -> float:
    return float(np.nanmean(x[line], axis=(1, 2, 3, 4)).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=80)
    ns = ap.parse_args()
    diffs: dict[str, list[float]] = {"merged": [], "beam A": [], "otf": []}
    truth_integral = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(ns.seeds):
            path = make_session(Path(tmp) / f"c{seed}.zarr", **TINY, seed=seed, noise=True,
                                beam_imbalance_k=0.05, sky_fluctuation=0.01)
            truth = _truth(path, "ta_star")
            line = np.mean(truth, axis=(1, 2, 3, 4)) > 0.01 * truth.max()
            (merged,) = run_stages(path, CalibrationConfig(dbs_merge=True))
            truth_integral = _integral(truth[..., [0, 2]], line)
            diffs["merged"].append(_integral(merged.result.spectra, line) - truth_integral)
            (single,) = run_stages(path, CalibrationConfig())
            beam = _truth(path, "ta_star_beam")[..., [0, 2]]
            diffs["beam A"].append(_integral(single.result.spectra[..., [0, 2]], line)
                                   - _integral(beam, line))
            otf = make_session(Path(tmp) / f"o{seed}.zarr", **{**TINY, "modes": ("otf",),
                                                               "n_on_otf": 4},
                               seed=seed, noise=True)
            t_otf = _truth(otf, "ta_star")
            line_o = np.mean(t_otf, axis=(1, 2, 3, 4)) > 0.01 * t_otf.max()
            (o,) = run_stages(otf, CalibrationConfig())
            diffs["otf"].append(_integral(o.result.spectra, line_o) - _integral(t_otf, line_o))
    print(f"{ns.seeds} seeds; truth line integral of the last seed {truth_integral:.3f} "
          "K x channels")
    for name, values in diffs.items():
        x = np.asarray(values)
        se = x.std(ddof=1) / np.sqrt(x.size)
        print(f"{name:8s} mean difference {x.mean():+.4f} +- {se:.4f} K x channels "
              f"({x.mean() / se:+.2f} standard errors)")


if __name__ == "__main__":
    main()
