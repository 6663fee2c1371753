"""MOS (Huang & Li, CVPR 2021) written loop by loop in float64 NumPy from the paper and the
official code's formulas (deeplearning-wisc/large_scale_ood: get_group_slices, get_loss,
calc_group_softmax_acc in finetune.py, cal_ood_score in test_mos.py, DatasetWithMetaGroup in
dataset.py).

A grouping is a list of groups, each the list of original class ids in column order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Groups = Sequence[Sequence[int]]


def group_slices(groups: Groups) -> list[tuple[int, int]]:
    """[start, end) of each group's slice: n_k + 1 columns, "others" first."""
    slices, start = [], 0
    for members in groups:
        end = start + len(members) + 1
        slices.append((start, end))
        start = end
    return slices


def _log_softmax(row: np.ndarray) -> np.ndarray:
    top = max(float(v) for v in row)
    total = sum(math.exp(float(v) - top) for v in row)
    return np.array([float(v) - top - math.log(total) for v in row])


def targets(labels: Sequence[int], groups: Groups) -> np.ndarray:
    """(N, K): 0 everywhere but the true group, which holds the within-group index + 1."""
    out = np.zeros((len(labels), len(groups)), dtype=np.int64)
    for i, label in enumerate(labels):
        for k, members in enumerate(groups):
            if label in members:
                out[i, k] = list(members).index(label) + 1
    return out


def loss(logits: np.ndarray, labels: Sequence[int], groups: Groups) -> float:
    """Σ_k of the batch-mean cross-entropy of group k (the official get_loss)."""
    t = targets(labels, groups)
    total = 0.0
    for k, (start, end) in enumerate(group_slices(groups)):
        per_group = 0.0
        for i in range(logits.shape[0]):
            per_group += -_log_softmax(logits[i, start:end])[t[i, k]]
        total += per_group / logits.shape[0]
    return total


def predict(logits: np.ndarray, groups: Groups) -> np.ndarray:
    """Original class ids: per group the best non-others probability, the best group wins."""
    out = np.empty(logits.shape[0], dtype=np.int64)
    for i in range(logits.shape[0]):
        best_prob, best_class = -1.0, -1
        for members, (start, end) in zip(groups, group_slices(groups), strict=True):
            probs = np.exp(_log_softmax(logits[i, start:end]))[1:]
            j = int(np.argmax(probs))
            if probs[j] > best_prob:
                best_prob, best_class = float(probs[j]), members[j]
        out[i] = best_class
    return out


def predict_candidates(logits: np.ndarray, groups: Groups) -> list[set[int]]:
    """Every class whose in-group probability equals the best one (float64 ties at 0 or 1)."""
    out = []
    for i in range(logits.shape[0]):
        best: dict[int, float] = {}
        for members, (start, end) in zip(groups, group_slices(groups), strict=True):
            probs = np.exp(_log_softmax(logits[i, start:end]))[1:]
            for c, p in zip(members, probs, strict=True):
                best[c] = float(p)
        top = max(best.values())
        out.append({c for c, p in best.items() if p == top})
    return out


def others_probabilities(logits: np.ndarray, groups: Groups) -> np.ndarray:
    """(N, K) softmax probability of each group's "others" column."""
    out = np.empty((logits.shape[0], len(groups)))
    for i in range(logits.shape[0]):
        for k, (start, end) in enumerate(group_slices(groups)):
            out[i, k] = math.exp(_log_softmax(logits[i, start:end])[0])
    return out


def score(logits: np.ndarray, groups: Groups) -> np.ndarray:
    """MOS: max over groups of -p(others) (official cal_ood_score)."""
    return np.array([max(-p for p in row) for row in others_probabilities(logits, groups)])


def log_score(logits: np.ndarray, groups: Groups) -> np.ndarray:
    """max over groups of -log p(others) = log(1 + Σ_j exp(f_j - f_others)), with log1p
    when "others" dominates so that tiny values keep their precision."""
    out = np.empty(logits.shape[0])
    for i in range(logits.shape[0]):
        values = []
        for start, end in group_slices(groups):
            d = [float(v) - float(logits[i, start]) for v in logits[i, start + 1 : end]]
            top = max(d)
            if top < 0:
                values.append(math.log1p(sum(math.exp(v) for v in d)))
            else:
                values.append(top + math.log(math.exp(-top) + sum(math.exp(v - top) for v in d)))
        out[i] = max(values)
    return out
