"""The one ranking step behind every metric: ID and OOD scores in one exact order.

Two representations come out of it, and the formulas of `oodscore.metrics._kernels` read
both. `Positions` (the label of every sorted position and the runs of equal scores) feeds
the four metrics of ``ood_metrics`` (`oodscore.metrics._positions`); `Tally` (ID and OOD
counts at each unique value) feeds the other FPR rules, the ROC curve and the binned
streaming metrics (`oodscore.metrics._cumulative`). Scores are never transformed before ranking:
ties are ties of the values given (with ``-0.0 == 0.0``), and counts are int64.

Every comparison is one of integers. A float becomes its **order key**: its bits read as a
signed integer of the same width, negative numbers mirrored (``-|bits|``), so that the
integer order is the order of the numbers and ``-0.0`` and ``+0.0`` share the key 0.
Sorting floats directly would depend on the CPU: in flush-to-zero mode
(``torch.set_flush_denormal(True)``) it treats subnormal numbers as 0, and NumPy's
vectorized sort even writes them back as 0. Keys keep every subnormal score a distinct
number in every mode; floats are widened (float16 to float32 to float64) with integer
operations too (`exact_astype`).

Two ways to sort, chosen by dtype:

* **Tagged sort** (float16, float32 and small integers, all finite): every such value is
  exact in float32, so its 32-bit key, doubled, leaves the lowest bit of an int64 free to
  carry the label (1 = ID). One plain ``np.sort`` of the tagged int64 keys orders the
  values, keeps equal values adjacent and brings the labels along; a new value starts
  where two neighbouring keys differ in more than the tag bit. ``np.argsort`` would do the
  same job several times slower.
* **Sort and merge** (float64, wider integers, or any input holding ±inf): each side's
  keys (the values themselves for integers) are sorted on their own; a stable argsort of
  the two sorted runs then merges them in linear time (timsort), or, for a tally, the
  unique keys and counts of each side are merged on the union of keys. Mixed sides follow
  NumPy's promotion (int64 against float64 compares in float64).
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
    "exact_astype",
    "order_keys",
    "positions",
    "sorted_tagged",
    "taggable",
    "tally",
    "values_of_keys",
]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.integer[Any]]]

# Dtypes whose every value is exact in float32, so that a 32-bit key plus a tag fits int64.
_TAGGABLE = frozenset(
    np.dtype(t) for t in (np.float16, np.float32, np.int8, np.uint8, np.int16, np.uint16)
)
# Index of the least significant byte of a uint64 in memory.
_LOW_BYTE = 0 if sys.byteorder == "little" else 7
# Signed and unsigned integers of each float width, in bytes.
_SIGNED: dict[int, np.dtype[Any]] = {
    2: np.dtype(np.int16),
    4: np.dtype(np.int32),
    8: np.dtype(np.int64),
}
_UNSIGNED: dict[int, np.dtype[Any]] = {
    2: np.dtype(np.uint16),
    4: np.dtype(np.uint32),
    8: np.dtype(np.uint64),
}


def order_keys(values: np.ndarray[Any, Any]) -> IntArray:
    """Signed integer keys of floats, in their order, ``-0.0`` and ``+0.0`` both 0.

    Integer operations only, so subnormal numbers keep their place whatever the CPU's
    flush-to-zero mode. The keys have the width of the floats (float32: int32).

    Examples:
        >>> import numpy as np
        >>> from oodscore.metrics._ranking import order_keys
        >>> order_keys(np.array([-1.0, -0.0, 0.0, 5e-324, 1.0])).tolist()
        [-4607182418800017408, 0, 0, 1, 4607182418800017408]
    """
    signed = _SIGNED[values.dtype.itemsize]
    bits = values.view(signed)
    sign = bits >> (8 * signed.itemsize - 1)  # -1 for negative numbers, 0 otherwise
    keys: IntArray = bits & np.iinfo(signed).max  # the magnitude
    keys ^= sign
    keys -= sign  # negated where the number is negative
    return keys


def values_of_keys(keys: IntArray, dtype: np.dtype[Any] | type) -> np.ndarray[Any, Any]:
    """The floats of `order_keys` (key 0 gives ``+0.0``), of the keys' width."""
    sign = keys >> (8 * keys.dtype.itemsize - 1)
    bits = keys ^ sign
    bits -= sign  # the magnitude
    bits |= sign & np.iinfo(keys.dtype).min  # the sign bit of negative numbers
    return bits.view(dtype)


