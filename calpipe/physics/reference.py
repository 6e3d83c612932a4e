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

OTF-chopped / dual-beam switch (mode "otf-chopped", issue 14): the source subscans are
SWA-ON, SWA-OFF, SWB-ON, SWB-OFF (or OTFSWA-ON, ...): beam A / B is the nod position, ON the
chop phase on the source, OFF the other (simultaneous) chop phase. The k-th ON of a beam is
referenced to the k-th OFF of the same beam, dump by dump: C_REF[c, d, r, a] = OFF dump d
(``PreparedData.ref_per_dump``); the reference variance of a dump is then 1 / exptime_off
and no share of it is common to the dumps of an ON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from calpipe.errors import MetadataError, NoReferenceError
from calpipe.physics.stats import mean_from, sum_count_over_dumps

ON_MODES = ("ON", "OTF-ON")
OFF_MODES = ("OFF", "OTF-OFF")
#: chopped (dual-beam-switch) subscans: beam A / B (nod position), role ON / OFF (chop phase on
#: the source / on the sky); the bare beam names are read but refused by ``prepare_chopped``
CHOP_MODES = tuple(f"{p}SW{b}{r}" for p in ("", "OTF") for b in "AB" for r in ("-ON", "-OFF", ""))
CHOP_OFF_MODES = tuple(m for m in CHOP_MODES if m.endswith("-OFF"))
_CHOP_RE = re.compile(r"^(?:OTF)?SW([AB])(?:-(ON|OFF))?$")
#: mode name of a chopped scan (PreparedData.mode, L1 attribute mode)
CHOPPED = "otf-chopped"


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
    # issue 14, mode otf-chopped: per-dump reference. ref_per_dump[k] = L0 subscan index of the
    # chop partner of ON k (C_REF of dump d = that subscan's dump d; c_ref above = its dump
    # average, used for t_sys); ref_dump_time_s[k] its exptime (s); beam[k] "A" / "B".
    # None for the other modes (dump-averaged reference).
    ref_per_dump: np.ndarray | None = None
    ref_dump_time_s: np.ndarray | None = None
    beam: np.ndarray | None = None

    def check(self) -> None:
        n_on = self.on_index.shape[0]
        if self.c_ref.shape[-1] != n_on or self.off_mean.shape[-1] != self.off_index.shape[0]:
            raise ValueError("PreparedData: inconsistent ON/OFF dimensions")
        if self.off_time_s.shape != self.off_index.shape:
            raise ValueError("PreparedData: off_time_s does not match off_index")
        per_dump = (self.ref_per_dump, self.ref_dump_time_s, self.beam)
        if any(x is not None for x in per_dump) and any(
                x is None or x.shape != (n_on,) for x in per_dump):
            raise ValueError("PreparedData: ref_per_dump, ref_dump_time_s and beam must all be "
                             "[S_on] or all None")

    @property
    def read_index(self) -> np.ndarray:
        """L0 subscans the calibrate stage reads: the ONs and their per-dump references."""
        if self.ref_per_dump is None:
            return self.on_index
        return np.union1d(self.on_index, self.ref_per_dump)

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
        in units of T_sys^2 / dnu_eff (for nearest and outside ONs lo = hi, w = 0).
        Per-dump reference (otf-chopped): 1 / exptime of the partner OFF."""
        if self.ref_dump_time_s is not None:
            return 1.0 / np.asarray(self.ref_dump_time_s, dtype=np.float64)
        return reference_variance_factor(self.ref_weight, self.t_lo, self.t_hi)

    def shared_variance_factor(self) -> np.ndarray:
        """[S_on] the part of reference_variance_factor common to all dumps of an ON: all of
        it for a dump-averaged reference, none for a per-dump one (each dump its own OFF)."""
        if self.ref_per_dump is not None:
            return np.zeros(self.on_index.shape, dtype=np.float64)
        return self.reference_variance_factor()


def chop_token(mode: str) -> tuple[str, str | None] | None:
    """(beam "A" | "B", role "ON" | "OFF" | None for a bare beam name) of a chopped sobsmode
    token (SWA-ON, OTFSWB-OFF, SWA, ...); None for any other token."""
    m = _CHOP_RE.match(str(mode).strip().upper())
    return None if m is None else (m.group(1), m.group(2))


def is_chopped(sobsmode: np.ndarray, instmode: str | None) -> bool:
    """A chopped (dual-beam-switch) scan: an SWA / SWB token in sobsmode, or an instmode that
    contains CHOP or DBS (case-insensitive)."""
    if any(chop_token(m) is not None for m in np.asarray(sobsmode).tolist()):
        return True
    inst = (instmode or "").upper()
    return "CHOP" in inst or "DBS" in inst


def detect_mode(sobsmode: np.ndarray, instmode: str | None, override: str = "auto") -> str:
    """tp | otf | otf-chopped: the override when set, else SWA/SWB tokens or an instmode with
    CHOP / DBS -> otf-chopped, OTF-ON/OTF-OFF -> otf, ON/OFF -> tp, else instmode."""
    if override != "auto":
        return override
    modes = set(np.asarray(sobsmode).tolist())
    if is_chopped(sobsmode, instmode):
        return CHOPPED
    if modes & {"OTF-ON", "OTF-OFF"}:
        return "otf"
    if modes & {"ON", "OFF"}:
        return "tp"
    return "otf" if (instmode or "").upper().startswith("OTF") else "tp"


#: the subscans the prepare stage reads: OFFs, and both beams of a Nod pair (each beam is
#: the other's reference, calpipe.nod)
REFERENCE_MODES = (*OFF_MODES, "BEAM1", "BEAM2", *CHOP_OFF_MODES)


def off_subscans(sobsmode: np.ndarray) -> np.ndarray:
    """Indices of the subscans the prepare stage reads (the Snakemake prepare job reads only
    these): the OFFs, the two beams of a Nod pair, and the OFF chop phases of a chopped scan."""
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
    _check_times(scan, np.asarray(mjd), strict=True)
    t_off = t[off_index]
    off_mean = mean_over_dumps(counts, off_index)
    lo, hi, w = reference_indices(t[on_index], t_off, method)
    c_ref = off_mean[..., lo] * (1.0 - w) + off_mean[..., hi] * w
    return PreparedData(
        scan=scan, mode=detect_mode(sobsmode, instmode, mode), method=method, on_index=on_index,
        off_index=off_index, off_mean=off_mean, ref_lo=lo, ref_hi=hi, ref_weight=w, c_ref=c_ref,
        off_time_s=counts.shape[1] * np.asarray(exptime, dtype=np.float64)[off_index],
    )


def _check_times(scan: int, mjd: np.ndarray, strict: bool) -> None:
    step = np.diff(mjd)
    bad = step <= 0 if strict else step < 0
    if np.any(bad):
        k = int(np.flatnonzero(bad)[0])
        what = "at or before" if strict else "before"
        raise MetadataError(f"subscan start times are not {'strictly ' if strict else ''}"
                            f"increasing (subscan {k + 1} starts {what} subscan {k}: "
                            "duplicated or out-of-order subscans)", scan=scan, array="source/mjd")


def _check_simultaneous(scan: int, mjd: np.ndarray, exptime: np.ndarray,
                        on_index: np.ndarray, partner: np.ndarray) -> None:
    """The two chop phases of a pair are taken together: their start times may differ by at
    most one dump (the longer exptime of the two); else the pairing by order is wrong (a
    reordered layout, or phases written as consecutive subscans): MetadataError."""
    for on, off in zip(on_index.tolist(), partner.tolist(), strict=True):
        dt = abs(float(mjd[on]) - float(mjd[off])) * 86400.0
        if dt > max(float(exptime[on]), float(exptime[off])):
            raise MetadataError(f"chop pair ON subscan {on} / OFF subscan {off} start {dt:.3g} s "
                                "apart (more than one dump): the two chop phases of a pair "
                                "must be simultaneous", scan=scan, array="source/mjd")


def chop_pairs(scan: int, sobsmode: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(on_index, partner, beam) [S_on] of a chopped scan: every ON subscan in L0 (time) order,
    the L0 index of its chop partner (the k-th OFF of the same beam for the k-th ON), and its
    beam. MetadataError for a bare SWA / SWB token, a token of another mode in the scan, or
    unequal ON / OFF counts in a beam; NoReferenceError when there is no ON."""
    tokens = [chop_token(m) for m in np.asarray(sobsmode).tolist()]
    where = "source/sobsmode"
    for k, (mode, tok) in enumerate(zip(np.asarray(sobsmode).tolist(), tokens, strict=True)):
        if tok is None:
            raise MetadataError(f"chopped (otf-chopped) scan: subscan {k} has sobsmode {mode!r}; "
                                "every subscan must be SWA-ON, SWA-OFF, SWB-ON or SWB-OFF (or "
                                "OTFSWA-ON, ...)", scan=scan, array=where)
        if tok[1] is None:
            raise MetadataError(f"unsupported chopped layout: subscan {k} has sobsmode {mode!r} "
                                "without its chop phase; calpipe needs the two chop phases as "
                                "separate subscans, SW{A,B}-ON (source) and SW{A,B}-OFF (sky)",
                                scan=scan, array=where)
    ons: list[int] = []
    partners: list[int] = []
    beams: list[str] = []
    for b in "AB":
        on = [k for k, t in enumerate(tokens) if t == (b, "ON")]
        off = [k for k, t in enumerate(tokens) if t == (b, "OFF")]
        if len(on) != len(off):
            raise MetadataError(f"chopped scan: beam {b} has {len(on)} ON and {len(off)} OFF "
                                f"subscans (SW{b}-ON {on}, SW{b}-OFF {off}); each ON needs its "
                                "chop partner", scan=scan, array=where)
        ons += on
        partners += off
        beams += [b] * len(on)
    if not ons:
        modes = sorted(set(np.asarray(sobsmode).tolist()))
        raise NoReferenceError(f"no ON subscan (sobsmode = {modes})", scan=scan, array=where)
    order = np.argsort(ons, kind="stable")
    return (np.asarray(ons, dtype=np.int64)[order], np.asarray(partners, dtype=np.int64)[order],
            np.asarray(beams)[order])


