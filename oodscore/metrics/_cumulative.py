"""The metrics of a `Tally`, from its cumulative counts, and the three FPR rules.

Every unique value of the tally is a group (see `oodscore.metrics._kernels`); cumulative
sums give each group its counts at or below and at or above it. This path serves the
``"nearest"`` and ``"openood"`` rules (which need the whole ROC curve), `roc_curve`, the
binned streaming metrics and their error bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from oodscore.metrics._kernels import (
    Metrics,
    auroc,
    average_precision,
    false_positive_rate,
    pairs,
    precision_sum,
    precision_sum_range,
    threshold_rank,
)
from oodscore.metrics._ranking import IntArray, Tally

__all__ = [
    "FPR_RULES",
    "Cumulative",
    "FprRule",
    "aupr_ranges",
    "check_rule",
    "metrics_of_tally",
    "threshold_group",
]

FprRule = Literal["first", "nearest", "openood"]
"""How `fpr_at_tpr` picks its threshold; see `fpr_at_tpr`."""

FPR_RULES: tuple[str, ...] = ("first", "nearest", "openood")
"""The names accepted by the ``rule`` argument."""


def check_rule(rule: object) -> FprRule:
    """Return ``rule`` after checking it names one of `FPR_RULES`."""
    if rule == "first":
        return "first"
    if rule == "nearest":
        return "nearest"
    if rule == "openood":
        return "openood"
    raise ValueError(f"Expected `rule` to be one of {FPR_RULES}, got {rule!r}.")


@dataclass(frozen=True)
class Cumulative:
    """Counts of a tally in ascending order of the values, and their cumulative sums."""

    id_counts: IntArray
    ood_counts: IntArray
    id_at_most: IntArray  # number of ID scores <= each value
    ood_at_most: IntArray  # number of OOD scores <= each value
    n_id: int
    n_ood: int

    @classmethod
    def of(cls, counts: Tally) -> Cumulative:
        """Add the cumulative sums to ``counts`` (int64)."""
        return cls(
            counts.id_counts,
            counts.ood_counts,
            np.cumsum(counts.id_counts, dtype=np.int64),
            np.cumsum(counts.ood_counts, dtype=np.int64),
            counts.n_id,
            counts.n_ood,
        )

    @property
    def id_at_least(self) -> IntArray:
        """Number of ID scores >= each value."""
        return _at_least(self.n_id, self.id_at_most, self.id_counts)

    @property
    def ood_at_least(self) -> IntArray:
        """Number of OOD scores >= each value."""
        return _at_least(self.n_ood, self.ood_at_most, self.ood_counts)

    @property
    def all_at_most(self) -> IntArray:
        """Number of scores <= each value."""
        return self.id_at_most + self.ood_at_most


def _at_least(total: int, at_most: IntArray, counts: IntArray) -> IntArray:
    """``total - at_most + counts``, in one new array (these can hold 10**9 entries)."""
    at_least = np.subtract(total, at_most)
    at_least += counts
    return at_least


def aupr_ranges(c: Cumulative) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where AUPR-In and AUPR-Out lie whatever the order of the scores inside each group.

    For binned counts (`precision_sum_range`): AUPR-In sums over the groups from the top,
    its positives (ID) beyond a group are those above it; AUPR-Out from the bottom, with
    OOD positive. Returns ``((low_in, high_in), (low_out, high_out))``.
    """
    all_at_most = c.all_at_most
    n = c.n_id + c.n_ood
    low_in, high_in = precision_sum_range(
        c.id_counts, c.n_id - c.id_at_most, n - all_at_most, c.ood_counts
    )
    ood_below = c.ood_at_most - c.ood_counts
    all_below = all_at_most - c.id_counts - c.ood_counts
    low_out, high_out = precision_sum_range(c.ood_counts, ood_below, all_below, c.id_counts)
    return (
        (average_precision(low_in, c.n_id), average_precision(high_in, c.n_id)),
        (average_precision(low_out, c.n_ood), average_precision(high_out, c.n_ood)),
    )


def threshold_group(c: Cumulative, tpr: float) -> int:
    """Index of the group that holds the threshold of rule "first" (`threshold_rank`)."""
    return int(np.searchsorted(c.id_at_most, threshold_rank(tpr, c.n_id), side="right"))


def fpr_first(c: Cumulative, tpr: float) -> float:
    """The OOD scores at or above the highest threshold keeping ``tpr`` of ID."""
    group = threshold_group(c, tpr)
    ood_below = int(c.ood_at_most[group]) - int(c.ood_counts[group])
    return false_positive_rate(c.n_ood - ood_below, c.n_ood)


def fpr_nearest(c: Cumulative, tpr: float) -> float:
    """`fpr_and_fdr_at_recall` of the seeds' ``anom_utils.py``, step for step.

    ID positive. From the first threshold of full recall (the lowest ID score) walk up the
    thresholds and take the first whose recall is nearest to the level; past the highest
    one, a last point of recall 1 and no false positive (the seeds' sentinel).
    """
    lowest = int(np.searchsorted(c.id_at_most, 0, side="right"))  # the lowest ID score's group
    recall = np.r_[c.id_at_least[lowest:] / c.n_id, 1]
    fps = np.r_[c.ood_at_least[lowest:], 0]
    cutoff = int(np.argmin(np.abs(recall - tpr)))
    return float(fps[cutoff]) / c.n_ood


def fpr_openood(c: Cumulative, tpr: float) -> float:
    """OpenOOD v1.5 `auc_and_fpr_recall`: OOD positive.

    scikit-learn's ``roc_curve(is_ood, -score)`` with its default
    ``drop_intermediate=True``, read at the first TPR (on OOD) >= ``tpr``; the FPR is the
    share of ID scores flagged as OOD there.
    """
    tps = c.ood_at_most
    fps = c.id_at_most
    if tps.shape[0] > 2:
        corner = np.logical_or(np.diff(fps, 2) != 0, np.diff(tps, 2) != 0)
        keep = np.concatenate(([True], corner, [True]))
        tps, fps = tps[keep], fps[keep]
    tpr_curve = np.r_[0, tps] / tps[-1]
    fpr_curve = np.r_[0, fps] / fps[-1]
    return float(fpr_curve[int(np.argmax(tpr_curve >= tpr))])


_FPR_OF_RULE: dict[str, Callable[[Cumulative, float], float]] = {
    "first": fpr_first,
    "nearest": fpr_nearest,
    "openood": fpr_openood,
}


def metrics_of_tally(counts: Tally, tpr: float, rule: FprRule) -> Metrics:
    """The four metrics of a tally (of exact scores or of binned counts)."""
    c = Cumulative.of(counts)
    at_least_pairs = pairs(c.id_counts, c.ood_at_least)
    all_at_least = c.id_at_least
    all_at_least += c.ood_at_least
    precision_in = precision_sum(c.id_counts, c.id_at_least, all_at_least)
    del all_at_least  # these arrays can be as long as the scores: few at a time
    precision_out = precision_sum(c.ood_counts, c.ood_at_most, c.all_at_most)
    tied_pairs = pairs(c.id_counts, c.ood_counts)
    return Metrics(
        auroc(at_least_pairs, tied_pairs, c.n_id, c.n_ood),
        average_precision(precision_in, c.n_id),
        average_precision(precision_out, c.n_ood),
        _FPR_OF_RULE[rule](c, tpr),
    )
