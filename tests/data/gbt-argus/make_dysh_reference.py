"""Reference values for tests/test_gbt_argus.py, computed with dysh (the GBT's reduction package).

Run with a Python that has dysh (and pandas < 3, see docs/usage.md):

    python make_dysh_reference.py [DATA_DIR] [OUT.npz]

DATA_DIR defaults to this directory, OUT to dysh_reference.npz next to this script. The
calls are the ones in the data README: vanecal per nodding beam with T_cal = 272 K, and
getnod on the two Nod pairs with the VANE scan 329, then timeaverage().
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(data_dir: Path, out: Path) -> None:
    import dysh
    from dysh.fits.gbtfitsload import GBTFITSLoad

    sdf = GBTFITSLoad(str(data_dir))
    beams = [int(b) for b in sdf.get_nod_beams(scan=331)]
    vanecal = [float(sdf.vanecal(scan=329, ifnum=0, plnum=0, fdnum=f, tcal=272)) for f in beams]
    sb = sdf.getnod(scan=[331, 332, 333, 334], ifnum=0, plnum=0, fdnum=beams, vane=329,
                    t_cal=272)
    nod_scan, nod_fdnum, nod_tsys, nod_exposure, nod_spectra, nod_mask = [], [], [], [], [], []
    for s in sb:
        nod_scan.append(int(s.scan))
        nod_fdnum.append(int(s.fdnum))
        nod_tsys.append(float(s.tsys[0]))
        nod_exposure.append(float(s.exposure[0]))
        cal = np.ma.asarray(s._calibrated[0])
        nod_spectra.append(np.ma.filled(cal.astype(float), np.nan))
        nod_mask.append(np.ma.getmaskarray(cal))
    ta = sb.timeaverage()
    mask = np.asarray(ta.mask, dtype=bool)
    avg = np.where(mask, np.nan, np.asarray(ta.flux.value, dtype=float))
    np.savez_compressed(
        out, dysh_version=dysh.__version__, nod_beams=np.array(beams),
        vanecal_tsys=np.array(vanecal), nod_scan=np.array(nod_scan),
        nod_fdnum=np.array(nod_fdnum), nod_tsys=np.array(nod_tsys),
        nod_exposure=np.array(nod_exposure), nod_spectra=np.array(nod_spectra),
        nod_mask=np.array(nod_mask), average_spectrum=avg, average_mask=mask,
        average_tsys=float(ta.meta["TSYS"]), average_exposure=float(ta.meta["EXPOSURE"]),
        average_rms=float(ta.stats()["rms"].value))
    print(f"dysh {dysh.__version__}: beams {beams}, vanecal T_sys {vanecal}, average T_sys "
          f"{float(ta.meta['TSYS']):.6f} K, exposure {float(ta.meta['EXPOSURE']):.6f} s, "
          f"rms {float(ta.stats()['rms'].value):.6f} K -> {out}")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else here
    dest = Path(sys.argv[2]) if len(sys.argv) > 2 else here / "dysh_reference.npz"
    main(data, dest)