def recorded_dumps(counts: np.ndarray, s: int) -> int:
    """Dumps of subscan s holding at least one sample (not all int32 fill)."""
    return int(np.count_nonzero(np.isfinite(counts[..., s]).any(axis=(0, 2, 3))))


def check_pair_dumps(scan: int, counts: np.ndarray, prepared: PreparedData) -> None:
    """MetadataError when an ON and its chop partner hold different numbers of dumps."""
    if prepared.ref_per_dump is None:
        return
    for on, off in zip(prepared.on_index.tolist(), prepared.ref_per_dump.tolist(), strict=True):
        n_on, n_off = recorded_dumps(counts, on), recorded_dumps(counts, off)
        if n_on != n_off:
            raise MetadataError(f"chop pair ON subscan {on} / OFF subscan {off}: {n_on} and "
                                f"{n_off} recorded dumps; the two chop phases of a dump must "
                                "both be there", scan=scan, array="source/data_5d")


def prepare_chopped(*, scan: int, counts: np.ndarray, sobsmode: np.ndarray, mjd: np.ndarray,
                    exptime: np.ndarray) -> PreparedData:
    """PreparedData of a chopped (dual-beam-switch) scan: per-dump reference (see the module
    docstring). off_index lists every OFF phase of both beams (the pwv fit uses them all)."""
    on_index, partner, beam = chop_pairs(scan, sobsmode)
    _check_times(scan, np.asarray(mjd, dtype=np.float64), strict=False)
    _check_simultaneous(scan, np.asarray(mjd, dtype=np.float64),
                        np.asarray(exptime, dtype=np.float64), on_index, partner)
    off_index = np.flatnonzero(np.isin(np.arange(np.asarray(sobsmode).size), partner))
    off_mean = mean_over_dumps(counts, off_index)
    pos = np.searchsorted(off_index, partner).astype(np.int64)
    ex = np.asarray(exptime, dtype=np.float64)
    return PreparedData(
        scan=scan, mode=CHOPPED, method="chop-partner", on_index=on_index,
        off_index=off_index, off_mean=off_mean, ref_lo=pos, ref_hi=pos.copy(),
        ref_weight=np.zeros(on_index.size), c_ref=off_mean[..., pos],
        off_time_s=counts.shape[1] * ex[off_index], ref_per_dump=partner,
        ref_dump_time_s=ex[partner], beam=beam)
