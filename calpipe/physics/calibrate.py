"""The calibration equation (DESIGN 3.5): one vectorised function, ``calibrate_full``.

T_A*(c, d, r, a, s) = (C_ON - C_REF) * F,   F = 1 / (gamma w_s f_eff tr_s)     [K]
t_sys               = (C_REF / gamma) / (w_s f_eff tr_s)                       [K]
weight              = 1 / sigma^2 per dump                                      [K^-2]
sigma^2             = t_sys^2 / dnu_eff * [1 / t_on + (1 - w)^2 / t_lo + w^2 / t_hi]

(radiometer equation with the noise of the interpolated reference: w is the OFF interpolation
weight, t_lo / t_hi the total integration times of the two OFFs, t_on = exptime of one dump,
dnu_eff = noise_bandwidth_factor x |freq_res|). The reference term is common to all dumps of an
ON subscan: cov(T_A*(d), T_A*(d')) = t_sys^2 / dnu_eff * ref_factor for d != d', so the
variance of the D-dump average is t_sys^2 / dnu_eff * [1 / (D t_on) + ref_factor].

Per-dump reference (mode otf-chopped, ``ref_index``): C_REF(c, d, r, a, s) = C(c, d, r, a,
ref_index[s]), dump d of the ON's chop partner (the two chop phases of a dump are
simultaneous); ``c_ref`` is then that partner's dump average and serves t_sys only, and
ref_factor = 1 / exptime of the partner (no share common to the dumps).

F[C, R, A, S_on] is precomputed and broadcast over dumps. Work proceeds in blocks of channels
only to bound temporary memory; there is no loop over pixels, dumps or subscans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calpipe.errors import NoValidDataError
from calpipe.physics import flags as fl
from calpipe.physics.radiometry import weight_cube

CHANNEL_BLOCK = 512


@dataclass(frozen=True)
class CalibratedArrays:
    spectra: np.ndarray  # [C, D, R, A, S_on] f4, K
    flags: np.ndarray  # [C, D, R, A, S_on] u2
    t_sys: np.ndarray  # [C, R, A, S_on] f4, K
    weight: np.ndarray  # [C, R, A, S_on] f4, K^-2


def radiometer_weight(t_sys: np.ndarray, dnu_eff_hz: float, t_on_s: np.ndarray,
                      ref_factor: np.ndarray | None = None) -> np.ndarray:
    """1 / sigma^2 = dnu_eff / (t_sys^2 [1 / t_on + ref_factor]) per dump; t_sys [..., S_on],
    t_on_s and ref_factor [S_on]."""
    var_time = 1.0 / np.asarray(t_on_s, dtype=np.float64)
    if ref_factor is not None:
        var_time = var_time + np.asarray(ref_factor, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(dnu_eff_hz / (t_sys**2 * var_time))


def calibrate_full(
    counts: np.ndarray,
    on_index: np.ndarray,
    c_ref: np.ndarray,
    gamma: np.ndarray,
    bad_channel: np.ndarray,
    w_s: float | np.ndarray,
    f_eff: float,
    tr_signal: np.ndarray,
    freq_res_hz: float,
    exptime_on: np.ndarray,
    *,
    ref_factor: np.ndarray | None = None,
    ref_index: np.ndarray | None = None,
    noise_bandwidth_factor: float = 1.0,
    min_transmission: float = 0.0,
    blank_low_transmission: bool = True,
    channel_block: int = CHANNEL_BLOCK,
) -> CalibratedArrays:
    """Apply the calibration equation to the ON subscans of ``counts`` [C, D, R, A, S].

    c_ref [C, R, A, S_on]; gamma, bad_channel [C, R, A]; tr_signal [C, Rp, Ap, S_on] with
    (Rp, Ap) = (1, 1) or (R, A); exptime_on [S_on] s; ref_factor [S_on] 1/s (the reference's
    (1 - w)^2 / t_lo + w^2 / t_hi, PreparedData.reference_variance_factor; None = a noiseless
    reference); ref_index [S_on]: subscans of ``counts`` whose dump d is the reference of dump
    d of each ON (None: ``c_ref`` for every dump); noise_bandwidth_factor: dnu_eff / |freq_res|.
    Where tr_s < min_transmission
    the samples get LOW_TRANSMISSION and, with blank_low_transmission, are NaN (t_sys and
    weight stay as computed).
    """
    n_c, n_d, n_r, n_a, _ = counts.shape
    n_on = on_index.size
    # subscan-major working layout: counts from calpipe.l0 are stored subscan-major, so
    # by_subscan[on_index, channels] is a set of contiguous copies; the outputs are allocated
    # the same way and returned as [C, D, R, A, S_on] views (an L1 chunk holds one S_on)
    by_subscan = counts.transpose(4, 0, 1, 2, 3)  # [S, C, D, R, A]
    spectra_s = np.empty((n_on, n_c, n_d, n_r, n_a), dtype=np.float32)
    flags_s = np.empty((n_on, n_c, n_d, n_r, n_a), dtype=np.uint16)
    with np.errstate(invalid="ignore", divide="ignore"):
        w3 = weight_cube(w_s, n_c)[..., None]  # [C, Rw, Aw, 1]: per channel (and pixel)
        scale = 1.0 / (gamma[..., None] * (w3 * f_eff) * tr_signal)  # F [C, R, A, S_on]
        scale[np.broadcast_to(bad_channel[..., None], scale.shape)] = np.nan
        t_sys = c_ref * scale
        t_sys[~np.isfinite(t_sys)] = np.nan
        weight = radiometer_weight(t_sys, abs(freq_res_hz) * noise_bandwidth_factor,
                                   exptime_on, ref_factor)
    # BAD_CHANNEL: the loads' rule, or a factor F that is not finite (e.g. tr_s underflow)
    unusable = ~np.isfinite(scale)
    scale[unusable] = np.nan
    low = np.broadcast_to(tr_signal < min_transmission, scale.shape) & ~unusable
    if blank_low_transmission:
        scale[low] = np.nan

    def per_subscan(a: np.ndarray) -> np.ndarray:  # [C, R, A, S_on] -> [S_on, C, 1, R, A]
        return np.moveaxis(a, -1, 0)[:, :, None]

    static = per_subscan((np.where(unusable, fl.BAD_CHANNEL, 0)
                          | np.where(low, fl.LOW_TRANSMISSION, 0)).astype(np.uint16))
    ref_missing = per_subscan(~np.isfinite(c_ref))
    ref_s, scale_s = per_subscan(c_ref), per_subscan(scale)
    for c0 in range(0, n_c, channel_block):
        sl = slice(c0, min(c0 + channel_block, n_c))
        on = by_subscan[on_index, sl]  # [S_on, c, D, R, A], a copy of this block only
        fill = np.isnan(on)
        fill |= ref_missing[:, sl]
        if ref_index is not None:  # per-dump reference: dump d of the chop partner
            ref_dumps = by_subscan[ref_index, sl]
            fill |= np.isnan(ref_dumps)
        np.bitwise_or(static[:, sl], fill.astype(np.uint16) * np.uint16(fl.FILL_VALUE),
                      out=flags_s[:, sl])
        # NaN propagates: a missing ON sample, a missing reference or a bad channel (F = NaN)
        if ref_index is not None:
            np.subtract(on, ref_dumps, out=on)
        else:
            np.subtract(on, ref_s[:, sl], out=on)
        np.multiply(on, scale_s[:, sl], out=spectra_s[:, sl], casting="same_kind")
    spectra = spectra_s.transpose(1, 2, 3, 4, 0)
    flags = flags_s.transpose(1, 2, 3, 4, 0)
    return CalibratedArrays(
        spectra=spectra,
        flags=flags,
        t_sys=t_sys.astype(np.float32),
        weight=weight.astype(np.float32),
    )


def channel_blocks(n_channels: int, size: int = 256) -> list[slice]:
    """Slices of at most ``size`` channels covering [0, n_channels): scan-wide checks run
    block by block so that their temporaries stay small."""
    return [slice(c, min(c + size, n_channels)) for c in range(0, n_channels, size)]


def check_usable(scan: int, spectra: np.ndarray, flags: np.ndarray) -> None:
    """No silent false success (issue 12): the calibrated scan must hold at least one finite
    T_A* sample, and every sample that is not blanked (BAD_CHANNEL | FILL_VALUE, or
    LOW_TRANSMISSION) must be
    finite (an overflow of float32, |T_A*| > 3.4e38 K, means absurd gains or counts).

    Raises ``NoValidDataError`` naming the cause: every ON sample missing (fill), every channel
    unusable (BAD_CHANNEL: loads, or a non-finite factor 1 / (gamma w_s f_eff tr_s)), or both.
    """
    # in channel blocks: the boolean temporaries stay small (a whole scan's would add ~4
    # bytes per sample next to the prefetched scan)
    any_finite, overflow = False, 0
    for block in channel_blocks(spectra.shape[0]):
        finite = np.isfinite(spectra[block])
        any_finite = any_finite or bool(finite.any())
        # LOW_TRANSMISSION samples are blanked unless blank_low_transmission is false (13)
        blank = (flags[block] & (fl.BLANKING | fl.LOW_TRANSMISSION)) != 0
        overflow += int(np.count_nonzero(~finite & ~blank))
    if not any_finite:
        n = spectra.size
        fill = int(np.count_nonzero(flags & fl.FILL_VALUE))
        bad = int(np.count_nonzero(flags & fl.BAD_CHANNEL))
        if fill == n:
            raise NoValidDataError("no usable sample: every ON sample is missing (int32 fill in "
                                   "the ON subscans or in their OFF references)", scan=scan,
                                   array="source/data_5d")
        if bad == n:
            raise NoValidDataError("no usable sample: every channel is BAD_CHANNEL (the loads, "
                                   "or a calibration factor 1 / (gamma w_s f_eff tr_s) that is "
                                   "not finite: gains, elevation, opacity)", scan=scan,
                                   array="spectra")
        raise NoValidDataError(f"no usable sample: every T_A* is NaN ({100 * bad / n:.1f} % "
                               f"BAD_CHANNEL, {100 * fill / n:.1f} % FILL_VALUE)", scan=scan,
                               array="spectra")
    if overflow:
        raise NoValidDataError(f"{overflow} T_A* sample(s) are not "
                               "finite without a blanking flag (float32 overflow: absurd gains "
                               "or counts)", scan=scan, array="spectra")
