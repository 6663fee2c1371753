r"""Gaussian class models of features: class means, one tied covariance, Mahalanobis distances."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from torch import Tensor

from oodscore._arrays import FIT_CHUNK_ELEMENTS, compute_dtype, rows_per_chunk
from oodscore._wording import option


def class_means(
    features: Tensor, rows: Tensor, classes: Tensor, num_classes: int
) -> tuple[Tensor, Tensor]:
    r"""Class means $\mu_c = \frac{1}{N_c}\sum_{r: c_r = c} x_{i_r}$ in float64, and the counts.

    Args:
        features: Features (N, D), any floating dtype.
        rows: (R,) row index of each sample-class pair.
        classes: (R,) class id of each pair.
        num_classes: C.

    Returns:
        Means (C, D) float64 and counts (C,) float64, accumulated chunk by chunk.
    """
    dimension = features.shape[1]
    sums = features.new_zeros((num_classes, dimension), dtype=torch.float64)
    for start, stop, chunk in _chunks(features, rows):
        sums.index_add_(0, classes[start:stop].to(sums.device), chunk.to(torch.float64))
    counts = torch.bincount(classes, minlength=num_classes).to(sums)
    return sums / counts[:, None], counts


def tied_covariance(features: Tensor, rows: Tensor, classes: Tensor, means: Tensor) -> Tensor:
    r"""Biased tied covariance $\frac{1}{R}\sum_r (x_{i_r} - \mu_{c_r})(x_{i_r} - \mu_{c_r})^\top$.

    Each sample-class pair contributes its row centred by its class mean (a multi-label
    sample once per positive label). Two passes, after the means are known, so there is no
    cancellation of $E[xx^\top] - \mu\mu^\top$: each chunk is centred in float64, its
    product is taken in the compute dtype of the features (`oodscore._arrays.compute_dtype`:
    float32 for float32 and half-precision features, float64 for float64) and accumulated in
    float64. Centring first keeps the float32 product accurate to float32 precision relative
    to the spread of the data, whatever its offset.
    """
    dimension = features.shape[1]
    product_dtype = compute_dtype(features.dtype, from_numpy=False)
    scatter = means.new_zeros((dimension, dimension))
    for start, stop, chunk in _chunks(features, rows):
        centred = chunk.to(torch.float64, copy=True)
        centred -= means[classes[start:stop].to(means.device)]
        if product_dtype == torch.float64:
            scatter.addmm_(centred.T, centred)
        else:
            low = centred.to(product_dtype)
            scatter += (low.T @ low).to(torch.float64)
    return scatter / len(rows)


def whitening(covariance: Tensor, shrinkage: float | None = None) -> tuple[Tensor, float]:
    r"""A matrix $W$ with $W W^\top = \Sigma_s^{-1}$, and the shrinkage $s$ used.

    $$ \Sigma_s = (1 - s)\,\Sigma + s\,\frac{\operatorname{tr}\Sigma}{D}\,I $$

    ``shrinkage=None`` uses $s = 0$ unless $\Sigma$ is singular (smallest eigenvalue at most
    $D \varepsilon$ times the largest, $\varepsilon$ the float64 epsilon), then $s = 10^{-6}$
    with a warning. From $\Sigma_s = V \Lambda V^\top$: $W = V \Lambda^{-1/2}$, so that
    $(x - \mu)^\top \Sigma_s^{-1} (x - \mu) = \lVert (x - \mu)^\top W \rVert^2$.

    Raises:
        ValueError: If $\operatorname{tr}\Sigma = 0$ (the features do not vary at all).
    """
    dimension = covariance.shape[0]
    trace = float(torch.trace(covariance))
    if not trace > 0:
        raise ValueError(
            "Expected `features` that vary within their classes, got a covariance of trace 0 "
            "(every feature is constant within each class): no Mahalanobis distance exists."
        )
    values, vectors = torch.linalg.eigh(covariance)
    if shrinkage is None:
        singular = float(values[0]) <= dimension * torch.finfo(torch.float64).eps * float(
            values[-1]
        )
        shrinkage = 1e-6 if singular else 0.0
        if singular:
            warnings.warn(
                f"The tied covariance of the features is singular (D = {dimension}, smallest "
                f"eigenvalue {float(values[0]):.3g}, largest {float(values[-1]):.3g}); it is "
                f"shrunk toward the identity with shrinkage = {shrinkage:g}. "
                + option("Pass `shrinkage=`", "Give the parameter (NAME:shrinkage=VALUE)")
                + " to choose the value and silence this warning.",
                UserWarning,
                stacklevel=4,
            )
    if shrinkage:
        values = (1 - shrinkage) * values + shrinkage * trace / dimension
    return vectors * values.rsqrt(), shrinkage


def gaussian_model(
    features: Tensor,
    rows: Tensor,
    classes: Tensor,
    num_classes: int,
    shrinkage: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Class means (C, D) and the `whitening` (D, D) of the tied covariance, in float64."""
    means, _ = class_means(features, rows, classes, num_classes)
    whiten, _ = whitening(tied_covariance(features, rows, classes, means), shrinkage)
    return means, whiten


def squared_mahalanobis(features: Tensor, means: Tensor, whiten: Tensor) -> Tensor:
    r"""Squared distances $d_c(x) = (x - \mu_c)^\top \Sigma^{-1} (x - \mu_c)$, shape (N, C).

    Computed in the dtype of ``whiten`` (float64) on whitened features $z = x W$ and means
    $m = \mu W$: $d_c = \lVert z - m_c \rVert^2$.
    """
    z = features.to(whiten.dtype) @ whiten
    m = means @ whiten
    distances = (z * z).sum(dim=1, keepdim=True) - 2 * (z @ m.T) + (m * m).sum(dim=1)
    return distances.clamp_min(0)


def _chunks(features: Tensor, rows: Tensor) -> Iterator[tuple[int, int, Tensor]]:
    """``(start, stop, features[rows[start:stop]])`` pieces of about `FIT_CHUNK_ELEMENTS` values.

    When ``rows`` is every row once, in order (single-label and unlabelled data), the pieces
    are slices of ``features`` (views), not gathered copies.
    """
    size = rows_per_chunk(features, FIT_CHUNK_ELEMENTS)
    identity = len(rows) == features.shape[0] and bool(
        torch.equal(rows.cpu(), torch.arange(len(rows)))
    )
    for start in range(0, len(rows), size):
        stop = min(start + size, len(rows))
        if identity:
            yield start, stop, features[start:stop]
        else:
            yield start, stop, features[rows[start:stop].to(features.device)]
