"""Rayleigh-Jeans-equivalent brightness and physics constants (DESIGN 3.2).

J(nu, T) = (h nu / k) / (exp(h nu / k T) - 1)   [K]
For h nu / k T < 1e-10 the series form T - h nu / 2k is used (no cancellation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

H_PLANCK = 6.62607015e-34  # J s (exact, SI 2019)
K_BOLTZMANN = 1.380649e-23  # J / K (exact, SI 2019)
T_CMB = 2.725  # K


@dataclass(frozen=True)
class PhysicsConstants:
    """h/k and the arithmetic precision. ``exact``: SI 2019 in float64.

    ``kalibrate-compat``: h/k = 0.047995 K/GHz in float32 arithmetic, for parity with legacy
    (kalibrate) reductions.
    """

    mode: str
    h_over_k: float  # K / Hz
    dtype: type

    @classmethod
    def for_mode(cls, mode: str) -> PhysicsConstants:
        if mode == "exact":
            return cls("exact", H_PLANCK / K_BOLTZMANN, np.float64)
        if mode == "kalibrate-compat":
            return cls("kalibrate-compat", 0.047995e-9, np.float32)
        raise ValueError(f"unknown physics mode {mode!r}")


EXACT = PhysicsConstants.for_mode("exact")


def rj_brightness(
    frequency_hz: np.ndarray | float,
    temperature_k: np.ndarray | float,
    constants: PhysicsConstants = EXACT,
) -> np.ndarray:
    """J(nu, T) = (h nu/k) / (exp(h nu / k T) - 1), in K; broadcasts its arguments."""
    dt = constants.dtype
    nu: np.ndarray = np.asarray(frequency_hz, dtype=dt)
    t: np.ndarray = np.asarray(temperature_k, dtype=dt)
    x0 = dt(constants.h_over_k) * nu  # h nu / k  [K]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = x0 / t
        j = x0 / np.expm1(x)
        small = x < 1e-10
    if np.any(small):
        j = np.where(small, t - x0 / dt(2), j)
    return np.asarray(j, dtype=np.float64)


def rj_brightness_dt(
    frequency_hz: np.ndarray | float,
    temperature_k: np.ndarray | float,
    constants: PhysicsConstants = EXACT,
) -> np.ndarray:
    """dJ/dT = x^2 e^x / (e^x - 1)^2 with x = h nu / k T (dimensionless)."""
    nu = np.asarray(frequency_hz, dtype=np.float64)
    t = np.asarray(temperature_k, dtype=np.float64)
    x = constants.h_over_k * nu / t
    with np.errstate(over="ignore", invalid="ignore"):
        em1 = np.expm1(x)
        d = np.where(x < 1e-6, 1.0 - x * x / 12.0, x * x * (em1 + 1.0) / (em1 * em1))
    return d


def signal_weight(gs_xs: float | np.ndarray, gi_xi: float | np.ndarray) -> Any:
    """w_s = g_s x_s / (g_s x_s + g_i x_i); the image weight is w_i = 1 - w_s.

    Scalars give a float; per-channel [C] or per-channel-and-pixel [C, R, A] arrays (issue 13)
    give an array of that shape."""
    if np.ndim(gs_xs) == 0 and np.ndim(gi_xi) == 0:
        return float(gs_xs) / (float(gs_xs) + float(gi_xi))
    return np.asarray(gs_xs, dtype=np.float64) / (np.asarray(gs_xs, dtype=np.float64)
                                                  + np.asarray(gi_xi, dtype=np.float64))


def weight_cube(w: float | np.ndarray, n_channels: int) -> np.ndarray:
    """A sideband weight as [C, Rw, Aw]: scalar or [C] -> [C, 1, 1]; [C, R, A] as is."""
    a = np.asarray(w, dtype=np.float64)
    if a.ndim == 0:
        return np.full((n_channels, 1, 1), float(a))
    if a.ndim == 1:
        return a[:, None, None]
    if a.ndim == 3:
        return a
    raise ValueError(f"sideband weight of shape {a.shape}: expected (), (C,) or (C, R, A)")


def as_cube(values: np.ndarray) -> np.ndarray:
    """[C] -> [C, 1, 1]; [C, R, A] as is (sideband-weighted load temperatures)."""
    return values[:, None, None] if values.ndim == 1 else values


def sideband_weighted(
    nu_sig: np.ndarray,
    nu_img: np.ndarray,
    temperature_k: np.ndarray | float,
    w_s: float | np.ndarray,
    constants: PhysicsConstants = EXACT,
) -> np.ndarray:
    """T' = w_s J(nu_sig, T) + w_i J(nu_img, T), w_i = 1 - w_s.

    nu [C]; w_s scalar or [C] -> [C]; w_s [C, R, A] -> [C, R, A]."""
    js = rj_brightness(nu_sig, temperature_k, constants)
    ji = rj_brightness(nu_img, temperature_k, constants)
    w = np.asarray(w_s, dtype=np.float64)
    if w.ndim == 3:
        js, ji = js[:, None, None], ji[:, None, None]
    return np.asarray(w * js + (1.0 - w) * ji)
