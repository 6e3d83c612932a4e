"""Atmosphere: sky model and pwv fit (DESIGN 3.3, stage "atmosphere").

Sky seen by the receiver at airmass A = 1 / sin(el), transmission t = exp(-tau A):
  T_sky(nu) = f_eff [J(nu, T_atm)(1 - t) + J(nu, T_cmb) t] + (1 - f_eff) J(nu, T_amb)
  T'_sky    = w_s T_sky(nu_sig) + w_i T_sky(nu_img)
Observed sky-minus-hot of OFF k: S_obs = (C_OFF,k - C_hot) / gamma                    [K]
Model:                           S_mod(pwv) = T'_sky(pwv, el_k) - T'_hot
pwv minimises chi2 = sum w (S_obs - S_mod)^2 over good channels, pixels and OFFs, with
w = (gamma / C_OFF)^2 (inverse radiometer variance, sigma ~ T_total): a geometric grid search
then Gauss-Newton steps inside the bracketing grid cell.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from calpipe.errors import AtmosphereError
from calpipe.physics.radiometry import (
    PhysicsConstants,
    as_cube,
    rj_brightness,
    rj_brightness_dt,
    weight_cube,
)

log = logging.getLogger(__name__)

TORR_TO_HPA = 1.333223684  # 101325 / 760 / 100


class Slab(Protocol):
    """Atmosphere table evaluated at fixed frequencies and pressure (see calpipe.atmosphere)."""

    pwv_range: tuple[float, float]

    def evaluate(self, pwv_mm: float) -> tuple[np.ndarray, np.ndarray | None]: ...

    def derivative(self, pwv_mm: float) -> tuple[np.ndarray, np.ndarray | None]: ...

    def take(self, index: np.ndarray) -> Slab: ...


@dataclass(frozen=True)
class AtmosphereResult:
    """pwv, zenith opacities and transmissions of one scan.

    Pixel axes (Rp, Ap) are (1, 1) for the joint fit and (R, A) for the per-pixel fit. The
    per-pair fit (issue 14) fits one pwv per OFF subscan (``pwv_off_mm`` [Rp, Ap, K]) and
    gives each ON the pwv of its reference (``pwv_on_mm`` [Rp, Ap, S_on], interpolated like
    the reference counts); tau is then per ON, [C, Rp, Ap, S_on], and ``pwv_mm`` /
    ``pwv_err_mm`` are the means over the ONs.
    """

    scan: int
    method: str  # "fit" | "fixed" | "fallback" | "none" (vane calibration, calpipe.nod)
    per_pixel: bool
    pwv_mm: np.ndarray  # [Rp, Ap]
    tau_signal: np.ndarray  # [C, Rp, Ap] neper, zenith
    tau_image: np.ndarray  # [C, Rp, Ap]
    tr_signal: np.ndarray  # [C, Rp, Ap, S_on]
    tr_image: np.ndarray  # [C, Rp, Ap, S_on]
    residual_rms_k: np.ndarray  # [Rp, Ap] rms of S_obs - S_mod (K)
    converged: bool  # the pwv is a converged fit: True for "fit", False otherwise
    n_channels: int  # good (channel, pixel) samples used per OFF
    n_iterations: int
    pressure_hpa: float
    t_atm_source: str  # "model" | "ambient"
    table_model: str
    table_digest: str
    message: str = ""  # why a fallback was used
    # QA diagnostic (calpipe.qa.atmosphere_fit_diagnostic): pixel-averaged S_obs and S_mod at
    # the final pwv, [C, K] per OFF subscan (K); stored in L1 as atm_fit_observed/model_k
    fit_observed_k: np.ndarray | None = None
    fit_model_k: np.ndarray | None = None
    # uncertainties (issue 13): 1-sigma pwv [Rp, Ap] from the fit's curvature inflated by the
    # reduced chi2 of the residual (NaN for fixed / fallback pwv), and the fractional T_A*
    # scale uncertainty d ln T_A*/d pwv x pwv_err = A_on dtau_s/dpwv pwv_err [C, Rp, Ap, S_on]
    pwv_err_mm: np.ndarray | None = None
    scale_uncertainty: np.ndarray | None = None
    # per-pair fit (issue 14): pwv of every OFF and of every ON (with its 1-sigma error)
    per_pair: bool = False
    pwv_off_mm: np.ndarray | None = None  # [Rp, Ap, K]
    pwv_on_mm: np.ndarray | None = None  # [Rp, Ap, S_on]
    pwv_on_err_mm: np.ndarray | None = None  # [Rp, Ap, S_on]

    def check(self) -> None:
        if self.tr_signal.shape != self.tr_image.shape:
            raise ValueError("AtmosphereResult: tr_signal and tr_image differ in shape")
        if self.method == "none":  # vane calibration (calpipe.nod): no pwv, tr = 1
            return
        if not np.all(np.isfinite(self.pwv_mm)) or np.any(self.pwv_mm < 0):
            raise ValueError(f"AtmosphereResult: bad pwv {self.pwv_mm}")
        n_on = self.tr_signal.shape[-1]
        tau_ndim = 4 if self.per_pair else 3
        if self.tau_signal.ndim != tau_ndim or self.tau_image.shape != self.tau_signal.shape:
            raise ValueError(f"AtmosphereResult: tau is {self.tau_signal.shape}, expected "
                             f"{tau_ndim} dimensions (per_pair={self.per_pair})")
        if self.per_pair and (self.pwv_on_mm is None or self.pwv_off_mm is None
                              or self.pwv_on_mm.shape != self.pwv_mm.shape + (n_on,)):
            raise ValueError("AtmosphereResult: a per-pair fit needs pwv_off_mm and "
                             "pwv_on_mm [Rp, Ap, S_on]")


@dataclass(frozen=True)
class SkyInputs:
    """Everything the sky model needs except pwv."""

    nu_sig: np.ndarray  # [C]
    nu_img: np.ndarray  # [C]
    w_s: Any  # float, or [C] / [C, R, A] per channel (and pixel)
    f_eff: float
    t_cmb: float
    constants: PhysicsConstants


def airmass(elevation_rad: np.ndarray | float) -> np.ndarray:
    """A = 1 / sin(el) (plane-parallel)."""
    return 1.0 / np.sin(np.asarray(elevation_rad, dtype=np.float64))


def _col(a: np.ndarray) -> np.ndarray:
    """[C] -> [C, 1] (one value for every subscan); [C, K] (per subscan, sky tables) as is."""
    return a[:, None] if a.ndim == 1 else a


class _Sideband:
    """Per-sideband constants of the sky model: J(T_cmb) [C], J(T_amb) [C, K], airmass [K]."""

    def __init__(self, nu: np.ndarray, slab: Slab, weight: np.ndarray, a: np.ndarray,
                 t_amb: np.ndarray, sky: SkyInputs, use_model_t_atm: bool):
        self.nu, self.slab, self.weight, self.a, self.sky = nu, slab, weight, a, sky
        self.j_cmb = rj_brightness(nu, sky.t_cmb, sky.constants)[:, None]
        self.j_amb = rj_brightness(nu[:, None], t_amb[None, :], sky.constants)
        self.use_model = use_model_t_atm
        self.t_amb = t_amb

    def _j_atm(self, t_atm: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """J(T_atm) as [C, 1] (model) or [C, K] (ambient), and T_atm itself when modelled."""
        if self.use_model and t_atm is not None:
            nu = self.nu if t_atm.ndim == 1 else self.nu[:, None]
            return _col(rj_brightness(nu, t_atm, self.sky.constants)), t_atm
        return self.j_amb, None

    def tsky(self, pwv: float) -> np.ndarray:
        """T_sky [C, K] = f_eff [J(T_atm)(1 - t) + J(T_cmb) t] + (1 - f_eff) J(T_amb)."""
        tau, t_atm = self.slab.evaluate(pwv)
        t = np.exp(-_col(tau) * self.a[None, :])
        j_atm, _ = self._j_atm(t_atm)
        f = self.sky.f_eff
        return f * (j_atm + (self.j_cmb - j_atm) * t) + (1.0 - f) * self.j_amb

    def tsky_dp(self, pwv: float) -> np.ndarray:
        """d T_sky / d pwv [C, K]."""
        tau, t_atm = self.slab.evaluate(pwv)
        dtau, dt_atm = self.slab.derivative(pwv)
        t = np.exp(-_col(tau) * self.a[None, :])
        j_atm, t_model = self._j_atm(t_atm)
        d = (j_atm - self.j_cmb) * self.a[None, :] * t * _col(dtau)
        if t_model is not None and dt_atm is not None:
            nu = self.nu if t_model.ndim == 1 else self.nu[:, None]
            djdt = rj_brightness_dt(nu, t_model, self.sky.constants)
            d = d + (1.0 - t) * _col(djdt * dt_atm)
        return self.sky.f_eff * d


class SkyModel:
    """T'_sky(pwv) at the elevations of K subscans, from two slabs (signal, image).

    ``tsky_pix`` is [C, Rw, Aw, K] with (Rw, Aw) = (1, 1) unless the sideband weights are per
    pixel; ``tsky_eff`` is [C, K] (pixel-independent weights only); ``s_mod`` is the fit's
    model S_mod = T'_sky - T'_hot as [C, Rw, Aw, K].
    """

    def __init__(self, sky: SkyInputs, slab_sig: Slab, slab_img: Slab,
                 elevation: np.ndarray, t_amb: np.ndarray, use_model_t_atm: bool):
        self.sky = sky
        self._args = (slab_sig, slab_img, elevation, t_amb, use_model_t_atm)
        a = airmass(elevation)
        t_amb = np.asarray(t_amb, dtype=np.float64)
        self.w3 = weight_cube(sky.w_s, sky.nu_sig.shape[0])  # [C, Rw, Aw]
        self.pixel_dependent = self.w3.shape[1:] != (1, 1)
        self.sidebands = [
            _Sideband(nu, slab, w, a, t_amb, sky, use_model_t_atm)
            for nu, slab, w in ((sky.nu_sig, slab_sig, self.w3),
                                (sky.nu_img, slab_img, 1.0 - self.w3))
            if np.any(w > 0)
        ]
        lo = max(slab_sig.pwv_range[0], slab_img.pwv_range[0])
        hi = min(slab_sig.pwv_range[1], slab_img.pwv_range[1])
        self.pwv_range = (lo, hi)

    def subset(self, index: np.ndarray) -> SkyModel:
        """The same model on some of the channels (for a cheap coarse grid search)."""
        slab_sig, slab_img, elevation, t_amb, use_model = self._args
        w_s = self.sky.w_s if np.ndim(self.sky.w_s) == 0 else np.asarray(self.sky.w_s)[index]
        sky = SkyInputs(self.sky.nu_sig[index], self.sky.nu_img[index], w_s,
                        self.sky.f_eff, self.sky.t_cmb, self.sky.constants)
        return SkyModel(sky, slab_sig.take(index), slab_img.take(index), elevation, t_amb,
                        use_model)

    def tsky_pix(self, pwv: float) -> np.ndarray:
        """T'_sky [C, Rw, Aw, K] = w_s T_sky(nu_sig) + w_i T_sky(nu_img)."""
        return sum(sb.weight[..., None] * sb.tsky(pwv)[:, None, None, :]  # type: ignore[return-value]
                   for sb in self.sidebands)

    def tsky_pix_dp(self, pwv: float) -> np.ndarray:
        """d T'_sky / d pwv [C, Rw, Aw, K]."""
        return sum(sb.weight[..., None] * sb.tsky_dp(pwv)[:, None, None, :]  # type: ignore[return-value]
                   for sb in self.sidebands)

    def tsky_eff(self, pwv: float) -> np.ndarray:
        """T'_sky [C, K] (pixel-independent sideband weights)."""
        return self._flat(self.tsky_pix(pwv))

    def tsky_eff_dp(self, pwv: float) -> np.ndarray:
        """d T'_sky / d pwv [C, K] (pixel-independent sideband weights)."""
        return self._flat(self.tsky_pix_dp(pwv))

    def _flat(self, values: np.ndarray) -> np.ndarray:
        if self.pixel_dependent:
            raise ValueError("per-pixel sideband weights: use tsky_pix / s_mod")
        return values[:, 0, 0, :]

    def s_mod(self, pwv: float, t_hot_eff: np.ndarray) -> np.ndarray:
        """S_mod = T'_sky - T'_hot as [C, Rw, Aw, K]; t_hot_eff [C] or [C, R, A]."""
        return self.tsky_pix(pwv) - as_cube(t_hot_eff)[..., None]

    def s_mod_dp(self, pwv: float) -> np.ndarray:
        """d S_mod / d pwv [C, Rw, Aw, K]."""
        return self.tsky_pix_dp(pwv)


