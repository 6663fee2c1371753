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

Each formula is written once, in `oodscore.metrics._kernels`; the two readings of the
ranked scores (`oodscore.metrics._positions` for rule ``"first"``,
`oodscore.metrics._cumulative` for the other rules, the ROC curve and the binned mode of
`OODMetrics`) only count what those formulas read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np

from oodscore.metrics._cumulative import (
    FPR_RULES,
    Cumulative,
    FprRule,
    check_rule,
    metrics_of_tally,
)
from oodscore.metrics._inputs import as_scores
from oodscore.metrics._kernels import Metrics
from oodscore.metrics._positions import metrics_of_ranked
from oodscore.metrics._ranking import FloatArray, rank, tally

__all__ = [
    "FPR_RULES",
    "FprRule",
    "aupr_in",
    "aupr_out",
    "auroc",
    "check_tpr",
    "fpr_at_tpr",
    "fpr_key",
    "metrics_dict",
    "metrics_of_parts",
    "ood_metrics",
    "roc_curve",
]


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


def fpr_key(tpr: float) -> str:
    """The `ood_metrics` key of the FPR at ``tpr``.

    Examples:
        >>> from oodscore.metrics import fpr_key
        >>> fpr_key(0.95), fpr_key(0.9), fpr_key(0.995)
        ('fpr95', 'fpr90', 'fpr99.5')
    """
    percent = round(tpr * 100, 6)
    return f"fpr{int(percent)}" if percent == int(percent) else f"fpr{percent:g}"


def metrics_dict(metrics: Metrics, tpr: float) -> dict[str, float]:
    """The dictionary `ood_metrics` returns, the FPR under its key `fpr_key` (``tpr``)."""
    return {
        "auroc": metrics.auroc,
        "aupr_in": metrics.aupr_in,
        "aupr_out": metrics.aupr_out,
        fpr_key(tpr): metrics.fpr,
    }


def metrics_of_parts(
    id_parts: Sequence[np.ndarray[Any, Any]],
    ood_parts: Sequence[np.ndarray[Any, Any]],
    tpr: float,
    rule: FprRule,
) -> Metrics:
    """The four metrics of checked scores, each side given in parts (never concatenated)."""
    ranked = rank(id_parts, ood_parts)
    if rule == "first":
        return metrics_of_ranked(ranked, tpr)
    return metrics_of_tally(tally(ranked), tpr, rule)


def _metrics(id_scores: object, ood_scores: object, tpr: float, rule: FprRule) -> Metrics:
    """Check the scores, rank them once, and compute the four metrics."""
    ids, oods = as_scores(id_scores, "id_scores"), as_scores(ood_scores, "ood_scores")
    return metrics_of_parts([ids], [oods], tpr, rule)


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

    Examples:
        >>> import numpy as np
        >>> from oodscore.metrics import auroc
        >>> round(auroc(np.array([0.9, 0.8, 0.4]), np.array([0.1, 0.4])), 4)  # 5.5 of 6 pairs
        0.9167
    """
    return _metrics(id_scores, ood_scores, 0.95, "first").auroc


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

    Examples:
        >>> import numpy as np
        >>> from oodscore.metrics import aupr_in
        >>> round(aupr_in(np.array([0.9, 0.8, 0.4]), np.array([0.1, 0.4])), 4)
        0.9167
    """
    return _metrics(id_scores, ood_scores, 0.95, "first").aupr_in


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

    Examples:
        >>> import numpy as np
        >>> from oodscore.metrics import aupr_out
        >>> round(aupr_out(np.array([0.9, 0.8, 0.4]), np.array([0.1, 0.4])), 4)
        0.8333
    """
    return _metrics(id_scores, ood_scores, 0.95, "first").aupr_out


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

    Examples:
        >>> import numpy as np
        >>> from oodscore.metrics import fpr_at_tpr
        >>> ids, oods = np.arange(100.0), np.array([10.5, 50.5, 90.5])
        >>> fpr_at_tpr(ids, oods)  # 95 ID scores are >= 5.0; all 3 OOD scores too
        1.0
        >>> fpr_at_tpr(ids, oods, 0.5)  # 50 ID scores are >= 50.0; 2 OOD scores too
        0.6666666666666666
    """
    return _metrics(id_scores, ood_scores, check_tpr(tpr), check_rule(rule)).fpr


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

    Examples:
        >>> import numpy as np
        >>> from oodscore.metrics import ood_metrics
        >>> rng = np.random.default_rng(0)
        >>> ids, oods = rng.normal(1.0, 1.0, 1000), rng.normal(0.0, 1.0, 1000)
        >>> {k: round(v, 4) for k, v in ood_metrics(ids, oods).items()}
        {'auroc': 0.751, 'aupr_in': 0.7402, 'aupr_out': 0.7482, 'fpr95': 0.693}
    """
    level = check_tpr(tpr)
    return metrics_dict(_metrics(id_scores, ood_scores, level, check_rule(rule)), level)


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

    Examples:
        >>> import numpy as np
        >>> from oodscore.metrics import roc_curve
        >>> fpr, tpr, thresholds = roc_curve(np.array([3.0, 2.0]), np.array([2.0, 1.0]))
        >>> fpr, tpr, thresholds
        (array([0. , 0. , 0.5, 1. ]), array([0. , 0.5, 1. , 1. ]), array([inf,  3.,  2.,  1.]))
    """
    ids, oods = as_scores(id_scores, "id_scores"), as_scores(ood_scores, "ood_scores")
    counts = tally(rank([ids], [oods]), with_values=True)
    assert counts.values is not None
    c = Cumulative.of(counts)
    fpr = np.r_[0.0, c.ood_at_least[::-1] / c.n_ood]
    tpr = np.r_[0.0, c.id_at_least[::-1] / c.n_id]
    thresholds = np.r_[np.inf, counts.values[::-1]]
    return fpr, tpr, thresholds
