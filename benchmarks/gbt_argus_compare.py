"""The numbers of docs/physics.md "Chopper wheel and Nod" (issue 16), measured.

    python benchmarks/gbt_argus_compare.py

Imports tests/data/gbt-argus, calibrates it (library and ``calpipe calibrate``), and prints
the largest relative differences from dysh 1.1.0 (tests/data/gbt-argus/dysh_reference.npz),
then the per-channel versus band-scalar T_sys comparison.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from calpipe.cli import main
from calpipe.l0 import open_session
from calpipe.nod import NodOptions, calibrate_nod_session, nod_average_from_l1, spur_mask_from_attrs
from calpipe.physics import chopper

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "gbt-argus"


def rel(a: float, b: float) -> float:
    return abs(a / b - 1.0)


def main_() -> None:
    ref = np.load(DATA / "dysh_reference.npz")
    with tempfile.TemporaryDirectory() as tmp:
        l0, l1, cfg = Path(tmp) / "a.zarr", Path(tmp) / "l1.zarr", Path(tmp) / "c.yaml"
        assert main(["-q", "import", "sdfits", str(DATA), str(l0)]) == 0
        cfg.write_text("calibration:\n  vane_t_cal: 272.0\n")
        assert main(["-q", "calibrate", str(l0), str(l1), "--config", str(cfg)]) == 0
        lib = calibrate_nod_session(l0, NodOptions(t_cal=272.0))
        via_l1 = nod_average_from_l1(l1)
        session = open_session(l0)
        beams = {(r.scan, b.receiver): b for r in lib.scans for b in r.beams}
        vc = [beams[(331, f)].vane_t_sys for f in (1, 9)]
        print("vanecal T_sys", vc, "max rel diff",
              max(rel(a, b) for a, b in zip(vc, ref["vanecal_tsys"], strict=True)))
        worst_t, worst_s, worst_abs = 0.0, 0.0, 0.0
        for k, (n, f) in enumerate(zip(ref["nod_scan"], ref["nod_fdnum"], strict=True)):
            b = beams[(int(n), int(f))]
            worst_t = max(worst_t, rel(b.t_sys[0], ref["nod_tsys"][k]))
            ok = np.isfinite(ref["nod_spectra"][k])
            d = np.abs(b.spectra[0][ok] - ref["nod_spectra"][k][ok])
            worst_abs = max(worst_abs, float(d.max()))
            worst_s = max(worst_s, float((d / np.abs(ref["nod_spectra"][k][ok])).max()))
        print(f"Nod T_sys max rel diff {worst_t:.2g}; spectra max rel {worst_s:.2g}, "
              f"max abs {worst_abs:.2g} K")
        for name, a in (("library", lib.average), ("calpipe calibrate (L1)", via_l1)):
            ok = np.isfinite(a.spectrum)
            d = float(np.abs(a.spectrum[ok] - ref["average_spectrum"][ok]).max())
            rt = rel(a.t_sys, float(ref["average_tsys"]))
            re = rel(a.exposure, float(ref["average_exposure"]))
            rr = rel(a.rms, float(ref["average_rms"]))
            print(f"average via {name}: T_sys {a.t_sys:.4f} K (rel {rt:.2g}), exposure "
                  f"{a.exposure:.5f} s (rel {re:.2g}), rms {a.rms:.5f} K (rel {rr:.2g}), "
                  f"max |diff| {d:.2g} K = {d / a.rms:.2g} rms")
        cal = session.load_calibration(331)
        inner = chopper.inner_channels(cal.counts.shape[0])
        for r in lib.scans:
            scan = session.load_scan(r.scan)
            good = inner & ~spur_mask_from_attrs(scan)
            for b in r.beams:
                vane, sky = cal.counts[:, 0, b.receiver, 0, 0], cal.counts[:, 0, b.receiver, 0, 1]
                s_on, s_off = (0, 1) if b.beam == 1 else (1, 0)
                on = scan.counts[:, 0, b.receiver, 0, s_on]
                off = scan.counts[:, 0, b.receiver, 0, s_off]
                ku = 272.0 * (on - off) / (vane - sky)
                ts = chopper.tsys_spectrum(vane, sky, 272.0)[good]
                diff = float(np.std((ku - b.spectra[0])[good]))
                noise = float(np.std(b.spectra[0][good]))
                print(f"scan {r.scan} receiver {b.receiver}: per-channel T_sys {ts.mean():.1f} "
                      f"+- {ts.std():.1f} K ({ts.std() / ts.mean():.1%}); per-channel minus "
                      f"scalar T_A* rms {diff:.4f} K = {diff / noise:.1%} of the noise rms "
                      f"{noise:.3f} K")


if __name__ == "__main__":
    main_()
