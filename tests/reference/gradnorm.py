"""Float64 NumPy reference for GradNorm on a linear head, written from the paper's definition.

GradNorm (Huang, Geng & Li, NeurIPS 2021; ``deeplearning-wisc/gradnorm_ood``, ``test_ood.py``):
for one sample with head input ``h`` and logits ``z = W h + b``, the loss is
``L = sum_c -log softmax(z / T)_c`` (all-ones targets), and the score is the sum of the absolute
values of ``dL/dW``. By the chain rule ``dL/dz_j = sum_c -(delta_cj - softmax(z / T)_j) / T =
(C softmax(z / T)_j - 1) / T`` and ``dL/dW = outer(dL/dz, h)``; the matrix is formed and summed
entry by entry here (no factorisation of the norm).
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def softmax(z: Array) -> Array:
    """Softmax of a vector, shifted by its maximum."""
    e = np.exp(z - z.max())
    return e / e.sum()


def gradnorm(weight: Array, bias: Array | None, features: Array, temperature: float = 1.0) -> Array:
    """GradNorm scores (N,) of features (N, D) under the head ``(weight, bias)``, float64."""
    weight = np.asarray(weight, dtype=np.float64)
    features = np.asarray(features, dtype=np.float64)
    offset = np.zeros(weight.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    scores = np.empty(len(features))
    for i, h in enumerate(features):
        z = weight @ h + offset
        dz = (weight.shape[0] * softmax(z / temperature) - 1.0) / temperature
        scores[i] = np.abs(np.outer(dz, h)).sum()
    return scores
