r"""Virtual-logit matching (ViM): the residual of features outside their principal subspace."""

from __future__ import annotations

import torch
from torch import Tensor

from oodscore._arrays import FIT_CHUNK_ELEMENTS, row_slices


def vim_origin(weight: Tensor, bias: Tensor | None) -> Tensor:
    r"""The origin $u = -W^{+} b$ of the feature space, in float64 (zero without a bias).

    $W^{+}$ is the pseudo-inverse of the head's weight (C, D); $u$ is the feature the
    head maps closest (least squares) to all-zero logits, exactly to them when
    $\operatorname{rank} W = C$.
    """
    if bias is None:
        return weight.new_zeros(weight.shape[1], dtype=torch.float64)
    inverse: Tensor = torch.linalg.pinv(weight.to(torch.float64))
    return -(inverse @ bias.to(torch.float64))


def principal_dimension(num_features: int) -> int:
    r"""The official principal dimension: 1000 if D >= 2048, 512 if D >= 768, else D // 2."""
    if num_features >= 2048:
        return 1000
    if num_features >= 768:
        return 512
    return num_features // 2


def centred_covariance(features: Tensor, origin: Tensor) -> Tensor:
    r"""$\Sigma = \frac{1}{N}\sum_i (x_i - u)(x_i - u)^\top$ (D, D) in float64.

    Accumulated over row chunks of about `FIT_CHUNK_ELEMENTS` values, each converted to
    float64 and centred at $u$ on its own: memory $O(D^2)$ plus one chunk.
    """
    dimension = features.shape[1]
    scatter = origin.new_zeros((dimension, dimension))
    for _, chunk in row_slices(features, FIT_CHUNK_ELEMENTS):
        centred = chunk.to(torch.float64) - origin
        scatter.addmm_(centred.T, centred)
    return scatter / features.shape[0]


def null_space(covariance: Tensor, dim: int) -> Tensor:
    r"""The eigenvectors (D, D - dim) of the D - ``dim`` smallest eigenvalues of ``covariance``.

    ``torch.linalg.eigh`` (symmetric solver, real and orthonormal output, eigenvalues in
    ascending order) in the dtype of ``covariance``: the first D - ``dim`` columns.
    """
    vectors: Tensor = torch.linalg.eigh(covariance).eigenvectors
    return vectors[:, : covariance.shape[0] - dim]


def residual_norm(features: Tensor, origin: Tensor, space: Tensor) -> Tensor:
    r"""$r(x) = \lVert (x - u)^\top N \rVert_2$ (N,), in the dtype of ``space`` (float64).

    The residual is the small part of $x - u$ left after removing the principal directions,
    so the projection runs in float64 to avoid cancellation.
    """
    centred = features.to(space.dtype) - origin
    norm: Tensor = torch.linalg.vector_norm(centred @ space, dim=1)
    return norm


def vim_alpha(
    features: Tensor, weight: Tensor, bias: Tensor | None, origin: Tensor, space: Tensor
) -> tuple[Tensor, Tensor]:
    r"""$\alpha = \overline{\max_c f_c(x)} / \overline{r(x)}$ over the fit set, and $\overline{r}$.

    Both means run over the same rows, chunk by chunk, in float64 (logits $f = W x + b$).

    Returns:
        $\alpha$ and the mean residual norm $\overline{r}$, float64 scalars.
    """
    weight = weight.to(torch.float64)
    bias = None if bias is None else bias.to(torch.float64)
    top = origin.new_zeros(())
    residual = origin.new_zeros(())
    for _, chunk in row_slices(features, FIT_CHUNK_ELEMENTS):
        rows = chunk.to(torch.float64)
        top += torch.nn.functional.linear(rows, weight, bias).amax(dim=1).sum()
        residual += residual_norm(rows, origin, space).sum()
    return top / residual, residual / features.shape[0]


def vim_score(logits: Tensor, residual: Tensor, alpha: Tensor) -> Tensor:
    r"""ViM score $\log \sum_c e^{f_c} - \alpha\, r(x)$: energy minus the virtual logit.

    Computed in the dtype of ``residual`` (float64).
    """
    return torch.logsumexp(logits.to(residual.dtype), dim=1) - alpha * residual
