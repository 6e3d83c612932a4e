"""Quick-look of the calibrated GBT Argus NGC5908 Nod spectrum, calpipe next to dysh (issue 16).

    python benchmarks/gbt_argus_quicklook.py [OUT.png]

Imports tests/data/gbt-argus with ``calpipe import sdfits``, calibrates it with
``calpipe calibrate`` (vane_t_cal = 272 K), averages the Nod beams from the L1 store
(calpipe.nod.nod_average_from_l1) and plots it over dysh 1.1.0's average from
tests/data/gbt-argus/dysh_reference.npz, with the difference. Default output:
docs/gbt_argus_ngc5908.png.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from calpipe.cli import main  # noqa: E402
from calpipe.l0 import open_session  # noqa: E402
from calpipe.nod import nod_average_from_l1  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "gbt-argus"


def run(out_png: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        l0, l1, cfg = Path(tmp) / "argus.zarr", Path(tmp) / "l1.zarr", Path(tmp) / "cfg.yaml"
        assert main(["-q", "import", "sdfits", str(DATA), str(l0)]) == 0
        cfg.write_text("calibration:\n  vane_t_cal: 272.0\n")
        assert main(["-q", "calibrate", str(l0), str(l1), "--config", str(cfg)]) == 0
        avg = nod_average_from_l1(l1)
        scan = open_session(l0).load_scan(331)
        nu, _ = scan.meta.frequency_axes(scan.counts.shape[0], 0)
    ref = np.load(DATA / "dysh_reference.npz")
    ghz = nu / 1e9
    fig, (ax, dx) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True,
                                 gridspec_kw={"height_ratios": [3, 1]})
    ax.plot(ghz, ref["average_spectrum"], lw=2.2, color="0.75", label="dysh 1.1.0 getnod")
    ax.plot(ghz, avg.spectrum, lw=0.7, color="C0", label="calpipe (import sdfits + calibrate)")
    ax.set_ylabel("T_A* (K)")
    ax.set_title(f"GBT Argus, NGC5908, Nod scans 331-334, beams 1 + 9: T_sys {avg.t_sys:.2f} K "
                 f"(dysh {float(ref['average_tsys']):.2f}), rms {avg.rms:.4f} K "
                 f"(dysh {float(ref['average_rms']):.4f})", fontsize=9)
    ax.legend(fontsize=8)
    diff = avg.spectrum - ref["average_spectrum"]
    dx.plot(ghz, diff * 1e6, lw=0.7, color="C3")
    dx.set_ylabel("calpipe - dysh (uK)")
    dx.set_xlabel("sky frequency, signal sideband (GHz)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    print(f"max |calpipe - dysh| = {np.nanmax(np.abs(diff)):.3g} K -> {out_png}")


if __name__ == "__main__":
    run(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "gbt_argus_ngc5908.png")
