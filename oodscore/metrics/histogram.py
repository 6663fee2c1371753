r"""The histogram behind the binned mode of `oodscore.metrics.OODMetrics`: ID and OOD counts.

Bin $k$ holds the scores $s$ with $\lfloor s / 2^e \rfloor = k$; a window of ``num_bins``
consecutive $k$ is stored, and the exponent $e$ is learned from the data (or from
``score_range``). When a batch falls outside the window, the window moves; when the data no
longer fit in ``num_bins`` bins, $e$ grows and pairs of neighbouring bins merge — exactly,
because bins of width $2^{e+1}$ are unions of bins of width $2^e$ on the same grid. ±inf
scores get a bin of their own at each end. The counts come out as a `Tally`, one group per
non-empty bin, so the binned metrics are those of `oodscore.metrics._cumulative`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from oodscore._distributed import all_reduce, is_distributed
from oodscore.metrics._ranking import Tally

__all__ = ["Histogram"]

_MANTISSA = 52  # float64 holds every integer grid index below 2**53 exactly


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

    def _min_exponent(self, values: np.ndarray[Any, Any]) -> int:
        """Smallest exponent that keeps the batch's grid indices exact and in range."""
        lo, hi = float(values.min()), float(values.max())
        magnitude = max(abs(lo), abs(hi))
        exponent = -1074
        if magnitude > 0:
            exponent = math.frexp(magnitude)[1] - _MANTISSA
        if hi > lo:
            exponent = max(exponent, _span_exponent(lo, hi, self.num_bins))
        return exponent

    def add(self, values: np.ndarray[Any, Any], is_ood: np.ndarray[Any, Any]) -> None:
        """Count finite float64 ``values`` (label True = OOD) and ±inf separately."""
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
        index = np.floor(np.ldexp(values, -self.exponent)).astype(np.int64) - self.start
        for row, mask in ((0, ~is_ood), (1, is_ood)):
            self.counts[row] += np.bincount(index[mask], minlength=self.num_bins)

    def make_room(self, values: np.ndarray[Any, Any]) -> None:
        """Grow the grid so that the finite float64 ``values`` (at least one) fit, exactly."""
        self.ensure(self._min_exponent(values), float(values.min()), float(values.max()))

    def ensure(self, exponent: int, lo: float, hi: float) -> None:
        """Grow the exponent to at least ``exponent`` and the window to cover ``[lo, hi]``."""
        if self.exponent is None:
            self.exponent = exponent
            self.low, self.high = 0, -1
        else:
            self.coarsen(exponent - self.exponent)
        while True:
            low = math.floor(math.ldexp(lo, -self.exponent))
            high = math.floor(math.ldexp(hi, -self.exponent))
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


def _span_exponent(low: float, high: float, num_bins: int) -> int:
    """Smallest e with (high - low) / 2**e <= num_bins - 2: at most num_bins grid indices."""
    half_span = high / 2 - low / 2  # halves first: high - low may overflow
    return math.ceil(math.log2(half_span) + 1 - math.log2(num_bins - 2))
