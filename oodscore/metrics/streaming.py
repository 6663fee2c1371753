r"""Streaming OOD metrics over batches, on one process or under ``torch.distributed``.

`OODMetrics` accumulates scores batch by batch and computes the dictionary of
`oodscore.metrics.ood_metrics` at the end, in one of two modes:

* ``"exact"`` keeps every score on the CPU in its own dtype (float16/32/64; integers as
  int64, or uint64) and returns exactly the numbers of `oodscore.metrics.ood_metrics` on
  all scores seen, ranking the batches it keeps without concatenating them (computing
  holds the scores once, plus their sorted keys: 4 bytes a score for float32). Batches of
  several dtypes combine by NumPy's promotion, as ``np.concatenate`` would: integers with
  floats compare in float64, int64 with uint64 too.
* ``"binned"`` keeps two histograms (ID and OOD) of ``num_bins`` bins, fixed memory
  whatever the number of scores, and computes the metrics of the binned scores, with
  guaranteed error bounds (`OODMetrics.error_bounds`). The grid of bins is described in
  `oodscore.metrics.histogram`.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Literal

import numpy as np
import torch

from oodscore._distributed import all_reduce, gather_cat, is_distributed
from oodscore._validation import check_int
from oodscore.metrics._cumulative import (
    Cumulative,
    FprRule,
    aupr_ranges,
    check_rule,
    metrics_of_tally,
    threshold_group,
)
from oodscore.metrics._inputs import as_labels, as_scores
from oodscore.metrics._kernels import auroc_tie_weight, pairs
from oodscore.metrics._keys import exact_astype, order_keys
from oodscore.metrics._ranking import Tally
from oodscore.metrics.functional import check_tpr, fpr_key, metrics_dict, metrics_of_parts
from oodscore.metrics.histogram import Histogram

__all__ = ["Mode", "OODMetrics"]

Mode = Literal["exact", "binned"]

_STORED_DTYPES = (
    np.dtype(np.float16),
    np.dtype(np.float32),
    np.dtype(np.float64),
    np.dtype(np.int64),
    np.dtype(np.uint64),
)


def _stored(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Scores in the dtype exact mode keeps: floats as they are, integers as (u)int64."""
    if values.dtype in _STORED_DTYPES:
        return values
    return values.astype(np.float64 if values.dtype.kind == "f" else np.int64)


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
    AUPR-In: bin $b$ adds $\frac1P \sum$ of its ID scores' precisions; with $A_b$ ID
    among $T_b$ scores above it, the order inside the bin can only put that between
    $\frac1P\sum_{x=1}^{I_b} \frac{A_b + x}{T_b + O_b + x}$ (its OOD scores first) and
    $\frac1P I_b \frac{A_b + I_b}{T_b + I_b}$ (its ID scores first, tied); the bound is
    the distance from the binned value to the farther end of the sum of these ranges, and
    some scores with the same histogram reach it. AUPR-Out likewise, from below.

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

    Examples:
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
        self._histogram = Histogram(self.num_bins)
        if self.mode == "binned" and self.score_range is not None:
            self._histogram.make_room(np.array(self.score_range))

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
            values = _stored(values)
            self._parts[0].append(values[~labels])
            self._parts[1].append(values[labels])
        else:
            self._histogram.add(values, labels)

    def _exact_parts(self) -> tuple[list[np.ndarray[Any, Any]], list[np.ndarray[Any, Any]]]:
        """The ID and the OOD scores, in the parts kept.

        On one process they are never concatenated, so that computing holds the scores
        once, plus their sorted keys.
        """
        if not is_distributed():
            return list(self._parts[0]), list(self._parts[1])
        present = {p.dtype for parts in self._parts for p in parts}
        # The dtypes held on any rank.
        held = torch.tensor([dtype in present for dtype in _STORED_DTYPES], dtype=torch.int64)
        held = all_reduce(held, "max")
        present = {d for d, h in zip(_STORED_DTYPES, held.tolist(), strict=True) if h}
        common = np.result_type(*present) if present else np.dtype(np.float16)
        sides = []
        for parts in self._parts:
            side = (
                np.concatenate([exact_astype(p, common) for p in parts])
                if parts
                else np.empty(0, common)
            )
            # uint64 travels as int64, bit for bit.
            wire = side.view(np.int64) if common == np.uint64 else side
            side = gather_cat(torch.from_numpy(wire)).numpy().view(common)
            sides.append([side] if side.shape[0] else [])
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
            binned = metrics_of_tally(self._binned_tally(), self.tpr, self.rule)
            return metrics_dict(binned, self.tpr)
        id_parts, ood_parts = self._exact_parts()
        n_id, n_ood = sum(p.shape[0] for p in id_parts), sum(p.shape[0] for p in ood_parts)
        if n_id == 0 or n_ood == 0:
            raise ValueError(_empty_message(n_id, n_ood))
        return metrics_dict(metrics_of_parts(id_parts, ood_parts, self.tpr, self.rule), self.tpr)

    def error_bounds(self) -> dict[str, float]:
        """Guaranteed bounds on how far `compute` can be from the exact metrics.

        Returns:
            ``{"auroc": h, "aupr_in": a, "aupr_out": b, "fpr95": d}``: the exact AUROC is
            within ``±h`` of the computed one, AUPR-In within ``±a``, AUPR-Out within
            ``±b``, and the exact FPR within ``[computed - d, computed]`` (rule ``"first"``;
            NaN for the other rules). All are 0 in exact mode. A collective under DDP.
        """
        key = fpr_key(self.tpr)
        if self.mode == "exact":
            return {"auroc": 0.0, "aupr_in": 0.0, "aupr_out": 0.0, key: 0.0}
        counts = self._binned_tally()
        binned = metrics_of_tally(counts, self.tpr, self.rule)
        c = Cumulative.of(counts)
        (low_in, high_in), (low_out, high_out) = aupr_ranges(c)
        bounds = {
            "auroc": auroc_tie_weight(pairs(c.id_counts, c.ood_counts), c.n_id, c.n_ood),
            "aupr_in": max(binned.aupr_in - low_in, high_in - binned.aupr_in, 0.0),
            "aupr_out": max(binned.aupr_out - low_out, high_out - binned.aupr_out, 0.0),
            key: math.nan,
        }
        if self.rule == "first":
            # The exact threshold lies in the bin of the binned one: its OOD scores may fall below.
            bounds[key] = int(c.ood_counts[threshold_group(c, self.tpr)]) / c.n_ood
        return bounds


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
        ):
            # Compared by order keys: a subnormal bound stays above 0 in flush-to-zero mode.
            keys = order_keys(np.array([float(low), float(high)]))
            if keys[0] < keys[1]:
                return (float(low), float(high))
    raise ValueError(
        f"Expected `score_range` to be a pair (low, high) of finite numbers with low < high, "
        f"got {score_range!r}."
    )
