"""Float64 NumPy/SciPy references for the Gaussian feature scorers, written from the definitions.

Mahalanobis: Lee et al., NeurIPS 2018 (class means, one tied biased covariance, the distance to the
closest mean), and the multi-label form of the JointEnergy paper's code
(deeplearning-wisc/multi-label-ood ``lib.py``: a sample counts once in the mean of every positive
label, and once per positive label in the covariance, centred by that label's mean; "sum" adds the
distances over the labels). Relative Mahalanobis: Ren et al. 2021 (arXiv 2106.09022), the distance
to the closest class minus the distance under one background Gaussian fitted on every sample.

The route is deliberately plain: memberships as index lists, the covariance summed block by block
as centred outer products, eigenvalues from ``scipy.linalg.eigvalsh`` and every distance from a
Cholesky solve (no explicit inverse), so it shares no step with a chunked, inverse-based route.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

Array = np.ndarray

SINGULAR_SHRINKAGE = 1e-6
EPS = float(np.finfo(np.float64).eps)


def memberships(targets: Array | None, num_samples: int) -> list[Array]:
    """The row indices of each class.

    ``None``: one class holding every row. 1-D integers: class ``c`` is ``targets == c`` for
    ``c`` in ``0..max``. 2-D multi-hot: class ``c`` is every row whose column ``c`` is positive.
    """
    if targets is None:
        return [np.arange(num_samples)]
    targets = np.asarray(targets)
    if targets.ndim == 1:
        ids = targets.astype(np.int64)
        return [np.flatnonzero(ids == c) for c in range(int(ids.max()) + 1)]
    labels = targets.astype(np.float64)
    return [np.flatnonzero(labels[:, c] > 0) for c in range(labels.shape[1])]


def biased_covariance(features: Array, groups: list[Array]) -> tuple[Array, Array]:
    """Class means and the tied covariance: Σ_c Σ_{i∈c} (x_i − μ_c)(x_i − μ_c)ᵀ / Σ_c N_c."""
    features = np.asarray(features, dtype=np.float64)
    dim = features.shape[1]
    means = np.empty((len(groups), dim))
    scatter = np.zeros((dim, dim))
    rows = 0
    for c, members in enumerate(groups):
        block = features[members]
        means[c] = block.sum(axis=0) / len(members)
        centred = block - means[c]
        for row in centred:  # outer products one row at a time: no Gram-matrix shortcut
            scatter += np.outer(row, row)
        rows += len(members)
    return means, scatter / rows


def shrinkage_for(covariance: Array, shrinkage: float | None) -> float:
    """The shrinkage actually used: the given one, else 0 or 1e-6 by the eigenvalue test."""
    if shrinkage is not None:
        return float(shrinkage)
    eigenvalues = scipy.linalg.eigvalsh(covariance)
    dim = covariance.shape[0]
    return 0.0 if eigenvalues[0] > dim * EPS * eigenvalues[-1] else SINGULAR_SHRINKAGE


def shrink(covariance: Array, shrinkage: float) -> Array:
    """(1 − s)·Σ + s·(trace(Σ)/D)·I."""
    dim = covariance.shape[0]
    return (1.0 - shrinkage) * covariance + shrinkage * (np.trace(covariance) / dim) * np.eye(dim)


@dataclass
class Gaussian:
    """Means (C, D) sharing one covariance; ``covariance`` is already shrunk."""

    means: Array
    covariance: Array
    shrinkage: float
    raw_covariance: Array

    @property
    def precision(self) -> Array:
        factor = scipy.linalg.cho_factor(self.covariance, lower=True)
        return scipy.linalg.cho_solve(factor, np.eye(self.covariance.shape[0]))

    def distances(self, features: Array) -> Array:
        """(N, C) squared distances (x − μ_c)ᵀ Σ_s⁻¹ (x − μ_c), each by a Cholesky solve."""
        features = np.asarray(features, dtype=np.float64)
        factor = scipy.linalg.cho_factor(self.covariance, lower=True)
        out = np.empty((features.shape[0], self.means.shape[0]))
        for c, mean in enumerate(self.means):
            diff = features - mean
            solved = scipy.linalg.cho_solve(factor, diff.T)
            out[:, c] = np.einsum("nd,dn->n", diff, solved)
        return out


def _gaussian(features: Array, groups: list[Array], shrinkage: float | None) -> Gaussian:
    means, covariance = biased_covariance(features, groups)
    if np.trace(covariance) == 0:
        raise ValueError("no variance")
    used = shrinkage_for(covariance, shrinkage)
    return Gaussian(means, shrink(covariance, used), used, covariance)


def fit_gaussians(
    features: Array, targets: Array | None = None, shrinkage: float | None = None
) -> Gaussian:
    """Class means and the shrunk tied covariance of the class-conditional Gaussians."""
    features = np.asarray(features, dtype=np.float64)
    return _gaussian(features, memberships(targets, features.shape[0]), shrinkage)


def fit_background(features: Array, shrinkage: float | None = None) -> Gaussian:
    """One Gaussian on every row (labels ignored): μ_0, Σ_0 with divisor N, its own shrinkage."""
    features = np.asarray(features, dtype=np.float64)
    return _gaussian(features, [np.arange(features.shape[0])], shrinkage)


def mahalanobis_scores(
    fit_features: Array,
    features: Array,
    targets: Array | None = None,
    *,
    aggregation: str = "max",
    shrinkage: float | None = None,
) -> Array:
    """−min_c d_c(x) ("max") or −Σ_c d_c(x) ("sum")."""
    distances = fit_gaussians(fit_features, targets, shrinkage).distances(features)
    if aggregation == "max":
        return -distances.min(axis=1)
    if aggregation == "sum":
        return -distances.sum(axis=1)
    raise ValueError(aggregation)


def relative_mahalanobis_scores(
    fit_features: Array,
    features: Array,
    targets: Array | None = None,
    *,
    shrinkage: float | None = None,
) -> Array:
    """−min_c (d_c(x) − d_0(x)), d_0 under the background Gaussian."""
    classes = fit_gaussians(fit_features, targets, shrinkage).distances(features)
    background = fit_background(fit_features, shrinkage).distances(features)
    return -(classes - background).min(axis=1)
