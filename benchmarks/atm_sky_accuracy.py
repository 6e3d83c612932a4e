"""T_A* bias of calpipe's sky models against direct am slant-path runs (issue 13, item 2).

Usage::

    OMP_NUM_THREADS=1 nice python benchmarks/atm_sky_accuracy.py [--sky-dir DIR]
        [--truth-cache truth.npz] [--json out.json] [--workers 2]

Truth (independent of the table code path): for every tuning (signal 230.538, 345.796, 460.0,
691.473, 850.0 GHz; image 12 GHz below, so 460 GHz has its image on the 448 GHz water line),
elevation (20, 30, 45, 60 deg), ground temperature (260, 272, 285 K) and pwv (0.3, 0.7,
2.0 mm), direct am runs along the slant path (za = 90 - el, plane parallel) with the site
profile adjusted to that ground temperature at 550 hPa, on a 1 MHz grid; 63 channels of
16 MHz spacing on odd MHz (between the 2 MHz nodes of the sky tables).

Each case is calibrated like the pipeline does it (``calpipe.stages.sky_slabs`` +
``SkyModel`` + ``fit_pwv`` + ``transmissions``): the OFF sky S_obs = T'_sky,true - T'_hot
with T_sky,true = f_eff J(Tb_am) + (1 - f_eff) J(T_ground), L0 tamb = T_ground, one OFF at the
ON's elevation, DSB (w_s = 0.5) and 2SB (w_s = 0.95). The T_A* bias per channel is
tr_s,true / tr_s,model - 1 (calibrated T_A* = true T_A* x tr_true / tr_model); reported where
tr_s,true >= 0.2, with the fitted pwv error. Models: ``zenith`` (the shipped 50 MHz zenith
table: one T_atm at every airmass, the AFGL ground temperature), ``ambient`` (T_atm = T_amb,
the CCAT linear-table / kalibrate approximation) and ``sky`` (per-tuning sky tables).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calpipe import stages  # noqa: E402
from calpipe.atmosphere import load_default_table, planck_j  # noqa: E402
from calpipe.atmosphere.am_builder import slant_model  # noqa: E402
from calpipe.config import CalibrationConfig  # noqa: E402
from calpipe.physics.atmosphere import (  # noqa: E402
    SkyInputs,
    SkyModel,
    fit_pwv,
    transmissions,
)
from calpipe.physics.radiometry import EXACT, sideband_weighted  # noqa: E402

TUNINGS = (230.538, 345.796, 460.0, 691.473, 850.0)
IF_GHZ = 6.0
ELEVATIONS = (20.0, 30.0, 45.0, 60.0)
T_GROUND = (260.0, 272.0, 285.0)
PWV = (0.3, 0.7, 2.0)
PRESSURE = 550.0
F_EFF = 0.95
SIDEBANDS = {"dsb": 0.5, "2sb": 0.95}
N_CH = 63
TR_MIN = 0.2


def channels(f_ghz: float) -> tuple[np.ndarray, np.ndarray]:
    """Signal and image channel frequencies (Hz), on odd MHz."""
    k = np.arange(N_CH)
    sig_mhz = np.round(f_ghz * 1000) - 499 + 16 * k
    img_mhz = np.round((2 * f_ghz - 2 * IF_GHZ) * 1000) - sig_mhz
    return sig_mhz * 1e6, img_mhz * 1e6


def _truth_job(args: tuple[float, float, float, float, str]) -> tuple[np.ndarray, np.ndarray]:
    f_ghz, el, tg, pwv, which = args
    sig, img = channels(f_ghz)
    nu = sig if which == "sig" else img
    lo, hi = nu.min() / 1e9 - 0.0005, nu.max() / 1e9 + 0.0005
    logging.getLogger("_am").setLevel(logging.ERROR)
    f, tau, tb = slant_model((lo, hi), 1.0, pwv, PRESSURE, tg, 1.0 / np.sin(np.radians(el)))
    idx = np.searchsorted(np.round(f / 1e6), np.round(nu / 1e6))
    if not np.array_equal(np.round(f[idx] / 1e6), np.round(nu / 1e6)):
        raise RuntimeError("am grid does not hold the channels")
    return tau[idx], tb[idx]


def truth(workers: int, cache: Path | None) -> dict[str, np.ndarray]:
    cases = [(f, el, tg, w) for f in TUNINGS for el in ELEVATIONS for tg in T_GROUND
             for w in PWV]
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    jobs = [(f, el, tg, w, which) for (f, el, tg, w) in cases for which in ("sig", "img")]
    t0 = time.monotonic()
    with ProcessPoolExecutor(max_workers=workers) as ex:
        res = list(ex.map(_truth_job, jobs, chunksize=4))
    print(f"truth: {len(jobs)} am slant runs in {time.monotonic() - t0:.0f} s", flush=True)
    out = {
        "cases": np.array(cases),
        "tau_sig": np.array([r[0] for r in res[0::2]]),
        "tb_sig": np.array([r[1] for r in res[0::2]]),
        "tau_img": np.array([r[0] for r in res[1::2]]),
        "tb_img": np.array([r[1] for r in res[1::2]]),
    }
    if cache is not None:
        np.savez(cache, **out)
    return out


def calibrate_case(config: CalibrationConfig, table, f_ghz: float, el: float, tg: float,
                   w_s: float, tb_sig, tb_img, tau_sig) -> tuple[float, np.ndarray, np.ndarray]:
    """(fitted pwv, T_A* bias [C], tr_true [C]) through the pipeline's atmosphere functions."""
    nu_s, nu_i = channels(f_ghz)
    el_r = np.array([np.radians(el)])
    tamb = np.array([tg])
    slabs = stages.sky_slabs(table, config, nu_s, nu_i, PRESSURE, el_r, tamb, el_r, tamb)
    sky = SkyInputs(nu_s, nu_i, w_s, F_EFF, 2.725, EXACT)
    model = SkyModel(sky, slabs.sig_off, slabs.img_off, el_r, tamb, slabs.use_model)

    def seen(nu, tb):
        return F_EFF * planck_j(nu, tb) + (1 - F_EFF) * planck_j(nu, tg)

    t_sky = w_s * seen(nu_s, tb_sig) + (1 - w_s) * seen(nu_i, tb_img)
    t_hot = sideband_weighted(nu_s, nu_i, 293.0, w_s)
    s_obs = (t_sky - t_hot)[:, None, None, None]
    weight = (1.0 / (t_sky + 50.0) ** 2)[:, None, None, None]
    pwv, *_ = fit_pwv(scan=0, model=model, s_obs=s_obs, weight=weight, t_hot_eff=t_hot,
                      per_pixel=False, grid_min=0.001, grid_max=10.0, grid_points=100,
                      max_iter=30, tol=1e-9)
    _, tr = transmissions(slabs.sig_on, pwv, el_r)
    tr_true = np.exp(-tau_sig)
    return float(pwv[0, 0]), tr_true / tr[:, 0, 0, 0] - 1.0, tr_true


