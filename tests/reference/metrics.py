"""Float64 reference OOD metrics, written from their definitions (never imports oodscore).

Slow and plain on purpose: pairwise comparisons, one threshold at a time. ID is positive
and higher scores mean more in-distribution, as in the library.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """P(s_id > s_ood) + P(s_id == s_ood) / 2 over all ID x OOD pairs."""
    a = np.asarray(id_scores, dtype=np.float64)[:, None]
    b = np.asarray(ood_scores, dtype=np.float64)[None, :]
    wins = np.count_nonzero(a > b)
    ties = np.count_nonzero(a == b)
    return (wins + 0.5 * ties) / (a.size * b.size)


def average_precision(positive: np.ndarray, negative: np.ndarray) -> float:
    """Sum over unique thresholds (descending) of (recall gain) x precision, positives >= t."""
    positive = np.asarray(positive, dtype=np.float64)
    negative = np.asarray(negative, dtype=np.float64)
    total = 0.0
    previous_recall = 0.0
    for t in np.unique(np.concatenate([positive, negative]))[::-1]:
        tp = np.count_nonzero(positive >= t)
        fp = np.count_nonzero(negative >= t)
        recall = tp / positive.size
        if tp:
            total += (recall - previous_recall) * tp / (tp + fp)
        previous_recall = recall
    return total


def aupr_in(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Average precision with ID positive."""
    return average_precision(id_scores, ood_scores)


def aupr_out(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Average precision with OOD positive on negated scores."""
    return average_precision(
        -np.asarray(ood_scores, np.float64), -np.asarray(id_scores, np.float64)
    )


def _descending_counts(id_scores: np.ndarray, ood_scores: np.ndarray):
    a = np.asarray(id_scores, dtype=np.float64)
    b = np.asarray(ood_scores, dtype=np.float64)
    thresholds = np.unique(np.concatenate([a, b]))[::-1]
    tp = np.array([np.count_nonzero(a >= t) for t in thresholds])
    fp = np.array([np.count_nonzero(b >= t) for t in thresholds])
    return thresholds, tp, fp


def fpr_first(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Share of OOD >= the highest threshold keeping a share >= tpr of the ID scores."""
    _, tp, fp = _descending_counts(id_scores, ood_scores)
    for k in range(tp.size):
        if tp[k] / tp[-1] >= tpr:
            return fp[k] / fp[-1]
    raise AssertionError("unreachable: the last threshold keeps every ID score")


def fpr_nearest(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """The seeds' rule: among thresholds from the top down to the first one of full recall,
    the one whose recall is nearest to tpr; ties between thresholds go to the lowest one.
    """
    _, tp, fp = _descending_counts(id_scores, ood_scores)
    full = int(np.flatnonzero(tp == tp[-1])[0])
    best_k, best_gap = full, abs(tp[full] / tp[-1] - tpr)
    for k in range(full, -1, -1):  # lowest threshold first; strict < keeps the first found
        gap = abs(tp[k] / tp[-1] - tpr)
        if gap < best_gap:
            best_k, best_gap = k, gap
    return fp[best_k] / fp[-1]


def fpr_openood(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """OpenOOD v1.5: OOD positive, roc_curve(is_ood, -s) (default drop_intermediate).

    scikit-learn refuses ±inf: they become ±1e300 (same ranks for scores below that).
    """
    s = np.r_[np.asarray(id_scores, np.float64), np.asarray(ood_scores, np.float64)]
    s = np.where(np.isinf(s), np.sign(s) * 1e300, s)
    is_ood = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
    fpr, tpr_curve, _ = roc_curve(is_ood, -s)
    return float(fpr[np.argmax(tpr_curve >= tpr)])
