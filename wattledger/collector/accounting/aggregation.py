"""Sums by keys over numpy columns: the one group-by of the ledger's accounting."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def sum_by(keys: Sequence[Ints], values: Sequence[Floats]) -> tuple[list[Ints], list[Floats]]:
    """Group rows by several integer keys and sum the values of each group (sorted by keys)."""
    n = keys[0].shape[0]
    if n == 0:
        return [k[:0] for k in keys], [v[:0] for v in values]
    order = np.lexsort(tuple(reversed(keys)))
    sorted_keys = [k[order] for k in keys]
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for k in sorted_keys:
        change[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(change)
    return ([k[starts] for k in sorted_keys],
            [np.add.reduceat(v[order], starts) for v in values])
