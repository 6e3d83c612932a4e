"""Accuracy of an am-built atmosphere table against direct am runs.

Usage::

    python benchmarks/atm_table_accuracy.py [--table PATH] [--points 300] [--seed 1]
        [--json out.json] [--no-freq]

Four studies of the sky brightness on the J scale,
T_sky = J(T_atm)(1 - e^{-tau A}) + J(T_cmb) e^{-tau A}:

1. random (frequency, pwv, ground pressure) points off every node, frequency uniform in
   80-1200 GHz, pwv log-uniform in 0.05-8 mm, P log-uniform in 150-800 hPa. Errors:
   * ``zenith``: table T_sky(A=1) - J(am Tb at zenith);
   * ``A=2 interp``: table T_sky(A=2) - same formula with am's own zenith tau and T_atm
     (the interpolation error at airmass 2);
   * ``A=2 vs am``: table T_sky(A=2) - J(am Tb at za = 60 deg) (includes the approximation of
     using the zenith T_atm at other airmasses); ``A=2 model``: that approximation alone.
2. pwv only: frequency and pressure on table nodes, random pwv.
3. pressure only: frequency and pwv on nodes, random pressure.
4. frequency only: pwv and pressure on nodes, am on a 2 MHz grid in several bands vs the
   table interpolated linearly from its channels.

Per-band median / 99th percentile / max of |error| [K]; rows with tau A > 3 are reported
separately (saturated line cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calpipe.atmosphere import T_CMB, load_default_table, load_table, planck_j  # noqa: E402
from calpipe.atmosphere.am_builder import (  # noqa: E402
    _run_am,
    direct_model,
    standard_profile,
    t_atm_from_tb,
)

BANDS = [(80, 120), (120, 200), (200, 300), (300, 400), (400, 550), (550, 750), (750, 1000),
         (1000, 1200)]
FREQ_BANDS = [(84, 96), (105, 118), (210, 222), (240, 252), (340, 352), (400, 412), (460, 472),
              (640, 652), (800, 812), (850, 862), (1030, 1042)]


def tsky(f: np.ndarray, tau: np.ndarray, tatm: np.ndarray, airmass: float) -> np.ndarray:
    tr = np.exp(-tau * airmass)
    return planck_j(f, tatm) * (1 - tr) + planck_j(f, T_CMB) * tr


def stats(err: np.ndarray) -> dict[str, float | int]:
    e = np.abs(err)
    if e.size == 0:
        return {"n": 0}
    return {"n": int(e.size), "median": float(np.median(e)), "p99": float(np.percentile(e, 99)),
            "max": float(e.max())}


def fmt(s: dict[str, float | int]) -> str:
    if not s.get("n"):
        return "– (0)"
    return f"{s['median']:.3f} / {s['p99']:.3f} / {s['max']:.3f} ({s['n']})"


def band_table(title: str, f_ghz: np.ndarray, tau_a: np.ndarray,
               errs: dict[str, np.ndarray]) -> dict[str, object]:
    print(f"\n### {title}\n")
    names = list(errs)
    print("| band GHz | " + " | ".join(f"{n}: median / p99 / max K (n)" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    out: dict[str, object] = {}
    rows = [(f"{lo}-{hi}", (f_ghz >= lo) & (f_ghz < hi)) for lo, hi in BANDS]
    rows.append(("all, tau A <= 3", np.ones(f_ghz.size, bool)))
    for label, m in rows:
        sel = m & (tau_a <= 3)
        cells = [stats(errs[n][sel]) for n in names]
        out[label] = dict(zip(names, cells, strict=True))
        print(f"| {label} | " + " | ".join(fmt(c) for c in cells) + " |")
    sel = tau_a > 3
    cells = [stats(errs[n][sel]) for n in names]
    out["tau A > 3"] = dict(zip(names, cells, strict=True))
    print("| tau A > 3 (any band) | " + " | ".join(fmt(c) for c in cells) + " |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--table", type=Path, default=None)
    ap.add_argument("--points", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-freq", action="store_true", help="skip the frequency study")
    ns = ap.parse_args(argv)
    tab = load_table(ns.table) if ns.table else load_default_table()
    assert tab.t_atm is not None
    rng = np.random.default_rng(ns.seed)
    results: dict[str, object] = {"table": tab.model, "digest": tab.digest}
    print(f"table {tab.model}, digest {tab.digest[:16]}, {tab.tau.shape}")
    t0 = time.monotonic()

    # 1. random points
    n = ns.points
    f = rng.uniform(80e9, 1200e9, n)
    w = np.exp(rng.uniform(np.log(0.05), np.log(8.0), n))
    p = np.exp(rng.uniform(np.log(150.0), np.log(800.0), n))
    rows = []
    for i in range(n):
        tau_d, tatm_d, tb_d = direct_model(f[i], w[i], p[i])
        _, _, tb60 = direct_model(f[i], w[i], p[i], zenith_angle_deg=60.0)
        tau_t, tatm_t = tab.slab(np.array([f[i]]), p[i]).evaluate(w[i])
        assert tatm_t is not None
        rows.append((float(tau_d), float(tatm_d), float(tb_d), float(tb60), tau_t[0], tatm_t[0]))
    r = np.array(rows)
    tau_d, tatm_d, tb_d, tb60, tau_t, tatm_t = r.T
    errs = {
        "zenith": tsky(f, tau_t, tatm_t, 1) - planck_j(f, tb_d),
        "A=2 interp": tsky(f, tau_t, tatm_t, 2) - tsky(f, tau_d, tatm_d, 2),
        "A=2 vs am": tsky(f, tau_t, tatm_t, 2) - planck_j(f, tb60),
        "A=2 model": tsky(f, tau_d, tatm_d, 2) - planck_j(f, tb60),
    }
    results["random"] = band_table(
        f"random points (n={n}, pwv 0.05-8 mm, P 150-800 hPa); tau A <= 3 unless stated",
        f / 1e9, tau_d * 2, errs)
    rel = np.abs(tau_t / tau_d - 1)
    print(f"\ntau relative error: median {np.median(rel):.2e}, p99 {np.percentile(rel, 99):.2e},"
          f" max {rel.max():.2e}")
    results["random_tau_rel"] = stats(rel)
    bad = np.argsort(-np.abs(errs["zenith"]))[:5]
    print("worst zenith points (f GHz, pwv, P, tau, err K): " + "; ".join(
        f"{f[k] / 1e9:.3f}, {w[k]:.3f}, {p[k]:.0f}, {tau_d[k]:.2f}, {errs['zenith'][k]:+.3f}"
        for k in bad))

    # 2. pwv only / 3. pressure only (zenith)
    for study in ("pwv only", "pressure only"):
        m = max(n // 3, 20)
        jf = rng.integers(0, tab.frequency_hz.size, m)
        fs = tab.frequency_hz[jf]
        if study == "pwv only":
            gs = rng.integers(0, tab.pressure_hpa.size, m)
            ps = tab.pressure_hpa[gs]
            ws = np.exp(rng.uniform(np.log(0.05), np.log(8.0), m))
        else:
            ks = rng.integers(0, tab.pwv_mm.size, m)
            ws = tab.pwv_mm[ks]
            ps = np.exp(rng.uniform(np.log(150.0), np.log(800.0), m))
        e1, e2, ta = [], [], []
        for i in range(m):
            tau_d1, tatm_d1, tb_d1 = direct_model(fs[i], ws[i], ps[i])
            tau_t1, tatm_t1 = tab.slab(np.array([fs[i]]), ps[i]).evaluate(ws[i])
            assert tatm_t1 is not None
            e1.append(tsky(fs[i], tau_t1, tatm_t1, 1)[0] - planck_j(fs[i], tb_d1))
            e2.append(tsky(fs[i], tau_t1, tatm_t1, 2)[0] - tsky(fs[i], tau_d1, tatm_d1, 2))
            ta.append(float(tau_d1) * 2)
        results[study] = band_table(f"{study} (n={m})", fs / 1e9, np.array(ta),
                                    {"zenith": np.array(e1), "A=2 interp": np.array(e2)})

    # 4. frequency only
    if not ns.no_freq:
        g = int(np.argmin(np.abs(tab.pressure_hpa - 527.3)))
        errs_f: dict[str, list[np.ndarray]] = {"zenith": [], "A=2 interp": []}
        fa, taua = [], []
        for k in (int(np.argmin(np.abs(tab.pwv_mm - 0.5))), int(np.argmin(np.abs(tab.pwv_mm - 2)))):
            amc = standard_profile(float(tab.pressure_hpa[g]), tab.meta.get("ground_temperature_k"))
            for lo, hi in FREQ_BANDS:
                ff, tau_f, tb_f = _run_am(amc, [str(lo), str(hi), "2", "0",
                                                f"{tab.pwv_mm[k]:.9g}"])
                fh = ff * 1e9
                tatm_f = t_atm_from_tb(fh, tau_f, tb_f)
                tt, at = tab.slab(fh, float(tab.pressure_hpa[g])).evaluate(float(tab.pwv_mm[k]))
                assert at is not None
                errs_f["zenith"].append(tsky(fh, tt, at, 1) - planck_j(fh, tb_f))
                errs_f["A=2 interp"].append(tsky(fh, tt, at, 2) - tsky(fh, tau_f, tatm_f, 2))
                fa.append(ff)
                taua.append(tau_f * 2)
        results["frequency only"] = band_table(
            f"frequency only (table step {np.median(np.diff(tab.frequency_hz)) / 1e6:.0f} MHz vs "
            f"am at 2 MHz, P = {tab.pressure_hpa[g]:g} hPa, pwv nodes near 0.5 and 2 mm, "
            f"bands {FREQ_BANDS})",
            np.concatenate(fa), np.concatenate(taua),
            {k: np.concatenate(v) for k, v in errs_f.items()})
    print(f"\nelapsed {time.monotonic() - t0:.0f} s")
    if ns.json:
        ns.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
