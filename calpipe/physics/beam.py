"""Main-beam and elevation-gain scaling (issue 14 item 5): T_A* -> T_mb.

T_mb(c, d, r, a, s) = T_A*(c, d, r, a, s) * K(a, s)
K(a, s)             = eta_fss / (eta_mb * G_a(el_s))
G_a(el)             = sum_k coefficients_k * el_deg^k     (ascending powers, el in degrees)

eta_fss is the forward efficiency F_eff of the conversion (by default the f_eff that defined
T_A*), eta_mb the main-beam efficiency B_eff, G_a the relative gain of the antenna at elevation
el for array a (and the band of the scan). t_sys scales by K like the spectra, the weights
(1 / sigma^2) by 1 / K^2, so the weighted averages of a T_mb cube keep their meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from calpipe.errors import MetadataError


@dataclass(frozen=True)
class GainCurve:
    """G(el) = sum_k coefficients[k] el_deg^k for the arrays ``arrays`` (None: every array) and
    signal frequencies in ``band_ghz`` = (lo, hi) GHz (None: every band)."""

    coefficients: tuple[float, ...]
    arrays: tuple[int, ...] | None = None
    band_ghz: tuple[float, float] | None = None

    def applies(self, array: int, nu_ghz: float) -> bool:
        if self.arrays is not None and array not in self.arrays:
            return False
        return self.band_ghz is None or self.band_ghz[0] <= nu_ghz <= self.band_ghz[1]

    def evaluate(self, elevation_rad: np.ndarray) -> np.ndarray:
        el = np.degrees(np.asarray(elevation_rad, dtype=np.float64))
        return np.asarray(np.polynomial.polynomial.polyval(el, np.asarray(self.coefficients)))


def select_curves(curves: Sequence[GainCurve], n_arrays: int, nu_ghz: float,
                  scan: int | None = None) -> list[GainCurve | None]:
    """The first curve that applies to each array at frequency nu_ghz; no curves at all means
    G = 1 everywhere ([None] * n_arrays). When curves are given, an array that none of them
    covers is a MetadataError (a gain curve silently taken as 1 would bias T_mb)."""
    if not curves:
        return [None] * n_arrays
    out: list[GainCurve | None] = []
    for a in range(n_arrays):
        match = next((c for c in curves if c.applies(a, nu_ghz)), None)
        if match is None:
            raise MetadataError(f"no gain_curve entry applies to array {a} at "
                                f"{nu_ghz:.3f} GHz ({len(curves)} entries given)", scan=scan,
                                array="gain_curve")
        out.append(match)
    return out


def elevation_gain(curves: Sequence[GainCurve | None], elevation_rad: np.ndarray,
                   scan: int | None = None) -> np.ndarray:
    """G[A, S] for the selected curves (None: 1) at the elevations [S]; G must be finite and
    > 0 (MetadataError otherwise)."""
    el = np.asarray(elevation_rad, dtype=np.float64)
    rows = [np.ones_like(el) if c is None else c.evaluate(el) for c in curves]
    gain = np.stack(rows) if rows else np.ones((0, el.size))
    bad = ~(np.isfinite(gain) & (gain > 0))
    if bad.any():
        a, s = np.argwhere(bad)[0]
        raise MetadataError(f"gain curve of array {a} gives G = {gain[a, s]:.4g} at elevation "
                            f"{np.degrees(el[s]):.2f} deg (must be > 0)", scan=scan,
                            array="gain_curve")
    return gain


def main_beam_factor(eta_fss: float, eta_mb: float, gain: np.ndarray) -> np.ndarray:
    """K[A, S] = eta_fss / (eta_mb G[A, S])."""
    return np.asarray(eta_fss / (eta_mb * np.asarray(gain, dtype=np.float64)))


def scale_arrays(spectra: np.ndarray, t_sys: np.ndarray, weight: np.ndarray,
                 factor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """spectra [C, D, R, A, S] x K, t_sys [C, R, A, S] x K, weight [C, R, A, S] / K^2 with
    K [A, S]; the dtypes are kept (NaN stays NaN)."""
    k = np.asarray(factor, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        # in the spectra's own dtype: no float64 copy of the cube (K in float32: 6e-8 rel.)
        out_spectra = spectra * k.astype(spectra.dtype)[None, None, None]
        out_tsys = (t_sys * k[None, None]).astype(t_sys.dtype)
        out_weight = (weight / (k * k)[None, None]).astype(weight.dtype)
    return out_spectra, out_tsys, out_weight
