"""T_A* line-integral bias under receiver gain drift (issue 14 item 2).

Noise-free simulated sessions (shipped atmosphere, default configuration) at --freq with a gain
drift of --drift per hour, calibrated scan by scan through the stage functions:

  none        no drift: the baseline (what the calibration gives without drift)
  sawtooth    the drift restarts at every load scan (the simulator's default); no correction
  continuous  the drift runs through the session (consecutive loads see it); no correction
  corrected   continuous drift, gain_interpolate: 3 (ON, OFF and load counts corrected by the
              gain interpolated between the scan's load snapshot and the next one,
              calpipe.physics.gain)

Per science scan it prints the minutes since its load scan, the fitted pwv and the bias of the
T_A* line integral (channels where the truth exceeds 1 % of its peak, averaged over dumps,
pixels and ON subscans) against the truth, minus the no-drift baseline. The last load scan
closes the session so that every science scan has a next snapshot.

Usage:
  python benchmarks/gain_drift_bias.py [--freq 691.473] [--drift 0.05] [--pwv 0.5]
         [--channels 512] [--json F]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

CASES = ("none", "sawtooth", "continuous", "corrected")


def run(case: str, freq: float, drift: float, pwv: float, channels: int,
        tmp: Path) -> list[dict]:
    import zarr

    from calpipe import stages
    from calpipe.atmosphere.tableio import load_default_table
    from calpipe.config import CalibrationConfig
    from calpipe.l0 import open_session, scan_group_name
    from calpipe.pipeline import load_next_calibration
    from calpipe.simulate import SimulationConfig, simulate_session, truth_path_for

    table = load_default_table()
    cfg = replace(SimulationConfig(), frequency_ghz=freq, pwv_mm=pwv, noise=False,
                  n_channels=channels, n_scans=13, load_every=6, seed=7,
                  gain_drift_per_hour=0.0 if case == "none" else drift,
                  gain_drift_reset=case == "sawtooth")
    path = tmp / f"{case}.zarr"
    simulate_session(path, cfg, table=table, overwrite=True)
    config = CalibrationConfig(gain_interpolate=3 if case == "corrected" else 0)
    session = open_session(path)
    truth = zarr.open_group(str(truth_path_for(path)), mode="r")
    rows = []
    for n in session.source_scans():
        scan = session.load_scan(n)
        cal = session.load_calibration(n, scan.meta.lloadsn)
        nxt = load_next_calibration(session, n, cal.scan, config)
        load = stages.resolve(scan, cal, config, nxt)
        prepared = stages.prepare(scan, config)
        atm = stages.atmosphere(stages.ScanGeometry.of(scan), load, prepared, config, table)
        result = stages.calibrate(scan, load, prepared, atm, config)
        ta = truth[scan_group_name(n)]["ta_star"][...]
        line = np.nanmean(ta, axis=(1, 2, 3, 4)) > 0.01 * np.nanmax(ta)
        measured = float(np.nansum(np.nanmean(result.spectra[line], axis=(1, 2, 3, 4))))
        expect = float(np.nansum(np.nanmean(ta[line], axis=(1, 2, 3, 4))))
        minutes = (float(np.mean(scan.meta.mjd)) - float(np.mean(cal.meta.mjd))) * 1440.0
        rows.append({"scan": n, "kind": result.mode, "minutes_since_load": minutes,
                     "pwv_mm": float(atm.pwv_mm[0, 0]), "line_bias": measured / expect - 1})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--freq", type=float, default=691.473)
    ap.add_argument("--drift", type=float, default=0.05)
    ap.add_argument("--pwv", type=float, default=0.5)
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--json", type=Path)
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = {c: run(c, ns.freq, ns.drift, ns.pwv, ns.channels, Path(tmp)) for c in CASES}
    print(f"{ns.freq} GHz, pwv {ns.pwv} mm, gain drift {100 * ns.drift:g} %/h, noise-free; "
          "line-integral bias minus the no-drift baseline (%), fitted pwv (mm)")
    print(f"{'scan':>6} {'kind':>4} {'min':>5} " + " ".join(f"{c:>11}" for c in CASES[1:])
          + " " + " ".join(f"{'pwv ' + c:>15}" for c in CASES))
    base = res["none"]
    for i, b in enumerate(base):
        print(f"{b['scan']:>6} {b['kind']:>4} {b['minutes_since_load']:5.1f} "
              + " ".join(f"{100 * (res[c][i]['line_bias'] - b['line_bias']):11.3f}"
                         for c in CASES[1:])
              + " " + " ".join(f"{res[c][i]['pwv_mm']:15.4f}" for c in CASES))
    summary = {}
    for c in CASES[1:]:
        own = np.array([r["line_bias"] - b["line_bias"] for r, b in zip(res[c], base,
                                                                         strict=True)])
        summary[c] = {"mean": float(own.mean()), "max_abs": float(np.abs(own).max())}
        print(f"{c:>11}: mean {100 * own.mean():+.3f} %, max |.| {100 * np.abs(own).max():.3f} %")
    if ns.json:
        ns.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(ns).items()},
                                       "summary": summary, "scans": res}, indent=1))


if __name__ == "__main__":
    main()
