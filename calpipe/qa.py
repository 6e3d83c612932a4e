"""Per-scan quality assessment (issue 8; thresholds and definitions in docs/qa.md).

Called from the calibrate stage (``calpipe.stages.calibrate``) on the freshly calibrated
arrays; its metrics are merged into the scan attribute ``qa`` and it sets flag bit 4
(TSYS_OUTLIER) on whole spectra. TSYS_OUTLIER never blanks a spectrum (only bits 0-1 do).

- T_sys outliers: a spectrum (r, a, s_on) whose channel-median t_sys differs from the scan
  median of those values by more than ``TSYS_OUTLIER_FACTOR`` (either way) gets TSYS_OUTLIER
  on every channel and dump.
- Baseline rms: rms about the mean of each dump spectrum over the line-free channels
  (:func:`line_free_channels`), the median over dumps per spectrum (reported, K).
- Radiometer ratio: the channel-to-channel noise of each dump (second differences over
  line-free channels, each normalised by its expected standard deviation from the weights,
  :func:`noise_ratio`) against the radiometer equation; about 1 for radiometer-limited data
  whatever lines or smooth baselines the band holds (a line wider than the band of a
  64-channel spectrum included), and it warns above ``WARN_RADIOMETER_RATIO``.
- The atmosphere-fit diagnostic (:func:`atmosphere_fit_diagnostic`) is computed by the
  atmosphere stage and stored in L1 (``atm_fit_observed_k`` / ``atm_fit_model_k``) so that the
  quick-look can show the fit without the L0 store or the atmosphere table.

Work on the big [C, D, R, A, S_on] arrays proceeds in blocks of dumps so that the temporary
memory stays below ``BLOCK_BYTES`` (the pipeline's memory bound, DESIGN 6).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from calpipe.physics import flags as fl
from calpipe.physics.atmosphere import SkyModel
from calpipe.physics.stats import mean_from, sum_count_over_dumps

log = logging.getLogger(__name__)

#: a spectrum is a T_sys outlier when its channel-median t_sys is > F x or < 1/F x the scan
#: median of the channel-median t_sys over all spectra (R, A, S_on)
TSYS_OUTLIER_FACTOR = 2.0
#: line channels: |dump-averaged T_A* - running median| > N x robust noise (any spectrum)
LINE_THRESHOLD_SIGMA = 5.0
#: each run of line channels is widened by max(this, half the run) channels on each side
LINE_DILATE_CHANNELS = 3
#: running-median window for the baseline under the lines: C / 8 channels (at least 31)
BASELINE_WINDOW_FRACTION = 1.0 / 8.0
#: fraction of the band excluded at each edge (at least 2 channels)
EDGE_FRACTION = 0.05
#: fewer line-free channels than this fraction of the band: no baseline rms (NaN + warning)
MIN_LINE_FREE_FRACTION = 0.1
#: warning thresholds (they do not flag anything)
WARN_FLAGGED_FRACTION = 0.25
WARN_FIT_RESIDUAL_K = 5.0
WARN_RADIOMETER_RATIO = 1.5
#: temporary memory per block (QA runs while the scan's raw data is resident, DESIGN 6)
BLOCK_BYTES = 4 << 20

THRESHOLDS: dict[str, float] = {
    "tsys_outlier_factor": TSYS_OUTLIER_FACTOR,
    "line_threshold_sigma": LINE_THRESHOLD_SIGMA,
    "line_dilate_channels": LINE_DILATE_CHANNELS,
    "edge_fraction": EDGE_FRACTION,
    "warn_flagged_fraction": WARN_FLAGGED_FRACTION,
    "warn_fit_residual_k": WARN_FIT_RESIDUAL_K,
    "warn_radiometer_ratio": WARN_RADIOMETER_RATIO,
}

_MAD_TO_SIGMA = 1.482602218505602


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's all-NaN / empty-slice warnings (blanked spectra are expected)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# -- atmosphere-fit diagnostic (called by the atmosphere stage) ---------------------------------

def atmosphere_fit_diagnostic(model: SkyModel, s_obs: np.ndarray, weight: np.ndarray,
                              t_hot_eff: np.ndarray, pwv_mm: np.ndarray
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-averaged observed and model sky-minus-hot per OFF, [C, K] each (K).

    s_obs, weight: [C, R, A, K] as used by the fit (weight 0 where unusable); pwv_mm [Rp, Ap]
    ((1, 1) for the joint fit), or [Rp, Ap, K] for the per-pair fit. Both are weight-averaged
    over pixels; ``observed`` is NaN where no pixel is usable, ``model`` falls back to the
    plain pixel mean there.
    """
    n_c, n_r, n_a, n_k = s_obs.shape
    if pwv_mm.ndim == 3:  # per-pair fit (issue 14): each OFF at its own pwv [Rp, Ap, K]
        columns = [atmosphere_fit_diagnostic(model, s_obs, weight, t_hot_eff, pwv_mm[..., k])
                   for k in range(n_k)]
        return (np.stack([obs[:, k] for k, (obs, _) in enumerate(columns)], axis=1),
                np.stack([mod[:, k] for k, (_, mod) in enumerate(columns)], axis=1))
    if pwv_mm.shape == (1, 1):
        m_pix = np.broadcast_to(model.s_mod(float(pwv_mm[0, 0]), t_hot_eff), s_obs.shape)
    else:
        m_pix = np.empty(s_obs.shape)
        for r in range(n_r):
            for a in range(n_a):
                m_pix[:, r, a] = np.broadcast_to(model.s_mod(float(pwv_mm[r, a]), t_hot_eff),
                                                 s_obs.shape)[:, r, a]
    wsum = weight.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = (weight * s_obs).sum(axis=(1, 2)) / wsum
        modelled = (weight * m_pix).sum(axis=(1, 2)) / wsum
    good = wsum > 0
    observed = np.where(good, observed, np.nan)
    modelled = np.where(good, modelled, m_pix.mean(axis=(1, 2)))
    return observed, modelled