def _pressure_job(args: tuple[float, float]) -> tuple:
    global PRESSURE
    f, p = args
    PRESSURE = p
    return (_truth_job((f, 30.0, 272.0, 0.7, "sig")), _truth_job((f, 30.0, 272.0, 0.7, "img")))


def pressure_check(workers: int) -> None:
    """Single-node sky tables (550 hPa) used at other pressures with the zenith-table tau
    correction: el 30, T_g 272 K, pwv 0.7 mm; the +-4 % tolerance is widened to 5 % here so
    that 525 / 575 hPa can be measured."""
    global PRESSURE
    from calpipe.atmosphere import skytable

    skytable.SINGLE_NODE_TOLERANCE = 0.05
    cases = [(f, p) for f in (345.796, 460.0, 850.0) for p in (525.0, 540.0, 560.0, 575.0)]
    with ProcessPoolExecutor(max_workers=workers) as ex:
        res = list(ex.map(_pressure_job, cases))
    table = load_default_table()
    print("\n### single pressure node: max |T_A* bias| % / pwv error %\n")
    print("| GHz | " + " | ".join(f"{p:g} hPa" for p in (525, 540, 560, 575)) + " |")
    print("|---|---|---|---|---|")
    for f in (345.796, 460.0, 850.0):
        cells = []
        for (fc, p), ((tau_s, tb_s), (_, tb_i)) in zip(cases, res, strict=True):
            if fc != f:
                continue
            PRESSURE = p
            out = []
            for w_s in SIDEBANDS.values():
                pwv, bias, tr_true = calibrate_case(CalibrationConfig(), table, f, 30.0, 272.0,
                                                    w_s, tb_s, tb_i, tau_s)
                ok = tr_true >= TR_MIN
                out.append((float(np.abs(bias[ok]).max()) if ok.any() else np.nan,
                            pwv / 0.7 - 1))
            b = max(o[0] for o in out)
            e = max(abs(o[1]) for o in out)
            cells.append(("–" if not np.isfinite(b) else f"{100 * b:.2f}") + f" / {100 * e:.1f}")
        print(f"| {f:g} | " + " | ".join(cells) + " |")
    PRESSURE = 550.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sky-dir", default=None, help="directory of sky tables (else shipped)")
    ap.add_argument("--truth-cache", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pressure-check", action="store_true",
                    help="only the single-pressure-node check (24 am runs)")
    ns = ap.parse_args()
    if ns.pressure_check:
        logging.basicConfig(level=logging.ERROR)
        pressure_check(ns.workers)
        return 0
    tr = truth(ns.workers, ns.truth_cache)
    table = load_default_table()
    models = {
        "zenith": CalibrationConfig(sky_model="zenith"),
        "ambient": CalibrationConfig(sky_model="zenith", t_atm="ambient"),
        "sky": CalibrationConfig(sky_model="auto", sky_table_dir=ns.sky_dir),
    }
    logging.basicConfig(level=logging.ERROR)
    rows = []
    for i, (f, el, tg, w) in enumerate(tr["cases"]):
        for sb, w_s in SIDEBANDS.items():
            for name, cfg in models.items():
                try:
                    pwv, bias, tr_true = calibrate_case(cfg, table, f, el, tg, w_s,
                                                        tr["tb_sig"][i], tr["tb_img"][i],
                                                        tr["tau_sig"][i])
                except Exception as exc:  # a fit failure is a result too
                    rows.append({"f": f, "el": el, "tg": tg, "pwv": w, "sb": sb, "model": name,
                                 "error": f"{type(exc).__name__}: {exc}"})
                    continue
                ok = tr_true >= TR_MIN
                rows.append({"f": f, "el": el, "tg": tg, "pwv": w, "sb": sb, "model": name,
                             "pwv_fit": pwv, "pwv_err": pwv / w - 1,
                             "n_ok": int(ok.sum()),
                             "bias_max": float(np.abs(bias[ok]).max()) if ok.any() else None,
                             "bias_median": float(np.median(bias[ok])) if ok.any() else None})
    report(rows)
    if ns.json:
        ns.json.write_text(json.dumps(rows, indent=1))
    return 0


