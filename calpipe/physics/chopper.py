"""Chopper-wheel (vane / sky) calibration and beam-switched Nod spectra (issue 16).

Pure numpy. The equations are those of the GBT's Argus calibration (Frayer et al. 2019,
"Calibration of Argus and the 4mm Receiver on the GBT", as implemented in dysh 1.1.0, which
itself matches GBTIDL); docs/physics.md compares them with the hot/cold method.

  T_sys  = T_cal * SKY / (VANE - SKY)                   (per channel, or a band scalar)
  T_cal  = (T_atm - T_bkg) + (T_vane - T_atm) exp(tau_0 A)      (Frayer eq. 22)
         ~ T_amb  or  T_vane                             (eq. 23, when tau_0, T_atm unknown)
  T_A*   = T_sys * (ON - OFF) / OFF
  Nod:     beam 1: ON = beam 1 in the BEAM1 scan, OFF = beam 1 in the BEAM2 scan
           beam 2: ON = beam 2 in the BEAM2 scan, OFF = beam 2 in the BEAM1 scan
           t_exp = t_on t_off / (t_on + t_off);  weight w = t_exp * dnu / T_sys^2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

# dysh vanecal ``mode``: 0 mean-before-division, 1 mean-after-division, 2 median of ratio.
TsysMethod = Literal["mean", "mean-ratio", "median"]
TSYS_METHODS: tuple[str, ...] = ("mean", "mean-ratio", "median")
CMB_K = 2.725  # dysh's default background temperature (CMB at 3 mm)
N_VEGAS_SPURS = 32


def vegas_spur_mask(n_channels: int, vsprval: float, vspdelt: float, vsprpix: float,
                    keep_central: bool = False) -> np.ndarray:
    """VEGAS spur channels [C] bool: c_J = (J - VSPRVAL) * VSPDELT + VSPRPIX - 1, J = 0..31.

    The central spur (J = 16) is not flagged unless ``keep_central``: the GBO SDFITS writer
    already replaced it by the mean of its neighbours (dysh ``calc_vegas_spurs``, GBTIDL
    ``dcspurschan``). Channels outside [0, C) are ignored.
    """
    j = np.arange(N_VEGAS_SPURS)
    if not keep_central:
        j = j[j != N_VEGAS_SPURS // 2]
    chans = ((j - vsprval) * vspdelt + vsprpix - 1).astype(int)
    mask = np.zeros(n_channels, dtype=bool)
    mask[chans[(chans >= 0) & (chans < n_channels)]] = True
    return mask


def inner_channels(n_channels: int, fedge: float = 0.1) -> np.ndarray:
    """[C] bool: the inner band used for band-averaged T_sys, dysh/GBTIDL convention.

    nedge = int(C * fedge); channels nedge .. C - nedge inclusive (GBTIDL's inclusive upper
    edge: python slice(nedge, -(nedge - 1))), i.e. 821 of 1024 channels for fedge = 0.1.
    """
    nedge = int(n_channels * fedge)
    if nedge < 1:
        raise ValueError(f"fedge {fedge} leaves no edge channel for {n_channels} channels")
    keep = np.zeros(n_channels, dtype=bool)
    keep[slice(nedge, -(nedge - 1) if nedge > 1 else None)] = True
    return keep


def gbt_airmass(elevation_deg: np.ndarray | float) -> np.ndarray:
    """GBT airmass (Maddalena 2007, as dysh): A = -0.0234 + 1.014 / sin(El + 5.18 / (El + 3.35)),
    El in degrees (the argument of sin in degrees)."""
    el = np.asarray(elevation_deg, dtype=np.float64)
    return -0.0234 + 1.014 / np.sin(np.radians(el + 5.18 / (el + 3.35)))


def frayer_tcal(t_vane: float | np.ndarray, t_atm: float | np.ndarray,
                tau_zenith: float | np.ndarray, airmass: float | np.ndarray,
                t_bkg: float = CMB_K) -> np.ndarray:
    """Calibration temperature of the vane on the T_A* scale (Frayer et al. eq. 22):
    T_cal = (T_atm - T_bkg) + (T_vane - T_atm) exp(tau_0 A)."""
    return np.asarray((np.asarray(t_atm) - t_bkg)
                      + (np.asarray(t_vane) - np.asarray(t_atm))
                      * np.exp(np.asarray(tau_zenith) * np.asarray(airmass)), dtype=np.float64)


def tsys_spectrum(vane: np.ndarray, sky: np.ndarray, t_cal: float | np.ndarray) -> np.ndarray:
    """Per-channel T_sys = T_cal * SKY / (VANE - SKY) (NaN where VANE <= SKY)."""
    vane = np.asarray(vane, dtype=np.float64)
    sky = np.asarray(sky, dtype=np.float64)
    diff = vane - sky
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(t_cal) * sky / diff
    return np.where(diff > 0, out, np.nan)


def tsys_scalar(vane: np.ndarray, sky: np.ndarray, t_cal: float,
                method: TsysMethod = "median", use: np.ndarray | None = None) -> float:
    """Band T_sys from a vane and a sky spectrum [C] over the channels ``use`` [C] bool.

    - "median":     T_cal / median((VANE - SKY) / SKY)          (dysh vanecal mode 2)
    - "mean":       T_cal * mean(SKY) / mean(VANE - SKY)        (mode 0; getnod with a vane)
    - "mean-ratio": T_cal / mean((VANE - SKY) / SKY)            (mode 1)
    Non-finite channels are ignored; dysh restricts "mean" and "mean-ratio" to the inner
    80 % (``inner_channels``) and excludes VEGAS spurs in all three - pass that as ``use``.
    """
    vane = np.asarray(vane, dtype=np.float64)
    sky = np.asarray(sky, dtype=np.float64)
    keep = np.isfinite(vane) & np.isfinite(sky)
    if use is not None:
        keep &= use
    if not keep.any():
        return float("nan")
    v, s = vane[keep], sky[keep]
    if method == "median":
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (v - s) / s
        return float(t_cal / np.median(ratio[np.isfinite(ratio)]))
    if method == "mean":
        return float(t_cal * np.mean(s) / np.mean(v - s))
    if method == "mean-ratio":
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (v - s) / s
        return float(t_cal / np.mean(ratio[np.isfinite(ratio)]))
    raise ValueError(f"unknown T_sys method {method!r}; expected one of {TSYS_METHODS}")


def ta_star(on: np.ndarray, off: np.ndarray, t_sys: float | np.ndarray) -> np.ndarray:
    """T_A* = T_sys * (ON - OFF) / OFF (same shape as ``on``)."""
    on = np.asarray(on, dtype=np.float64)
    off = np.asarray(off, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(t_sys) * (on - off) / off


def switched_exposure(t_on: np.ndarray | float, t_off: np.ndarray | float) -> np.ndarray:
    """Effective integration time of (ON - OFF) / OFF: t_on t_off / (t_on + t_off)."""
    t_on = np.asarray(t_on, dtype=np.float64)
    t_off = np.asarray(t_off, dtype=np.float64)
    return t_on * t_off / (t_on + t_off)


def tsys_weight(exposure: np.ndarray | float, delta_freq: np.ndarray | float,
                t_sys: np.ndarray | float) -> np.ndarray:
    """Radiometer weight w = t_exp * |dnu| / T_sys^2 (s Hz K^-2; 1 / sigma^2 per channel)."""
    return np.asarray(np.asarray(exposure) * np.abs(np.asarray(delta_freq))
                      / np.asarray(t_sys) ** 2, dtype=np.float64)


@dataclass(frozen=True)
class WeightedAverage:
    """A weighted average of spectra: value [C], T_sys, exposure, weights."""

    spectrum: np.ndarray  # [C], NaN where every input is masked
    t_sys: float  # sum(w T_sys) / sum(w)  (linear, weights of the spectra)
    exposure: float  # sum of the exposures
    weight_sum: np.ndarray  # [C]
    weights: np.ndarray  # [N]


def weighted_average(spectra: np.ndarray, t_sys: np.ndarray, exposure: np.ndarray,
                     delta_freq: np.ndarray | float, mask: np.ndarray | None = None,
                     tsys_mean: Literal["linear", "rms"] = "linear") -> WeightedAverage:
    """Average N spectra [N, C] with w_i = t_exp,i dnu / T_sys,i^2 (one weight per spectrum).

    Masked (``mask`` [N, C] True) or non-finite samples are left out channel by channel.
    T_sys of the result: ``linear`` sum(w T) / sum(w) (dysh ``average_spectra``) or ``rms``
    sqrt(sum(w T^2) / sum(w)) (dysh's average of the integrations within one scan).
    """
    x = np.asarray(spectra, dtype=np.float64)
    t_sys = np.asarray(t_sys, dtype=np.float64)
    exposure = np.asarray(exposure, dtype=np.float64)
    w = tsys_weight(exposure, delta_freq, t_sys)  # [N]
    bad = ~np.isfinite(x)
    if mask is not None:
        bad |= mask
    wc = np.where(bad, 0.0, w[:, None])
    wsum = wc.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        avg = np.where(wsum > 0, np.where(bad, 0.0, x * wc).sum(axis=0) / wsum, np.nan)
    if tsys_mean == "linear":
        t = float(np.sum(w * t_sys) / np.sum(w))
    else:
        t = float(np.sqrt(np.sum(w * t_sys**2) / np.sum(w)))
    return WeightedAverage(spectrum=avg, t_sys=t, exposure=float(exposure.sum()),
                           weight_sum=wsum, weights=w)


def spectrum_rms(spectrum: np.ndarray) -> float:
    """Population standard deviation (ddof = 0) over the finite channels (dysh stats rms)."""
    v = np.asarray(spectrum, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.std(v)) if v.size else float("nan")
