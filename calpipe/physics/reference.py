"""Reference (OFF) selection for ON subscans (DESIGN 3.4, stage "prepare").

Each OFF subscan is averaged over its dumps once (NaN-aware): O_k[C, R, A].
For an ON subscan at time t (its mid-time), with OFFs at t_0 < t < t_1:
  linear:  C_REF = O_0 + (O_1 - O_0) (t - t_0) / (t_1 - t_0)
  nearest: C_REF = O_k with the smallest |t - t_k|
An ON before the first or after the last OFF takes the nearest OFF.
The reference noise enters the weights (calpipe.physics.calibrate.radiometer_weight) through
w = ref_weight and the total integration times t_lo, t_hi of the two OFFs used (all dumps:
D x exptime); ``reference_variance_factor`` = (1 - w)^2 / t_lo + w^2 / t_hi  [1/s].
Subscan times are mid-times: mjd + D * exptime / 2 / 86400 (under a linear gain drift the
dump average of a subscan equals the gain at its mid-time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calpipe.errors import MetadataError, NoReferenceError
from calpipe.physics.stats import mean_from, sum_count_over_dumps

ON_MODES = ("ON", "OTF-ON")
OFF_MODES = ("OFF", "OTF-OFF")


@dataclass(frozen=True)
class PreparedData:
    """References and indices for one scan; never a copy of the ON data."""

    scan: int
    mode: str  # "tp" | "otf"
    method: str  # "linear" | "nearest"
    on_index: np.ndarray  # [S_on] subscan indices of the ON subscans
    off_index: np.ndarray  # [n_off] subscan indices of the OFF subscans
    off_mean: np.ndarray  # [C, R, A, n_off] dump-averaged OFF counts
    ref_lo: np.ndarray  # [S_on] index into off_mean
    ref_hi: np.ndarray  # [S_on] index into off_mean
    ref_weight: np.ndarray  # [S_on] weight of ref_hi (0 for nearest)
    c_ref: np.ndarray  # [C, R, A, S_on] reference counts
    off_time_s: np.ndarray  # [n_off] total integration time of each OFF (D x exptime, s)

    def check(self) -> None:
        n_on = self.on_index.shape[0]
        if self.c_ref.shape[-1] != n_on or self.off_mean.shape[-1] != self.off_index.shape[0]:
            raise ValueError("PreparedData: inconsistent ON/OFF dimensions")
        if self.off_time_s.shape != self.off_index.shape:
            raise ValueError("PreparedData: off_time_s does not match off_index")

    @property
    def t_lo(self) -> np.ndarray:
        """[S_on] integration time (s) of the lower bracketing OFF (weight 1 - w)."""
        return self.off_time_s[self.ref_lo]

    @property
    def t_hi(self) -> np.ndarray:
        """[S_on] integration time (s) of the upper bracketing OFF (weight w)."""
        return self.off_time_s[self.ref_hi]

    def reference_variance_factor(self) -> np.ndarray:
        """[S_on] (1 - w)^2 / t_lo + w^2 / t_hi (1/s): the reference's share of sigma^2
        in units of T_sys^2 / dnu_eff (for nearest and outside ONs lo = hi, w = 0)."""
        return reference_variance_factor(self.ref_weight, self.t_lo, self.t_hi)


def detect_mode(sobsmode: np.ndarray, instmode: str | None, override: str = "auto") -> str:
    """tp | otf: the override when set, else OTF-ON/OTF-OFF -> otf, ON/OFF -> tp, else instmode."""
    if override != "auto":
        return override
    modes = set(np.asarray(sobsmode).tolist())
    if modes & {"OTF-ON", "OTF-OFF"}:
        return "otf"
    if modes & {"ON", "OFF"}:
        return "tp"
    return "otf" if (instmode or "").upper().startswith("OTF") else "tp"


#: the subscans the prepare stage reads: OFFs, and both beams of a Nod pair (each beam is
#: the other's reference, calpipe.nod)
REFERENCE_MODES = (*OFF_MODES, "BEAM1", "BEAM2")


def off_subscans(sobsmode: np.ndarray) -> np.ndarray:
    """Indices of the subscans the prepare stage reads (the Snakemake prepare job reads only
    these): the OFFs, and the two beams of a Nod pair."""
    return np.flatnonzero(np.isin(sobsmode, REFERENCE_MODES))


def subscan_midtimes(mjd: np.ndarray, exptime: np.ndarray, n_dumps: int) -> np.ndarray:
    """t = mjd + n_dumps * exptime / 2 / 86400  [MJD]."""
    return mjd + n_dumps * exptime / 2.0 / 86400.0


def mean_over_dumps(counts: np.ndarray, index: np.ndarray) -> np.ndarray:
    """NaN-aware dump average of the selected subscans: [C, D, R, A, S] -> [C, R, A, n]."""
    out = np.empty(counts.shape[:1] + counts.shape[2:4] + (index.size,), dtype=np.float64)
    for k, s in enumerate(index.tolist()):  # one OFF at a time bounds the temporaries
        out[..., k] = mean_from(*sum_count_over_dumps(counts[..., s]))
    return out


def reference_indices(t_on: np.ndarray, t_off: np.ndarray, method: str
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, w) with C_REF = (1 - w) O[lo] + w O[hi]; t_off ascending."""
    n_off = t_off.size
    pos = np.searchsorted(t_off, t_on)  # first OFF at or after t_on
    lo = np.clip(pos - 1, 0, n_off - 1)
    hi = np.clip(pos, 0, n_off - 1)
    span = t_off[hi] - t_off[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(span > 0, (t_on - t_off[lo]) / np.where(span > 0, span, 1.0), 0.0)
    w = np.clip(w, 0.0, 1.0)
    if method == "nearest":
        nearer_hi = np.abs(t_off[hi] - t_on) < np.abs(t_on - t_off[lo])
        lo = np.where(nearer_hi, hi, lo)
        hi = lo.copy()
        w = np.zeros_like(w)
    return lo.astype(np.int64), hi.astype(np.int64), w


def reference_variance_factor(w: np.ndarray, t_lo: np.ndarray, t_hi: np.ndarray
                              ) -> np.ndarray:
    """(1 - w)^2 / t_lo + w^2 / t_hi  [1/s]; the w^2 term is skipped where w = 0."""
    w = np.asarray(w, dtype=np.float64)
    hi = np.divide(w * w, t_hi, out=np.zeros_like(w), where=w > 0)
    return np.asarray((1.0 - w) ** 2 / np.asarray(t_lo, dtype=np.float64) + hi)


def prepare_references(
    *,
    scan: int,
    counts: np.ndarray,
    sobsmode: np.ndarray,
    mjd: np.ndarray,
    exptime: np.ndarray,
    instmode: str | None = None,
    mode: str = "auto",
    method: str = "linear",
) -> PreparedData:
    """Build C_REF[C, R, A, S_on] for every ON subscan (see the module docstring)."""
    on_index = np.flatnonzero(np.isin(sobsmode, ON_MODES))
    off_index = np.flatnonzero(np.isin(sobsmode, OFF_MODES))
    if on_index.size == 0:
        raise NoReferenceError(f"no ON subscan (sobsmode = {sorted(set(sobsmode.tolist()))})",
                               scan=scan, array="source/sobsmode")
    if off_index.size == 0:
        raise NoReferenceError(f"no OFF subscan (sobsmode = {sorted(set(sobsmode.tolist()))})",
                               scan=scan, array="source/sobsmode")
    t = subscan_midtimes(mjd, exptime, counts.shape[1])
    if np.any(np.diff(mjd) <= 0):
        k = int(np.flatnonzero(np.diff(mjd) <= 0)[0])
        raise MetadataError(f"subscan start times are not strictly increasing (subscan {k + 1} "
                            f"starts at or before subscan {k}: duplicated or out-of-order "
                            "subscans)", scan=scan, array="source/mjd")
    t_off = t[off_index]
    off_mean = mean_over_dumps(counts, off_index)
    lo, hi, w = reference_indices(t[on_index], t_off, method)
    c_ref = off_mean[..., lo] * (1.0 - w) + off_mean[..., hi] * w
    return PreparedData(
        scan=scan, mode=detect_mode(sobsmode, instmode, mode), method=method, on_index=on_index,
        off_index=off_index, off_mean=off_mean, ref_lo=lo, ref_hi=hi, ref_weight=w, c_ref=c_ref,
        off_time_s=counts.shape[1] * np.asarray(exptime, dtype=np.float64)[off_index],
    )