def exact_astype(values: np.ndarray[Any, Any], dtype: np.dtype[Any] | type) -> np.ndarray[Any, Any]:
    """``values`` as the float ``dtype`` (as wide or wider, for floats), whatever the CPU mode.

    A CPU in flush-to-zero mode turns a float32 subnormal into 0 when widening it to
    float64; this builds the wider bits with integer operations instead (the subnormals,
    normal numbers in the wider format, are scaled by an exact power of two). Integers are
    converted by NumPy's rule (rounding to nearest beyond the float's precision).
    """
    target = np.dtype(dtype)
    if values.dtype == target:
        return values
    if values.dtype.kind != "f":
        return values.astype(target)
    src, dst = np.finfo(values.dtype), np.finfo(target)
    src_bias, dst_bias = src.maxexp - 1, dst.maxexp - 1
    bits = values.view(_UNSIGNED[values.dtype.itemsize]).astype(np.uint64)
    biased = (bits >> src.nmant) & ((1 << src.nexp) - 1)
    mantissa = bits & ((1 << src.nmant) - 1)
    out = (biased + (dst_bias - src_bias)) << dst.nmant
    out |= mantissa << (dst.nmant - src.nmant)
    top = biased == (1 << src.nexp) - 1  # ±inf (NaN keeps its payload)
    if top.any():
        out[top] = (((1 << dst.nexp) - 1) << dst.nmant) | (mantissa[top] << (dst.nmant - src.nmant))
    low = biased == 0  # zeros and subnormals: m * 2**(1 - bias - nmant), normal when m > 0
    if low.any():
        scaled = mantissa[low].astype(np.float64) * 2.0 ** (1 - src_bias - src.nmant)
        out[low] = scaled.astype(target).view(_UNSIGNED[target.itemsize])
    out |= (bits >> (8 * values.dtype.itemsize - 1)) << (8 * target.itemsize - 1)
    widened: np.ndarray[Any, Any] = out.astype(_UNSIGNED[target.itemsize]).view(target)
    return widened


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
) -> tuple[IntArray, np.ndarray[Any, np.dtype[np.uint64]], np.ndarray[Any, np.dtype[np.uint8]]]:
    """The tagged int64 keys sorted, their bits, and the 0/1 ID flag of each position.

    A key is twice the float32 `order_keys` of a score, plus 1 for an ID score.
    """
    n_id = id_scores.shape[0]
    keys = np.empty(n_id + ood_scores.shape[0], dtype=np.int64)
    keys[:n_id] = order_keys(exact_astype(id_scores, np.float32))
    keys[n_id:] = order_keys(exact_astype(ood_scores, np.float32))
    keys <<= 1
    keys[:n_id] |= 1
    keys.sort()
    bits = keys.view(np.uint64)
    return keys, bits, bits.view(np.uint8)[_LOW_BYTE::8] & np.uint8(1)


def _sort_keys(scores: np.ndarray[Any, Any], common: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """What the sort-and-merge path sorts: `order_keys` of floats, integers as they are."""
    if common.kind == "f":
        return order_keys(exact_astype(scores, common))
    return scores.astype(common)


def _values(keys: np.ndarray[Any, Any], common: np.dtype[Any]) -> FloatArray:
    """The float64 values of sorted keys of `_sort_keys`."""
    if common.kind == "f":
        return exact_astype(values_of_keys(keys, common), np.float64)
    return keys.astype(np.float64)


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
    # Sort each side's keys, then merge: a stable argsort of two sorted runs is a linear
    # merge (timsort).
    common = np.result_type(id_scores.dtype, ood_scores.dtype)
    id_keys, ood_keys = _sort_keys(id_scores, common), _sort_keys(ood_scores, common)
    id_keys.sort()
    ood_keys.sort()
    both = np.concatenate((id_keys, ood_keys))
    del id_keys, ood_keys
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
            values = _tagged_values(keys)
        return Tally(id_counts, ood_counts, n_id, n_ood, values)
    ends = np.append(ends, n - 1)
    cumulative_id = np.cumsum(is_id, dtype=np.int64)[ends]
    id_counts = np.diff(cumulative_id, prepend=np.int64(0))
    ood_counts = np.diff(ends, prepend=np.int64(-1)) - id_counts
    if with_values:
        values = _tagged_values(keys[ends])
    return Tally(id_counts, ood_counts, n_id, n_ood, values)


def _tagged_values(keys: IntArray) -> FloatArray:
    """The float64 values of tagged keys."""
    return exact_astype(values_of_keys((keys >> 1).astype(np.int32), np.float32), np.float64)


def _unique_counts(
    sorted_scores: np.ndarray[Any, Any],
) -> tuple[np.ndarray[Any, Any], IntArray]:
    """Unique values of a sorted array of keys or integers, and their counts."""
    starts = np.flatnonzero(np.concatenate(([True], sorted_scores[1:] != sorted_scores[:-1])))
    counts = np.diff(np.append(starts, sorted_scores.shape[0]))
    return sorted_scores[starts], counts


def _tally_merged(id_scores: np.ndarray[Any, Any], ood_scores: np.ndarray[Any, Any]) -> Tally:
    common = np.result_type(id_scores.dtype, ood_scores.dtype)
    id_keys, ood_keys = _sort_keys(id_scores, common), _sort_keys(ood_scores, common)
    id_keys.sort()
    ood_keys.sort()
    id_values, id_counts_own = _unique_counts(id_keys)
    ood_values, ood_counts_own = _unique_counts(ood_keys)
    del id_keys, ood_keys
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
        _values(values, common),
    )
