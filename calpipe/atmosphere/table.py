"""The atmosphere table: zenith opacity and emission temperature vs (pressure, pwv, frequency).

Pure numpy/scipy, no file I/O (see :mod:`calpipe.atmosphere.tableio`).

Interpolation scheme (chosen by measurement, see docs/atmosphere.md):

* frequency: linear between table channels;
* ground pressure: not-a-knot cubic spline in ln P, applied as weights on the pressure
  nodes (a linear combination, so the CCAT linear form stays linear in pwv);
* pwv: not-a-knot cubic splines through the log-spaced pwv nodes, ``tau`` as a function of
  pwv itself (exact for tau = c + b pwv + a pwv^2 + d pwv^3, i.e. dry + line + self-continuum
  terms) and ``t_atm`` as a function of ln pwv.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.interpolate import CubicSpline

from calpipe.errors import AtmosphereError, ConfigError
from calpipe.physics.radiometry import EXACT, rj_brightness
from calpipe.physics.radiometry import H_PLANCK as H_PLANCK  # re-exported
from calpipe.physics.radiometry import K_BOLTZMANN as K_BOLTZMANN  # re-exported
from calpipe.physics.radiometry import T_CMB as T_CMB  # re-exported

log = logging.getLogger(__name__)

_REL_TOL = 1e-9  # tolerance on range checks (relative)

#: J(nu, T) [K]: the pipeline's own Rayleigh-Jeans-equivalent brightness (exact SI constants),
#: so tables and calibration use one definition
planck_j = rj_brightness


def planck_j_inverse(frequency_hz: np.ndarray | float, j_k: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`planck_j`: T = (h nu/k) / ln(1 + (h nu/k) / J)."""
    x = EXACT.h_over_k * np.asarray(frequency_hz, dtype=float)
    return x / np.log1p(x / np.asarray(j_k, dtype=float))


def _as_f64(a: Any, name: str, ndim: int) -> np.ndarray:
    arr = np.array(a, dtype=np.float64)
    if arr.ndim != ndim:
        raise ConfigError(f"atmosphere table: {name} must be {ndim}-D, got shape {arr.shape}")
    arr.setflags(write=False)
    return arr


