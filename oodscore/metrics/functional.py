r"""Exact OOD detection metrics: AUROC, AUPR-In, AUPR-Out and FPR at a TPR.

Conventions (the same in every function here and in `oodscore.metrics.OODMetrics`):

* Scores follow the library's sign: **higher = more in-distribution**.
* **ID is the positive class.** ``aupr_out`` is the one exception by definition: it is the
  average precision of detecting OOD (OOD positive) on the negated scores.
* Scores are ranked as given (never squashed or rescaled), ties are counted at each unique
  threshold in int64, and sums run in float64. The results equal scikit-learn's
  ``roc_auc_score``, ``average_precision_score`` and ``roc_curve(drop_intermediate=False)``
  up to float64 rounding.
* All four metrics of `ood_metrics` come from one sort of the scores.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Real
from typing import Literal

import numpy as np

from oodscore.metrics._ranking import (
    FloatArray,
    IntArray,
    Positions,
    Tally,
    as_scores,
    positions,
    tally,
)

FprRule = Literal["first", "nearest", "openood"]
"""How `fpr_at_tpr` picks its threshold; see `fpr_at_tpr`."""

FPR_RULES: tuple[str, ...] = ("first", "nearest", "openood")
"""The names accepted by the ``rule`` argument."""


def check_tpr(tpr: object) -> float:
    """Return ``tpr`` as a float after checking it is a number in (0, 1]."""
    if (
        isinstance(tpr, bool)
        or not isinstance(tpr, Real)
        or not math.isfinite(float(tpr))
        or not 0.0 < float(tpr) <= 1.0
    ):
        raise ValueError(f"Expected `tpr` to be a number in (0, 1], got {tpr!r}.")
    return float(tpr)


def check_rule(rule: object) -> FprRule:
    """Return ``rule`` after checking it names one of `FPR_RULES`."""
    if rule == "first":
        return "first"
    if rule == "nearest":
        return "nearest"
    if rule == "openood":
        return "openood"
    raise ValueError(f"Expected `rule` to be one of {FPR_RULES}, got {rule!r}.")


def fpr_key(tpr: float) -> str:
    """The `ood_metrics` key of the FPR at ``tpr``.

    Example:
        >>> from oodscore.metrics import fpr_key
        >>> fpr_key(0.95), fpr_key(0.9), fpr_key(0.995)
        ('fpr95', 'fpr90', 'fpr99.5')
    """
    percent = round(tpr * 100, 6)
    return f"fpr{int(percent)}" if percent == int(percent) else f"fpr{percent:g}"


@dataclass(frozen=True)
class _Cumulative:
    """Cumulative counts of a tally in ascending order: scores at or below each value."""

    id_counts: IntArray
    ood_counts: IntArray
    id_at_most: IntArray  # number of ID scores <= value
    ood_at_most: IntArray  # number of OOD scores <= value
    n_id: int
    n_ood: int

    @classmethod
    def of(cls, counts: Tally) -> _Cumulative:
        return cls(
            counts.id_counts,
            counts.ood_counts,
            np.cumsum(counts.id_counts, dtype=np.int64),
            np.cumsum(counts.ood_counts, dtype=np.int64),
            counts.n_id,
            counts.n_ood,
        )


def _auroc(c: _Cumulative) -> float:
    # P(s_id > s_ood) + P(tie)/2 = sum_g id_g * (ood_below_g + ood_g / 2) / (P N); the
    # doubled numerator is an exact integer (int64 holds it up to P, N ~ 2e9 each).
    doubled = int(np.dot(c.id_counts, 2 * c.ood_at_most - c.ood_counts))
    return doubled / (2 * c.n_id * c.n_ood)


def _aupr_in(c: _Cumulative) -> float:
    # Average precision, ID positive, thresholds descending: sum over thresholds of
    # (recall gain) * precision = sum_g (id_g / P) * id_ge_g / all_ge_g.
    id_at_least = (c.n_id - c.id_at_most + c.id_counts).astype(np.float64)
    all_at_least = (
        (c.n_id + c.n_ood) - (c.id_at_most + c.ood_at_most) + (c.id_counts + c.ood_counts)
    )
    return float(np.dot(c.id_counts, id_at_least / all_at_least)) / c.n_id


def _aupr_out(c: _Cumulative) -> float:
    # Average precision, OOD positive on negated scores (thresholds ascending in s):
    # sum_g (ood_g / N) * ood_le_g / all_le_g.
    all_at_most = c.id_at_most + c.ood_at_most
    return float(np.dot(c.ood_counts, c.ood_at_most / all_at_most)) / c.n_ood


def _min_count_at_rate(rate: float, total: int) -> int:
    """Smallest integer k in [1, total] with ``k / total >= rate`` in float64.

    The comparison is scikit-learn's (``tps / tps[-1] >= rate``), so the same k results.
    """
    k = min(max(math.ceil(rate * total), 1), total)
    while k > 1 and (k - 1) / total >= rate:
        k -= 1
    while k < total and k / total < rate:
        k += 1
    return k


def _fpr_first(c: _Cumulative, tpr: float) -> float:
    # Highest threshold whose TPR on ID is >= tpr: the last value (ascending) with at
    # least k ID scores at or above it, i.e. at most P - k ID scores strictly below.
    k = _min_count_at_rate(tpr, c.n_id)
    id_below = c.id_at_most - c.id_counts
    g = int(np.searchsorted(id_below, c.n_id - k, side="right")) - 1
    ood_at_least = c.n_ood - int(c.ood_at_most[g]) + int(c.ood_counts[g])
    return ood_at_least / c.n_ood


def _fpr_nearest(c: _Cumulative, tpr: float) -> float:
    # `fpr_and_fdr_at_recall` of the seeds' `anom_utils.py`, step for step: thresholds
    # descending, ID positive, cut at the first threshold of full recall, walk back up
    # from there and take the first recall nearest to the level.
    tps = np.cumsum(c.id_counts[::-1], dtype=np.int64).astype(np.float64)
    fps = np.cumsum(c.ood_counts[::-1], dtype=np.int64).astype(np.float64)
    recall = tps / tps[-1]
    last = int(np.searchsorted(tps, tps[-1]))
    recall = np.r_[recall[last::-1], 1]
    fps = np.r_[fps[last::-1], 0]
    cutoff = int(np.argmin(np.abs(recall - tpr)))
    return float(fps[cutoff]) / c.n_ood


def _fpr_openood(c: _Cumulative, tpr: float) -> float:
    # OpenOOD v1.5 `auc_and_fpr_recall`: OOD positive, scikit-learn's
    # roc_curve(is_ood, -score) with its default drop_intermediate=True, read at the first
    # TPR (on OOD) >= tpr; the FPR is the share of ID scores flagged as OOD there.
    tps = c.ood_at_most
    fps = c.id_at_most
    if tps.shape[0] > 2:
        corner = np.logical_or(np.diff(fps, 2) != 0, np.diff(tps, 2) != 0)
        keep = np.concatenate(([True], corner, [True]))
        tps, fps = tps[keep], fps[keep]
    tpr_curve = np.r_[0, tps] / tps[-1]
    fpr_curve = np.r_[0, fps] / fps[-1]
    return float(fpr_curve[int(np.argmax(tpr_curve >= tpr))])


_FPR = {"first": _fpr_first, "nearest": _fpr_nearest, "openood": _fpr_openood}


BLOCK = 1 << 17
"""Sorted positions per block in `_position_sums` (measured best on 10M scores)."""


@dataclass
class _PositionSums:
    """Sums over the sorted positions of the scores that equal no other score."""

    id_positions: int = 0  # sum of the positions of all ID scores
    precision_in: float = 0.0  # sum over untied ID scores of (P - rank) / (n - position)
    precision_out: float = 0.0  # sum over untied OOD scores of (rank + 1) / (position + 1)
    position_of_rank: int = -1  # position of the ID score of the requested rank
    ids_before: IntArray = dataclasses.field(  # number of ID scores before each query
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )


def _position_sums(p: Positions, rank: int, queries: IntArray) -> _PositionSums:
    """One pass over the sorted ID flags, block by block.

    Each NumPy call works on a block that stays in cache (2-3x faster than passes over
    whole arrays of 10M scores), and no array of all positions is ever built.
    ``queries`` (ascending positions, at most n) get the number of ID scores before them.
    """
    is_id, tied, n_id = p.is_id, p.tied, p.n_id
    n = is_id.shape[0]
    answers = np.full(queries.shape[0], n_id, dtype=np.int64)  # a query at n: all of them
    sums = _PositionSums(ids_before=answers)
    steps = np.arange(BLOCK, dtype=np.float64)
    numerator = np.empty(BLOCK)
    denominator = np.empty(BLOCK)
    prefix = np.zeros(BLOCK + 1, dtype=np.int64)
    query_bounds = np.searchsorted(queries, np.arange(0, n + BLOCK, BLOCK))
    ids_before = 0
    for block_index, start in enumerate(range(0, n, BLOCK)):
        block = is_id[start : start + BLOCK]
        local = np.flatnonzero(block)
        count = local.shape[0]
        lo, hi = query_bounds[block_index], query_bounds[block_index + 1]
        if hi > lo:  # ID scores before each query: a running count inside the block
            np.cumsum(block, dtype=np.int64, out=prefix[1 : block.shape[0] + 1])
            answers[lo:hi] = ids_before + prefix[queries[lo:hi] - start]
        if count:
            sums.id_positions += int(local.sum()) + start * count
            if ids_before <= rank < ids_before + count:
                sums.position_of_rank = start + int(local[rank - ids_before])
            # (P - k) / (n - position) for the ranks k = ids_before, ids_before + 1, ...
            np.subtract(n_id - ids_before, steps[:count], out=numerator[:count])
            np.subtract(n - start, local, out=denominator[:count], dtype=np.float64)
            np.divide(numerator[:count], denominator[:count], out=numerator[:count])
            untied = ~tied[start : start + BLOCK][local]
            np.multiply(numerator[:count], untied, out=numerator[:count])
            sums.precision_in += float(numerator[:count].sum())
        ood_local = np.flatnonzero(~block)
        ood_count = ood_local.shape[0]
        if ood_count:
            # (m + 1) / (position + 1) for the OOD ranks m = oods_before, ...
            oods_before = start - ids_before
            np.add(oods_before + 1, steps[:ood_count], out=numerator[:ood_count])
            np.add(start + 1, ood_local, out=denominator[:ood_count], dtype=np.float64)
            np.divide(numerator[:ood_count], denominator[:ood_count], out=numerator[:ood_count])
            untied = ~tied[start : start + BLOCK][ood_local]
            np.multiply(numerator[:ood_count], untied, out=numerator[:ood_count])
            sums.precision_out += float(numerator[:ood_count].sum())
        ids_before += count
    return sums


def _metrics_of_positions(p: Positions, tpr: float) -> dict[str, float]:
    """The four metrics (FPR rule "first") from positions.

    Sums over the ID and OOD positions of the scores that equal no other, plus one term
    per run of equal scores (see `oodscore.metrics._ranking.Positions`).
    """
    n = p.is_id.shape[0]
    n_id = p.n_id
    n_ood = n - n_id
    rank = n_id - _min_count_at_rate(tpr, n_id)  # the threshold: the ID score of this rank
    queries = np.stack((p.tie_first, p.tie_last + 1), axis=1).ravel()
    sums = _position_sums(p, rank, queries)
    # Per run: ID scores below it and in it, OOD likewise.
    id_below = sums.ids_before[0::2]
    id_in = sums.ids_before[1::2] - id_below
    ood_below = p.tie_first - id_below
    ood_in = (p.tie_last - p.tie_first + 1) - id_in
    ood_upto = ood_below + ood_in

    # AUROC: each ID score counts the OOD scores before it (2x, to stay in integers); in a
    # run holding both, the ID scores come before or after its OOD scores where each pair
    # should count 1/2: a correction of +/- id_in * ood_in.
    doubled = 2 * (sums.id_positions - n_id * (n_id - 1) // 2)
    mixed = id_in * ood_in
    doubled += int(mixed[p.tie_id_first].sum()) - int(mixed[~p.tie_id_first].sum())
    result = {"auroc": doubled / (2 * n_id * n_ood)}

    # AUPR-In: the k-th ID score (ascending) has P - k ID scores and n - pos scores at or
    # above it; in a run, its ID scores all take the run's values.
    group = id_in * (n_id - id_below) / (n - p.tie_first)
    result["aupr_in"] = (sums.precision_in + float(group.sum())) / n_id

    # AUPR-Out: the m-th OOD score has m + 1 OOD scores and pos + 1 scores at or below it.
    group = ood_in * ood_upto / (p.tie_last + 1)
    result["aupr_out"] = (sums.precision_out + float(group.sum())) / n_ood

    # FPR: OOD scores at or above the threshold are those not below its run.
    position = sums.position_of_rank
    run = int(np.searchsorted(p.tie_last, position))
    if run < p.tie_first.shape[0] and p.tie_first[run] <= position:
        ood_before = int(ood_below[run])
    else:
        ood_before = position - rank
    result[fpr_key(tpr)] = (n_ood - ood_before) / n_ood
    return result


def _metrics(id_scores: object, ood_scores: object, tpr: float, rule: FprRule) -> dict[str, float]:
    """Check the scores, rank them once, and compute the four metrics."""
    ids, oods = as_scores(id_scores, "id_scores"), as_scores(ood_scores, "ood_scores")
    if rule == "first":
        return _metrics_of_positions(positions(ids, oods), tpr)
    return metrics_of_tally(tally(ids, oods), tpr, fpr_rule_name=rule)


def auroc(id_scores: object, ood_scores: object) -> float:
    r"""Area under the ROC curve: the probability that an ID score beats an OOD score.

    $$ \mathrm{AUROC} = \frac{1}{PN} \sum_{i=1}^{P} \sum_{j=1}^{N}
       \left( [s^{\mathrm{id}}_i > s^{\mathrm{ood}}_j]
       + \tfrac12 [s^{\mathrm{id}}_i = s^{\mathrm{ood}}_j] \right) $$

    Equal to scikit-learn's ``roc_auc_score(is_id, scores)``; 0.5 for constant scores.

    Args:
        id_scores: ``(P,)`` scores of in-distribution inputs (NumPy or torch, any device).
        ood_scores: ``(N,)`` scores of OOD inputs. Higher = more in-distribution.

    Returns:
        The AUROC in [0, 1].

    Raises:
        TypeError: A side is not a tensor/array of real numbers.
        ValueError: A side is empty, not 1-D or holds NaN (±inf is ranked as a number).

    Example:
        >>> import numpy as np
        >>> from oodscore.metrics import auroc
        >>> round(auroc(np.array([0.9, 0.8, 0.4]), np.array([0.1, 0.4])), 4)  # 5.5 of 6 pairs
        0.9167
    """
    return _metrics(id_scores, ood_scores, 0.95, "first")["auroc"]


def aupr_in(id_scores: object, ood_scores: object) -> float:
    r"""Average precision with ID as the positive class (AUPR-In).

    $$ \mathrm{AP} = \sum_{k} (R_k - R_{k-1})\, P_k $$

    over the unique thresholds $t_k$ in descending order, with recall
    $R_k = |\{i : s^{\mathrm{id}}_i \ge t_k\}| / P$ and precision $P_k$ the share of ID
    among all scores $\ge t_k$. Equal to scikit-learn's
    ``average_precision_score(is_id, scores)`` (no interpolation).

    Args:
        id_scores: ``(P,)`` scores of in-distribution inputs.
        ood_scores: ``(N,)`` scores of OOD inputs. Higher = more in-distribution.

    Returns:
        The average precision in (0, 1].

    Raises:
        TypeError: A side is not a tensor/array of real numbers.
        ValueError: A side is empty, not 1-D or holds NaN.

    Example:
        >>> import numpy as np
        >>> from oodscore.metrics import aupr_in
        >>> round(aupr_in(np.array([0.9, 0.8, 0.4]), np.array([0.1, 0.4])), 4)
        0.9167
    """
    return _metrics(id_scores, ood_scores, 0.95, "first")["aupr_in"]


def aupr_out(id_scores: object, ood_scores: object) -> float:
    r"""Average precision with OOD as the positive class, on the negated scores (AUPR-Out).

    The same sum as `aupr_in` with the roles swapped: thresholds ascend in the
    score, recall counts OOD scores $\le t_k$. Equal to scikit-learn's
    ``average_precision_score(is_ood, -scores)``.

    Args:
        id_scores: ``(P,)`` scores of in-distribution inputs.
        ood_scores: ``(N,)`` scores of OOD inputs. Higher = more in-distribution.

    Returns:
        The average precision in (0, 1].

    Raises:
        TypeError: A side is not a tensor/array of real numbers.
        ValueError: A side is empty, not 1-D or holds NaN.

    Example:
        >>> import numpy as np
        >>> from oodscore.metrics import aupr_out
        >>> round(aupr_out(np.array([0.9, 0.8, 0.4]), np.array([0.1, 0.4])), 4)
        0.8333
    """
    return _metrics(id_scores, ood_scores, 0.95, "first")["aupr_out"]


def fpr_at_tpr(
    id_scores: object,
    ood_scores: object,
    tpr: float = 0.95,
    *,
    rule: FprRule = "first",
) -> float:
    r"""False-positive rate at the threshold that keeps a true-positive rate of ``tpr``.

    Three rules, named so that published numbers can be reproduced (see the metrics page
    of the documentation for a worked example where they differ):

    * ``"first"`` (default): ID positive. The highest threshold $t$ whose TPR on ID,
      $|\{s^{\mathrm{id}} \ge t\}| / P$, is at least ``tpr``; the result is the share of
      OOD scores $\ge t$. Equal to scikit-learn's
      ``roc_curve(is_id, s, drop_intermediate=False)`` read at the first TPR >= ``tpr``.
    * ``"nearest"``: ``fpr_and_fdr_at_recall`` of the ``anom_utils.py`` used by
      wetliu/energy_ood and deeplearning-wisc/multi-label-ood (ID positive there too):
      the threshold whose ID recall is *nearest* to ``tpr`` (it may lie below it).
    * ``"openood"``: OpenOOD v1.5 (``openood/evaluators/metrics.py``): **OOD positive**
      on the negated scores, scikit-learn's default ``roc_curve`` (which drops collinear
      points), the first threshold detecting at least ``tpr`` of the OOD scores; the
      result is the share of ID scores flagged as OOD there.

    Args:
        id_scores: ``(P,)`` scores of in-distribution inputs.
        ood_scores: ``(N,)`` scores of OOD inputs. Higher = more in-distribution.
        tpr: The true-positive rate to hold, in (0, 1]; 0.95 gives the usual FPR95.
        rule: ``"first"``, ``"nearest"`` or ``"openood"``.

    Returns:
        The false-positive rate in [0, 1].

    Raises:
        TypeError: A side is not a tensor/array of real numbers.
        ValueError: A side is empty, not 1-D or holds NaN; ``tpr`` is outside (0, 1];
            ``rule`` is unknown.

    Example:
        >>> import numpy as np
        >>> from oodscore.metrics import fpr_at_tpr
        >>> ids, oods = np.arange(100.0), np.array([10.5, 50.5, 90.5])
        >>> fpr_at_tpr(ids, oods)  # 95 ID scores are >= 5.0; all 3 OOD scores too
        1.0
        >>> fpr_at_tpr(ids, oods, 0.5)  # 50 ID scores are >= 50.0; 2 OOD scores too
        0.6666666666666666
    """
    level = check_tpr(tpr)
    return _metrics(id_scores, ood_scores, level, check_rule(rule))[fpr_key(level)]


def ood_metrics(
    id_scores: object,
    ood_scores: object,
    tpr: float = 0.95,
    *,
    rule: FprRule = "first",
) -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out and FPR at ``tpr``, all from one sort of the scores.

    Args:
        id_scores: ``(P,)`` scores of in-distribution inputs (NumPy or torch, any device).
        ood_scores: ``(N,)`` scores of OOD inputs. Higher = more in-distribution.
        tpr: The TPR of the FPR entry, in (0, 1]; it names the key (``fpr95`` for 0.95,
            ``fpr90`` for 0.9, ``fpr99.5`` for 0.995).
        rule: The FPR rule, as in `fpr_at_tpr`.

    Returns:
        ``{"auroc": ..., "aupr_in": ..., "aupr_out": ..., "fpr95": ...}`` as Python floats.

    Raises:
        TypeError: A side is not a tensor/array of real numbers.
        ValueError: A side is empty, not 1-D or holds NaN; ``tpr`` or ``rule`` is invalid.

    Example:
        >>> import numpy as np
        >>> from oodscore.metrics import ood_metrics
        >>> rng = np.random.default_rng(0)
        >>> ids, oods = rng.normal(1.0, 1.0, 1000), rng.normal(0.0, 1.0, 1000)
        >>> {k: round(v, 4) for k, v in ood_metrics(ids, oods).items()}
        {'auroc': 0.751, 'aupr_in': 0.7402, 'aupr_out': 0.7482, 'fpr95': 0.693}
    """
    return _metrics(id_scores, ood_scores, check_tpr(tpr), check_rule(rule))


