r"""The histogram behind the binned mode of `oodscore.metrics.OODMetrics`: ID and OOD counts.

Bin $k$ holds the scores $s$ with $\lfloor s / 2^e \rfloor = k$; a window of ``num_bins``
consecutive $k$ is stored, and the exponent $e$ is learned from the data (or from
``score_range``). When a batch falls outside the window, the window moves; when the data no
longer fit in ``num_bins`` bins, $e$ grows and pairs of neighbouring bins merge — exactly,
because bins of width $2^{e+1}$ are unions of bins of width $2^e$ on the same grid. ±inf
scores get a bin of their own at each end. The counts come out as a `Tally`, one group per
non-empty bin, so the binned metrics are those of `oodscore.metrics._cumulative`.

The grid is computed exactly, whatever the scores and the CPU's mode. A score is read as
$m \cdot 2^q$ with integers $m$, $q$ (floats from their bits, integers as they are, so
int64 scores beyond $2^{53}$ are not rounded); the exponent, the window and a score's bin
$\lfloor m \cdot 2^{q-e} \rfloor$ are integer arithmetic (bins may be narrower than the
float spacing: $e$ can go below $-1074$). Floats take a faster float path, exact for
normal numbers, and only subnormal scores and results (which a CPU in flush-to-zero mode
turns into 0) go the integer way. Hence:

* a batch of equal scores (a degenerate span) falls into one bin: its ID and OOD scores
  tie, as in the exact metrics;
* scores that differ, even by one subnormal step, get bins of their own as long as they
  span fewer than ``num_bins - 2`` bins of the finest width needed: a span of one
  subnormal (``[0, 5e-324]``) gives the exact metrics;
* integer scores spanning fewer than ``num_bins - 2`` units are binned one value per bin.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from oodscore._distributed import all_reduce, is_distributed
from oodscore.metrics._keys import exact_astype, order_keys, values_of_keys
from oodscore.metrics._ranking import Tally

__all__ = ["Histogram"]

# Grid indices stay below 2**(bits + 1) in magnitude: exact in float64 (the float path
# computes them in float), in int64 for integer scores.
_INDEX_BITS = {"f": 52, "i": 62, "u": 62}

Exact = tuple[int, int]
"""A number ``m * 2**q`` as the integers ``(m, q)``."""


class Histogram:
    """ID and OOD counts on the aligned grid of bins of width ``2**exponent`` (module doc)."""

    def __init__(self, num_bins: int) -> None:
        self.num_bins = num_bins
        self.exponent: int | None = None  # None until the first finite score
        self.start = 0  # grid index of column 0
        self.low = 0  # smallest and largest grid index holding data (valid once exponent set)
        self.high = -1
        self.counts = np.zeros((2, num_bins), dtype=np.int64)  # row 0: ID, row 1: OOD
        self.infinite = np.zeros((2, 2), dtype=np.int64)  # [row, (-inf, +inf)]

    def copy(self) -> Histogram:
        """An independent copy (the counts are copied)."""
        other = Histogram(self.num_bins)
        other.exponent, other.start, other.low, other.high = (
            self.exponent,
            self.start,
            self.low,
            self.high,
        )
        other.counts = self.counts.copy()
        other.infinite = self.infinite.copy()
        return other

    @property
    def has_finite(self) -> bool:
        """Whether any finite score was counted."""
        return self.exponent is not None and self.high >= self.low

    def _fits(self, low: int, high: int) -> bool:
        return high - low + 1 <= self.num_bins

    def coarsen(self, levels: int) -> None:
        """Merge bins ``2**levels`` at a time: grid index k becomes ``k >> levels``."""
        if levels <= 0 or self.exponent is None:
            return
        # int64 >> 63 already maps every index to -1 or 0; larger shifts are not portable.
        grid = np.arange(self.start, self.start + self.num_bins, dtype=np.int64) >> min(levels, 63)
        start = int(grid[0])
        merged = np.zeros_like(self.counts)
        for row in range(2):
            np.add.at(merged[row], grid - start, self.counts[row])
        self.counts, self.start = merged, start
        self.low, self.high = self.low >> levels, self.high >> levels
        self.exponent += levels

    def place(self, low: int, high: int) -> None:
        """Move the window so that grid indices ``low..high`` (which must fit) are inside."""
        if low < self.start or high >= self.start + self.num_bins:
            self.force_window(low - (self.num_bins - (high - low + 1)) // 2)

    def _levels_to_fit(self, low: int, high: int) -> int:
        levels = 0
        while not self._fits(low >> levels, high >> levels):
            levels += 1
        return levels

    def _min_exponent(self, lo: Exact, hi: Exact, kind: str) -> int:
        """Smallest exponent that keeps the batch's grid indices exact and in range."""
        exponent = -1074
        if lo[0] or hi[0]:  # not all zero
            exponent = max(_bit_length(lo), _bit_length(hi)) - _INDEX_BITS[kind]
        if _compare(lo, hi) < 0:
            exponent = max(exponent, _span_exponent(lo, hi, self.num_bins))
        return exponent

    def add(self, values: np.ndarray[Any, Any], is_ood: np.ndarray[Any, Any]) -> None:
        """Count real ``values`` of any float or integer dtype (label True = OOD), ±inf apart."""
        if values.dtype.kind == "f":
            infinite = np.isinf(values)
            if infinite.any():
                for row, mask in ((0, ~is_ood), (1, is_ood)):
                    self.infinite[row, 0] += np.count_nonzero(infinite & mask & (values < 0))
                    self.infinite[row, 1] += np.count_nonzero(infinite & mask & (values > 0))
                values, is_ood = values[~infinite], is_ood[~infinite]
        if values.shape[0] == 0:
            return
        self.make_room(values)
        assert self.exponent is not None
        index = _grid_indices(values, self.exponent)
        index -= self.start
        for row, mask in ((0, ~is_ood), (1, is_ood)):
            self.counts[row] += np.bincount(index[mask], minlength=self.num_bins)

    def make_room(self, values: np.ndarray[Any, Any]) -> None:
        """Grow the grid so that the finite ``values`` (at least one) fit, exactly."""
        lo, hi = _extremes(values)
        self.ensure(self._min_exponent(lo, hi, values.dtype.kind), lo, hi)

    def ensure(self, exponent: int, lo: Exact, hi: Exact) -> None:
        """Grow the exponent to at least ``exponent`` and the window to cover ``[lo, hi]``."""
        if self.exponent is None:
            self.exponent = exponent
            self.low, self.high = 0, -1
        else:
            self.coarsen(exponent - self.exponent)
        while True:
            low = _floor_shift(lo, self.exponent)
            high = _floor_shift(hi, self.exponent)
            if self.high >= self.low:
                low, high = min(low, self.low), max(high, self.high)
            levels = self._levels_to_fit(low, high)
            if levels == 0:
                break
            self.coarsen(levels)
        self.place(low, high)
        self.low, self.high = low, high

    def tally(self) -> Tally:
        """The binned scores as a tally: one group per non-empty bin, ±inf at the ends."""
        id_counts = [self.infinite[0, :1]]
        ood_counts = [self.infinite[1, :1]]
        if self.has_finite:
            used = slice(self.low - self.start, self.high - self.start + 1)
            id_counts.append(self.counts[0, used])
            ood_counts.append(self.counts[1, used])
        id_counts.append(self.infinite[0, 1:])
        ood_counts.append(self.infinite[1, 1:])
        ids, oods = np.concatenate(id_counts), np.concatenate(ood_counts)
        keep = (ids + oods) > 0
        return Tally(ids[keep], oods[keep], int(ids.sum()), int(oods.sum()))

    def synchronized(self) -> Histogram:
        """A copy holding the sum of all ranks' histograms (a collective under DDP).

        Ranks agree on the grid first: all take the largest exponent (merging bins where
        theirs is finer), then the union of their data ranges, merging further until it
        fits in ``num_bins``; the counts are then summed with ``all_reduce``.
        """
        merged = self.copy()
        if not is_distributed():
            return merged
        none = -(2**62)
        exponent = int(
            all_reduce(torch.tensor([none if merged.exponent is None else merged.exponent]), "max")
        )
        if exponent != none:
            if merged.exponent is None:
                merged.exponent = exponent
            merged.coarsen(exponent - merged.exponent)
            has = merged.has_finite
            low = int(all_reduce(torch.tensor([merged.low if has else 2**62]), "min"))
            high = int(all_reduce(torch.tensor([merged.high if has else -(2**62)]), "max"))
            if low <= high:
                levels = merged._levels_to_fit(low, high)
                merged.coarsen(levels)
                low, high = low >> levels, high >> levels
                merged.force_window(low)  # the same window on every rank
                merged.low, merged.high = low, high
            merged.counts = all_reduce(torch.from_numpy(merged.counts), "sum").numpy()
        merged.infinite = all_reduce(torch.from_numpy(merged.infinite), "sum").numpy()
        return merged

    def force_window(self, start: int) -> None:
        """Re-index the counts so that column 0 is grid index ``start``."""
        moved = np.zeros_like(self.counts)
        if self.high >= self.low:
            src = slice(self.low - self.start, self.high - self.start + 1)
            dst = slice(self.low - start, self.high - start + 1)
            moved[:, dst] = self.counts[:, src]
        self.counts, self.start = moved, start