def fit_pwv(
    *,
    scan: int,
    model: SkyModel,
    s_obs: np.ndarray,
    weight: np.ndarray,
    t_hot_eff: np.ndarray,
    per_pixel: bool,
    grid_min: float,
    grid_max: float,
    grid_points: int,
    max_iter: int,
    tol: float,
    allow_empty_pixels: bool = False,
) -> tuple[np.ndarray, np.ndarray, bool, int]:
    """Minimise chi2(pwv); returns (pwv[Rp, Ap], residual_rms[Rp, Ap], converged, iterations).

    s_obs, weight: [C, R, A, K] (weight 0 where unusable). Joint: one pwv for all pixels.
    Per pixel, a pixel without any good sample is an AtmosphereError naming it, or NaN with
    ``allow_empty_pixels`` (the per-pair fit fills it from the pixel's other OFFs).
    """
    lo = max(grid_min, model.pwv_range[0])
    hi = min(grid_max, model.pwv_range[1])
    if not lo < hi:
        raise AtmosphereError(f"pwv grid [{grid_min}, {grid_max}] mm does not overlap the "
                              f"table's pwv range {model.pwv_range}", scan=scan, array="pwv")
    grid = np.geomspace(lo, hi, grid_points)
    # joint fit: one pwv for all pixels; the sums over pixels can be taken first unless the
    # model itself depends on the pixel (per-pixel sideband weights): then "collapse" sums
    # the chi2 over all pixels at the end
    collapse = not per_pixel and model.pixel_dependent
    if per_pixel or collapse:
        w = weight
        ws = weight * s_obs
    else:
        w = weight.sum(axis=(1, 2), keepdims=True)
        ws = (weight * s_obs).sum(axis=(1, 2), keepdims=True)
    wss_c = (weight * np.where(weight > 0, s_obs, 0.0) ** 2).sum(
        axis=(1, 2) if not (per_pixel or collapse) else (), keepdims=True)
    n_c = s_obs.shape[0]
    # coarse search on at most COARSE_CHANNELS channels, then Newton on all of them inside a
    # +-2 cell bracket; if Newton ends on the bracket, the full-resolution search is redone
    coarse = np.arange(0, n_c, -(-n_c // COARSE_CHANNELS)) if n_c > COARSE_CHANNELS else None
    best = _grid_search(model if coarse is None else model.subset(coarse), grid,
                        *(a if coarse is None else a[coarse] for a in (w, ws, wss_c, t_hot_eff)),
                        collapse=collapse)
    rp, ap = best.shape
    pwv = np.empty((rp, ap))
    converged = True
    iterations = 0
    for r in range(rp):  # per-pixel Newton: (1, 1) in joint mode
        for a in range(ap):
            i = int(best[r, a])
            if per_pixel and not np.any(weight[:, r, a] > 0):
                if allow_empty_pixels:
                    pwv[r, a] = np.nan
                    continue
                raise AtmosphereError(f"no good channel in any OFF subscan for pixel (r={r}, "
                                      f"a={a}) to fit its pwv", scan=scan,
                                      array="source/data_5d")
            if collapse:
                wr, wsr, pix = w, ws, None
            else:
                wr, wsr = w[:, r:r + 1, a:a + 1], ws[:, r:r + 1, a:a + 1]
                pix = (r, a) if model.pixel_dependent else None
            _check_edge(scan, grid, i, per_pixel, r, a)
            span = 2 if coarse is not None else 1
            lo_i, hi_i = max(i - span, 0), min(i + span, grid.size - 1)
            p, it, ok = _newton(model, wr, wsr, t_hot_eff, grid[i], grid[lo_i], grid[hi_i],
                                max_iter, tol, pix)
            if coarse is not None and (not ok or p in (grid[lo_i], grid[hi_i])):
                wss_r = wss_c[:, r:r + 1, a:a + 1] if per_pixel else wss_c
                i = int(_grid_search(model, grid, wr, wsr, wss_r, t_hot_eff,
                                     collapse=collapse, pixel=pix)[0, 0])
                _check_edge(scan, grid, i, per_pixel, r, a)
                p, it2, ok = _newton(model, wr, wsr, t_hot_eff, grid[i], grid[i - 1],
                                     grid[i + 1], max_iter, tol, pix)
                it += it2
            iterations = max(iterations, it)
            if not ok:  # no convergence is an error, never a result
                raise AtmosphereError(
                    f"pwv fit did not converge in {max_iter} Newton steps"
                    f"{_pix(per_pixel, r, a)} (last {p:.5g} mm)", scan=scan, array="pwv")
            pwv[r, a] = p
    rms = np.empty((rp, ap))
    for r in range(rp):
        for a in range(ap):
            rms[r, a] = np.nan if np.isnan(pwv[r, a]) else residual_rms(
                model, s_obs, weight, t_hot_eff, float(pwv[r, a]), (r, a) if per_pixel else None)
    return pwv, rms, converged, iterations


def only_off(weight: np.ndarray, k: int) -> np.ndarray:
    """The weights [C, R, A, K] of OFF k alone (the other OFFs' set to 0)."""
    out = np.zeros_like(weight)
    out[..., k] = weight[..., k]
    return out


@dataclass(frozen=True)
class PerOffFit:
    """The per-pair fit (issue 14): one pwv per OFF subscan."""

    pwv_mm: np.ndarray  # [Rp, Ap, K]
    residual_rms_k: np.ndarray  # [Rp, Ap]: pooled over the OFFs, each at its own pwv
    converged: bool
    n_iterations: int  # the most any OFF needed
    n_filled: int = 0  # (pixel, OFF) without data, filled from the pixel's other OFFs


def fit_pwv_per_off(*, scan: int, model: SkyModel, s_obs: np.ndarray, weight: np.ndarray,
                    t_hot_eff: np.ndarray, per_pixel: bool, off_subscans: np.ndarray,
                    **grid: Any) -> PerOffFit:
    """fit_pwv on each OFF k alone (the weights of the other OFFs set to 0): pwv_k minimises
    chi2_k = sum_c,r,a w (S_obs,k - S_mod,k(pwv_k))^2. The residual rms is pooled:
    sqrt(sum_k n_k rms_k^2 / sum_k n_k) over the n_k good samples of each OFF.

    ``off_subscans`` [K] are the L0 subscan numbers, for the error messages.
    """
    n_k = s_obs.shape[-1]
    pwvs, sq, counts = [], [], []
    converged, iterations = True, 0
    for k in range(n_k):
        w_k = only_off(weight, k)
        n_good = (w_k > 0).sum(axis=(0, 3)) if per_pixel else np.array([[(w_k > 0).sum()]])
        if not n_good.any():
            raise AtmosphereError(f"per-pair pwv fit: no good channel in OFF subscan "
                                  f"{int(off_subscans[k])}", scan=scan, array="source/data_5d")
        try:
            pwv, rms, ok, it = fit_pwv(scan=scan, model=model, s_obs=s_obs, weight=w_k,
                                       t_hot_eff=t_hot_eff, per_pixel=per_pixel,
                                       allow_empty_pixels=True, **grid)
        except AtmosphereError as exc:
            raise AtmosphereError(f"per-pair pwv fit of OFF subscan {int(off_subscans[k])}: "
                                  f"{exc.detail}", scan=scan, array="pwv") from exc
        pwvs.append(pwv)
        sq.append(np.where(n_good > 0, rms, 0.0) ** 2 * n_good)
        counts.append(n_good)
        converged, iterations = converged and ok, max(iterations, it)
    total = np.sum(counts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rms_pooled = np.sqrt(np.sum(sq, axis=0) / total)
    pwv_off = np.stack(pwvs, axis=-1)
    filled = _fill_empty_offs(pwv_off)
    return PerOffFit(pwv_off, np.where(total > 0, rms_pooled, np.nan), converged, iterations,
                     filled)


def _fill_empty_offs(pwv_off: np.ndarray) -> int:
    """In place: a pixel without data in OFF k (NaN) takes the pwv interpolated in OFF order
    from its other OFFs (constant beyond the ends); the ONs referenced to that OFF are fill
    for that pixel anyway, but their transmission must be finite. Returns how many were
    filled; a pixel without data in every OFF stays NaN (``fill_empty_pixels``)."""
    filled = 0
    k = np.arange(pwv_off.shape[-1])
    for r in range(pwv_off.shape[0]):
        for a in range(pwv_off.shape[1]):
            row = pwv_off[r, a]
            good = np.isfinite(row)
            if good.all() or not good.any():
                continue
            row[~good] = np.interp(k[~good], k[good], row[good])
            filled += int((~good).sum())
    return filled


def fill_empty_pixels(scan: int, pwv: np.ndarray) -> list[tuple[int, int]]:
    """In place: a pixel without any good sample in any OFF (NaN pwv [Rp, Ap] or
    [Rp, Ap, K] per pair) takes the median pwv of the fitted pixels (its spectra are fill
    anyway; the transmission must be finite). Returns the filled pixels; AtmosphereError
    when no pixel was fitted."""
    empty = ~np.isfinite(pwv).reshape(pwv.shape[0], pwv.shape[1], -1).any(axis=-1)
    if not empty.any():
        return []
    if empty.all():
        raise AtmosphereError("no pixel has a good channel in any OFF subscan to fit pwv",
                              scan=scan, array="source/data_5d")
    pwv[empty] = np.nanmedian(pwv[~empty], axis=0)
    return [(int(r), int(a)) for r, a in zip(*np.nonzero(empty), strict=True)]


COARSE_CHANNELS = 512


def _grid_search(model: SkyModel, grid: np.ndarray, w: np.ndarray, ws: np.ndarray,
                 wss_c: np.ndarray, t_hot_eff: np.ndarray, *, collapse: bool = False,
                 pixel: tuple[int, int] | None = None) -> np.ndarray:
    """Index of the chi2 minimum on the grid, per (Rp, Ap) ((1, 1) when ``collapse``).

    chi2 = sum_c,k [w S_obs^2 - 2 m w S_obs + w m^2], m = S_mod = T'_sky - T'_hot.
    """
    axes = (0, 1, 2, 3) if collapse else (0, 3)
    wss = wss_c.sum(axis=axes, keepdims=collapse)
    chis = []
    for p in grid:
        m = _pick(model.s_mod(p, t_hot_eff), pixel)
        chi = wss - 2 * (m * ws).sum(axis=axes, keepdims=collapse) + (w * m * m).sum(
            axis=axes, keepdims=collapse)
        chis.append(chi[0, 0] if collapse else chi)
    best = np.stack(chis).argmin(axis=0)
    return np.reshape(best, (1, 1)) if collapse else best


def _pick(m: np.ndarray, pixel: tuple[int, int] | None) -> np.ndarray:
    """m [C, Rw, Aw, K] restricted to one pixel (when the model depends on the pixel)."""
    if pixel is None or m.shape[1:3] == (1, 1):
        return m
    r, a = pixel
    return m[:, r:r + 1, a:a + 1]


def _check_edge(scan: int, grid: np.ndarray, i: int, per_pixel: bool, r: int, a: int) -> None:
    if i == 0 or i == grid.size - 1:
        raise AtmosphereError(
            f"pwv fit landed on the grid edge ({grid[i]:.4g} mm of "
            f"[{grid[0]:.4g}, {grid[-1]:.4g}] mm){_pix(per_pixel, r, a)}: the sky does "
            "not match the model (sky hotter than the hot load, or bad loads)",
            scan=scan, array="pwv")


def _pix(per_pixel: bool, r: int, a: int) -> str:
    return f" for pixel (r={r}, a={a})" if per_pixel else ""


def _newton(model: SkyModel, w: np.ndarray, ws: np.ndarray, t_hot_eff: np.ndarray, p0: float,
            lo: float, hi: float, max_iter: int, tol: float,
            pixel: tuple[int, int] | None = None) -> tuple[float, int, bool]:
    """Gauss-Newton on chi2 within [lo, hi]: dp = sum J (WS - W m) / sum W J^2."""
    p = p0
    for it in range(1, max_iter + 1):
        m = _pick(model.s_mod(p, t_hot_eff), pixel)
        jac = _pick(model.s_mod_dp(p), pixel)
        num = float((jac * (ws - w * m)).sum())
        den = float((w * jac * jac).sum())
        if not den > 0:
            return p, it, False
        step = num / den
        new = min(max(p + step, lo), hi)
        if abs(new - p) <= tol * max(p, 1e-6):
            return new, it, True
        p = new
    return p, max_iter, False


def residual_rms(model: SkyModel, s_obs: np.ndarray, weight: np.ndarray, t_hot_eff: np.ndarray,
                 pwv: float, pixel: tuple[int, int] | None = None) -> float:
    """rms over good samples of S_obs - S_mod(pwv) (K)."""
    r = s_obs - model.s_mod(pwv, t_hot_eff)
    good = weight > 0
    if pixel is not None:
        r = r[:, pixel[0], pixel[1]]
        good = good[:, pixel[0], pixel[1]]
    if not good.any():
        return float("nan")
    return float(np.sqrt(np.mean(r[good] ** 2)))


def observed_sky_minus_hot(off_mean: np.ndarray, c_hot: np.ndarray, gamma: np.ndarray,
                           bad_channel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S_obs = (C_OFF - C_hot) / gamma [C, R, A, K] and its weight (gamma / C_OFF)^2."""
    with np.errstate(invalid="ignore", divide="ignore"):
        s_obs = (off_mean - c_hot[..., None]) / gamma[..., None]
        weight = (gamma[..., None] / off_mean) ** 2
    good = np.isfinite(s_obs) & np.isfinite(weight) & ~bad_channel[..., None]
    return np.where(good, s_obs, 0.0), np.where(good, weight, 0.0)


def transmissions(slab: Slab, pwv: np.ndarray, elevation_on: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Zenith tau and t = exp(-tau A) [C, Rp, Ap, S_on].

    pwv [Rp, Ap] (one per scan or pixel): tau [C, Rp, Ap], the mean over the ONs (a sky
    table's tau depends on each ON's ground temperature). pwv [Rp, Ap, S_on] (per-pair fit):
    tau per ON, [C, Rp, Ap, S_on].
    """
    tau_on = _per_on_values(lambda p: slab.evaluate(p)[0], pwv, elevation_on)
    tr = np.exp(-tau_on * airmass(elevation_on)[None, None, None, :])
    return (tau_on if pwv.ndim == 3 else tau_on.mean(axis=-1)), tr


def _per_on(values: np.ndarray, elevation_on: np.ndarray) -> np.ndarray:
    """[C] or [C, S_on] -> [C, S_on]."""
    if values.ndim == 1:
        return np.repeat(values[:, None], np.size(elevation_on), axis=1)
    return values


def _per_on_values(func: Any, pwv: np.ndarray, elevation_on: np.ndarray) -> np.ndarray:
    """func(pwv) ([C] or [C, S_on]) evaluated at every pixel's (and ON's) pwv: pwv [Rp, Ap] or
    [Rp, Ap, S_on] -> [C, Rp, Ap, S_on]."""
    rp, ap = pwv.shape[:2]
    n_on = np.size(elevation_on)
    out: np.ndarray | None = None
    for r in range(rp):
        for a in range(ap):
            for j in range(n_on if pwv.ndim == 3 else 1):
                p = float(pwv[r, a, j]) if pwv.ndim == 3 else float(pwv[r, a])
                values = _per_on(np.asarray(func(p), dtype=np.float64), elevation_on)
                if out is None:
                    out = np.empty((values.shape[0], rp, ap, n_on))
                if pwv.ndim == 3:
                    out[:, r, a, j] = values[:, j]
                else:
                    out[:, r, a, :] = values
    assert out is not None
    return out


def pwv_per_on(pwv_off: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: np.ndarray
               ) -> np.ndarray:
    """pwv of each ON from the per-OFF fits, interpolated like its reference counts:
    pwv_on = (1 - w) pwv_off[lo] + w pwv_off[hi]; [Rp, Ap, K] -> [Rp, Ap, S_on]."""
    return np.asarray(pwv_off[..., lo] * (1.0 - w) + pwv_off[..., hi] * w)


def pwv_error_per_on(err_off: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: np.ndarray
                     ) -> np.ndarray:
    """1-sigma of pwv_per_on for independent OFF fits:
    sqrt((1 - w)^2 err[lo]^2 + w^2 err[hi]^2) (= err[lo] where lo = hi, w = 0)."""
    hi_term = np.where(w > 0, (w * err_off[..., hi]) ** 2, 0.0)
    return np.asarray(np.sqrt(((1.0 - w) * err_off[..., lo]) ** 2 + hi_term))


def pwv_uncertainty(model: SkyModel, s_obs: np.ndarray, weight: np.ndarray,
                    t_hot_eff: np.ndarray, pwv: np.ndarray, per_pixel: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
    """1-sigma pwv error and reduced chi2, both [Rp, Ap].

    ``weight`` [C, R, A, K] must be the absolute inverse variance of s_obs (K^-2). With the
    Jacobian J = dS_mod/dpwv at the fitted pwv, residual r = S_obs - S_mod and n samples:
      chi2_red = sum w r^2 / (n - 1),   sigma^2 = max(1, chi2_red) / sum w J^2
    (the curvature of chi2 gives the statistical error; a residual larger than the noise --
    model error, sideband or bandpass errors -- inflates it by sqrt(chi2_red)). Samples are
    treated as independent: the hot-load noise shared by all OFFs and channel-to-channel
    correlated model errors are not modelled (docs/physics.md).
    """
    rp, ap = pwv.shape
    err = np.full((rp, ap), np.nan)
    red = np.full((rp, ap), np.nan)
    for r in range(rp):
        for a in range(ap):
            p = float(pwv[r, a])
            m = np.broadcast_to(model.s_mod(p, t_hot_eff), s_obs.shape)
            jac = model.s_mod_dp(p)
            sl = (slice(None), slice(r, r + 1), slice(a, a + 1)) if per_pixel else (slice(None),)
            w, res = weight[sl], (s_obs - m)[sl]
            jj = np.broadcast_to(jac, s_obs.shape)[sl]
            n = int(np.count_nonzero(w > 0))
            curv = float((w * jj * jj).sum())
            if n < 2 or not curv > 0:
                continue
            red[r, a] = float((w * res * res).sum()) / (n - 1)
            err[r, a] = np.sqrt(max(1.0, red[r, a]) / curv)
    return err, red


def scale_uncertainty(slab: Slab, pwv: np.ndarray, pwv_err: np.ndarray,
                      elevation_on: np.ndarray) -> np.ndarray:
    """Fractional T_A* scale error [C, Rp, Ap, S_on]: T_A* ~ 1 / tr_s = exp(tau_s A), so
    d ln T_A*/d pwv = A dtau_s/dpwv and the error is A |dtau_s/dpwv| pwv_err; pwv and
    pwv_err [Rp, Ap] or, per pair, [Rp, Ap, S_on]."""
    dtau = _per_on_values(lambda p: slab.derivative(p)[0], pwv, elevation_on)
    a_on = airmass(elevation_on)[None, None, None, :]
    err = pwv_err[None] if pwv_err.ndim == 3 else pwv_err[None, :, :, None]
    return np.abs(dtau) * a_on * err
