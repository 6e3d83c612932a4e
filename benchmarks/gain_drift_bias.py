"""T_A* line-integral bias under receiver gain drift (issue 14 item 2: the bar's "present value").

A noise-free simulated session (shipped atmosphere, as users calibrate) with a gain drift of
--drift per hour is calibrated with the default configuration; per science scan it prints the
minutes since its load scan, the fitted pwv against the simulated one, and the bias of the
T_A* line integral (channels where the truth exceeds 1 % of its peak, averaged over dumps,
pixels and ON subscans) against the truth. The same session without drift is the baseline
(what the calibration gives without drift), so the drift's own bias is the difference.

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


def run(freq: float, drift: float, pwv: float, channels: int, tmp: Path) -> list[dict]:
    import zarr

    from calpipe import stages
    from calpipe.atmosphere.tableio import load_default_table
    from calpipe.config import CalibrationConfig
    from calpipe.l0 import open_session, scan_group_name
    from calpipe.simulate import SimulationConfig, simulate_session, truth_path_for

    table = load_default_table()
    cfg = replace(SimulationConfig(), frequency_ghz=freq, gain_drift_per_hour=drift,
                  pwv_mm=pwv, noise=False, n_channels=channels, n_scans=12, load_every=6,
                  seed=7)
    path = tmp / f"drift{drift}.zarr"
    simulate_session(path, cfg, table=table, overwrite=True)
    config = CalibrationConfig()
    session = open_session(path)
    truth = zarr.open_group(str(truth_path_for(path)), mode="r")
    rows = []
    for n in session.source_scans():
        scan = session.load_scan(n)
        cal = session.load_calibration(n, scan.meta.lloadsn)
        load = stages.resolve(scan, cal, config)
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
        base = run(ns.freq, 0.0, ns.pwv, ns.channels, Path(tmp))
        drift = run(ns.freq, ns.drift, ns.pwv, ns.channels, Path(tmp))
    print(f"{ns.freq} GHz, pwv {ns.pwv} mm, gain drift {100 * ns.drift:g} %/h, noise-free")
    print(f"{'scan':>6} {'kind':>4} {'min':>6} {'pwv0':>7} {'pwv':>7} {'bias0 %':>8} "
          f"{'bias %':>8} {'drift %':>8}")
    for b, d in zip(base, drift, strict=True):
        print(f"{d['scan']:>6} {d['kind']:>4} {d['minutes_since_load']:6.1f} "
              f"{b['pwv_mm']:7.4f} {d['pwv_mm']:7.4f} {100 * b['line_bias']:8.3f} "
              f"{100 * d['line_bias']:8.3f} {100 * (d['line_bias'] - b['line_bias']):8.3f}")
    own = np.array([d["line_bias"] - b["line_bias"] for b, d in zip(base, drift, strict=True)])
    print(f"drift-caused line-integral bias: mean {100 * own.mean():+.3f} %, "
          f"max |.| {100 * np.abs(own).max():.3f} %")
    if ns.json:
        ns.json.write_text(json.dumps({"args": vars(ns) | {"json": str(ns.json)},
                                       "baseline": base, "drift": drift}, indent=1))


if __name__ == "__main__":
    main()
