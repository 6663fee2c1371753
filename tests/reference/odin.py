"""Float64 NumPy references for ODIN on a linear model, written from the papers' definitions.

ODIN (Liang, Li & Srikant, ICLR 2018; ``facebookresearch/odin``): the model is the affine map
``z = W vec(x) + b`` of inputs ``x`` of shape (N, K, ...), flattened row by row. The predicted
class ``y = argmax z`` (the first on ties), the loss ``-log softmax(z / T)_y``, whose input
gradient is written out by the chain rule: ``dL/dz = (softmax(z / T) - onehot(y)) / T`` and
``dL/dx = W^T dL/dz``. The sign is the official ``torch.ge(g, 0)`` mapped to {-1, +1} (+1 at
0), divided by the per-channel ``std`` (axis 1 of ``x``), and ``x' = x - eps * sign / std``;
the score is the largest softmax probability of ``z(x') / T``.

Multi-label form (deeplearning-wisc/multi-label-ood ``lib.py``, ``get_odin_scores``): labels
``y_c = 1[sigmoid(z_c / T) >= 1/2] = 1[z_c >= 0]``, the loss is the binary cross-entropy of the
untempered ``z`` against ``y`` (``dl_c/dz_c = sigmoid(z_c) - y_c``), kept only for the class of
the largest sigmoid ("max") or summed over classes ("sum"); the score is the max or the sum of
``sigmoid(z(x') / T)``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

Array = np.ndarray


def softmax(z: Array) -> Array:
    """Row-wise softmax, shifted by the row maximum."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def logits(weight: Array, bias: Array, x: Array) -> Array:
    """``z = W vec(x) + b`` for inputs (N, ...)."""
    return x.reshape(len(x), -1) @ weight.T + bias


def softmax_gradient(weight: Array, bias: Array, x: Array, temperature: float) -> Array:
    """``d/dx -log softmax(z / T)_y`` with ``y = argmax z``, shaped like ``x``."""
    z = logits(weight, bias, x)
    onehot = np.zeros_like(z)
    onehot[np.arange(len(z)), np.argmax(z, axis=1)] = 1.0
    dz = (softmax(z / temperature) - onehot) / temperature
    return (dz @ weight).reshape(x.shape)


def sigmoid_gradient(weight: Array, bias: Array, x: Array, aggregation: str) -> Array:
    """``d/dx`` of the multi-label loss (BCE of ``z`` against ``1[z >= 0]``), shaped like ``x``."""
    z = logits(weight, bias, x)
    dz = expit(z) - (z >= 0)
    if aggregation == "max":
        keep = np.zeros_like(z)
        keep[np.arange(len(z)), np.argmax(z, axis=1)] = 1.0
        dz = dz * keep
    return (dz @ weight).reshape(x.shape)


def sign_ge(gradient: Array) -> Array:
    """+1 where the gradient is >= 0, -1 elsewhere."""
    return np.where(gradient >= 0, 1.0, -1.0)


def perturb(
    x: Array, gradient: Array, epsilon: float, std: float | tuple[float, ...] | None
) -> Array:
    """``x - eps * sign_ge(g) / std``, ``std`` per channel along axis 1."""
    step = sign_ge(gradient)
    if isinstance(std, tuple):
        step = step / np.asarray(std).reshape((1, -1) + (1,) * (x.ndim - 2))
    elif std is not None:
        step = step / std
    return x - epsilon * step


def odin(
    weight: Array,
    bias: Array,
    x: Array,
    *,
    temperature: float,
    epsilon: float,
    std: float | tuple[float, ...] | None = None,
    activation: str = "softmax",
    aggregation: str = "max",
) -> Array:
    """ODIN scores of the linear model ``(weight, bias)`` on inputs ``x``, float64."""
    weight, bias, x = (np.asarray(a, dtype=np.float64) for a in (weight, bias, x))
    if activation == "softmax":
        gradient = softmax_gradient(weight, bias, x, temperature)
    else:
        gradient = sigmoid_gradient(weight, bias, x, aggregation)
    z = logits(weight, bias, perturb(x, gradient, epsilon, std)) / temperature
    if activation == "softmax":
        return softmax(z).max(axis=1)
    probabilities = expit(z)
    return probabilities.max(axis=1) if aggregation == "max" else probabilities.sum(axis=1)