def metrics_of_tally(counts: Tally, tpr: float, *, fpr_rule_name: str) -> dict[str, float]:
    """The `ood_metrics` dictionary of a tally (for streaming and binned counts)."""
    c = _Cumulative.of(counts)
    return {
        "auroc": _auroc(c),
        "aupr_in": _aupr_in(c),
        "aupr_out": _aupr_out(c),
        fpr_key(tpr): _FPR[check_rule(fpr_rule_name)](c, tpr),
    }


def roc_curve(id_scores: object, ood_scores: object) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The ROC curve with ID positive, at every unique threshold (for plots).

    Same as scikit-learn's ``roc_curve(is_id, scores, drop_intermediate=False)``: the
    thresholds descend from ``inf`` (the added start point (0, 0)) through every unique
    score; point k counts the scores at or above ``thresholds[k]``.

    Args:
        id_scores: ``(P,)`` scores of in-distribution inputs.
        ood_scores: ``(N,)`` scores of OOD inputs. Higher = more in-distribution.

    Returns:
        ``(fpr, tpr, thresholds)``, three float64 NumPy arrays of length G + 1 for G
        unique scores: the share of OOD and of ID scores at or above each threshold.

    Raises:
        TypeError: A side is not a tensor/array of real numbers.
        ValueError: A side is empty, not 1-D or holds NaN.

    Example:
        >>> import numpy as np
        >>> from oodscore.metrics import roc_curve
        >>> fpr, tpr, thresholds = roc_curve(np.array([3.0, 2.0]), np.array([2.0, 1.0]))
        >>> fpr, tpr, thresholds
        (array([0. , 0. , 0.5, 1. ]), array([0. , 0.5, 1. , 1. ]), array([inf,  3.,  2.,  1.]))
    """
    counts = tally(
        as_scores(id_scores, "id_scores"), as_scores(ood_scores, "ood_scores"), with_values=True
    )
    assert counts.values is not None
    tps = np.cumsum(counts.id_counts[::-1], dtype=np.int64)
    fps = np.cumsum(counts.ood_counts[::-1], dtype=np.int64)
    fpr = np.r_[0.0, fps / counts.n_ood]
    tpr = np.r_[0.0, tps / counts.n_id]
    thresholds = np.r_[np.inf, counts.values[::-1]]
    return fpr, tpr, thresholds
