"""Float64 NumPy references for the logit baselines of the JointEnergy paper, from their formulas.

Wang, Liu, Bocchieri & Li, NeurIPS 2021 (deeplearning-wisc/multi-label-ood ``lib.py``,
``get_logits``): ``logit`` / ``sum`` is the sum of the label logits; ``prob`` / ``max`` and
``prob`` / ``sum`` are the largest and the sum of the per-label sigmoid probabilities.

The route is deliberately plain: each sigmoid from the sign-split form
``1 / (1 + exp(-f))`` for f >= 0 and ``exp(f) / (1 + exp(f))`` for f < 0 (no overflow), the
maximum taken over the probabilities (not the sigmoid of the largest logit), and every sum
with ``math.fsum`` (exactly rounded), so it shares no step with a torch implementation.
"""

from __future__ import annotations

import math

import numpy as np

Array = np.ndarray


def sigmoid(logits: Array) -> Array:
    """Element-wise logistic function in float64, without overflow for any finite input."""
    f = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(f)
    positive = f >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-f[positive]))
    e = np.exp(f[~positive])
    out[~positive] = e / (1.0 + e)
    return out


def sum_logit(logits: Array) -> Array:
    """``sum_c f_c`` of each row, exactly rounded (``math.fsum``)."""
    f = np.asarray(logits, dtype=np.float64)
    return np.array([math.fsum(row) for row in f], dtype=np.float64)


def max_sigmoid(logits: Array) -> Array:
    """``max_c sigmoid(f_c)`` of each row: the largest per-label probability."""
    return sigmoid(logits).max(axis=1)


def sum_sigmoid(logits: Array) -> Array:
    """``sum_c sigmoid(f_c)`` of each row, exactly rounded sums of the probabilities."""
    return np.array([math.fsum(row) for row in sigmoid(logits)], dtype=np.float64)