def report(rows: list[dict]) -> None:
    for name in ("zenith", "ambient", "sky"):
        print(f"\n### model: {name}\n")
        print("max |T_A* bias| % where tr_s >= 0.2 (over T_ground 260/272/285 K, pwv "
              "0.3/0.7/2 mm, DSB and 2SB) / max |pwv error| %; (n) cases with a usable channel\n")
        print("| el | " + " | ".join(f"{f:g} GHz" for f in TUNINGS) + " |")
        print("|---|" + "---|" * len(TUNINGS))
        for el in ELEVATIONS:
            cells = []
            for f in TUNINGS:
                sel = [r for r in rows if r["model"] == name and r["f"] == f and r["el"] == el]
                errs = [r for r in sel if "error" in r]
                b = [r["bias_max"] for r in sel if r.get("bias_max") is not None]
                p = [abs(r["pwv_err"]) for r in sel if "pwv_err" in r]
                cell = (f"{100 * max(b):.2f} / " if b else "– / ") + (
                    f"{100 * max(p):.1f} ({len(b)})" if p else "–")
                if errs:
                    cell += f" [{len(errs)} failed]"
                cells.append(cell)
            print(f"| {el:g} | " + " | ".join(cells) + " |")
        sel = [r for r in rows if r["model"] == name and "error" not in r]
        b = [r["bias_max"] for r in sel if r.get("bias_max") is not None]
        p = [abs(r["pwv_err"]) for r in sel]
        if b:
            n_ok = sum(1 for r in sel
                       if (r.get("bias_max") or 0) <= 0.01 and abs(r["pwv_err"]) <= 0.03)
            print(f"\nall: max |bias| {100 * max(b):.2f} %, max |pwv err| {100 * max(p):.2f} %, "
                  f"cases within the bar (|bias| <= 1 %, |pwv err| <= 3 %): {n_ok}/{len(sel)}")


if __name__ == "__main__":
    raise SystemExit(main())
