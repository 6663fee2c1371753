r"""Streaming OOD metrics over batches, on one process or under ``torch.distributed``.

`OODMetrics` accumulates scores batch by batch and computes the dictionary of
`oodscore.metrics.ood_metrics` at the end, in one of two modes:

* ``"exact"`` keeps every score on the CPU in its own dtype (float16/32/64) and returns
  exactly the numbers of `oodscore.metrics.ood_metrics` on all scores seen.
* ``"binned"`` keeps two histograms (ID and OOD) of ``num_bins`` bins, fixed memory
  whatever the number of scores, and computes the metrics of the binned scores, with
  guaranteed error bounds (`OODMetrics.error_bounds`).

The binned grid: bin $k$ holds the scores $s$ with $\lfloor s / 2^e \rfloor = k$, a window of
``num_bins`` consecutive $k$ is stored, and the exponent $e$ is learned from the data (or
from ``score_range``). When a batch falls outside the window, the window moves; when the
data no longer fit in ``num_bins`` bins, $e$ grows and pairs of neighbouring bins merge —
exactly, because bins of width $2^{e+1}$ are unions of bins of width $2^e$ on the same
grid. ±inf scores get a bin of their own at each end.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Literal

import numpy as np
import torch

from oodscore._distributed import all_reduce, gather_cat, is_distributed
from oodscore._validation import check_int
from oodscore.metrics._ranking import Tally, as_scores
from oodscore.metrics.functional import (
    FprRule,
    _Cumulative,
    _min_count_at_rate,
    check_rule,
    check_tpr,
    fpr_key,
    metrics_of_tally,
    ood_metrics,
)

Mode = Literal["exact", "binned"]

_STORED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_MANTISSA = 52  # float64 holds every integer grid index below 2**53 exactly


def as_labels(x: object, length: int) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Return ``x`` as a boolean NumPy array (True = OOD) after checking it.

    Raises:
        TypeError: ``x`` is not a tensor/array of bool or integer dtype.
        ValueError: ``x`` is not 1-D of length ``length`` or holds values other than 0/1.
    """
    if isinstance(x, torch.Tensor):
        arr: np.ndarray[Any, Any] = x.detach().cpu().numpy()
    elif isinstance(x, np.ndarray):
        arr = x
    else:
        raise TypeError(
            f"Expected `is_ood` to be a torch.Tensor or a numpy.ndarray, got {type(x).__name__}."
        )
    if arr.dtype.kind not in "biu":
        raise TypeError(f"Expected `is_ood` to hold bool or 0/1 integers, got dtype {arr.dtype}.")
    if arr.ndim != 1 or arr.shape[0] != length:
        raise ValueError(
            f"Expected `is_ood` to be 1-D of the same length as `scores` ({length}), "
            f"got shape {arr.shape}."
        )
    if arr.dtype.kind != "b":
        bad = (arr != 0) & (arr != 1)
        if bad.any():
            first = int(np.argmax(bad))
            value = arr[first].item()
            raise ValueError(
                f"Expected `is_ood` to hold only 0 and 1, got {value!r} at index {first}."
            )
        arr = arr.astype(bool)
    return arr


class _Histogram:
    """ID and OOD counts on the aligned grid of bins of width ``2**exponent`` (module doc)."""

    def __init__(self, num_bins: int) -> None:
        self.num_bins = num_bins
        self.exponent: int | None = None  # None until the first finite score
        self.start = 0  # grid index of column 0
        self.low = 0  # smallest and largest grid index holding data (valid once exponent set)
        self.high = -1
        self.counts = np.zeros((2, num_bins), dtype=np.int64)  # row 0: ID, row 1: OOD
        self.infinite = np.zeros((2, 2), dtype=np.int64)  # [row, (-inf, +inf)]

    def copy(self) -> _Histogram:
        other = _Histogram(self.num_bins)
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
        self.ensure(self._min_exponent(values), float(values.min()), float(values.max()))
        assert self.exponent is not None
        index = np.floor(np.ldexp(values, -self.exponent)).astype(np.int64) - self.start
        for row, mask in ((0, ~is_ood), (1, is_ood)):
            self.counts[row] += np.bincount(index[mask], minlength=self.num_bins)

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

    def synchronized(self) -> _Histogram:
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


