"""ViM: the energy of the logits minus a virtual logit read off the residual of the features."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from oodscore._validation import check_int
from oodscore.functional.vim import (
    centred_covariance,
    null_space,
    principal_dimension,
    residual_norm,
    vim_alpha,
    vim_origin,
    vim_score,
)
from oodscore.scorers.base import ArrayLike, FittedScorer, register_scorer
from oodscore.scorers.head import HeadWeight, UsesHead

DEGENERATE_RESIDUAL = 1e-9
"""Mean residual norm, relative to the RMS norm of ``x - u``, below which fitting refuses."""


@register_scorer("vim")
class ViM(UsesHead, FittedScorer):
    r"""ViM (virtual-logit matching): energy of the logits minus the scaled residual norm.

    $$ S(x) = \log \sum_c e^{f_c(x)} - \alpha \,\lVert (x - u)^\top N \rVert_2 $$

    with logits $f = W x + b$ of the classifier head, origin $u = -W^{+} b$, and $N$ the
    eigenvectors of the D - ``dim`` smallest eigenvalues of
    $\Sigma = \frac{1}{N_{\text{fit}}}\sum_i (x_i - u)(x_i - u)^\top$ (the complement of the
    principal subspace). ``fit(features)`` takes ID features (targets are ignored) and sets
    $\alpha = \overline{\max_c f_c} / \overline{\lVert (x - u)^\top N \rVert}$, both means over
    the fit set. $\Sigma$, its eigendecomposition (``eigh``), $u$, $\alpha$ and the residual
    norm are computed in float64; the logits in the dtype of the features.

    Args:
        dim: The principal dimension, an integer in [1, D); ``None``: 1000 if D >= 2048, 512
            if D >= 768, else D // 2 (the official rule).
        head: The classifier head, an ``nn.Linear`` (see `oodscore.scorers.head.UsesHead`).
        weight: Or its weight (C, D) ...
        bias: ... and bias (C,) or ``None`` (then $u = 0$).

    Examples:
        >>> import torch
        >>> from oodscore.scorers.vim import ViM
        >>> g = torch.Generator().manual_seed(0)
        >>> weight = torch.eye(2, 4)
        >>> features = torch.randn(500, 4, generator=g) * torch.tensor([3.0, 3.0, 0.1, 0.1])
        >>> scorer = ViM(dim=2, weight=weight, bias=torch.zeros(2)).fit(features)
        >>> scorer(torch.tensor([[3.0, 0.0, 0.0, 0.0], [3.0, 0.0, 3.0, 0.0]]))
        tensor([  2.9956, -39.7086])

    Source: Wang, Li, Feng & Zhang, CVPR 2022; ``haoqiwang/vim``.
    """

    state_names: ClassVar[tuple[str, ...]] = ("origin", "null_space", "alpha")

    def __init__(
        self,
        *,
        dim: int | None = None,
        head: nn.Linear | None = None,
        weight: HeadWeight | None = None,
        bias: HeadWeight | None = None,
    ) -> None:
        self.dim = None if dim is None else check_int(dim, "dim")
        self._init_head(head, weight, bias)

    def fit_state(self, features: Tensor, targets: ArrayLike | None) -> dict[str, Tensor]:
        """The origin, the null space of the principal subspace and alpha; targets are ignored."""
        rows, dimension = features.shape
        like = features.new_zeros((), dtype=torch.float64).expand(rows, dimension)
        weight, bias = self.head_parameters(like)
        if self.dim is None:
            dim = principal_dimension(dimension)
        elif self.dim >= dimension:
            raise ValueError(
                f"Expected `dim` to be less than the feature size D = {dimension}, "
                f"got dim={self.dim}."
            )
        else:
            dim = self.dim
        origin = vim_origin(weight, bias)
        covariance = centred_covariance(features, origin)
        space = null_space(covariance, dim)
        alpha, mean_residual = vim_alpha(features, weight, bias, origin, space)
        spread = float(torch.trace(covariance).sqrt())
        if not float(mean_residual) > DEGENERATE_RESIDUAL * spread:
            raise ValueError(
                f"Expected fit features with a residual outside the principal subspace of "
                f"dim={dim}, got a mean residual norm of {float(mean_residual):.3g} (RMS norm "
                f"of x - u: {spread:.3g}): the N = {rows} fit rows lie in that subspace (they "
                "span at most N directions from u). Fit on more features than `dim`, or pass "
                "a smaller `dim`."
            )
        return {"origin": origin, "null_space": space, "alpha": alpha}

    def check_state(self, state: dict[str, Tensor]) -> None:
        """Check that the origin is (D,), the null space (D, K) with 1 <= K <= D, alpha a scalar."""
        origin, space, alpha = state["origin"], state["null_space"], state["alpha"]
        dimension = origin.shape[-1]
        if (
            origin.ndim != 1
            or space.ndim != 2
            or space.shape[0] != dimension
            or not 1 <= space.shape[1] <= dimension
            or alpha.ndim != 0
        ):
            raise ValueError(
                "Expected `state['origin']` of shape (D,), `state['null_space']` of shape "
                "(D, K) with 1 <= K <= D and `state['alpha']` a scalar, got "
                f"{tuple(origin.shape)}, {tuple(space.shape)} and {tuple(alpha.shape)}."
            )

    def score(self, x: Tensor) -> Tensor:
        """ViM score of checked features (N, D)."""
        state = self.state_on(x.device)
        residual = residual_norm(x, state["origin"], state["null_space"])
        return vim_score(self.head_logits(x), residual, state["alpha"]).to(x.dtype)
