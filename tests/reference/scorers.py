"""Float64 NumPy references for the logit scorers, written from the papers' definitions."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

Array = np.ndarray


def softmax(logits: Array) -> Array:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def msp(logits: Array, temperature: float = 1.0) -> Array:
    """Hendrycks & Gimpel 2017: max_c softmax(f / T)_c."""
    return softmax(logits / temperature).max(axis=1)


def max_logit(logits: Array) -> Array:
    """Hendrycks et al. 2022: max_c f_c."""
    return logits.max(axis=1)


def energy(logits: Array, temperature: float = 1.0) -> Array:
    """Liu et al. 2020: -E(x) = T log sum_c exp(f_c / T)."""
    return temperature * logsumexp(logits / temperature, axis=1)


def negative_entropy(logits: Array) -> Array:
    """sum_c p_c log p_c with 0 log 0 = 0, log p from the log-softmax.

    log p = (f - max f) - log sum exp(f - max f): subtracting logsumexp(f) from f would round
    log C away next to logits of 1e38 (max f + log 2 == max f in float64).
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    return np.where(p > 0, p * log_p, 0.0).sum(axis=1)


def gen(logits: Array, gamma: float = 0.1, top_m: int = 100) -> Array:
    """Liu, Lochman & Zach 2023: -sum over the M largest p of p^g (1 - p)^g.

    1 - p is summed from the other classes' probabilities, so it stays exact when p is close to 1.
    """
    p = softmax(logits)
    order = np.argsort(p, axis=1)[:, ::-1][:, :top_m]
    total = 0.0
    for column in range(order.shape[1]):
        j = order[:, column]
        p_j = p[np.arange(len(p)), j]
        mask = np.ones_like(p, dtype=bool)
        mask[np.arange(len(p)), j] = False
        others = np.where(p_j > 0.5, (p * mask).sum(axis=1), 1.0 - p_j)
        total = total + p_j**gamma * others**gamma
    return -total


def joint_energy(logits: Array, top_k: int | None = None) -> Array:
    """Wang et al. 2021: sum_c log(1 + exp(f_c)), optionally over the k largest terms."""
    terms = np.logaddexp(0.0, logits)
    if top_k is not None:
        terms = np.sort(terms, axis=1)[:, -top_k:]
    return terms.sum(axis=1)