def _span_exponent(low: Exact, high: Exact, num_bins: int) -> int:
    """Smallest e with (high - low) / 2**e <= num_bins - 2: at most num_bins grid indices.

    Exact (Python integers), for any span down to one subnormal step.
    """
    base = min(low[1], high[1])
    span = (high[0] << (high[1] - base)) - (low[0] << (low[1] - base))  # times 2**base
    limit = num_bins - 2

    def fits(shift: int) -> bool:  # span / 2**shift <= limit
        return span <= limit << shift if shift >= 0 else span << -shift <= limit

    shift = span.bit_length() - limit.bit_length()
    while fits(shift - 1):
        shift -= 1
    while not fits(shift):
        shift += 1
    return base + shift


def _bit_length(x: Exact) -> int:
    """The exponent of ``frexp``: the least ``b`` with ``|x| < 2**b`` (-inf-like for 0)."""
    return abs(x[0]).bit_length() + x[1] if x[0] else -(2**62)


def _compare(a: Exact, b: Exact) -> int:
    """-1, 0 or 1 as ``a`` is below, equal to or above ``b``."""
    base = min(a[1], b[1])
    left, right = a[0] << (a[1] - base), b[0] << (b[1] - base)
    return (left > right) - (left < right)


def _floor_shift(x: Exact, exponent: int) -> int:
    """``floor(x / 2**exponent)``: the grid index of ``x`` (``>>`` rounds down)."""
    shift = x[1] - exponent
    return x[0] << shift if shift >= 0 else x[0] >> -shift


