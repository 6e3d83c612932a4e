"""SKYDIFF (issue 14 item 3, CCAT/kalibrate ``--skydiff N``): how the observed sky changes
between calibration cycles.

For every OFF subscan k of a scan, with the scan's own resolved load (C_hot, gamma, bad
channels):

    S_obs,k = (C_OFF,k - C_hot) / gamma        [K, C x R x A]; NaN in bad channels

(the quantity the pwv fit uses, kalibrate's ``deltat_obs``). Each new S_obs is differenced
against up to N most recent previous entries of the same *layout* (band and pixel layout,
:func:`layout_key`): ``diff = S_obs,new - S_obs,ref``, most recent reference first. Then the
new entry is pushed; each layout keeps its N most recent entries (a FIFO). OFFs are taken in
time order, so earlier OFFs of the same scan are "previous" for later ones; the first OFF of
a layout has nothing to difference against.

The history travels from scan to scan (``calpipe.pipeline`` in process; the chained
``skydiff`` rule in the workflow) as a :class:`SkyHistory`, a frozen dataclass of flat arrays
so that it is a stage artifact like any other (``calpipe.artifacts``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMULA = "S_obs = (C_OFF - C_hot) / gamma [K]; skydiff = S_obs(current OFF) - S_obs(ref OFF)"


def observed_sky(off_mean: np.ndarray, c_hot: np.ndarray, gamma: np.ndarray,
                 bad_channel: np.ndarray) -> np.ndarray:
    """S_obs = (C_OFF - C_hot) / gamma  [C, R, A, n_off] (K); NaN in bad channels and where
    the OFF mean or gamma is not finite."""
    with np.errstate(invalid="ignore", divide="ignore"):
        s_obs = (np.asarray(off_mean, np.float64) - c_hot[..., None]) / gamma[..., None]
    bad = np.broadcast_to(np.asarray(bad_channel, bool)[..., None], s_obs.shape)
    return np.where(bad | ~np.isfinite(s_obs), np.nan, s_obs)


def layout_key(nu_sig: np.ndarray, n_r: int, n_a: int, frontend_backend: str) -> str:
    """The band and pixel layout of one OFF: channel count, the signal frequency of the
    first and last channel in units of the channel width (rounded: a Doppler shift of less
    than half a channel keeps the key), R x A, and the OFF's L0 ``frontend_backends`` id."""
    nu = np.asarray(nu_sig, np.float64)
    width = float(abs(nu[1] - nu[0])) if nu.size > 1 else 0.0
    if width > 0:
        first, last = round(float(nu[0]) / width), round(float(nu[-1]) / width)
        band = f"{first}:{last}x{width:.6g}Hz"
    else:
        band = f"{float(nu[0]):.9g}Hz"
    return f"C{nu.size}/{band}/R{int(n_r)}xA{int(n_a)}/{frontend_backend}"


@dataclass(frozen=True)
class SkyHistory:
    """The N most recent S_obs per layout, in push order (oldest first), as flat arrays."""

    depth: int  # N
    keys: np.ndarray  # [n] str: layout_key of each entry
    scan: np.ndarray  # [n] int64
    off: np.ndarray  # [n] int64: L0 subscan number of the OFF
    mjd: np.ndarray  # [n] float64: mid-time of the OFF (MJD)
    shapes: np.ndarray  # [n, 3] int64: (C, R, A) of each entry
    values: np.ndarray  # [sum C R A] float64: the S_obs, concatenated

    @classmethod
    def empty(cls, depth: int) -> SkyHistory:
        return cls(int(depth), np.zeros(0, dtype="U1"), np.zeros(0, np.int64),
                   np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros((0, 3), np.int64),
                   np.zeros(0, np.float64))

    def __len__(self) -> int:
        return int(self.keys.size)

    def check(self) -> None:
        n = len(self)
        if not (self.scan.shape == self.off.shape == self.mjd.shape == (n,)
                and self.shapes.shape == (n, 3)
                and self.values.size == int(np.prod(self.shapes, axis=1).sum())):
            raise ValueError("SkyHistory: inconsistent entry arrays")

    def entry(self, i: int) -> np.ndarray:
        """S_obs of entry i [C, R, A]."""
        sizes = np.prod(self.shapes, axis=1)
        start = int(sizes[:i].sum())
        return self.values[start:start + int(sizes[i])].reshape(tuple(self.shapes[i]))


