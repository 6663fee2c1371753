"""Float64 NumPy references for the activation-shaping scorers, written from the papers.

ReAct (Sun, Guo & Li, NeurIPS 2021): clip the penultimate features at the p-th percentile c of
the ID activations, h -> min(h, c). ASH (Djurisic et al., ICLR 2023): per sample, keep the
k = D - round(D p / 100) largest activations (round half to even, as ``np.round``); ASH-P
zeroes the rest, ASH-B sets the kept ones to s1 / k (s1 the sum of the whole sample), ASH-S
multiplies the pruned sample by exp(s1 / s2) (s2 the sum of the kept values). SCALE (Xu et al.,
ICLR 2024): the unpruned sample times ASH-S's factor. DICE (Sun & Li, ECCV 2022): contributions
V = W * mean(h) (C x D), keep the weights with V above the p-th percentile of all of V.

Written the plain way, row by row, with ``np.percentile``, ``np.argsort`` and explicit sums:
the features are shaped first and then multiplied by the head (the official order), where the
library multiplies the logits by the factor. Decisions of the library that the papers leave open
are written out here: a row whose kept values sum to 0 gets the factor 1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Array = np.ndarray
LogitScore = Callable[[Array], Array]


def percentile(values: Array, q: float) -> float:
    """NumPy's linear percentile of all entries, in float64."""
    return float(np.percentile(np.asarray(values, dtype=np.float64).ravel(), q))


def kept(dim: int, p: float) -> int:
    """k = D - round(D p / 100), rounding half to even."""
    return dim - int(np.round(dim * p / 100.0))


def top_positions(row: Array, k: int) -> Array:
    """Indices of the k largest entries of ``row`` (ties: the lower index first)."""
    return np.argsort(-row, kind="stable")[:k]


def react(features: Array, threshold: float) -> Array:
    return np.minimum(features, threshold)


def ash(features: Array, p: float, variant: str) -> Array:
    """ASH-P, ASH-B or ASH-S of every row of ``features`` (N, D)."""
    features = np.asarray(features, dtype=np.float64)
    out = np.zeros_like(features)
    k = kept(features.shape[1], p)
    for i, row in enumerate(features):
        keep = top_positions(row, k)
        s1 = row.sum()
        if variant == "p":
            out[i, keep] = row[keep]
        elif variant == "b":
            out[i, keep] = s1 / k
        else:
            s2 = row[keep].sum()
            out[i, keep] = row[keep] * (np.exp(s1 / s2) if s2 != 0 else 1.0)
    return out


def scale(features: Array, p: float) -> Array:
    features = np.asarray(features, dtype=np.float64)
    out = np.empty_like(features)
    k = kept(features.shape[1], p)
    for i, row in enumerate(features):
        s2 = row[top_positions(row, k)].sum()
        out[i] = row * (np.exp(row.sum() / s2) if s2 != 0 else 1.0)
    return out


def factor_exponent(features: Array, p: float) -> Array:
    """s1 / s2 of ASH-S and SCALE per row (0 where s2 = 0)."""
    features = np.asarray(features, dtype=np.float64)
    k = kept(features.shape[1], p)
    out = np.zeros(len(features))
    for i, row in enumerate(features):
        s2 = row[top_positions(row, k)].sum()
        out[i] = row.sum() / s2 if s2 != 0 else 0.0
    return out


def dice_weight(weight: Array, fit_features: Array, p: float) -> Array:
    """W * (V > percentile_p(V)), V = W * mean of the fit features."""
    weight = np.asarray(weight, dtype=np.float64)
    mean = np.asarray(fit_features, dtype=np.float64).mean(axis=0)
    contributions = weight * mean[None, :]
    return weight * (contributions > percentile(contributions, p))


def head(features: Array, weight: Array, bias: Array | None) -> Array:
    logits = np.asarray(features, dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T
    return logits if bias is None else logits + np.asarray(bias, dtype=np.float64)


def scores(
    method: str,
    features: Array,
    weight: Array,
    bias: Array | None,
    score: LogitScore,
    *,
    p: float,
    fit_features: Array | None = None,
    threshold: float | None = None,
) -> Array:
    """The full composition: reference shaping, reference head, reference logit score."""
    features = np.asarray(features, dtype=np.float64)
    if method == "react":
        if threshold is None:
            assert fit_features is not None
            threshold = percentile(fit_features, p)
        return score(head(react(features, threshold), weight, bias))
    if method.startswith("ash_"):
        return score(head(ash(features, p, method[-1]), weight, bias))
    if method == "scale":
        return score(head(scale(features, p), weight, bias))
    if method == "dice":
        assert fit_features is not None
        return score(head(features, dice_weight(weight, fit_features, p), bias))
    raise ValueError(method)
