"""Float64 NumPy/scikit-learn reference for ViM, written from the paper and the official pipeline.

Wang, Li, Feng & Zhang, CVPR 2022 (``haoqiwang/vim``, ``benchmark.py``): the origin
u = -pinv(W) b, ``EmpiricalCovariance(assume_centered=True)`` of the fit features minus u, its
eigenvectors sorted by decreasing eigenvalue, the null space NS = the vectors after the first
DIM, alpha = mean max logit / mean ||(x - u) NS|| over the fit set, and the score
logsumexp(logits) - alpha ||(x - u) NS||. The official code calls ``np.linalg.eig``; this
reference calls ``np.linalg.eigh`` by default (``solver="eig"`` reproduces the official call).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp
from sklearn.covariance import EmpiricalCovariance

Array = np.ndarray


def principal_dimension(num_features: int) -> int:
    """The official DIM rule (``benchmark.py``, ViM section)."""
    if num_features >= 2048:
        return 1000
    if num_features >= 768:
        return 512
    return num_features // 2


@dataclass
class ViMFit:
    """The fitted ViM statistics."""

    origin: Array
    null_space: Array
    alpha: float
    eigenvalues: Array  # descending

    def residual(self, features: Array) -> Array:
        return np.linalg.norm(
            (np.asarray(features, np.float64) - self.origin) @ self.null_space, axis=-1
        )


def fit_vim(
    features: Array,
    weight: Array,
    bias: Array | None,
    dim: int | None = None,
    *,
    solver: str = "eigh",
) -> ViMFit:
    """The official fit, in float64."""
    features = np.asarray(features, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    if bias is None:
        origin = np.zeros(weight.shape[1])
        bias64 = np.zeros(weight.shape[0])
    else:
        bias64 = np.asarray(bias, dtype=np.float64)
        origin = -np.matmul(np.linalg.pinv(weight), bias64)
    if dim is None:
        dim = principal_dimension(features.shape[1])
    covariance = EmpiricalCovariance(assume_centered=True).fit(features - origin).covariance_
    if solver == "eig":
        values, vectors = np.linalg.eig(covariance)
        values, vectors = values.real, vectors.real
    else:
        values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(-values)
    space = np.ascontiguousarray(vectors.T[order[dim:]].T)
    logits = features @ weight.T + bias64
    residual = np.linalg.norm((features - origin) @ space, axis=-1)
    alpha = float(logits.max(axis=-1).mean() / residual.mean())
    return ViMFit(origin, space, alpha, values[order])


def vim_scores(
    fit_features: Array,
    features: Array,
    weight: Array,
    bias: Array | None,
    dim: int | None = None,
    *,
    solver: str = "eigh",
) -> Array:
    """logsumexp_c f_c(x) - alpha ||(x - u) NS|| (higher = more in-distribution)."""
    fitted = fit_vim(fit_features, weight, bias, dim, solver=solver)
    features = np.asarray(features, dtype=np.float64)
    logits = features @ np.asarray(weight, np.float64).T
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    return logsumexp(logits, axis=-1) - fitted.alpha * fitted.residual(features)
