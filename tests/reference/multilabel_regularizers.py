"""Float64 NumPy references for SR/SROE and EDGE, written from the papers (no oodscore import).

- SR (Chen et al., Sci. Rep. 2024): alpha * mean_i sum_j |h_ij|.
- EDGE (Sun et al., AAAI 2025): alpha * L_conf + beta(t) * L_gap with
  L_conf = mean over outliers and labels of the BCE toward label 0, -log(1 - sigmoid(f)),
  L_gap = mean over (outlier, tail-ID) pairs of max(0, S_out - S_in + m), S = JointEnergy,
  tail = the k ID rows of lowest S; beta(t) = 0 for t < tau.
- Dilation distance: || top-k singular values of H_id / sqrt(N) - those of H_out / sqrt(M) ||_2.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]


def sparsity(features: Array, weight: float) -> float:
    f = np.asarray(features, dtype=np.float64)
    total = 0.0
    for row in f:
        total += sum(abs(v) for v in row)
    return weight * total / len(f)


def _log1p_exp(x: Array) -> Array:
    # log(1 + e^x) = max(x, 0) + log(1 + e^-|x|), exact for any size of x.
    x = np.asarray(x, dtype=np.float64)
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def joint_energy(logits: Array) -> Array:
    return _log1p_exp(logits).sum(axis=1)


def edge_conf(logits_out: Array) -> float:
    z = np.asarray(logits_out, dtype=np.float64)
    # -log(1 - sigmoid(z)) = -log(sigmoid(-z)) = log(1 + e^z).
    return float(np.mean(_log1p_exp(z)))


def edge_gap(logits_in: Array, logits_out: Array, margin: float, k: int) -> float:
    s_in = joint_energy(logits_in)
    s_out = joint_energy(logits_out)
    tail = np.sort(s_in)[: min(k, len(s_in))]
    pairs = [max(0.0, so - si + margin) for so in s_out for si in tail]
    return float(np.mean(pairs))


def edge(
    logits_in: Array,
    logits_out: Array,
    epoch: int,
    *,
    alpha: float = 1.0,
    beta: float = 0.1,
    margin: float = 1.0,
    k: int = 50,
    tau: int = 50,
) -> float:
    value = alpha * edge_conf(logits_out)
    if epoch >= tau:
        value += beta * edge_gap(logits_in, logits_out, margin, k)
    return value


def dilation(features_id: Array, features_out: Array, k: int) -> float:
    a = np.asarray(features_id, dtype=np.float64)
    b = np.asarray(features_out, dtype=np.float64)
    sa = np.linalg.svd(a / np.sqrt(len(a)), compute_uv=False)[:k]
    sb = np.linalg.svd(b / np.sqrt(len(b)), compute_uv=False)[:k]
    return float(np.sqrt(np.sum((sa - sb) ** 2)))


def official_oe_py_measure(batches_id: list[Array], batches_out: list[Array], k: int) -> float:
    """What ``oe.py`` of the official code prints: per-batch singular values added into a
    (batch, oe_batch) zero matrix (broadcast into every row), averaged, the first k rows."""
    n, m = len(batches_id[0]), len(batches_out[0])
    total_id = np.zeros((n, m))
    total_out = np.zeros((n, m))
    for a, b in zip(batches_id, batches_out, strict=True):
        total_id += np.linalg.svd(a, compute_uv=False)
        total_out += np.linalg.svd(b, compute_uv=False)
    count = len(batches_id)
    return float(np.linalg.norm(total_id[:k] / count - total_out[:k] / count))
