"""Sky tables: zenith opacity and airmass- and ground-temperature-dependent emission.

A :class:`SkyTable` holds, on (ground pressure G, ground temperature T, [airmass A,] pwv P,
frequency F) nodes built with am for the site profile adjusted to each ground temperature:

* ``tau[G, T, P, F]``: zenith opacity (neper); am is plane-parallel, so the slant opacity is
  tau x A exactly;
* ``t_atm[G, T, A, P, F]``: the effective emission temperature *at airmass A*, defined so that
  the slant sky is reproduced exactly at the nodes:
  J(T_atm,A)(1 - e^{-tau A}) + J(T_cmb) e^{-tau A} = J(Tb_am(A)).

Interpolation: ground pressure linear in ln P (2 nodes; cubic weights for more), ground
temperature Lagrange-polynomial through the nodes (quadratic for 3), airmass cubic spline in
ln A (T_atm,A is a smooth, slowly rising function of ln A), then per (A_k, T_k) point the pwv
cubics of :class:`~calpipe.atmosphere.table.PwvSlab` (tau in pwv, T_atm in ln pwv). Frequency:
linear between channels, and only inside the table's ``windows_hz`` (a table may cover a few
disjoint windows, e.g. the signal and image bands of one tuning).

:meth:`SkyTable.slab` returns a PwvSlab of shape (C, K) for K (airmass, ground temperature)
points, so the sky model evaluates every OFF subscan at its own elevation and ``tamb``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.interpolate import CubicSpline

from calpipe.errors import AtmosphereError, ConfigError

from .table import PwvSlab, pressure_weights

_REL = 1e-9
#: a table with one pressure node serves +-4 % of it with the zenith-table tau correction
#: (measured: T_A* within 1 % and pwv within 3 % up to +-4.5 %, docs/atmosphere.md section 9)
SINGLE_NODE_TOLERANCE = 0.04


def _axis(a: Any, name: str, ndim: int = 1) -> np.ndarray:
    arr = np.array(a, dtype=np.float64)
    if arr.ndim != ndim:
        raise ConfigError(f"sky table: {name} must be {ndim}-D, got shape {arr.shape}")
    if ndim == 1 and (arr.size < 1 or np.any(np.diff(arr) <= 0)):
        raise ConfigError(f"sky table: {name} must be ascending")
    arr.setflags(write=False)
    return arr


def lagrange_weights(nodes: np.ndarray, x: float) -> np.ndarray:
    """Weights w with p(x) = sum w_i y_i for the interpolating polynomial through the nodes."""
    n = nodes.size
    w = np.ones(n)
    for i in range(n):
        for j in range(n):
            if j != i:
                w[i] *= (x - nodes[j]) / (nodes[i] - nodes[j])
    return w


def spline_weights(nodes: np.ndarray, x: float) -> np.ndarray:
    """Weights of a not-a-knot cubic spline through ``nodes`` evaluated at x (linear for 2)."""
    n = nodes.size
    if n == 1:
        return np.ones(1)
    if n == 2:
        t = (x - nodes[0]) / (nodes[1] - nodes[0])
        return np.array([1 - t, t])
    bc = "not-a-knot" if n > 3 else "natural"
    return np.asarray(CubicSpline(nodes, np.eye(n), axis=0, bc_type=bc)(x), dtype=float)


@dataclass(frozen=True)
class SkyTable:
    """Zenith tau and airmass-dependent T_atm on (P, T_ground, A, pwv, frequency) nodes."""

    frequency_hz: np.ndarray  # [F] ascending
    windows_hz: np.ndarray  # [W, 2] closed intervals in which the table is valid
    pwv_mm: np.ndarray  # [P]
    pressure_hpa: np.ndarray  # [G]
    t_ground_k: np.ndarray  # [T]
    airmass: np.ndarray  # [A], first node 1
    tau: np.ndarray  # [G, T, P, F]
    t_atm: np.ndarray  # [G, T, A, P, F]
    model: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        f = _axis(self.frequency_hz, "frequency_hz")
        w = _axis(self.pwv_mm, "pwv_mm")
        p = _axis(self.pressure_hpa, "pressure_hpa")
        t = _axis(self.t_ground_k, "t_ground_k")
        a = _axis(self.airmass, "airmass")
        win = np.array(self.windows_hz, dtype=np.float64).reshape(-1, 2)
        tau = np.array(self.tau, dtype=np.float64)
        tatm = np.array(self.t_atm, dtype=np.float64)
        if tau.shape != (p.size, t.size, w.size, f.size):
            raise ConfigError(f"sky table: tau shape {tau.shape} != (G, T, P, F)")
        if tatm.shape != (p.size, t.size, a.size, w.size, f.size):
            raise ConfigError(f"sky table: t_atm shape {tatm.shape} != (G, T, A, P, F)")
        if w.size < 2 or w[0] <= 0 or a[0] < 1.0 - 1e-9:
            raise ConfigError("sky table: need >= 2 positive pwv nodes and airmass >= 1")
        if not (np.all(np.isfinite(tau)) and np.all(np.isfinite(tatm)) and np.all(tatm > 0)):
            raise ConfigError("sky table: tau / t_atm must be finite (t_atm > 0)")
        for name, value in (("frequency_hz", f), ("pwv_mm", w), ("pressure_hpa", p),
                            ("t_ground_k", t), ("airmass", a), ("windows_hz", win),
                            ("tau", tau), ("t_atm", tatm)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "meta", dict(self.meta))

    # -- identity / coverage ------------------------------------------------------------
    @functools.cached_property
    def digest(self) -> str:
        """sha256 hex over model name, axes and data (float64 little-endian)."""
        h = hashlib.sha256()
        h.update(b"calpipe-sky-table-v2\0" + self.model.encode() + b"\0")
        for a in (self.frequency_hz, self.windows_hz, self.pwv_mm, self.pressure_hpa,
                  self.t_ground_k, self.airmass, self.tau, self.t_atm):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a, dtype="<f8").tobytes())
        return h.hexdigest()

    @property
    def t_atm_source(self) -> str:
        return "model(A, T_ground)"

    def pressure_range(self) -> tuple[float, float]:
        """Node range; a single-node table serves +-SINGLE_NODE_TOLERANCE around its node
        with a first-order correction from a zenith table (see :meth:`slab`)."""
        pa = self.pressure_hpa
        if pa.size == 1:
            return float(pa[0]) * (1 - SINGLE_NODE_TOLERANCE), float(pa[0]) * (
                1 + SINGLE_NODE_TOLERANCE)
        return float(pa[0]) * (1 - 1e-6), float(pa[-1]) * (1 + 1e-6)

    def needs_pressure_correction(self, pressure_hpa: float) -> bool:
        return self.pressure_hpa.size == 1 and abs(
            pressure_hpa / float(self.pressure_hpa[0]) - 1.0) > 1e-9

    def covers(self, frequency_hz: np.ndarray, pressure_hpa: float) -> bool:
        """True when every frequency lies in a window and the pressure in the range."""
        f = np.asarray(frequency_hz, dtype=float).ravel()
        lo, hi = self.pressure_range()
        if not lo <= pressure_hpa <= hi:
            return False
        inside = np.zeros(f.size, dtype=bool)
        for lo, hi in self.windows_hz:
            inside |= (f >= lo * (1 - _REL)) & (f <= hi * (1 + _REL))
        return bool(inside.all())

    # -- evaluation ---------------------------------------------------------------------
    def slab(self, frequency_hz: np.ndarray, pressure_hpa: float, airmass: np.ndarray,
             t_ground_k: np.ndarray,
             pressure_correction: tuple[np.ndarray, np.ndarray] | None = None) -> PwvSlab:
        """PwvSlab of shape (C, K): tau and T_atm at K (airmass, ground temperature) points.

        frequency_hz [C]; airmass, t_ground_k [K]. Raises AtmosphereError (naming the value and
        the table's range) outside the windows, pressure, airmass or ground-temperature range.
        A single-pressure table away from its node P0 needs ``pressure_correction`` =
        (d tau, d T_atm) [pwv nodes, C], added at every (A, T_g) point; the stage passes
        (tau_z(P) - tau_z(P0), 0) from the zenith table (calpipe.stages._pressure_correction).
        """
        f = np.asarray(frequency_hz, dtype=float).ravel()
        am = np.atleast_1d(np.asarray(airmass, dtype=float))
        tg = np.atleast_1d(np.asarray(t_ground_k, dtype=float))
        if am.shape != tg.shape:
            raise ValueError("airmass and t_ground_k must have the same shape")
        if not self.covers(f, pressure_hpa):
            bad = [x for x in f if not self.covers(np.array([x]), self.pressure_hpa[0])]
            what = (f"frequency {bad[0] / 1e9:.6f} GHz" if bad
                    else f"ground pressure {pressure_hpa:g} hPa")
            plo, phi = self.pressure_range()
            raise AtmosphereError(
                f"{what} outside the sky table (windows "
                + ", ".join(f"{lo / 1e9:.3f}-{hi / 1e9:.3f}" for lo, hi in self.windows_hz)
                + f" GHz, {plo:.4g}-{phi:.4g} hPa)")
        if self.needs_pressure_correction(pressure_hpa) and pressure_correction is None:
            raise AtmosphereError(f"ground pressure {pressure_hpa:g} hPa is off the sky "
                                  f"table's single node {self.pressure_hpa[0]:g} hPa and no "
                                  "zenith-table pressure correction was given")
        for name, v, nodes in (("airmass", am, self.airmass),
                               ("ground temperature (K)", tg, self.t_ground_k)):
            if np.any(~np.isfinite(v)) or v.min() < nodes[0] - 1e-6 or v.max() > nodes[-1] + 1e-6:
                raise AtmosphereError(f"{name} {v.min():.4g}-{v.max():.4g} outside the sky "
                                      f"table range {nodes[0]:g}-{nodes[-1]:g}")
        fa = self.frequency_hz
        j = np.clip(np.searchsorted(fa, f, side="right") - 1, 0, fa.size - 2)
        wf = (f - fa[j]) / (fa[j + 1] - fa[j])
        p_eval = float(np.clip(pressure_hpa, self.pressure_hpa[0], self.pressure_hpa[-1]))
        wg = pressure_weights(self.pressure_hpa, p_eval)  # [G]

        def in_f(a: np.ndarray) -> np.ndarray:  # [..., F] -> [..., C]
            return a[..., j] * (1 - wf) + a[..., j + 1] * wf

        # pressure first (weights), then frequency: tau [T, P, C], t_atm [T, A, P, C]
        tau_g = in_f(np.tensordot(wg, self.tau, axes=(0, 0)))
        tatm_g = in_f(np.tensordot(wg, self.t_atm, axes=(0, 0)))
        n_k = am.size
        tau_k = np.empty((self.pwv_mm.size, f.size, n_k))
        tatm_k = np.empty((self.pwv_mm.size, f.size, n_k))
        la = np.log(self.airmass)
        for k in range(n_k):
            wt = lagrange_weights(self.t_ground_k, float(tg[k]))  # [T]
            wa = spline_weights(la, float(np.log(am[k]))) if la.size > 1 else np.ones(1)
            tau_k[..., k] = np.tensordot(wt, tau_g, axes=(0, 0))
            tatm_k[..., k] = np.einsum("t,a,tapc->pc", wt, wa, tatm_g)
        if pressure_correction is not None and self.needs_pressure_correction(pressure_hpa):
            dtau, dtatm = (np.asarray(x, dtype=float) for x in pressure_correction)
            tau_k += dtau[..., None]
            tatm_k += dtatm[..., None]
        return PwvSlab(self.pwv_mm, tau_k.reshape(self.pwv_mm.size, -1),
                       tatm_k.reshape(self.pwv_mm.size, -1), (f.size, n_k))