def _parts(values: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, np.dtype[np.int64]], Any]:
    """``values`` (finite) as ``m * 2**q``: int64 ``m`` and ``q`` (an array or an int).

    Floats from their bits; integers as they are, except uint64 beyond int64, halved
    (their lowest bit never matters: such a magnitude needs bins of width 4 or more).
    """
    kind = values.dtype.kind
    if kind in "iu":
        if values.dtype == np.uint64 and int(values.max()) >= 2**63:
            return (values >> np.uint64(1)).astype(np.int64), 1
        return values.astype(np.int64), 0
    info = np.finfo(values.dtype)
    bits = values.view(f"i{values.dtype.itemsize}").astype(np.int64)  # sign-extended
    biased = (bits >> info.nmant) & ((1 << info.nexp) - 1)
    mantissa = bits & ((1 << info.nmant) - 1)
    mantissa |= (biased != 0).astype(np.int64) << info.nmant  # the implicit bit
    exponent = np.maximum(biased, 1) - (info.maxexp - 1 + info.nmant)
    sign = bits >> 63
    mantissa ^= sign
    mantissa -= sign
    return mantissa, exponent


def _shift_floor(mantissa: np.ndarray[Any, Any], shift: Any) -> np.ndarray[Any, Any]:
    """``floor(mantissa * 2**shift)`` in int64 (``shift`` an int or an array)."""
    up = np.clip(shift, 0, 63)
    down = np.clip(-shift, 0, 63)  # beyond 63 every index is 0 or -1, as at 63
    index: np.ndarray[Any, Any] = (mantissa << up) >> down
    return index


def _grid_indices(values: np.ndarray[Any, Any], exponent: int) -> np.ndarray[Any, Any]:
    """``floor(values / 2**exponent)`` as int64, exactly, for finite values of any dtype."""
    if values.dtype.kind in "iu":
        mantissa, q = _parts(values)
        return _shift_floor(mantissa, q - exponent)
    if values.dtype.itemsize < 4:  # float16 indices could overflow float16
        values = exact_astype(values, np.float32)
    index: np.ndarray[Any, Any] = np.floor(np.ldexp(values, -exponent)).astype(np.int64)
    # Exact for normal inputs and results; redo the subnormal ones (inputs or results
    # below the smallest normal number, 0 excluded) with integers.
    info = np.finfo(values.dtype)
    unsigned = np.dtype(f"u{values.dtype.itemsize}")
    magnitude = values.view(unsigned) & np.iinfo(unsigned).max >> 1
    least = info.minexp + max(exponent, 0)  # log2 of the smallest safe magnitude
    if least >= info.maxexp:
        risky = magnitude != 0
    else:
        risky = (magnitude != 0) & (magnitude < (least + info.maxexp - 1) << info.nmant)
    if risky.any():
        mantissa, q = _parts(values[risky])
        index[risky] = _shift_floor(mantissa, q - exponent)
    return index


def _extremes(values: np.ndarray[Any, Any]) -> tuple[Exact, Exact]:
    """The smallest and largest of finite ``values``, exactly (floats by order keys)."""
    if values.dtype.kind in "iu":
        return (int(values.min()), 0), (int(values.max()), 0)
    keys = order_keys(values)
    ends = values_of_keys(np.array([keys.min(), keys.max()], dtype=keys.dtype), values.dtype)
    mantissa, q = _parts(ends)
    return (int(mantissa[0]), int(q[0])), (int(mantissa[1]), int(q[1]))
