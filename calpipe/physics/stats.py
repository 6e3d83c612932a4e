"""NaN-aware dump sums, fast when nothing is missing (the common case)."""

from __future__ import annotations

import numpy as np


def sum_count_over_dumps(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum, count) of the finite values of block [C, D, ...] over dumps (axis 1) -> [C, ...].

    One plain float64 reduction; only the elements whose sum is not finite (a NaN somewhere)
    are redone NaN-aware.
    """
    total = block.sum(axis=1, dtype=np.float64)
    count = np.full(total.shape, block.shape[1], dtype=np.int64)
    bad = ~np.isfinite(total)
    if bad.any():
        values = np.moveaxis(block, 1, -1)[bad]  # [n, D]
        finite = np.isfinite(values)
        total[bad] = np.where(finite, values, 0.0).sum(axis=1)
        count[bad] = finite.sum(axis=1)
    return total, count


def mean_from(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """total / count, NaN where count is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
