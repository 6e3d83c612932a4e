"""NaN-aware dump sums, fast when nothing is missing (the common case)."""

from __future__ import annotations

import numpy as np


def sum_count_over_dumps(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum, count) of the finite values of block [C, D, R, A] over dumps -> [C, R, A].

    One plain reduction; only the (c, r, a) whose sum is not finite (a NaN fill somewhere) are
    redone NaN-aware.
    """
    total = block.sum(axis=1)
    count = np.full(total.shape, block.shape[1], dtype=np.int64)
    bad = ~np.isfinite(total)
    if bad.any():
        c, r, a = np.nonzero(bad)
        values = block[c, :, r, a]  # [n, D]
        finite = np.isfinite(values)
        total[c, r, a] = np.where(finite, values, 0.0).sum(axis=1)
        count[c, r, a] = finite.sum(axis=1)
    return total, count


def mean_from(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """total / count, NaN where count is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
