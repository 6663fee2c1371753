r"""The formulas of the four metrics, each written once, on counts of groups of equal scores.

Both representations of ranked scores reduce to one picture. The scores fall into groups
of equal value, in ascending order; group $g$ holds $I_g$ ID and $O_g$ OOD scores, and a
metric needs, for each group, how many scores lie **at or above** it (ID positive: the
thresholds descend) or **at or below** it (OOD positive: they ascend).

* `oodscore.metrics._cumulative` reads these counts off the cumulative sums of a `Tally`
  (every unique value is a group).
* `oodscore.metrics._positions` reads them off the sorted scores: the position where a
  group ends is the number of scores at or below it, and a running count of the ID scores
  up to there gives the ID part. It sums block by block as the groups come.

So each function below takes arrays over *some* groups and returns their part of a sum;
callers add the parts. Counts may be integers or floats holding integers; sums of counts
are exact while they stay below $2^{53}$ (floats) or $2^{63}$ (int64).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from oodscore.metrics._ranking import FloatArray

__all__ = [
    "Metrics",
    "auroc",
    "auroc_of_wins",
    "auroc_tie_weight",
    "average_precision",
    "false_positive_rate",
    "pairs",
    "precision_sum",
    "precision_sum_range",
    "threshold_rank",
]

Counts = np.ndarray[Any, Any]
"""Non-negative counts (any integer dtype, bool, or float64 holding integers)."""


class Metrics(NamedTuple):
    """The four metrics of one set of scores; ``fpr`` under the rule that was asked for."""

    auroc: float
    aupr_in: float
    aupr_out: float
    fpr: float


def pairs(weights: Counts, counts: Counts) -> int:
    r"""$\sum_g w_g c_g$: with ID counts as weights, the ID–OOD pairs of a kind.

    ``pairs(id_counts, ood_at_least)`` counts the pairs whose OOD score is at or above the
    ID score; ``pairs(id_counts, ood_counts)`` the tied pairs. Floats holding integers sum
    exactly while every partial sum stays below 2**53, in any order. (``np.einsum``, not
    ``np.dot``: BLAS splits one short sum over threads, which on a busy machine costs
    100 times what it saves.)
    """
    return int(np.einsum("i,i->", weights, counts))


def auroc(at_least_pairs: int, tied_pairs: int, n_id: int, n_ood: int) -> float:
    r"""AUROC $= P(s^{id} > s^{ood}) + \tfrac12 P(\text{tie})$ from pair counts.

    $1 - (A - T/2) / (PN)$ with $A$ the pairs whose OOD score is at or above the ID score
    and $T$ the tied ones, computed on the doubled integers $2PN - 2A + T$ so that the
    only rounding is the final division.

    Examples:
        >>> from oodscore.metrics._kernels import auroc
        >>> # ID 0.9, 0.8, 0.4 and OOD 0.4, 0.1: one pair (0.4, 0.4), a tie, has OOD >= ID
        >>> auroc(at_least_pairs=1, tied_pairs=1, n_id=3, n_ood=2)
        0.9166666666666666
    """
    return auroc_of_wins(2 * n_id * n_ood - 2 * at_least_pairs + tied_pairs, n_id, n_ood)


def auroc_of_wins(doubled_wins: int, n_id: int, n_ood: int) -> float:
    r"""AUROC from $2W + T$: twice the pairs the ID score wins, plus the tied pairs.

    The groups' form of `auroc`: group $g$, holding $I_g$ ID scores with $F_{g-1}$ OOD
    scores below it and $F_g$ at or below it, adds $I_g (F_{g-1} + F_g)$ (each OOD score
    below wins twice, each tied one once).

    Examples:
        >>> from oodscore.metrics._kernels import auroc_of_wins
        >>> auroc_of_wins(11, n_id=3, n_ood=2)  # 5 pairs won, 1 tied: 11 of 12
        0.9166666666666666
    """
    return doubled_wins / (2 * n_id * n_ood)


def auroc_tie_weight(tied_pairs: int, n_id: int, n_ood: int) -> float:
    """The share of AUROC the tied pairs make up (½ each): the most breaking them can move it."""
    return tied_pairs / (2 * n_id * n_ood)


def precision_sum(
    weights: Counts, hits: Counts, total: Counts, *, out: FloatArray | None = None
) -> float:
    r"""$\sum_g w_g \, h_g / t_g$: recall gains times precisions, before dividing by the positives.

    Average precision sums, over the thresholds $g$ (each unique score), the positives
    $w_g$ gained there times the precision $h_g / t_g$: positives over all scores on the
    kept side of the threshold (at or above it for ID positive, at or below it for OOD
    positive on the negated scores). Groups with $w_g = 0$ add nothing. ``out``: a float64
    array of the same length to hold the terms (a caller summing in many calls reuses one).

    Examples:
        >>> import numpy as np
        >>> from oodscore.metrics._kernels import precision_sum
        >>> # ID 0.9, 0.8, 0.4 and OOD 0.4, 0.1; groups 0.1, 0.4, 0.8, 0.9; ID positive:
        >>> id_counts, id_at_least, all_at_least = [0, 1, 1, 1], [3, 3, 2, 1], [5, 4, 2, 1]
        >>> precision_sum(np.array(id_counts), np.array(id_at_least), np.array(all_at_least))
        2.75
        >>> 2.75 / 3  # AUPR-In
        0.9166666666666666
    """
    precisions = np.divide(hits, total, out=out, dtype=np.float64)
    return float(np.einsum("i,i->", weights, precisions))


def precision_sum_range(
    weights: Counts, hits_beyond: Counts, total_beyond: Counts, others: Counts
) -> tuple[float, float]:
    r"""Bounds on `precision_sum` over every order the scores inside each group could have.

    For binned scores. A bin $g$ holds $w_g$ positives and $o_g$ others whose order inside
    it is unknown; beyond it on the kept side lie $a_g$ positives (``hits_beyond``) among
    $t_g$ scores (``total_beyond``). The binned term, the bin as one tie, is
    $w_g (a_g + w_g) / (t_g + w_g + o_g)$. In truth the positive kept $x$-th inside the bin
    ($x = 1..w_g$) has precision $(a_g + x') / (t_g + x' + y)$, with $x' \ge x$ positives
    and $y \in [0, o_g]$ others of the bin kept with it ($x' > x$ only by ties). That is
    increasing in $x'$ and decreasing in $y$, so the bin's true term lies in

    $$ \Bigl[\sum_{x=1}^{w_g} \frac{a_g + x}{d_g + x},\;
       w_g \frac{a_g + w_g}{t_g + w_g}\Bigr], \qquad d_g = t_g + o_g $$

    (low end: the bin's others kept first, its positives all distinct; high end: its
    positives tied and kept first), and the binned term lies in it too. Some scores with
    these counts reach each end. The low end is $w_g - (d_g - a_g) \sum_x 1/(d_g + x)$;
    as $1/u$ is convex, each term from $x = 2$ on is at most
    $\int_{d+x-1/2}^{d+x+1/2} du/u$, so that
    $\sum_{x=1}^{w} 1/(d + x) \le 1/(d + 1) + \ln\frac{d + w + 1/2}{d + 3/2}$ keeps a
    lower bound in closed form, exact for $w_g = 1$. Returns the sums over the bins of
    the two ends.

    Examples:
        >>> import numpy as np
        >>> from oodscore.metrics._kernels import precision_sum_range
        >>> # a bin of 2 positives and 1 other, 1 other beyond it: binned 2 * 2/4 = 1
        >>> low, high = precision_sum_range(*(np.array([v]) for v in (2, 0, 1, 1)))
        >>> round(low, 4), round(high, 4)  # true: 1/3 + 2/4 = 0.8333 at least, 2 * 2/3 at most
        (0.8307, 1.3333)
    """
    w, a, t, o = (np.asarray(c, np.float64) for c in (weights, hits_beyond, total_beyond, others))
    d = t + o
    harmonic = 1.0 / (d + 1.0) + np.log1p(np.maximum(w - 1.0, 0.0) / (d + 1.5))
    low = np.where(w > 0, w - (d - a) * harmonic, 0.0)
    high = w * (a + w) / np.maximum(t + w, 1.0)  # w = 0 adds 0
    return float(low.sum()), float(high.sum())


def average_precision(precision_total: float, n_positive: int) -> float:
    """Average precision (no interpolation, as scikit-learn) from the whole `precision_sum`."""
    return precision_total / n_positive


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


def threshold_rank(tpr: float, n_id: int) -> int:
    """Ascending rank (from 0) of the ID score that is the FPR threshold of rule "first".

    The highest threshold keeping at least ``tpr`` of the ID scores is the k-th highest ID
    score, k the smallest count with ``k / n_id >= tpr``; its rank from the bottom is
    ``n_id - k``. The FPR is then the share of OOD scores at or above its group.

    Examples:
        >>> from oodscore.metrics._kernels import threshold_rank
        >>> threshold_rank(0.95, 100)  # keep 95 of 100: the 6th lowest ID score
        5
    """
    return n_id - _min_count_at_rate(tpr, n_id)


def false_positive_rate(ood_kept: int, n_ood: int) -> float:
    """Share of the OOD scores that a threshold keeps."""
    return ood_kept / n_ood
