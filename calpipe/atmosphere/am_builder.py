"""Build atmosphere tables from Paine's ``am`` model (PyPI ``am-python``).

The profile (:func:`standard_profile`) is the AFGL *tropical* standard atmosphere
(Anderson et al. 1986, AFGL-TR-86-0110) for temperature, cut at the ground pressure, with

* dry air (N2, O2, CO2, CO, N2O, CH4 at am's default mixing ratios) hydrostatic in every layer;
* O3 with an AFGL-like vmr shape, normalised to 280 DU above sea level;
* H2O with a number density falling exponentially above the ground (scale height 2 km, ATM's
  default) plus 4 ppmv above the tropopause; the column is written as 1 mm pwv in total and
  scaled uniformly by am's ``Nscale h2o`` to the requested pwv.

For every (pwv, ground pressure) node am returns the zenith opacity ``tau`` and the Planck
brightness ``Tb``; the table stores ``tau`` and the effective emission temperature

    T_atm = J^-1[(J(Tb) - J(T_cmb) e^-tau) / (1 - e^-tau)],
    J(nu, T) = (h nu / k) / (exp(h nu / k T) - 1)

so that ``J(T_atm)(1 - e^-tau) + J(T_cmb) e^-tau`` reproduces am's zenith sky brightness on the
Rayleigh-Jeans-equivalent scale exactly at the nodes.

CLI: ``python -m calpipe.atmosphere.am_builder --help`` (wired as ``calpipe atm-table build``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from scipy.interpolate import CubicSpline

from calpipe.errors import ConfigError

from .table import T_CMB, AtmosphereTable, planck_j, planck_j_inverse

log = logging.getLogger(__name__)

# AFGL tropical temperature profile: altitude [km], temperature [K] (Anderson et al. 1986).
_AFGL_TROP_Z = np.array(
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
     25, 27.5, 30, 32.5, 35, 37.5, 40, 42.5, 45, 47.5, 50, 55, 60, 65, 70, 75, 80, 85],
    dtype=float,
)
_AFGL_TROP_T = np.array(
    [299.7, 293.7, 287.7, 283.7, 277.0, 270.3, 263.6, 257.0, 250.3, 243.6, 237.0, 230.1, 223.6,
     217.0, 210.3, 203.7, 197.0, 194.8, 198.8, 202.7, 206.7, 210.7, 214.6, 217.0, 219.2, 221.4,
     227.0, 232.3, 237.7, 243.1, 248.5, 254.0, 259.4, 264.8, 269.6, 270.2, 263.4, 253.1, 236.0,
     218.9, 201.8, 184.8, 177.1],
    dtype=float,
)
# O3 vmr shape [ppmv] on the same altitudes (AFGL-like; normalised to O3_COLUMN_DU below).
_O3_PPMV = np.array(
    [0.0287, 0.0315, 0.0334, 0.0350, 0.0356, 0.0377, 0.0399, 0.0422, 0.0447, 0.0500, 0.0600,
     0.0700, 0.0900, 0.1200, 0.1600, 0.2500, 0.5000, 0.9500, 1.400, 1.800, 2.400, 3.400, 4.300,
     5.400, 7.800, 9.300, 9.850, 9.700, 8.800, 7.500, 5.900, 4.500, 3.450, 2.800, 1.800, 1.100,
     0.650, 0.300, 0.180, 0.330, 0.500, 0.520, 0.500],
    dtype=float,
)
P_SEA_HPA = 1013.0
TROPOPAUSE_KM = 17.0
H2O_SCALE_HEIGHT_KM = 2.0
H2O_STRAT_VMR = 4e-6
O3_COLUMN_DU = 280.0
# Profile levels as fractions of the ground pressure ("sigma" levels; layers listed top-down):
# d ln p = 0.2 x 5, 0.35 x 5, 0.8 x 8 above the ground, plus an empty top layer. The levels move
# smoothly with the ground pressure, which keeps tau and T_atm smooth functions of it (fixed
# altitude levels give kinks of ~0.1 K).
_DLNP = [0.2] * 5 + [0.35] * 5 + [0.8] * 8
_SIGMA = np.exp(-np.concatenate([[0.0], np.cumsum(_DLNP)]))
_G0 = 9.80665
_M_AIR = 0.0289644  # kg/mol
_R_GAS = 8.314462618
_N_A = 6.02214076e23
_DU = 2.6867e16  # molecules cm^-2


@functools.lru_cache(maxsize=1)
def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray, CubicSpline, CubicSpline]:
    """Fine altitude grid [km], T [K] (C2 cubic spline through AFGL), -ln P (hydrostatic)."""
    t_spl = CubicSpline(_AFGL_TROP_Z, _AFGL_TROP_T, bc_type="natural")
    o3_spl = CubicSpline(_AFGL_TROP_Z, np.log(_O3_PPMV), bc_type="natural")
    zf = np.linspace(0.0, 85.0, 17001)
    tf = t_spl(zf)
    c = _G0 * _M_AIR / _R_GAS * 1e3  # K per km
    inv = c / tf
    mlp = -np.log(P_SEA_HPA) + np.concatenate(
        [[0.0], np.cumsum(0.5 * (inv[1:] + inv[:-1]) * np.diff(zf))]
    )
    return zf, tf, mlp, t_spl, o3_spl


def _temperature(z_km: np.ndarray | float) -> np.ndarray:
    """Standard temperature [K]: natural cubic spline through the AFGL tropical nodes."""
    return np.asarray(_grid()[3](np.clip(z_km, 0.0, 85.0)))


def _o3_vmr(z_km: np.ndarray | float) -> np.ndarray:
    """O3 vmr shape (not normalised): spline in ln vmr through the tabulated ppmv * 1e-6."""
    return np.exp(np.asarray(_grid()[4](np.clip(z_km, 0.0, 85.0)))) * 1e-6


def _pressure(z_km: np.ndarray | float) -> np.ndarray:
    """Hydrostatic pressure [hPa] of the spline T(z), P(0) = 1013 hPa."""
    zf, _, mlp, _, _ = _grid()
    return np.exp(-np.interp(z_km, zf, mlp))


def _altitude(p_hpa: float) -> float:
    """Altitude [km] of the pressure level ``p_hpa`` (clipped to 0-85 km)."""
    zf, _, mlp, _, _ = _grid()
    return float(np.interp(-np.log(p_hpa), mlp, zf))


def _air_column(p_top: float, p_base: float) -> float:
    """Hydrostatic air column [cm^-2] between two pressures [hPa]."""
    return (p_base - p_top) * 100.0 / (_G0 * _M_AIR) * _N_A * 1e-4


def _o3_scale() -> float:
    z = np.linspace(0, 85, 1701)
    p = _pressure(z)
    vmr = _o3_vmr(0.5 * (z[1:] + z[:-1]))
    col = np.sum(vmr * (p[:-1] - p[1:]) * 100.0 / (_G0 * _M_AIR) * _N_A * 1e-4)
    return O3_COLUMN_DU * _DU / col


def standard_profile(
    ground_pressure_hpa: float,
    ground_temperature_k: float | None = None,
    *,
    h2o_scale_height_km: float = H2O_SCALE_HEIGHT_KM,
    tol: float = 1e-4,
) -> str:
    """Return an am configuration (.amc text) for a site at ``ground_pressure_hpa``.

    The config takes five substitution arguments: ``%1 %2`` min/max frequency [GHz],
    ``%3`` step [MHz], ``%4`` zenith angle [deg], ``%5`` pwv [mm] (``Nscale h2o``; the
    profile holds 1 mm). Layers go top-down (0.01 hPa ... ground). ``ground_temperature_k``
    (default: the AFGL tropical temperature at that pressure) shifts the tropospheric
    temperatures by ``dT = T_g - T_afgl(P_g)``, tapering linearly to 0 at the tropopause (17 km).
    """
    if not 1.0 <= ground_pressure_hpa <= 1100.0:
        raise ConfigError(f"ground pressure {ground_pressure_hpa} hPa outside 1-1100 hPa")
    z_g = _altitude(ground_pressure_hpa)
    dt = 0.0 if ground_temperature_k is None else ground_temperature_k - float(_temperature(z_g))

    def temp(z: float) -> float:
        if dt == 0.0 or z >= TROPOPAUSE_KM:
            return float(_temperature(np.array(z)))
        w = (TROPOPAUSE_KM - z) / (TROPOPAUSE_KM - z_g) if z_g < TROPOPAUSE_KM else 1.0
        return float(_temperature(np.array(z))) + dt * min(max(w, 0.0), 1.0)

    p_lev = ground_pressure_hpa * _SIGMA
    levels = np.array([_altitude(float(x)) for x in p_lev])
    levels[0] = z_g
    # water: exponential density above ground + stratospheric vmr
    h = h2o_scale_height_km
    h2o = []
    o3 = []
    o3s = _o3_scale()
    for i in range(levels.size - 1):
        z0, z1 = levels[i], levels[i + 1]
        n_air = _air_column(p_lev[i + 1], p_lev[i])
        w = h * (np.exp(-(z0 - z_g) / h) - np.exp(-(z1 - z_g) / h))
        h2o.append(w)
        o3.append(float(_o3_vmr(0.5 * (z0 + z1))) * o3s)
        _ = n_air
    trop = np.array(h2o)
    # convert the exponential shape to molecules: pwv fraction; stratospheric part as vmr
    strat = np.array(
        [
            H2O_STRAT_VMR * _air_column(p_lev[i + 1], p_lev[i])
            if levels[i] >= TROPOPAUSE_KM else 0.0
            for i in range(levels.size - 1)
        ]
    ) / 3.3428e21  # molecules cm^-2 -> mm pwv (approx.; renormalised below)
    # the exponential part carries (1 mm - stratospheric part)
    trop_mm = trop / trop.sum() * max(1.0 - strat.sum(), 0.5)
    h2o_mm = trop_mm + strat
    h2o_mm *= 1.0 / h2o_mm.sum()
    lines = [
        f"# calpipe standard profile: AFGL tropical T, ground {ground_pressure_hpa:.6g} hPa,"
        f" z = {z_g:.4f} km, T_g = {temp(z_g):.3f} K",
        f"# h2o: exp. scale height {h} km + {H2O_STRAT_VMR * 1e6:g} ppmv above"
        f" {TROPOPAUSE_KM:g} km, 1 mm total, scaled by Nscale; o3 {O3_COLUMN_DU:g} DU at sea level",
        "f %1 GHz %2 GHz %3 MHz",
        "output f GHz tau neper Tb K",
        "za %4 deg",
        f"tol {tol:g}",
        "Nscale h2o %5",
        f"T0 {T_CMB} K",
        "",
        "layer",
        f"Pbase {p_lev[-1] * np.exp(-_DLNP[-1]):.6g} mbar",
        f"Tbase {temp(_altitude(p_lev[-1] * np.exp(-_DLNP[-1]))):.4f} K",
    ]
    for i in range(levels.size - 2, -1, -1):
        lines += [
            "",
            "layer",
            f"Pbase {p_lev[i]:.8g} mbar",
            f"Tbase {temp(levels[i]):.4f} K",
            "column dry_air vmr",
            f"column h2o {h2o_mm[i]:.8g} mm_pwv",
            f"column o3 vmr {o3[i]:.6g}",
        ]
    return "\n".join(lines) + "\n"


def am_version() -> str:
    """``"am 14.0 (am-python 0.8.0)"`` for the installed am-python."""
    try:
        pyver = metadata.version("am-python")
    except metadata.PackageNotFoundError:  # pragma: no cover
        pyver = "?"
    return f"am 14.0 (am-python {pyver})"


def _run_am(amc: str, args: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import am

    with tempfile.NamedTemporaryFile("w", suffix=".amc", delete=False) as fh:
        fh.write(amc)
        path = fh.name
    try:
        m = am.Model(path, args)
        m.compute()
        raw = m._inner.raw_outputs
        return (
            np.array(m.frequency, dtype=float),
            np.array(raw["opacity"], dtype=float),
            np.array(raw["tb_planck"], dtype=float),
        )
    except am.AmError as exc:
        raise ConfigError(f"am failed: {exc}") from exc
    finally:
        os.unlink(path)


def t_atm_from_tb(frequency_hz: np.ndarray, tau: np.ndarray, tb_planck: np.ndarray) -> np.ndarray:
    """T_atm = J^-1[(J(Tb) - J(T_cmb) e^-tau) / (1 - e^-tau)] (see module docstring)."""
    tr = np.exp(-tau)
    j = (planck_j(frequency_hz, tb_planck) - planck_j(frequency_hz, T_CMB) * tr) / (-np.expm1(-tau))
    return planck_j_inverse(frequency_hz, j)


def _node_job(job: tuple[str, float, float, float, float]) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray]:
    amc, fmin, fmax, step, pwv = job
    return _run_am(amc, [f"{fmin:.9g}", f"{fmax:.9g}", f"{step:.9g}", "0", f"{pwv:.9g}"])


def _node_done(done: int, total: int, t0: float, progress: bool,
               on_node: Callable[[int, int], None] | None) -> None:
    if progress:
        log.info("am node %d/%d done (%.0f s)", done, total, time.monotonic() - t0)
    if on_node is not None:
        on_node(done, total)


def build_table(
    freq_min_ghz: float,
    freq_max_ghz: float,
    step_mhz: float,
    pwv_nodes_mm: Sequence[float] | np.ndarray,
    pressures_hpa: Sequence[float] | np.ndarray,
    *,
    ground_temperature_k: float | None = None,
    workers: int = 2,
    progress: bool = True,
    command_line: str | None = None,
    on_node: Callable[[int, int], None] | None = None,
) -> AtmosphereTable:
    """Run am on every (ground pressure, pwv) node; return the zenith table.

    ``on_node(done, total)`` is called after each node (the command line's progress bar);
    ``progress`` logs each node at INFO.
    Frequencies are am's grid: multiples of ``step_mhz`` inside [freq_min, freq_max].
    ``ground_temperature_k`` None: the AFGL tropical temperature at each ground pressure.
    """
    pwv = np.asarray(sorted(float(x) for x in pwv_nodes_mm))
    pres = np.asarray(sorted(float(x) for x in pressures_hpa))
    if pwv.size < 2 or np.any(pwv <= 0) or np.any(np.diff(pwv) <= 0):
        raise ConfigError("pwv nodes must be >= 2 distinct positive values")
    if pres.size < 1 or np.any(np.diff(pres) <= 0):
        raise ConfigError("pressure nodes must be distinct")
    if not (0 < freq_min_ghz < freq_max_ghz) or step_mhz <= 0:
        raise ConfigError("need 0 < freq_min < freq_max and step > 0")
    jobs = []
    amcs = [standard_profile(p, ground_temperature_k) for p in pres]
    for amc in amcs:
        for w in pwv:
            jobs.append((amc, freq_min_ghz, freq_max_ghz, step_mhz, float(w)))
    t0 = time.monotonic()
    results: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for i, r in enumerate(ex.map(_node_job, jobs)):
                results.append(r)
                _node_done(i + 1, len(jobs), t0, progress, on_node)
    else:
        for i, job in enumerate(jobs):
            results.append(_node_job(job))
            _node_done(i + 1, len(jobs), t0, progress, on_node)
    f_ghz = results[0][0]
    nf = f_ghz.size
    freq_hz = f_ghz * 1e9
    tau = np.empty((pres.size, pwv.size, nf))
    tatm = np.empty_like(tau)
    for k, (f, ta, tb) in enumerate(results):
        g, p = divmod(k, pwv.size)
        if f.size != nf:
            raise ConfigError("am returned inconsistent frequency grids")
        tau[g, p] = ta
        tatm[g, p] = t_atm_from_tb(freq_hz, ta, tb)
    elapsed = time.monotonic() - t0
    meta: dict[str, Any] = {
        "builder": "calpipe.atmosphere.am_builder",
        "profile": "AFGL tropical T(z); h2o exp scale height "
        f"{H2O_SCALE_HEIGHT_KM} km + {H2O_STRAT_VMR * 1e6:g} ppmv strat; o3 {O3_COLUMN_DU} DU; "
        "dry_air hydrostatic (am defaults)",
        "ground_temperature_k": ground_temperature_k,
        "freq_min_ghz": float(freq_min_ghz),
        "freq_max_ghz": float(freq_max_ghz),
        "step_mhz": float(step_mhz),
        "pwv_nodes_mm": pwv.tolist(),
        "pressures_hpa": pres.tolist(),
        "t_cmb_k": T_CMB,
        "command_line": command_line or "",
        "am": am_version(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "build_seconds": round(elapsed, 1),
        "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return AtmosphereTable(
        frequency_hz=freq_hz,
        pwv_mm=pwv,
        pressure_hpa=pres,
        tau=tau,
        t_atm=tatm,
        model=am_version(),
        meta=meta,
    )


def direct_model(
    frequency_hz: np.ndarray | float,
    pwv_mm: float,
    pressure_hpa: float,
    *,
    ground_temperature_k: float | None = None,
    zenith_angle_deg: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Direct am run(s) at arbitrary frequencies: (tau, t_atm, tb_planck) along the line of sight.

    Each frequency is one single-point am run (~0.1 s) on a ~10 MHz grid aligned to it.
    ``t_atm`` is derived from the slant tau and Tb with the same formula as the table.
    """
    f = np.atleast_1d(np.asarray(frequency_hz, dtype=float))
    amc = standard_profile(pressure_hpa, ground_temperature_k)
    tau = np.empty(f.size)
    tb = np.empty(f.size)
    for i, fi in enumerate(f.ravel()):
        # am's grid is the multiples of df inside [fmin, fmax]; df ~ 10 MHz with fi = N df exactly.
        # (A single point with df = fi gives ~0.2 % different tau: am uses df in its line
        # set-up, so df must be comparable to the table's.)
        n = max(round(fi / 1e7), 1)
        df = fi / n
        lo, hi = (fi - 0.4 * df) / 1e9, (fi + 0.4 * df) / 1e9
        fr, ta, tbi = _run_am(amc, [f"{lo:.15g}", f"{hi:.15g}", f"{df / 1e6:.15g}",
                                    f"{zenith_angle_deg:.9g}", f"{pwv_mm:.9g}"])
        if fr.size != 1 or abs(fr[0] * 1e9 - fi) > 1e-6 * df:
            raise ConfigError(f"am did not compute at {fi} Hz (grid {fr})")
        tau[i], tb[i] = ta[0], tbi[0]
    tatm = t_atm_from_tb(f, tau, tb)
    shape = np.shape(frequency_hz)
    return tau.reshape(shape), tatm.reshape(shape), tb.reshape(shape)


#: default nodes of per-tuning sky tables (docs/atmosphere.md section 9: measured choices)
SKY_PWV_NODES_MM = tuple(float(x) for x in np.geomspace(0.05, 6.0, 8))
SKY_AIRMASS_NODES = (1.0, 1.6, 2.6, 4.2)
SKY_TGROUND_NODES_K = (250.0, 270.0, 290.0)
SKY_STEP_MHZ = 2.0


def _sky_job(job: tuple[str, float, float, float, float, float]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    amc, fmin, fmax, step, za, pwv = job
    return _run_am(amc, [f"{fmin:.9g}", f"{fmax:.9g}", f"{step:.9g}", f"{za:.12g}",
                         f"{pwv:.9g}"])


def build_sky_table(
    windows_ghz: Sequence[tuple[float, float]],
    pressures_hpa: Sequence[float],
    *,
    step_mhz: float = SKY_STEP_MHZ,
    pwv_nodes_mm: Sequence[float] = SKY_PWV_NODES_MM,
    airmass_nodes: Sequence[float] = SKY_AIRMASS_NODES,
    t_ground_nodes_k: Sequence[float] = SKY_TGROUND_NODES_K,
    workers: int = 2,
    progress: bool = False,
) -> Any:
    """am runs on every (pressure, ground temperature, airmass, pwv, window) node -> SkyTable.

    The profile is :func:`standard_profile` with the troposphere shifted to each ground
    temperature (lapse rate kept, shift tapering to 0 at the 17 km tropopause; water scale
    height 2 km). Slant runs use am's plane-parallel ``za`` = arccos(1 / A); T_atm at A comes
    from the slant tau and Tb (:func:`t_atm_from_tb`), so the slant sky is exact at the nodes.
    """
    from .skytable import SkyTable

    wins = sorted((float(lo), float(hi)) for lo, hi in windows_ghz)
    pres = np.asarray(sorted(float(x) for x in pressures_hpa))
    tgs = np.asarray(sorted(float(x) for x in t_ground_nodes_k))
    ams = np.asarray(sorted(float(x) for x in airmass_nodes))
    pwv = np.asarray(sorted(float(x) for x in pwv_nodes_mm))
    if abs(ams[0] - 1.0) > 1e-12:
        raise ConfigError("the first airmass node must be 1 (zenith)")
    for (lo0, hi0), (lo1, _) in zip(wins[:-1], wins[1:], strict=True):
        if lo1 <= hi0 or not lo0 < hi0:
            raise ConfigError(f"sky table windows must be disjoint and ascending: {wins}")
    jobs = []
    for p in pres:
        for tg in tgs:
            amc = standard_profile(float(p), float(tg))
            for a in ams:
                za = float(np.degrees(np.arccos(1.0 / a)))
                for w in pwv:
                    for lo, hi in wins:
                        jobs.append((amc, lo, hi, step_mhz, za, float(w)))
    t0 = time.monotonic()
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            results = list(ex.map(_sky_job, jobs, chunksize=4))
    else:
        results = [_sky_job(j) for j in jobs]
    if progress:
        log.info("sky table: %d am runs in %.0f s", len(jobs), time.monotonic() - t0)
    per_node = len(wins)
    freq_hz = np.concatenate([results[i][0] for i in range(per_node)]) * 1e9
    nf = freq_hz.size
    tau = np.empty((pres.size, tgs.size, pwv.size, nf))
    tatm = np.empty((pres.size, tgs.size, ams.size, pwv.size, nf))
    k = 0
    for g in range(pres.size):
        for t in range(tgs.size):
            for ia in range(ams.size):
                for ip in range(pwv.size):
                    parts = results[k:k + per_node]
                    k += per_node
                    f = np.concatenate([r[0] for r in parts]) * 1e9
                    if f.size != nf or np.any(np.abs(f - freq_hz) > 1.0):
                        raise ConfigError("am returned inconsistent frequency grids")
                    ta = np.concatenate([r[1] for r in parts])
                    tb = np.concatenate([r[2] for r in parts])
                    if ia == 0:
                        tau[g, t, ip] = ta
                    tatm[g, t, ia, ip] = t_atm_from_tb(freq_hz, ta, tb)
    windows = np.array([[freq_hz[freq_hz >= lo * 1e9 - 1].min(),
                         freq_hz[freq_hz <= hi * 1e9 + 1].max()] for lo, hi in wins])
    meta: dict[str, Any] = {
        "builder": "calpipe.atmosphere.am_builder.build_sky_table",
        "profile": "AFGL tropical T(z) shifted to T_ground (taper to 0 at 17 km); h2o exp "
        f"scale height {H2O_SCALE_HEIGHT_KM} km + {H2O_STRAT_VMR * 1e6:g} ppmv strat; o3 "
        f"{O3_COLUMN_DU} DU; dry_air hydrostatic (am defaults); plane-parallel za",
        "windows_ghz": [list(w) for w in wins], "step_mhz": float(step_mhz),
        "pwv_nodes_mm": pwv.tolist(), "pressures_hpa": pres.tolist(),
        "t_ground_nodes_k": tgs.tolist(), "airmass_nodes": ams.tolist(), "t_cmb_k": T_CMB,
        "am": am_version(), "am_runs": len(jobs),
        "build_seconds": round(time.monotonic() - t0, 1),
        "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return SkyTable(freq_hz, windows, pwv, pres, tgs, ams, tau, tatm, am_version(), meta)


def slant_model(frequency_ghz_window: tuple[float, float], step_mhz: float, pwv_mm: float,
                pressure_hpa: float, ground_temperature_k: float, airmass_value: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One direct am slant-path run (truth for benchmarks): (frequency Hz, slant tau, Tb)."""
    amc = standard_profile(pressure_hpa, ground_temperature_k)
    za = float(np.degrees(np.arccos(1.0 / airmass_value)))
    lo, hi = frequency_ghz_window
    f, tau, tb = _sky_job((amc, lo, hi, step_mhz, za, pwv_mm))
    return f * 1e9, tau, tb


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.replace(",", " ").split()]


def resolved_command(ns: argparse.Namespace) -> str:
    """The build command with every option explicit (recorded in the table's meta)."""
    parts = [
        "calpipe atm-table build", shlex.quote(str(ns.output)),
        f"--fmin {ns.fmin:g} --fmax {ns.fmax:g} --step {ns.step:g}",
        f"--pwv-min {ns.pwv_min:g} --pwv-max {ns.pwv_max:g} --pwv-nodes {ns.pwv_nodes}",
        "--pressures " + ",".join(f"{p:g}" for p in ns.pressures),
    ]
    if ns.ground_temperature is not None:
        parts.append(f"--ground-temperature {ns.ground_temperature:g}")
    return " ".join(parts)


@contextlib.contextmanager
def _progress_bar(total: int, disable: bool) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr (am runs done / total, elapsed, estimate remaining)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("[bold]am runs"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("remaining"), TimeRemainingColumn(),
                  console=Console(stderr=True), disable=disable) as bar:
        task = bar.add_task("am", total=total)

        def on_node(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield on_node


def main(argv: Sequence[str] | None = None) -> int:
    """``calpipe atm-table build``: build an am table and save it (.npz)."""
    ap = argparse.ArgumentParser(
        prog="calpipe atm-table build",
        description="Build a calpipe atmosphere table (zenith tau, T_atm) with am (am-python).",
    )
    ap.add_argument("output", type=Path, help="output table file (.npz)")
    ap.add_argument("--fmin", type=float, default=78.0, help="min frequency GHz [78]")
    ap.add_argument("--fmax", type=float, default=1202.0, help="max frequency GHz [1202]")
    ap.add_argument("--step", type=float, default=50.0, help="frequency step MHz [50]")
    ap.add_argument("--pwv-min", type=float, default=0.02, help="lowest pwv node mm [0.02]")
    ap.add_argument("--pwv-max", type=float, default=12.0, help="highest pwv node mm [12]")
    ap.add_argument("--pwv-nodes", type=int, default=13, help="log-spaced pwv nodes [13]")
    ap.add_argument(
        "--pressures",
        type=_floats,
        default=[135.0, 169.4, 212.6, 266.8, 334.8, 420.2, 527.3, 661.7, 830.4],
        help="ground pressure nodes hPa, comma separated",
    )
    ap.add_argument("--ground-temperature", type=float, default=None,
                    help="ground temperature K (default: AFGL tropical T at each pressure)")
    ap.add_argument("--workers", type=int, default=2, help="parallel am processes [2]")
    ap.add_argument("-q", "--quiet", action="store_true",
                    help="no progress bar (errors only)")
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    # am-python logs every parse and the "lines narrower than the grid" notice (expected here)
    logging.getLogger("_am").setLevel(logging.ERROR)
    from .tableio import save_table

    pwv = np.geomspace(ns.pwv_min, ns.pwv_max, ns.pwv_nodes)
    cmd = "calpipe atm-table build " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    with _progress_bar(len(ns.pressures) * pwv.size, disable=ns.quiet) as on_node:
        table = build_table(ns.fmin, ns.fmax, ns.step, pwv, ns.pressures,
                            ground_temperature_k=ns.ground_temperature, workers=ns.workers,
                            progress=True, command_line=cmd, on_node=on_node)
    table = dataclasses.replace(
        table, meta={**table.meta, "command_line_resolved": resolved_command(ns)}
    )
    save_table(table, ns.output)
    log.info("wrote %s (%s)", ns.output, table.model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
