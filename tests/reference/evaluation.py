"""Float64 references for evaluation: scores, OOD metrics, accuracy and macro mAP.

Written from the definitions (Hendrycks & Gimpel 2017 for MSP, Liu et al. 2020 for the
energy score, the usual pairwise AUROC and step-wise average precision); nothing here
imports oodscore.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]


def msp(logits: Array) -> Array:
    """max_c softmax(f)_c, through a shifted exponential in float64."""
    f = np.asarray(logits, dtype=np.float64)
    shifted = f - f.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e.max(axis=1) / e.sum(axis=1)


def energy(logits: Array) -> Array:
    """log sum_c exp(f_c) (negative free energy at T = 1)."""
    f = np.asarray(logits, dtype=np.float64)
    top = f.max(axis=1)
    return top + np.log(np.exp(f - top[:, None]).sum(axis=1))


def max_logit(logits: Array) -> Array:
    """max_c f_c."""
    return np.asarray(logits, dtype=np.float64).max(axis=1)


def joint_energy(logits: Array) -> Array:
    """sum_c log(1 + exp(f_c)), written as max(f, 0) + log1p(exp(-|f|))."""
    f = np.asarray(logits, dtype=np.float64)
    return (np.maximum(f, 0.0) + np.log1p(np.exp(-np.abs(f)))).sum(axis=1)


def auroc(id_scores: Array, ood_scores: Array) -> float:
    """P(s_id > s_ood) + 1/2 P(s_id = s_ood), over every (ID, OOD) pair."""
    a = np.asarray(id_scores, dtype=np.float64)[:, None]
    b = np.asarray(ood_scores, dtype=np.float64)[None, :]
    return float(((a > b).sum() + 0.5 * (a == b).sum()) / (a.size * b.size))


def average_precision(positive: Array, negative: Array) -> float:
    """Step-wise AP: sum over thresholds t (unique scores) of (R(t) - R(t_prev)) * P(t).

    P(t), R(t): precision and recall of "score >= t" with ``positive`` the positive class.
    """
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    ap, previous_recall = 0.0, 0.0
    for t in thresholds:
        tp = float((pos >= t).sum())
        fp = float((neg >= t).sum())
        recall = tp / len(pos)
        if tp + fp > 0:
            ap += (recall - previous_recall) * tp / (tp + fp)
        previous_recall = recall
    return ap


def fpr_at_tpr(id_scores: Array, ood_scores: Array, tpr: float = 0.95) -> float:
    """Share of OOD scores >= t, t the highest threshold keeping at least ``tpr`` of ID."""
    ids = np.asarray(id_scores, dtype=np.float64)
    oods = np.asarray(ood_scores, dtype=np.float64)
    for t in np.unique(ids)[::-1]:
        if (ids >= t).mean() >= tpr - 1e-12:
            return float((oods >= t).mean())
    raise AssertionError("unreachable: the lowest ID score keeps every ID sample")


def ood_metrics(id_scores: Array, ood_scores: Array) -> dict[str, float]:
    """AUROC, AUPR-In (ID positive), AUPR-Out (OOD positive, negated scores), FPR95."""
    ids = np.asarray(id_scores, dtype=np.float64)
    oods = np.asarray(ood_scores, dtype=np.float64)
    return {
        "auroc": auroc(ids, oods),
        "aupr_in": average_precision(ids, oods),
        "aupr_out": average_precision(-oods, -ids),
        "fpr95": fpr_at_tpr(ids, oods),
    }


def accuracy(logits: Array, targets: Array) -> float:
    """Share of rows whose largest logit is at the target class (first maximum wins)."""
    return float((np.asarray(logits).argmax(axis=1) == np.asarray(targets)).mean())


def macro_map(scores: Array, targets: Array) -> float:
    """Mean over labels of the AP of that label's column; 0 for a label with no positive."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(targets) == 1
    values = []
    for c in range(s.shape[1]):
        if not y[:, c].any():
            values.append(0.0)
        elif y[:, c].all():
            values.append(1.0)
        else:
            values.append(average_precision(s[y[:, c], c], s[~y[:, c], c]))
    return float(np.mean(values))
