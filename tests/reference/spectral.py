"""Spectral norms and the normalizations built on them, in float64 from the definitions.

Miyato et al. (ICLR 2018) for W / σ(W); DUE / SNGP for the soft bound W / max(1, σ/c);
Gouk et al. (2021) for the norm of a convolution as an operator and the batch-norm bound.
Dense matrices and NumPy's SVD only: no power iteration here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def matrix_spectral_norm(weight: np.ndarray, dim: int = 0) -> float:
    """Largest singular value of ``weight`` reshaped to (weight.shape[dim], -1)."""
    matrix = np.moveaxis(np.asarray(weight, dtype=np.float64), dim, 0)
    matrix = matrix.reshape(matrix.shape[0], -1)
    return float(np.linalg.svd(matrix, compute_uv=False)[0])


def dense_matrix(
    linear_map: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int]
) -> np.ndarray:
    """The matrix of a linear map on inputs of shape ``input_shape``, column by column.

    Column i is the map applied to the i-th basis vector (in float64); the map's offset,
    the image of zero, is subtracted so that a layer with a bias gives its linear part.
    """
    size = int(np.prod(input_shape))
    with torch.no_grad():
        zero = torch.zeros(1, *input_shape, dtype=torch.float64)
        offset = linear_map(zero).reshape(-1).numpy()
        columns = []
        for i in range(size):
            basis = torch.zeros(size, dtype=torch.float64)
            basis[i] = 1.0
            columns.append(linear_map(basis.reshape(1, *input_shape)).reshape(-1).numpy() - offset)
    return np.stack(columns, axis=1)


def operator_norm(
    linear_map: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int]
) -> float:
    """Largest singular value of the dense matrix of ``linear_map``."""
    return float(np.linalg.svd(dense_matrix(linear_map, input_shape), compute_uv=False)[0])


def hard_normalize(weight: np.ndarray, sigma: float) -> np.ndarray:
    """W / σ."""
    return np.asarray(weight, dtype=np.float64) / sigma


def soft_normalize(weight: np.ndarray, sigma: float, coeff: float) -> np.ndarray:
    """W / max(1, σ / c)."""
    return np.asarray(weight, dtype=np.float64) / max(1.0, sigma / coeff)


def batch_norm_lipschitz(gamma: np.ndarray, running_var: np.ndarray, eps: float) -> float:
    """max_c |γ_c| / sqrt(running_var_c + eps): the Lipschitz constant of eval-mode BN."""
    gamma = np.asarray(gamma, dtype=np.float64)
    running_var = np.asarray(running_var, dtype=np.float64)
    return float(np.max(np.abs(gamma) / np.sqrt(running_var + eps)))


def tridiagonal_ones_norm(n: int) -> float:
    """σ of the n×n matrix with ones on three diagonals: 1 + 2 cos(π / (n + 1)).

    It is the matrix of a 1-D convolution with kernel [1, 1, 1] and zero padding 1.
    """
    return 1.0 + 2.0 * float(np.cos(np.pi / (n + 1)))


def circulant_norm(kernel: Sequence[float], n: int) -> float:
    """σ of a circular 1-D convolution on length n: the largest |DFT| of the padded kernel."""
    padded = np.zeros(n)
    padded[: len(kernel)] = kernel
    return float(np.max(np.abs(np.fft.fft(padded))))


def legacy_power_iteration(
    weight: np.ndarray, u: np.ndarray, v: np.ndarray, steps: int, eps: float = 1e-12
) -> tuple[np.ndarray, np.ndarray, float]:
    """The legacy hook's update, in float64: per step v ← Wᵀu/‖Wᵀu‖, then u ← Wv/‖Wv‖.

    ``weight`` is already a matrix (out, -1). Returns the new u, v and σ = uᵀWv.
    Norms are floored at ``eps`` as ``torch.nn.functional.normalize`` does.
    """
    matrix = np.asarray(weight, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    for _ in range(steps):
        v = matrix.T @ u
        v = v / max(float(np.linalg.norm(v)), eps)
        u = matrix @ v
        u = u / max(float(np.linalg.norm(u)), eps)
    return u, v, float(u @ matrix @ v)
