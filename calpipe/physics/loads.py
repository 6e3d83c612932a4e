"""HOT/COLD loads: gain, receiver temperature and bad channels (DESIGN 3.2, stage "resolve").

gamma   = (C_hot - C_cold) / (T'_hot - T'_cold)                [counts / K]
y       = C_hot / C_cold
T'_rec  = (T'_hot - y T'_cold) / (y - 1)                        (DSB-weighted)
T_rec   = T'_rec / w_s                                          (SSB)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from calpipe.errors import BadLoadError, MissingLoadError
from calpipe.physics.radiometry import (
    PhysicsConstants,
    as_cube,
    sideband_weighted,
    signal_weight,
    weight_cube,
)
from calpipe.physics.stats import mean_from, sum_count_over_dumps

HOT_MODES = ("HOT",)
COLD_MODES = ("COLD", "COL")


@dataclass(frozen=True)
class BadChannelRule:
    """A channel (per pixel) is BAD_CHANNEL when any of these holds:

    1. C_hot <= C_cold, or either is not finite;
    2. C_hot - C_cold < clip_counts * max_c(boxcar_k(C_hot - C_cold)) over the band
       (k = smooth_channels; the boxcar mean ignores non-finite channels);
    3. T_rec,SSB <= 0 or not finite;
    4. T_rec,SSB > clip_trec * median(T_rec,SSB) over the pixel's channels passing 1-3.
    """

    clip_counts: float = 0.01
    clip_trec: float = 5.0
    smooth_channels: int = 16


@dataclass(frozen=True)
class CalibrationLoadFull:
    """Result of the resolve stage, per channel c and pixel (r, a)."""

    scan: int
    cal_scan: int  # the scan whose calibration/ group provided the loads
    nu_sig: np.ndarray  # [C] Hz
    nu_img: np.ndarray  # [C] Hz
    c_hot: np.ndarray  # [C, R, A] counts
    c_cold: np.ndarray  # [C, R, A] counts
    t_hot: float  # K physical
    t_cold: float  # K physical
    t_hot_eff: np.ndarray  # [C] T'_hot (K); [C, R, A] with per-pixel sideband gains
    t_cold_eff: np.ndarray  # [C] T'_cold (K); [C, R, A] likewise
    gamma: np.ndarray  # [C, R, A] counts / K
    t_rec_dsb: np.ndarray  # [C, R, A] T'_rec (K)
    t_rec: np.ndarray  # [C, R, A] T_rec,SSB (K)
    bad_channel: np.ndarray  # [C, R, A] bool
    gs_xs: Any  # float, or [C] / [C, R, A] per channel (and pixel), issue 13
    gi_xi: Any
    f_eff: float
    physics: str
    # issue 14 item 2 (calpipe.physics.gain): the gain drift to the next calibration snapshot
    drift_ratio: np.ndarray | None = None  # [R, A] gamma_next / gamma (band median)
    drift_t0_mjd: float | None = None  # mean dump mid-time of this snapshot
    drift_t1_mjd: float | None = None  # ... of the next one
    drift_scan: int | None = None  # the scan whose calibration/ group is the next snapshot
    # calibration_select: linear (issue 14, MRTCAL's LINEAR): the loads interpolated in time
    # between this snapshot (cal_scan) and the next one, weight of the next one
    linear_scan: int | None = None
    linear_weight: float | None = None
    # why a requested calibration_select (nearest / linear) fell back to the lloadsn snapshot
    selection_note: str | None = None

    @property
    def w_s(self) -> Any:
        """float, or an array [C] / [C, R, A] (calpipe.physics.radiometry.weight_cube)."""
        return signal_weight(self.gs_xs, self.gi_xi)

    @property
    def w_i(self) -> Any:
        return 1.0 - self.w_s

    @property
    def good_fraction(self) -> float:
        return float(1.0 - self.bad_channel.mean())

    def check(self) -> None:
        c = self.nu_sig.shape[0]
        for name in ("c_hot", "c_cold", "gamma", "t_rec_dsb", "t_rec", "bad_channel"):
            arr = getattr(self, name)
            if arr.ndim != 3 or arr.shape[0] != c:
                raise ValueError(f"CalibrationLoadFull.{name}: shape {arr.shape}, "
                                 f"expected [C={c}, R, A]")


def average_subscans(counts: np.ndarray, sobsmode: np.ndarray, modes: tuple[str, ...]
                     ) -> np.ndarray:
    """NaN-aware mean over the dumps of every subscan whose sobsmode is in ``modes``.

    counts [C, D, R, A, S] -> [C, R, A]; all-NaN stays NaN. Accumulates one subscan at a time
    so the temporaries stay at one subscan's size.
    """
    total = np.zeros(counts.shape[:1] + counts.shape[2:4])
    n = np.zeros(total.shape, dtype=np.int64)
    for s in np.flatnonzero(np.isin(sobsmode, modes)).tolist():
        block_sum, block_n = sum_count_over_dumps(counts[..., s])
        total += block_sum
        n += block_n
    return mean_from(total, n)


def _boxcar_max(diff: np.ndarray, width: int) -> np.ndarray:
    """max over channels of the NaN-aware boxcar mean along axis 0: [C, R, A] -> [R, A]."""
    finite = np.isfinite(diff)
    vals = np.where(finite, diff, 0.0)
    if width <= 1 or diff.shape[0] < width:
        return np.where(finite, diff, -np.inf).max(axis=0)
    kernel_sum = np.cumsum(np.concatenate([np.zeros((1,) + vals.shape[1:]), vals]), axis=0)
    kernel_n = np.cumsum(np.concatenate([np.zeros((1,) + vals.shape[1:]), finite]), axis=0)
    s = kernel_sum[width:] - kernel_sum[:-width]
    n = kernel_n[width:] - kernel_n[:-width]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, s / np.maximum(n, 1), -np.inf)
    return mean.max(axis=0)


def resolve_loads(
    *,
    scan: int,
    cal_scan: int,
    counts: np.ndarray,
    sobsmode: np.ndarray,
    thot: np.ndarray,
    tcold: np.ndarray,
    nu_sig: np.ndarray,
    nu_img: np.ndarray,
    gs_xs: float | np.ndarray,
    gi_xi: float | np.ndarray,
    f_eff: float,
    constants: PhysicsConstants,
    rule: BadChannelRule = BadChannelRule(),
) -> CalibrationLoadFull:
    """Average the loads, compute gamma, T_rec and the bad-channel mask (formulas above)."""
    where = "calibration" if cal_scan == scan else f"calibration of scan {cal_scan}"
    hot_sel = np.isin(sobsmode, HOT_MODES)
    cold_sel = np.isin(sobsmode, COLD_MODES)
    if not hot_sel.any():
        raise MissingLoadError(f"no HOT subscan in {where} (sobsmode = {sobsmode.tolist()})",
                               scan=scan, array=f"{where}/sobsmode")
    if not cold_sel.any():
        raise MissingLoadError(f"no COLD subscan in {where} (sobsmode = {sobsmode.tolist()})",
                               scan=scan, array=f"{where}/sobsmode")
    t_hot = float(np.mean(thot[hot_sel]))
    t_cold = float(np.mean(tcold[cold_sel]))
    for name, value in (("thot", t_hot), ("tcold", t_cold)):
        if not (np.isfinite(value) and value > 0):
            raise BadLoadError(f"load temperature {value} K is not finite and positive",
                               scan=scan, array=f"{where}/{name}")
    if t_hot <= t_cold:
        raise BadLoadError(f"hot load ({t_hot:.2f} K) is not warmer than the cold load "
                           f"({t_cold:.2f} K)", scan=scan, array=f"{where}/thot")

    c_hot = average_subscans(counts, sobsmode, HOT_MODES)
    c_cold = average_subscans(counts, sobsmode, COLD_MODES)
    w_s = signal_weight(gs_xs, gi_xi)
    t_hot_eff = sideband_weighted(nu_sig, nu_img, t_hot, w_s, constants)
    t_cold_eff = sideband_weighted(nu_sig, nu_img, t_cold, w_s, constants)

    diff = c_hot - c_cold
    dt = as_cube(t_hot_eff - t_cold_eff)
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma = diff / dt
        y = c_hot / c_cold
        t_rec_dsb = (as_cube(t_hot_eff) - y * as_cube(t_cold_eff)) / (y - 1.0)
        t_rec = t_rec_dsb / weight_cube(w_s, nu_sig.shape[0])

    bad = ~(np.isfinite(c_hot) & np.isfinite(c_cold)) | ~(diff > 0)
    smax = _boxcar_max(np.where(bad, np.nan, diff), rule.smooth_channels)
    with np.errstate(invalid="ignore"):
        bad |= diff < rule.clip_counts * smax[None, :, :]
        bad |= ~(t_rec > 0)
    med = np.nanmedian(np.where(bad, np.nan, t_rec), axis=0) if (~bad).any() else None
    if med is not None:
        with np.errstate(invalid="ignore"):
            bad |= t_rec > rule.clip_trec * med[None, :, :]
    if bad.all():
        raise BadLoadError("no usable channel: HOT <= COLD, non-finite, or T_rec <= 0 on every "
                           "channel of every pixel", scan=scan, array=f"{where}/data_5d")
    gamma = np.where(bad, np.nan, gamma)
    t_rec_dsb = np.where(bad, np.nan, t_rec_dsb)
    t_rec = np.where(bad, np.nan, t_rec)
    return CalibrationLoadFull(
        scan=scan, cal_scan=cal_scan, nu_sig=nu_sig, nu_img=nu_img, c_hot=c_hot, c_cold=c_cold,
        t_hot=t_hot, t_cold=t_cold, t_hot_eff=t_hot_eff, t_cold_eff=t_cold_eff, gamma=gamma,
        t_rec_dsb=t_rec_dsb, t_rec=t_rec, bad_channel=bad, gs_xs=gs_xs, gi_xi=gi_xi,
        f_eff=f_eff, physics=constants.mode,
    )


#: the per-channel load products interpolated by calibration_select: linear
_INTERPOLATED = ("c_hot", "c_cold", "t_hot_eff", "t_cold_eff", "gamma", "t_rec_dsb", "t_rec")


def interpolate_loads(first: CalibrationLoadFull, second: CalibrationLoadFull, u: float
                      ) -> CalibrationLoadFull:
    """The loads at a time between two snapshots (IRAM MRTCAL's LINEAR selection):

        X = (1 - u) X_first + u X_second     for C_hot, C_cold, T'_hot, T'_cold, gamma, T_rec
        u = (t - t_first) / (t_second - t_first), clipped to [0, 1]
        bad = bad_first | bad_second

    Under a gain (or receiver temperature) changing linearly in time, C_hot, C_cold and gamma
    are exact at t; T_rec is interpolated as MRTCAL does. ``cal_scan`` stays the first
    snapshot; ``linear_scan`` / ``linear_weight`` record the second and u.
    """
    u = float(np.clip(u, 0.0, 1.0))
    values: dict[str, Any] = {
        name: (1.0 - u) * np.asarray(getattr(first, name)) + u * np.asarray(
            getattr(second, name)) for name in _INTERPOLATED}
    bad = first.bad_channel | second.bad_channel
    for name in ("gamma", "t_rec_dsb", "t_rec"):
        values[name] = np.where(bad, np.nan, values[name])
    return dataclasses.replace(
        first, **values, bad_channel=bad,
        t_hot=(1.0 - u) * first.t_hot + u * second.t_hot,
        t_cold=(1.0 - u) * first.t_cold + u * second.t_cold,
        linear_scan=int(second.cal_scan), linear_weight=u)