# -- T_sys outliers ----------------------------------------------------------------------------

def spectrum_tsys(t_sys: np.ndarray) -> np.ndarray:
    """Channel-median t_sys per spectrum [R, A, S_on] (NaN where no finite positive value)."""
    with _quiet():
        valid = np.where(np.isfinite(t_sys) & (t_sys > 0), t_sys, np.nan)
        return np.nanmedian(valid.astype(np.float64), axis=0)


def tsys_outliers(t_sys: np.ndarray, factor: float = TSYS_OUTLIER_FACTOR
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """(outlier mask [R, A, S_on], channel-median t_sys [R, A, S_on], scan median) of t_sys
    [C, R, A, S_on]: outliers deviate from the scan median by more than ``factor``."""
    per_spec = spectrum_tsys(t_sys)
    finite = per_spec[np.isfinite(per_spec)]
    if finite.size == 0:
        return np.zeros(per_spec.shape, dtype=bool), per_spec, float("nan")
    median = float(np.median(finite))
    with np.errstate(invalid="ignore"):
        ratio = per_spec / median
        mask = np.isfinite(ratio) & ((ratio > factor) | (ratio < 1.0 / factor))
    return mask, per_spec, median


def flag_tsys_outliers(flags: np.ndarray, outliers: np.ndarray) -> None:
    """Set TSYS_OUTLIER in place on every channel and dump of the outlier spectra.

    flags [C, D, R, A, S_on]; outliers [R, A, S_on] bool.
    """
    for r, a, s in zip(*np.nonzero(outliers), strict=True):
        flags[:, :, r, a, s] |= np.uint16(fl.TSYS_OUTLIER)


# -- line-free channels and baseline rms ---------------------------------------------------------

def _channel_step(shape: tuple[int, ...], itemsize: int = 8) -> int:
    """Channels per block so that one [c, D, R, A, S_on] float64 block stays below BLOCK_BYTES.

    Channel blocks of a C-ordered [C, ...] array are contiguous: fast to read, no strides.
    """
    per_channel = max(int(np.prod(shape[1:])) * itemsize, 1)
    return int(max(1, BLOCK_BYTES // per_channel))


def dump_average(spectra: np.ndarray) -> np.ndarray:
    """NaN-aware mean over dumps, [C, R, A, S_on] (float64), in blocks of channels."""
    n_c = spectra.shape[0]
    out = np.empty((n_c, *spectra.shape[2:]))
    step = _channel_step(spectra.shape)
    for c0 in range(0, n_c, step):
        out[c0:c0 + step] = mean_from(*sum_count_over_dumps(spectra[c0:c0 + step]))
    return out


def robust_noise(spectrum: np.ndarray) -> float:
    """Channel-to-channel noise of a spectrum: 1.4826 MAD(diff) / sqrt(2) (insensitive to
    lines and smooth baselines); NaN when fewer than 8 finite differences."""
    d = np.diff(spectrum)
    d = d[np.isfinite(d)]
    if d.size < 8:
        return float("nan")
    return float(_MAD_TO_SIGMA * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))


def edge_channels(n_c: int, fraction: float = EDGE_FRACTION) -> np.ndarray:
    """Bool [C]: the band edges (``fraction`` of the channels at each end, at least 2)."""
    n = max(2, int(round(fraction * n_c)))
    n = min(n, n_c // 2)
    edge = np.zeros(n_c, dtype=bool)
    edge[:n] = True
    edge[n_c - n:] = True
    return edge


def _count_blanked(flags: np.ndarray, bits: int = fl.BLANKING) -> int:
    """Samples with any of ``bits`` (default bit 0 or 1), counted in blocks of channels (no
    full-size temporary)."""
    per_channel = max(int(np.prod(flags.shape[1:])) * flags.itemsize, 1)
    step = max(1, BLOCK_BYTES // per_channel)
    blank = np.uint16(bits)
    return sum(int(np.count_nonzero(flags[c0:c0 + step] & blank))
               for c0 in range(0, flags.shape[0], step))


def line_channels(mean_spectra: np.ndarray, usable: np.ndarray | None = None,
                  n_sigma: float = LINE_THRESHOLD_SIGMA,
                  dilate: int = LINE_DILATE_CHANNELS) -> np.ndarray:
    """Bool [C]: channels where any usable dump-averaged spectrum [C, N] departs from its
    running-median baseline by more than ``n_sigma`` x its robust noise; each run of such
    channels is then widened by max(``dilate``, half its length) on each side.

    The running median (window C / 8) is taken on spectra binned to at most 1024 points, so
    the cost does not grow with the window.
    """
    from scipy.ndimage import median_filter

    n_c = mean_spectra.shape[0]
    flat = mean_spectra.reshape(n_c, -1)
    use = np.ones(flat.shape[1], dtype=bool) if usable is None else usable.reshape(-1)
    spec = flat[:, use & (np.isfinite(flat).sum(axis=0) >= 16)]
    if spec.shape[1] == 0:
        return np.zeros(n_c, dtype=bool)
    with _quiet():
        d = np.diff(spec, axis=0)
        mad = np.nanmedian(np.abs(d - np.nanmedian(d, axis=0)), axis=0)
        sigma = _MAD_TO_SIGMA * mad / np.sqrt(2.0)  # [N]
        filled = np.where(np.isfinite(spec), spec, np.nanmedian(spec, axis=0))
    k = max(1, int(np.ceil(n_c / 1024)))
    pad = (-n_c) % k
    padded = np.concatenate([filled, np.repeat(filled[-1:], pad, axis=0)]) if pad else filled
    binned = padded.reshape(-1, k, filled.shape[1]).mean(axis=1)
    window = max(3, int(max(31, n_c * BASELINE_WINDOW_FRACTION) / k)) | 1
    window = min(window, binned.shape[0] if binned.shape[0] % 2 else binned.shape[0] - 1)
    baseline = median_filter(binned, size=(max(window, 1), 1), mode="nearest")
    baseline = np.repeat(baseline, k, axis=0)[:n_c]
    ok = np.isfinite(sigma) & (sigma > 0)
    with _quiet():
        hit = np.abs(spec - baseline) > n_sigma * np.where(ok, sigma, np.inf)
    return _widen_runs(hit.any(axis=1), dilate)


def _widen_runs(mask: np.ndarray, minimum: int) -> np.ndarray:
    """Widen every run of True by max(minimum, half its length) channels on each side (the
    wings of a line lie below the detection threshold)."""
    out = mask.copy()
    if not mask.any():
        return out
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, stops = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        pad = max(minimum, (stop - start) // 2)
        out[max(0, start - pad):min(mask.size, stop + pad)] = True
    return out


def line_free_channels(mean_spectra: np.ndarray, usable: np.ndarray | None = None
                       ) -> tuple[np.ndarray, dict[str, int]]:
    """Bool [C] of line-free channels (not a line, not a band edge) and the channel counts."""
    n_c = mean_spectra.shape[0]
    line = line_channels(mean_spectra, usable)
    edge = edge_channels(n_c)
    free = ~line & ~edge
    return free, {"line_channels": int(line.sum()), "edge_channels": int(edge.sum()),
                  "line_free_channels": int(free.sum())}


def baseline_rms(spectra: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Median over dumps of the rms about the mean over ``free`` channels, [R, A, S_on] (K).

    One pass over channel blocks accumulating sum, sum of squares and count per dump.
    """
    n_c, n_d, n_r, n_a, n_s = spectra.shape
    idx = np.nonzero(free)[0]
    if idx.size < 2:
        return np.full((n_r, n_a, n_s), np.nan)
    total = np.zeros((n_d, n_r, n_a, n_s))
    total2 = np.zeros((n_d, n_r, n_a, n_s))
    count = np.zeros((n_d, n_r, n_a, n_s))
    step = _channel_step(spectra.shape)
    for i0 in range(0, idx.size, step):
        block = spectra[idx[i0:i0 + step]].astype(np.float64)
        ok = np.isfinite(block)
        block[~ok] = 0.0
        total += block.sum(axis=0)
        total2 += (block * block).sum(axis=0)
        count += ok.sum(axis=0)
    with _quiet():
        mean = total / count
        std = np.sqrt(np.maximum(total2 / count - mean * mean, 0.0))
        std[count < 2] = np.nan
        return np.nanmedian(std, axis=0)


def noise_ratio(spectra: np.ndarray, weight: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Channel-to-channel noise over the radiometer noise, median over dumps [R, A, S_on].

    For each channel c with c - 1, c and c + 1 line-free, the second difference
    x[c-1] - 2 x[c] + x[c+1] of one dump divided by its expected standard deviation
    sqrt(v[c-1] + 4 v[c] + v[c+1]), v = 1 / weight; the rms of these over channels per dump
    is 1 for independent channels at the radiometer noise, and a line, slope or curvature
    smooth over a few channels adds next to nothing. NaN where fewer than 2 such channels.
    """
    n_c, n_d, n_r, n_a, n_s = spectra.shape
    triple = free[:-2] & free[1:-1] & free[2:]
    centre = np.nonzero(triple)[0] + 1
    if centre.size < 2:
        return np.full((n_r, n_a, n_s), np.nan)
    with _quiet():
        var = np.where(weight > 0, 1.0 / weight.astype(np.float64), np.nan)  # [C, R, A, S]
    total = np.zeros((n_d, n_r, n_a, n_s))
    count = np.zeros((n_d, n_r, n_a, n_s))
    step = max(1, _channel_step(spectra.shape) // 3)
    for i0 in range(0, centre.size, step):
        c = centre[i0:i0 + step]
        d2 = (spectra[c - 1].astype(np.float64) - 2.0 * spectra[c].astype(np.float64)
              + spectra[c + 1].astype(np.float64))
        sd = np.sqrt(var[c - 1] + 4.0 * var[c] + var[c + 1])[:, None]  # [c, 1, R, A, S]
        with _quiet():
            z = d2 / sd
        ok = np.isfinite(z)
        z[~ok] = 0.0
        total += (z * z).sum(axis=0)
        count += ok.sum(axis=0)
    with _quiet():
        ratio = np.sqrt(total / count)
        ratio[count < 2] = np.nan
        return np.nanmedian(ratio, axis=0)


def radiometer_noise(weight: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Expected per-dump noise 1 / sqrt(weight), median over ``free`` channels [R, A, S_on]."""
    w = weight[free].astype(np.float64)
    if w.shape[0] == 0:
        return np.full(w.shape[1:], np.nan)
    with _quiet():
        return np.nanmedian(np.where(w > 0, 1.0 / np.sqrt(w), np.nan), axis=0)


# -- the stage hook ----------------------------------------------------------------------------

def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _nested(values: np.ndarray) -> Any:
    """ndarray -> nested lists with None for non-finite values (JSON attributes)."""
    if values.ndim == 0:
        return _finite_or_none(float(values))
    return [_nested(v) for v in values]


def _nanmedian(values: np.ndarray, axis: Any = None) -> Any:
    with _quiet():
        return np.nanmedian(values, axis=axis)


def assess_scan(spectra: np.ndarray, flags: np.ndarray, t_sys: np.ndarray, weight: np.ndarray,
                residual_rms_k: np.ndarray | None = None, blank_bits: int = fl.BLANKING
                ) -> dict[str, Any]:
    """QA of one calibrated scan: sets TSYS_OUTLIER in ``flags`` (in place) and returns the
    metrics for attrs["qa"] (JSON-able; None for undefined values).

    spectra, flags [C, D, R, A, S_on]; t_sys, weight [C, R, A, S_on]; residual_rms_k: the
    atmosphere fit's residual rms (any shape); blank_bits: the flags that make spectra NaN
    (with LOW_TRANSMISSION when it blanks).
    """
    n_c = spectra.shape[0]
    outliers, per_spec, scan_median = tsys_outliers(t_sys)
    flag_tsys_outliers(flags, outliers)

    n_samples = max(flags.size, 1)
    flagged = int(np.count_nonzero(flags)) / n_samples
    blanked = _count_blanked(flags, blank_bits) / n_samples

    mean_spectra = dump_average(spectra)
    usable = ~outliers & np.isfinite(per_spec)
    free, counts = line_free_channels(mean_spectra, usable)
    enough = counts["line_free_channels"] >= max(2, int(MIN_LINE_FREE_FRACTION * n_c))
    rms = baseline_rms(spectra, free) if enough else np.full(per_spec.shape, np.nan)
    expected = radiometer_noise(weight, free) if enough else np.full(per_spec.shape, np.nan)
    with np.errstate(all="ignore"):
        baseline_ratio = rms / expected
    ratio = noise_ratio(spectra, weight, free) if enough else np.full(per_spec.shape, np.nan)
    rms_pixel = _nanmedian(rms, axis=2)
    rms_median = float(_nanmedian(rms[usable])) if np.any(usable & np.isfinite(rms)) else np.nan
    ratio_ok = usable & np.isfinite(ratio)
    ratio_median = float(np.median(ratio[ratio_ok])) if ratio_ok.any() else np.nan
    base_ok = usable & np.isfinite(baseline_ratio)
    baseline_ratio_median = (float(np.median(baseline_ratio[base_ok])) if base_ok.any()
                             else np.nan)

    fit_rms = np.nan
    if residual_rms_k is not None:
        r = np.asarray(residual_rms_k, dtype=np.float64)
        r = r[np.isfinite(r)]
        fit_rms = float(r.max()) if r.size else np.nan

    warnings_: list[str] = []
    if flagged > WARN_FLAGGED_FRACTION:
        warnings_.append(f"{flagged:.1%} of samples flagged (> {WARN_FLAGGED_FRACTION:.0%})")
    if outliers.any():
        warnings_.append(f"{int(outliers.sum())} T_sys outlier spectra "
                         f"(> {TSYS_OUTLIER_FACTOR:g}x from the scan median)")
    if np.isfinite(fit_rms) and fit_rms > WARN_FIT_RESIDUAL_K:
        warnings_.append(f"pwv-fit residual rms {fit_rms:.2f} K (> {WARN_FIT_RESIDUAL_K:g} K)")
    if np.isfinite(ratio_median) and ratio_median > WARN_RADIOMETER_RATIO:
        warnings_.append(f"channel-to-channel noise {ratio_median:.2f}x the radiometer noise "
                         f"(> {WARN_RADIOMETER_RATIO:g})")
    if not enough:
        warnings_.append(f"only {counts['line_free_channels']} line-free channels: "
                         "no baseline rms")
    for w in warnings_:
        log.info("QA: %s", w)

    return {
        "flagged_fraction": flagged,
        "blanked_fraction": blanked,
        "tsys_scan_median_k": _finite_or_none(scan_median),
        "tsys_spectrum_k": _nested(per_spec),
        "tsys_outliers": [[int(r), int(a), int(s)] for r, a, s in zip(*np.nonzero(outliers),
                                                                      strict=True)],
        "n_tsys_outliers": int(outliers.sum()),
        "pwv_fit_residual_rms_k": _finite_or_none(fit_rms),
        "baseline_rms_k": _nested(rms_pixel),
        "baseline_rms_median_k": _finite_or_none(rms_median),
        "radiometer_ratio": _finite_or_none(ratio_median),
        "baseline_ratio": _finite_or_none(baseline_ratio_median),
        **counts,
        "warnings": warnings_,
        "thresholds": dict(THRESHOLDS),
    }