class OODMetrics:
    r"""Streaming AUROC, AUPR-In, AUPR-Out and FPR at a TPR, exact or binned, DDP-aware.

    Feed batches with `update` (scores, higher = more in-distribution, and an
    ``is_ood`` flag per score), read `compute`, start again with `reset`.
    Under ``torch.distributed`` (initialized, several ranks), `compute` combines
    all ranks — a collective: every rank must call it — and returns the same dictionary on
    every rank: ``"exact"`` gathers the ranks' scores (lengths first, then padded tensors
    with ``all_gather``; nothing is pickled), ``"binned"`` agrees on a common grid and
    all-reduces the counts.

    Binned error bounds. The binned metrics are exact for the scores rounded down to
    their bin; `error_bounds` turns that into guarantees on the exact values.
    AUROC: only ID–OOD pairs inside one bin can be mis-ordered, and each counts ½, so
    $|\mathrm{AUROC}_{\mathrm{binned}} - \mathrm{AUROC}| \le \sum_b I_b O_b / (2PN)$.
    FPR (rule ``"first"``): the exact threshold lies in the bin $b^*$ the binned rule
    picks, so $0 \le \mathrm{FPR}_{\mathrm{binned}} - \mathrm{FPR} \le O_{b^*} / N$.
    The average precisions have no such simple guarantee (ties inside a bin get the
    bin's precision); on real score distributions they move by about as much as AUROC.

    Args:
        mode: ``"exact"`` (every score kept on the CPU) or ``"binned"`` (fixed memory).
        tpr: TPR of the FPR entry, in (0, 1] (key ``fpr95`` for 0.95).
        rule: FPR rule, as in `oodscore.metrics.fpr_at_tpr`.
        num_bins: Binned mode: bins per histogram (memory ``2 * 8 * num_bins`` bytes). The
            default, 2**16, keeps the AUROC bound near 1e-4 on typical scores.
        score_range: Binned mode: ``(low, high)`` the scores are expected in; it sets the
            initial bin width to ``(high - low) / num_bins`` rounded up to a power of two.
            Without it the first batch sets the width. Scores outside are still counted
            (the grid grows). Give the same range on every rank.

    Example:
        >>> import torch
        >>> from oodscore.metrics import OODMetrics
        >>> metric = OODMetrics()
        >>> metric.update(torch.tensor([0.9, 0.8, 0.4]), torch.tensor([0, 0, 0]))
        >>> metric.update(torch.tensor([0.1, 0.4]), torch.tensor([True, True]))
        >>> {name: round(value, 4) for name, value in metric.compute().items()}
        {'auroc': 0.9167, 'aupr_in': 0.9167, 'aupr_out': 0.8333, 'fpr95': 0.5}
    """

    def __init__(
        self,
        mode: Mode = "exact",
        *,
        tpr: float = 0.95,
        rule: FprRule = "first",
        num_bins: int = 2**16,
        score_range: tuple[float, float] | None = None,
    ) -> None:
        if mode not in ("exact", "binned"):
            raise ValueError(f"Expected `mode` to be 'exact' or 'binned', got {mode!r}.")
        self.mode: Mode = mode
        self.tpr = check_tpr(tpr)
        self.rule: FprRule = check_rule(rule)
        self.num_bins = check_int(num_bins, "num_bins", minimum=16)
        self.score_range = _check_range(score_range)
        self.reset()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(mode={self.mode!r}, tpr={self.tpr!r}, rule={self.rule!r}, "
            f"num_bins={self.num_bins!r}, score_range={self.score_range!r})"
        )

    def reset(self) -> None:
        """Forget every score seen."""
        self._parts: tuple[list[np.ndarray[Any, Any]], list[np.ndarray[Any, Any]]] = ([], [])
        self._histogram = _Histogram(self.num_bins)
        if self.mode == "binned" and self.score_range is not None:
            low, high = self.score_range
            self._histogram.ensure(self._histogram._min_exponent(np.array([low, high])), low, high)

    def update(self, scores: object, is_ood: object) -> None:
        """Add a batch.

        Args:
            scores: ``(B,)`` scores (NumPy or torch on any device; moved to the CPU),
                higher = more in-distribution. ±inf allowed, NaN not.
            is_ood: ``(B,)`` bool or 0/1 integers, True/1 for OOD inputs.

        Raises:
            TypeError: Wrong kind or dtype of either argument.
            ValueError: Not 1-D, lengths differ, NaN in ``scores``, values other than 0/1
                in ``is_ood``.
        """
        values = as_scores(scores, "scores", allow_empty=True)
        labels = as_labels(is_ood, values.shape[0])
        if values.shape[0] == 0:
            return
        if self.mode == "exact":
            if values.dtype not in _STORED_DTYPES:
                values = values.astype(np.float64)
            self._parts[0].append(values[~labels])
            self._parts[1].append(values[labels])
        else:
            self._histogram.add(values.astype(np.float64, copy=False), labels)

    def _exact_sides(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        sides = []
        dtypes = [p.dtype for parts in self._parts for p in parts]
        local = np.result_type(*dtypes) if dtypes else np.dtype(np.float16)
        if is_distributed():
            code = torch.tensor([_STORED_DTYPES.index(np.dtype(local))])
            local = _STORED_DTYPES[int(all_reduce(code, "max"))]
        for parts in self._parts:
            side = np.concatenate(parts).astype(local) if parts else np.empty(0, local)
            if is_distributed():
                side = gather_cat(torch.from_numpy(side)).numpy()
            sides.append(side)
        return sides[0], sides[1]

    def _binned_tally(self) -> Tally:
        counts = self._histogram.synchronized().tally()
        if counts.n_id == 0 or counts.n_ood == 0:
            raise ValueError(_empty_message(counts.n_id, counts.n_ood))
        return counts

    def compute(self) -> dict[str, float]:
        """The metrics of all scores seen (on all ranks under DDP), as in ``ood_metrics``.

        Raises:
            ValueError: No ID or no OOD score was seen.
        """
        if self.mode == "binned":
            return metrics_of_tally(self._binned_tally(), self.tpr, fpr_rule_name=self.rule)
        id_scores, ood_scores = self._exact_sides()
        if id_scores.shape[0] == 0 or ood_scores.shape[0] == 0:
            raise ValueError(_empty_message(id_scores.shape[0], ood_scores.shape[0]))
        return ood_metrics(id_scores, ood_scores, self.tpr, rule=self.rule)

    def error_bounds(self) -> dict[str, float]:
        """Guaranteed bounds on how far `compute` can be from the exact metrics.

        Returns:
            ``{"auroc": h, "fpr95": d}``: the exact AUROC is within ``±h`` of the computed
            one and the exact FPR within ``[computed - d, computed]`` (rule ``"first"``;
            NaN for the other rules). Both are 0 in exact mode. A collective under DDP.
        """
        key = fpr_key(self.tpr)
        if self.mode == "exact":
            return {"auroc": 0.0, key: 0.0}
        counts = self._binned_tally()
        c = _Cumulative.of(counts)
        pairs = float(np.dot(counts.id_counts, counts.ood_counts))
        bound_auroc = pairs / (2 * counts.n_id * counts.n_ood)
        if self.rule != "first":
            return {"auroc": bound_auroc, key: math.nan}
        k = _min_count_at_rate(self.tpr, c.n_id)
        below = c.id_at_most - c.id_counts
        g = int(np.searchsorted(below, c.n_id - k, side="right")) - 1
        return {"auroc": bound_auroc, key: int(counts.ood_counts[g]) / c.n_ood}


def _span_exponent(low: float, high: float, num_bins: int) -> int:
    """Smallest e with (high - low) / 2**e <= num_bins - 2: at most num_bins grid indices."""
    half_span = high / 2 - low / 2  # halves first: high - low may overflow
    return math.ceil(math.log2(half_span) + 1 - math.log2(num_bins - 2))


def _empty_message(n_id: int, n_ood: int) -> str:
    return (
        "Expected at least one ID and one OOD score before `compute()`, "
        f"got {n_id} ID and {n_ood} OOD scores."
    )


def _check_range(score_range: object) -> tuple[float, float] | None:
    if score_range is None:
        return None
    if isinstance(score_range, (tuple, list)) and len(score_range) == 2:
        low, high = score_range
        if (
            isinstance(low, Real)
            and isinstance(high, Real)
            and math.isfinite(float(low))
            and math.isfinite(float(high))
            and float(low) < float(high)
        ):
            return (float(low), float(high))
    raise ValueError(
        f"Expected `score_range` to be a pair (low, high) of finite numbers with low < high, "
        f"got {score_range!r}."
    )