@dataclass(frozen=True)
class SkyDiffResult:
    """The differences one scan produced: K pairs (current OFF, reference OFF)."""

    scan: int
    depth: int  # N
    diff: np.ndarray  # [C, R, A, K] float64 (K), NaN where either side is bad
    current_scan: np.ndarray  # [K] int64
    current_off: np.ndarray  # [K] int64: L0 subscan number
    current_mjd: np.ndarray  # [K] float64: OFF mid-time (MJD)
    ref_scan: np.ndarray  # [K]
    ref_off: np.ndarray  # [K]
    ref_mjd: np.ndarray  # [K]

    @property
    def n_diffs(self) -> int:
        return int(self.current_scan.size)

    def check(self) -> None:
        k = self.n_diffs
        for name in ("current_off", "current_mjd", "ref_scan", "ref_off", "ref_mjd"):
            if getattr(self, name).shape != (k,):
                raise ValueError(f"SkyDiffResult.{name}: shape {getattr(self, name).shape}")
        if self.diff.ndim != 4 or self.diff.shape[-1] != k:
            raise ValueError(f"SkyDiffResult.diff: shape {self.diff.shape}, K = {k}")


def update(history: SkyHistory, scan: int, s_obs: np.ndarray, keys: list[str],
           offs: np.ndarray, mjds: np.ndarray, depth: int | None = None
           ) -> tuple[SkyHistory, SkyDiffResult]:
    """Difference the OFFs of one scan (S_obs [C, R, A, n_off], their layout keys, L0 subscan
    numbers and mid-times) against the history, in time order, and push them.

    Returns the new history (N = ``depth``, default the history's, entries per layout) and
    the scan's differences (most recent reference first for each OFF)."""
    depth = history.depth if depth is None else int(depth)
    n_off = s_obs.shape[-1]
    if not (len(keys) == np.size(offs) == np.size(mjds) == n_off):
        raise ValueError("skydiff.update: keys, offs, mjds must have one entry per OFF")
    entries = [(str(history.keys[i]), int(history.scan[i]), int(history.off[i]),
                float(history.mjd[i]), history.entry(i)) for i in range(len(history))]
    c, r, a = s_obs.shape[:3]
    diffs: list[np.ndarray] = []
    cur: list[tuple[int, int, float]] = []
    ref: list[tuple[int, int, float]] = []
    for k in np.argsort(np.asarray(mjds, np.float64), kind="stable").tolist():
        key, value = keys[k], np.asarray(s_obs[..., k], np.float64)
        same = [e for e in entries if e[0] == key and e[4].shape == value.shape]
        for e in reversed(same[-depth:] if depth > 0 else []):
            diffs.append(value - e[4])
            cur.append((int(scan), int(offs[k]), float(mjds[k])))
            ref.append((e[1], e[2], e[3]))
        entries.append((key, int(scan), int(offs[k]), float(mjds[k]), value))
        if depth > 0:  # keep the `depth` most recent of this layout
            mine = [i for i, e in enumerate(entries) if e[0] == key]
            drop = set(mine[:-depth])
            entries = [e for i, e in enumerate(entries) if i not in drop]
        else:
            entries.pop()
    new = _history_of(entries, depth)
    diff = np.stack(diffs, axis=-1) if diffs else np.zeros((c, r, a, 0), np.float64)

    def col(rows: list[tuple[int, int, float]], j: int, dtype: type) -> np.ndarray:
        return np.asarray([x[j] for x in rows], dtype=dtype)

    result = SkyDiffResult(int(scan), depth, diff, col(cur, 0, np.int64), col(cur, 1, np.int64),
                           col(cur, 2, np.float64), col(ref, 0, np.int64),
                           col(ref, 1, np.int64), col(ref, 2, np.float64))
    result.check()
    return new, result


def _history_of(entries: list[tuple[str, int, int, float, np.ndarray]], depth: int
                ) -> SkyHistory:
    if not entries:
        return SkyHistory.empty(depth)
    out = SkyHistory(
        depth, np.asarray([e[0] for e in entries], dtype=str),
        np.asarray([e[1] for e in entries], np.int64),
        np.asarray([e[2] for e in entries], np.int64),
        np.asarray([e[3] for e in entries], np.float64),
        np.asarray([e[4].shape for e in entries], np.int64).reshape(-1, 3),
        np.concatenate([e[4].reshape(-1) for e in entries]).astype(np.float64))
    out.check()
    return out