class PwvSlab:
    """Table values at fixed frequencies and ground pressure, as cheap functions of pwv.

    Holds piecewise-cubic coefficients on the pwv nodes for every requested frequency;
    :meth:`evaluate` costs ~4 multiply-adds per value.
    """

    def __init__(
        self,
        pwv_nodes: np.ndarray,
        tau_nodes: np.ndarray,
        tatm_nodes: np.ndarray | None,
        shape: tuple[int, ...],
    ) -> None:
        self._x = np.asarray(pwv_nodes, dtype=float)
        self._u = np.log(self._x)
        self._shape = shape
        self.pwv_range: tuple[float, float] = (float(self._x[0]), float(self._x[-1]))
        # tau: cubic in pwv; t_atm: cubic in ln pwv. Coefficients c[k, i, n] (k = power 3..0).
        self._ctau = self._spline(self._x, tau_nodes)
        self._ctatm = None if tatm_nodes is None else self._spline(self._u, tatm_nodes)

    @staticmethod
    def _spline(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if x.size == 2:
            c = np.zeros((2,) + y.shape[1:])
            c[0] = (y[1] - y[0]) / (x[1] - x[0])
            c[1] = y[0]
            return c[:, None]
        bc = "not-a-knot" if x.size > 3 else "natural"
        return np.ascontiguousarray(CubicSpline(x, y, axis=0, bc_type=bc).c)

    def take(self, index: np.ndarray) -> PwvSlab:
        """The slab restricted to some of its frequencies (first axis; a cheap copy)."""
        if len(self._shape) not in (1, 2):
            raise ValueError("PwvSlab.take needs a 1-D or 2-D slab")
        idx = np.asarray(index)
        rest = self._shape[1:]

        def pick(c: np.ndarray) -> np.ndarray:
            full = c.reshape(c.shape[:2] + self._shape)[:, :, idx]
            return np.ascontiguousarray(full.reshape(c.shape[:2] + (-1,)))

        new = object.__new__(PwvSlab)
        new._x, new._u = self._x, self._u
        new.pwv_range = self.pwv_range
        new._shape = (int(idx.size),) + rest
        new._ctau = pick(self._ctau)
        new._ctatm = None if self._ctatm is None else pick(self._ctatm)
        return new

    def _locate(self, pwv_mm: float) -> int:
        lo, hi = self.pwv_range
        p = float(pwv_mm)
        if not (lo * (1 - _REL_TOL) <= p <= hi * (1 + _REL_TOL)):
            raise AtmosphereError(
                f"pwv {p:g} mm outside the atmosphere table range {lo:g}-{hi:g} mm"
            )
        return int(np.clip(np.searchsorted(self._x, p, side="right") - 1, 0, self._x.size - 2))

    def evaluate(self, pwv_mm: float) -> tuple[np.ndarray, np.ndarray | None]:
        """(tau, t_atm) at ``pwv_mm``, shaped like the slab's frequencies."""
        i = self._locate(pwv_mm)
        tau = _horner(self._ctau[:, i], pwv_mm - self._x[i])
        tatm = None
        if self._ctatm is not None:
            tatm = _horner(self._ctatm[:, i], np.log(pwv_mm) - self._u[i]).reshape(self._shape)
        return tau.reshape(self._shape), tatm

    def derivative(self, pwv_mm: float) -> tuple[np.ndarray, np.ndarray | None]:
        """(d tau/d pwv, d t_atm/d pwv) [per mm], analytic from the piecewise cubics."""
        i = self._locate(pwv_mm)
        dtau = _horner_d(self._ctau[:, i], pwv_mm - self._x[i])
        dtatm = None
        if self._ctatm is not None:
            dtatm = (_horner_d(self._ctatm[:, i], np.log(pwv_mm) - self._u[i]) / pwv_mm).reshape(
                self._shape
            )
        return dtau.reshape(self._shape), dtatm


def _horner(c: np.ndarray, t: float) -> np.ndarray:
    out = c[0].copy()
    for k in range(1, c.shape[0]):
        out *= t
        out += c[k]
    return out


def _horner_d(c: np.ndarray, t: float) -> np.ndarray:
    n = c.shape[0] - 1
    if n == 0:
        return np.zeros_like(c[0])
    out = n * c[0]
    for k in range(1, n):
        out = out * t + (n - k) * c[k]
    return out


@dataclass(frozen=True)
class AtmosphereTable:
    """Zenith opacity ``tau[G, P, F]`` (neper) and ``t_atm[G, P, F]`` (K) on
    (ground pressure, pwv, frequency) nodes.

    ``t_atm`` is the effective emission temperature: J(T_atm)(1 - e^-tau) + J(T_cmb) e^-tau
    is the model's zenith sky brightness (J scale). ``t_atm`` None (CCAT linear form): the
    caller uses T_amb.
    """

    frequency_hz: np.ndarray
    pwv_mm: np.ndarray
    pressure_hpa: np.ndarray
    tau: np.ndarray
    t_atm: np.ndarray | None
    model: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        f = _as_f64(self.frequency_hz, "frequency_hz", 1)
        w = _as_f64(self.pwv_mm, "pwv_mm", 1)
        p = _as_f64(self.pressure_hpa, "pressure_hpa", 1)
        tau = _as_f64(self.tau, "tau", 3)
        shape = (p.size, w.size, f.size)
        if tau.shape != shape:
            raise ConfigError(f"atmosphere table: tau shape {tau.shape} != (G, P, F) {shape}")
        if f.size < 2 or np.any(np.diff(f) <= 0):
            raise ConfigError("atmosphere table: frequency_hz must be >= 2 ascending values")
        if w.size < 2 or np.any(np.diff(w) <= 0) or w[0] <= 0:
            raise ConfigError("atmosphere table: pwv_mm must be >= 2 ascending positive values")
        if np.any(np.diff(p) <= 0) or p[0] <= 0:
            raise ConfigError("atmosphere table: pressure_hpa must be ascending positive values")
        if not np.all(np.isfinite(tau)):
            raise ConfigError("atmosphere table: tau has non-finite values")
        object.__setattr__(self, "frequency_hz", f)
        object.__setattr__(self, "pwv_mm", w)
        object.__setattr__(self, "pressure_hpa", p)
        object.__setattr__(self, "tau", tau)
        if self.t_atm is not None:
            t = _as_f64(self.t_atm, "t_atm", 3)
            if t.shape != shape:
                raise ConfigError(f"atmosphere table: t_atm shape {t.shape} != {shape}")
            if not np.all(np.isfinite(t)) or np.any(t <= 0):
                raise ConfigError("atmosphere table: t_atm must be finite and positive")
            object.__setattr__(self, "t_atm", t)
        object.__setattr__(self, "meta", dict(self.meta))

    @functools.cached_property
    def digest(self) -> str:
        """sha256 hex over model name, axes and data arrays (float64 little-endian bytes)."""
        h = hashlib.sha256()
        h.update(b"calpipe-atmosphere-table-v1\0")
        h.update(self.model.encode() + b"\0")
        arrays = [self.frequency_hz, self.pwv_mm, self.pressure_hpa, self.tau]
        if self.t_atm is not None:
            arrays.append(self.t_atm)
        for a in arrays:
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a, dtype="<f8").tobytes())
        h.update(b"t_atm" if self.t_atm is not None else b"no-t_atm")
        return h.hexdigest()

    def slab(self, frequency_hz: np.ndarray, pressure_hpa: float) -> PwvSlab:
        """Interpolate in frequency (linear) and ground pressure (cubic in ln P) once."""
        f = np.asarray(frequency_hz, dtype=float)
        shape = f.shape
        flat = f.ravel()
        fa = self.frequency_hz
        if flat.size and (not np.all(np.isfinite(flat))):
            raise AtmosphereError("non-finite frequency given to the atmosphere table")
        if flat.size:
            bad = flat[(flat < fa[0]) | (flat > fa[-1])]
            if bad.size:
                raise AtmosphereError(
                    f"frequency {bad[0] / 1e9:.6f} GHz outside the atmosphere table range "
                    f"{fa[0] / 1e9:.3f}-{fa[-1] / 1e9:.3f} GHz ({bad.size} values out of range)"
                )
        p = float(pressure_hpa)
        pa = self.pressure_hpa
        if not np.isfinite(p) or not (
            pa[0] * (1 - 1e-6) <= p <= pa[-1] * (1 + 1e-6)
        ):
            raise AtmosphereError(
                f"ground pressure {p:g} hPa outside the atmosphere table range "
                f"{pa[0]:g}-{pa[-1]:g} hPa"
            )
        # frequency weights
        j = np.clip(np.searchsorted(fa, flat, side="right") - 1, 0, fa.size - 2)
        wf = (flat - fa[j]) / (fa[j + 1] - fa[j])
        wg = pressure_weights(pa, p)  # [G], sum 1
        gsel = np.flatnonzero(wg != 0.0)

        def interp(a: np.ndarray) -> np.ndarray:
            out = np.zeros((a.shape[1], flat.size))
            for g in gsel:
                ag = a[g]
                out += wg[g] * (ag[:, j] * (1 - wf) + ag[:, j + 1] * wf)
            return out  # [P, n]

        tau = interp(self.tau)
        tatm = None if self.t_atm is None else interp(self.t_atm)
        return PwvSlab(self.pwv_mm, tau, tatm, shape)


