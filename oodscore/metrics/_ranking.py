"""The one ranking step behind every metric: ID and OOD scores in one exact order.

Two representations come out of it, and the formulas of `oodscore.metrics._kernels` read
both. `Positions` (the label of every sorted position and the runs of equal scores) feeds
the four metrics of ``ood_metrics`` (`oodscore.metrics._positions`); `Tally` (ID and OOD
counts at each unique value) feeds the other FPR rules, the ROC curve and the binned
streaming metrics (`oodscore.metrics._cumulative`). Scores are never transformed before ranking:
ties are ties of the values given (with ``-0.0 == 0.0``), and counts are int64.

Two ways to sort, chosen by dtype:

* **Tagged sort** (float16, float32 and small integers, all finite): every such value is
  exact in float64 with its 29 lowest mantissa bits zero, so the lowest bit is free to
  carry the label (1 = ID). One plain ``np.sort`` of the tagged float64 keys orders the
  values, keeps equal values adjacent (the tag moves a key by one float64 ulp, far less
  than the gap to the next float32 value) and brings the labels along; a new value starts
  where two neighbouring keys differ in more than the tag bit. ``-0.0`` is first turned
  into ``+0.0`` (adding ``0.0`` does it) so that the two zeros, equal as numbers, stay
  together. ``np.argsort`` would do the same job several times slower.
* **Sort and merge** (float64, wider integers, or any input holding ±inf, which a tag
  would turn into NaN): each side is sorted on its own in its own dtype; a stable argsort
  of the two sorted runs then merges them in linear time (timsort), or, for a tally, the
  unique values and counts of each side are merged on the union of values.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from oodscore.metrics._inputs import sum_is_finite

__all__ = [
    "FloatArray",
    "IntArray",
    "Positions",
    "Tally",
    "positions",
    "sorted_tagged",
    "taggable",
    "tally",
]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.integer[Any]]]

# Dtypes whose every value is exact in float32, hence has 29 free low bits in float64.
_TAGGABLE = frozenset(
    np.dtype(t) for t in (np.float16, np.float32, np.int8, np.uint8, np.int16, np.uint16)
)
# Index of the least significant byte of a uint64 in memory.
_LOW_BYTE = 0 if sys.byteorder == "little" else 7


@dataclass(frozen=True)
class Tally:
    """ID and OOD counts at each unique score value, in ascending order of the values.

    Attributes:
        id_counts: ``(G,)`` number of ID scores equal to each unique value (any integer
            dtype; 0/1 ``uint8`` when no two scores are equal).
        ood_counts: ``(G,)`` number of OOD scores equal to each unique value.
        n_id: Total number of ID scores, ``P``.
        n_ood: Total number of OOD scores, ``N``.
        values: ``(G,)`` the unique values as float64, when they were asked for.
    """

    id_counts: IntArray
    ood_counts: IntArray
    n_id: int
    n_ood: int
    values: FloatArray | None = None


def _all_finite(arr: np.ndarray[Any, Any]) -> bool:
    return arr.dtype.kind != "f" or sum_is_finite(arr) or bool(np.isfinite(arr).all())


def taggable(id_scores: np.ndarray[Any, Any], ood_scores: np.ndarray[Any, Any]) -> bool:
    """Whether the tagged sort applies: float16/float32/small ints, all finite."""
    return (
        id_scores.dtype in _TAGGABLE
        and ood_scores.dtype in _TAGGABLE
        and _all_finite(id_scores)
        and _all_finite(ood_scores)
    )


def tally(
    id_scores: np.ndarray[Any, Any],
    ood_scores: np.ndarray[Any, Any],
    *,
    with_values: bool = False,
) -> Tally:
    """Count ID and OOD scores at every unique value of checked 1-D arrays (see module doc)."""
    if taggable(id_scores, ood_scores):
        return _tally_tagged(id_scores, ood_scores, with_values=with_values)
    return _tally_merged(id_scores, ood_scores)


def sorted_tagged(
    id_scores: np.ndarray[Any, Any], ood_scores: np.ndarray[Any, Any]
) -> tuple[FloatArray, np.ndarray[Any, np.dtype[np.uint64]], np.ndarray[Any, np.dtype[np.uint8]]]:
    """The tagged float64 keys sorted, their bits, and the 0/1 ID flag of each position."""
    n_id = id_scores.shape[0]
    keys = np.empty(n_id + ood_scores.shape[0], dtype=np.float64)
    # Adding 0.0 widens to float64 and turns -0.0 into +0.0 in the same pass.
    np.add(id_scores, 0.0, out=keys[:n_id], dtype=np.float64)
    np.add(ood_scores, 0.0, out=keys[n_id:], dtype=np.float64)
    bits = keys.view(np.uint64)
    bits[:n_id] |= np.uint64(1)
    keys.sort()
    return keys, bits, bits.view(np.uint8)[_LOW_BYTE::8] & np.uint8(1)


@dataclass(frozen=True)
class Positions:
    """The ID flag of every position in ascending order of the scores, and the runs of ties.

    The representation behind `oodscore.metrics.ood_metrics`: a score that equals no other
    is a group of one, counted by its rank and its position; each run of equal scores is
    one group (see `oodscore.metrics._positions`).

    Attributes:
        is_id: ``(n,)`` whether the score at each sorted position is an ID score.
        tied: ``(n,)`` whether that score equals a neighbour (lies in a run).
        tie_first: ``(T,)`` first position of each run of two or more equal scores.
        tie_last: ``(T,)`` last position of each such run.
        n_id: Number of ID scores, ``P``.
    """

    is_id: np.ndarray[Any, np.dtype[np.bool_]]
    tied: np.ndarray[Any, np.dtype[np.bool_]]
    tie_first: IntArray
    tie_last: IntArray
    n_id: int


def positions(id_scores: np.ndarray[Any, Any], ood_scores: np.ndarray[Any, Any]) -> Positions:
    """The `Positions` of checked 1-D scores (tagged sort where it applies)."""
    n_id = id_scores.shape[0]
    if taggable(id_scores, ood_scores):
        _, bits, flags = sorted_tagged(id_scores, ood_scores)
        # same[j]: position j + 1 holds the value of j (the keys differ at most in the tag).
        same = np.bitwise_xor(bits[1:], bits[:-1]) <= 1
        return _positions(flags.view(np.bool_), same, n_id)
    # Sort each side in its own dtype, then merge: a stable argsort of two sorted runs is
    # a linear merge (timsort).
    common = np.result_type(id_scores.dtype, ood_scores.dtype)
    both = np.concatenate(
        (np.sort(id_scores.astype(common, copy=False)), np.sort(ood_scores.astype(common)))
    )
    order = np.argsort(both, kind="stable")
    is_id = order < n_id
    both = both[order]
    del order
    same = both[1:] == both[:-1]
    del both
    return _positions(is_id, same, n_id)


def _positions(
    is_id: np.ndarray[Any, np.dtype[np.bool_]],
    same: np.ndarray[Any, np.dtype[np.bool_]],
    n_id: int,
) -> Positions:
    """Build `Positions` from the sorted ID flags and ``same[j]``: j + 1 equals j."""
    tied = np.zeros(is_id.shape[0], dtype=bool)
    tied[1:] = same
    tied[:-1] |= same
    continues = np.flatnonzero(same)
    if continues.shape[0] == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Positions(is_id, tied, empty, empty, n_id)
    # Consecutive continuations belong to one run.
    opens = np.concatenate(([True], np.diff(continues) != 1))
    closes = np.concatenate((opens[1:], [True]))
    return Positions(is_id, tied, continues[opens], continues[closes] + 1, n_id)


def _tally_tagged(
    id_scores: np.ndarray[Any, Any],
    ood_scores: np.ndarray[Any, Any],
    *,
    with_values: bool,
) -> Tally:
    n_id, n_ood = id_scores.shape[0], ood_scores.shape[0]
    n = n_id + n_ood
    keys, bits, is_id = sorted_tagged(id_scores, ood_scores)
    # A new threshold starts where neighbouring keys differ in more than the tag bit.
    changed = np.bitwise_xor(bits[1:], bits[:-1])
    ends = np.flatnonzero(changed > 1)
    del changed
    values: FloatArray | None = None
    if ends.shape[0] == n - 1:  # no two scores are equal: every score is its own threshold
        id_counts: IntArray = is_id
        ood_counts: IntArray = np.uint8(1) - is_id
        if with_values:
            bits &= ~np.uint64(1)
            values = keys
        return Tally(id_counts, ood_counts, n_id, n_ood, values)
    ends = np.append(ends, n - 1)
    cumulative_id = np.cumsum(is_id, dtype=np.int64)[ends]
    id_counts = np.diff(cumulative_id, prepend=np.int64(0))
    ood_counts = np.diff(ends, prepend=np.int64(-1)) - id_counts
    if with_values:
        bits &= ~np.uint64(1)
        values = keys[ends]
    return Tally(id_counts, ood_counts, n_id, n_ood, values)


def _unique_counts(
    sorted_scores: np.ndarray[Any, Any],
) -> tuple[np.ndarray[Any, Any], IntArray]:
    """Unique values of a sorted array and their counts (equal by ``==``: -0.0 == 0.0)."""
    starts = np.flatnonzero(np.concatenate(([True], sorted_scores[1:] != sorted_scores[:-1])))
    counts = np.diff(np.append(starts, sorted_scores.shape[0]))
    return sorted_scores[starts], counts


def _tally_merged(id_scores: np.ndarray[Any, Any], ood_scores: np.ndarray[Any, Any]) -> Tally:
    common = np.result_type(id_scores.dtype, ood_scores.dtype)
    id_values, id_counts_own = _unique_counts(np.sort(id_scores.astype(common, copy=False)))
    ood_values, ood_counts_own = _unique_counts(np.sort(ood_scores.astype(common, copy=False)))
    # Both lists are sorted: a stable sort of their concatenation is a linear merge.
    merged = np.sort(np.concatenate((id_values, ood_values)), kind="stable")
    values, _ = _unique_counts(merged)
    id_counts = np.zeros(values.shape[0], dtype=np.int64)
    ood_counts = np.zeros(values.shape[0], dtype=np.int64)
    id_counts[np.searchsorted(values, id_values)] = id_counts_own
    ood_counts[np.searchsorted(values, ood_values)] = ood_counts_own
    return Tally(
        id_counts,
        ood_counts,
        id_scores.shape[0],
        ood_scores.shape[0],
        values.astype(np.float64),
    )
