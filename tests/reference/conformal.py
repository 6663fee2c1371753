"""Float64 NumPy reference for split-conformal p-values, thresholds, Mondrian groups and BH.

Written from the definitions (Bates, Candès, Lei, Romano & Sesia, Annals of Statistics 2023;
Vovk, Gammerman & Shafer 2005 for Mondrian; Benjamini & Hochberg 1995), one comparison at a
time, with no sorting tricks: scores are higher = more in-distribution, and

    p(s) = (1 + #{i : s_i <= s}) / (n + 1),    reject iff p(s) <= alpha.
"""

from __future__ import annotations

from fractions import Fraction
from math import floor

import numpy as np

Array = np.ndarray


def p_values(calibration: Array, scores: Array) -> Array:
    """(1 + #{i : s_i <= s}) / (n + 1) for each test score, by a full comparison matrix."""
    calibration = np.asarray(calibration, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    counts = (calibration[None, :] <= scores[:, None]).sum(axis=1)
    return (1.0 + counts) / (calibration.size + 1.0)


def rank(n: int, alpha: float) -> int:
    """k = the number of attainable p-values j / (n + 1), j = 1..n, that are <= alpha.

    A test score is rejected iff its p-value is <= alpha, and its p-value is one of
    j / (n + 1); so the k smallest attainable values reject.
    """
    attainable = np.arange(1, n + 1, dtype=np.float64) / (n + 1)
    return int((attainable <= alpha).sum())


def exact_rank(n: int, alpha: float) -> int:
    """floor(alpha (n + 1)) in exact rational arithmetic (alpha as the float's exact value)."""
    return floor(Fraction(alpha) * (n + 1))


def min_size(alpha: float) -> int:
    """The smallest n whose rank is at least 1, by counting up."""
    n = 0
    while rank(n, alpha) < 1:
        n += 1
    return n


def threshold(calibration: Array, alpha: float) -> float:
    """The k-th smallest calibration score (-inf when k = 0: nothing is rejected)."""
    calibration = np.sort(np.asarray(calibration, dtype=np.float64))
    k = rank(calibration.size, alpha)
    return float(calibration[k - 1]) if k >= 1 else -np.inf


def group_p_values(
    calibration: Array, calibration_groups: Array, scores: Array, groups: Array
) -> Array:
    """Mondrian p-values: each test score against the calibration scores of its own group."""
    out = np.empty(len(scores))
    for j, (s, g) in enumerate(zip(scores, groups, strict=False)):
        own = np.asarray(calibration, dtype=np.float64)[np.asarray(calibration_groups) == g]
        out[j] = (1.0 + np.sum(own <= s)) / (own.size + 1.0)
    return out


def group_thresholds(
    calibration: Array, calibration_groups: Array, alpha: float, num_groups: int
) -> Array:
    """Each group's k_g-th smallest calibration score (-inf for a group with k_g = 0)."""
    calibration = np.asarray(calibration, dtype=np.float64)
    return np.array(
        [
            threshold(calibration[np.asarray(calibration_groups) == g], alpha)
            for g in range(num_groups)
        ]
    )


def benjamini_hochberg(p: Array, q: float) -> Array:
    """Step-up BH: reject the hypotheses with p <= p_(j*), j* = max{j : p_(j) <= j q / m}."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    ordered = np.sort(p)
    passing = [j for j in range(1, m + 1) if ordered[j - 1] <= j * q / m]
    if not passing:
        return np.zeros(m, dtype=bool)
    return p <= ordered[max(passing) - 1]