def pressure_weights(nodes_hpa: np.ndarray, p_hpa: float) -> np.ndarray:
    """Weights w[G] with value(P) = sum_g w_g value_g: not-a-knot cubic spline in ln P
    (natural for 3 nodes, linear in ln P for 2, 1 for a single node)."""
    n = nodes_hpa.size
    w = np.zeros(n)
    if n == 1:
        w[0] = 1.0
        return w
    x = np.log(nodes_hpa)
    xp = min(max(np.log(p_hpa), x[0]), x[-1])
    i = np.flatnonzero(np.isclose(x, xp, rtol=0, atol=1e-12))
    if i.size:
        w[i[0]] = 1.0
        return w
    if n == 2:
        t = (xp - x[0]) / (x[1] - x[0])
        return np.array([1 - t, t])
    bc = "not-a-knot" if n > 3 else "natural"
    return np.asarray(CubicSpline(x, np.eye(n), axis=0, bc_type=bc)(xp), dtype=float)


def default_pwv_nodes(n: int = 18, lo: float = 0.02, hi: float = 12.0) -> np.ndarray:
    """Log-spaced pwv nodes [mm]."""
    return np.geomspace(lo, hi, n)


def from_linear_form(
    frequency_hz: np.ndarray,
    pressure_hpa: np.ndarray | float,
    b_per_mm: np.ndarray,
    c: np.ndarray,
    *,
    model: str = "ccat-linear",
    meta: Mapping[str, Any] | None = None,
    pwv_nodes_mm: np.ndarray | None = None,
) -> AtmosphereTable:
    """Tabulate the CCAT form tau = b(nu) pwv + c(nu) (b, c: [G, F] or [F]) with t_atm None.

    Because tau is splined as a cubic in pwv (not-a-knot), evaluate() reproduces the linear
    form exactly (to rounding) at any pwv in the node range (default 0.001-20 mm).
    """
    f = np.asarray(frequency_hz, dtype=float)
    p = np.atleast_1d(np.asarray(pressure_hpa, dtype=float))
    b = np.asarray(b_per_mm, dtype=float)
    cc = np.asarray(c, dtype=float)
    if b.ndim == 1:
        b = b[None]
    if cc.ndim == 1:
        cc = cc[None]
    if b.shape != (p.size, f.size) or cc.shape != b.shape:
        raise ConfigError(
            f"linear atmosphere table: b {b.shape} and c {cc.shape} must be (G, F) = "
            f"({p.size}, {f.size})"
        )
    w = np.geomspace(0.001, 20.0, 8) if pwv_nodes_mm is None else np.asarray(pwv_nodes_mm, float)
    tau = b[:, None, :] * w[None, :, None] + cc[:, None, :]
    m = {"form": "linear", "pwv_interp": "cubic in pwv (exact for linear form)"}
    m.update(meta or {})
    return AtmosphereTable(f, w, p, tau, None, model, m)
