"""Receiver gain drift between two calibration snapshots (issue 14 item 2, CCAT's
``gain_interpolate`` 3: ON and OFF counts corrected).

With the gains gamma_0 [C, R, A] of the scan's load snapshot (mean dump time t_0) and gamma_1
of the next snapshot (t_1), the gain at time t relative to gamma_0 is interpolated linearly:

    rho[r, a]  = median over good channels of gamma_1 / gamma_0      (one number per pixel)
    r(t)[r, a] = 1 + (rho - 1) (t - t_0) / (t_1 - t_0)
    C'(c, d, r, a, s) = C(c, d, r, a, s) / r(t_ds)                    (t_ds: dump mid-time)

so that the corrected counts are those of a receiver with the constant gain gamma_0, which the
rest of the calibration assumes. The HOT and COLD subscans of the scan's own snapshot (seconds
before or after t_0) are corrected the same way and resolved again, so that gamma_0 and C_hot
are those at t_0. The ratio is a band median per pixel: the gain drift of a receiver chain
is broadband, and a per-channel ratio would add the loads' noise to every ON.
Counts carry the receiver noise too (C = g (T_rec + T)), so dividing by r(t) is exact for a
pure gain drift. Used by the stages with ``gain_interpolate: 3`` (docs/physics.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calpipe.errors import CalibrationError


@dataclass(frozen=True)
class GainDrift:
    """The linear gain model between two snapshots."""

    t0_mjd: float
    t1_mjd: float
    ratio: np.ndarray  # [R, A] gamma_1 / gamma_0

    def factor(self, mjd: np.ndarray) -> np.ndarray:
        """r(t) [..., R, A] for times mjd [...] (extrapolated linearly outside t_0..t_1)."""
        x = (np.asarray(mjd, dtype=np.float64) - self.t0_mjd) / (self.t1_mjd - self.t0_mjd)
        return np.asarray(1.0 + (self.ratio - 1.0) * x[..., None, None])


def gain_drift(gamma0: np.ndarray, gamma1: np.ndarray, bad0: np.ndarray, bad1: np.ndarray,
               t0_mjd: float, t1_mjd: float, scan: int | None = None) -> GainDrift:
    """The drift model from the two snapshots' gamma [C, R, A] and bad-channel masks."""
    if not t1_mjd > t0_mjd:
        raise CalibrationError(f"the next calibration snapshot (MJD {t1_mjd:.6f}) is not "
                               f"after the scan's own (MJD {t0_mjd:.6f})", scan=scan,
                               array="calibration/mjd")
    good = ~(bad0 | bad1) & np.isfinite(gamma0) & np.isfinite(gamma1) & (gamma0 > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(good, gamma1 / gamma0, np.nan)
    if not good.any(axis=0).all():
        raise CalibrationError("gain drift: a pixel has no channel good in both calibration "
                               "snapshots", scan=scan, array="calibration/data_5d")
    return GainDrift(float(t0_mjd), float(t1_mjd), np.nanmedian(ratio, axis=0))


def dump_times(mjd: np.ndarray, exptime: np.ndarray, n_dumps: int) -> np.ndarray:
    """Mid-times [D, S] of the dumps: subscan start + (d + 0.5) exptime."""
    d = np.arange(n_dumps, dtype=np.float64)[:, None] + 0.5
    return np.asarray(np.asarray(mjd, np.float64)[None, :]
                      + d * np.asarray(exptime, np.float64)[None, :] / 86400.0)


def snapshot_time(mjd: np.ndarray, exptime: np.ndarray, n_dumps: int) -> float:
    """The mean dump mid-time of a calibration snapshot (its HOT and COLD subscans)."""
    return float(np.mean(dump_times(mjd, exptime, n_dumps)))


def correct_counts(counts: np.ndarray, times: np.ndarray, drift: GainDrift,
                   subscans: np.ndarray) -> np.ndarray:
    """A copy of counts [C, D, R, A, S] with the subscans ``subscans`` divided by r(t)
    (times [D, S] of every subscan); the other subscans are copied unchanged."""
    out = np.array(counts, dtype=np.float64, copy=True)
    for s in np.asarray(subscans, dtype=int):
        r = drift.factor(times[:, s])  # [D, R, A]
        out[..., s] /= r[None]
    return out
