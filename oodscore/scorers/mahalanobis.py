"""Mahalanobis scores of features: class Gaussians with one tied covariance, plain and relative."""

from __future__ import annotations

from numbers import Real
from typing import ClassVar, Literal, get_args

from torch import Tensor

from oodscore._validation import Interval
from oodscore.functional.mahalanobis import gaussian_model, squared_mahalanobis
from oodscore.scorers.base import ArrayLike, FittedScorer, register_scorer
from oodscore.scorers.membership import Membership, class_membership

Aggregation = Literal["max", "sum"]
_UNIT = Interval(Real, 0, 1, closed="both")


def _check_shrinkage(shrinkage: object) -> float | None:
    if shrinkage is None:
        return None
    return _UNIT.check(shrinkage, "shrinkage")


def fit_gaussians(
    features: Tensor, membership: Membership, shrinkage: float | None
) -> tuple[Tensor, Tensor]:
    """Class means (C, D) and the whitening (D, D) of the tied covariance of ``membership``."""
    return gaussian_model(
        features, membership.rows, membership.classes, membership.num_classes, shrinkage
    )


@register_scorer("mahalanobis")
class Mahalanobis(FittedScorer):
    r"""Mahalanobis score: distance to the closest class Gaussian with one tied covariance.

    $$ S(x) = -\min_c\, (x - \mu_c)^\top \Sigma^{-1} (x - \mu_c) $$

    with $\mu_c$ the class means of the ID features and $\Sigma$ their tied (biased)
    covariance. ``fit(features, targets)`` takes class ids (N,), or multi-hot labels (N, C)
    for the multi-label form of the JointEnergy paper's code (a sample counts in the mean
    and the covariance of every label it has), or ``None`` for one Gaussian. A singular
    $\Sigma$ is shrunk toward the identity (see ``shrinkage``). No input perturbation.

    Args:
        aggregation: ``"max"``: $-\min_c d_c$ (the paper); ``"sum"``: $-\sum_c d_c$ (the
            multi-label code's ``sum`` method).
        shrinkage: $s \in [0, 1]$ in $\Sigma_s = (1 - s)\Sigma + s \frac{\operatorname{tr}
            \Sigma}{D} I$; ``None``: 0, or $10^{-6}$ with a warning when $\Sigma$ is singular.

    Examples:
        >>> import torch
        >>> from oodscore import Mahalanobis
        >>> g = torch.Generator().manual_seed(0)
        >>> features = torch.cat([torch.randn(100, 2, generator=g) - 3,
        ...                       torch.randn(100, 2, generator=g) + 3])
        >>> scorer = Mahalanobis().fit(features, torch.arange(200) // 100)
        >>> scorer(torch.tensor([[-3.0, -3.0], [0.0, 0.0], [10.0, -10.0]]))
        tensor([-8.8814e-04, -1.5217e+01, -2.2770e+02])

    Source: Lee, Lee, Lee & Shin, NeurIPS 2018; ``pokaxpoka/deep_Mahalanobis_detector``.
    """

    multilabel: ClassVar[bool] = True

    state_names: ClassVar[tuple[str, ...]] = ("means", "whitening")

    def __init__(self, *, aggregation: Aggregation = "max", shrinkage: float | None = None) -> None:
        if aggregation not in get_args(Aggregation):
            raise ValueError(f"Expected `aggregation` to be 'max' or 'sum', got {aggregation!r}.")
        self.aggregation: Aggregation = aggregation
        self.shrinkage = _check_shrinkage(shrinkage)

    def fit_state(self, features: Tensor, targets: ArrayLike | None) -> dict[str, Tensor]:
        """Class means and the whitening of the tied covariance."""
        membership = class_membership(targets, features.shape[0])
        means, whiten = fit_gaussians(features, membership, self.shrinkage)
        return {"means": means, "whitening": whiten}

    def check_state(self, state: dict[str, Tensor]) -> None:
        """Check that the means are (C, D) and the whitening (D, D)."""
        _check_gaussian(state["means"], state["whitening"], "means", "whitening")

    def score(self, x: Tensor) -> Tensor:
        """Mahalanobis score of checked features (N, D)."""
        state = self.state_on(x.device)
        distances = squared_mahalanobis(x, state["means"], state["whitening"])
        closest = distances.amin(dim=1) if self.aggregation == "max" else distances.sum(dim=1)
        return (-closest).to(x.dtype)


@register_scorer("relative_mahalanobis")
class RelativeMahalanobis(FittedScorer):
    r"""Relative Mahalanobis score: class distances minus the distance to one background Gaussian.

    $$ S(x) = -\min_c \big( d_c(x) - d_0(x) \big), \qquad
       d_0(x) = (x - \mu_0)^\top \Sigma_0^{-1} (x - \mu_0) $$

    with $d_c$ as in `Mahalanobis` and $\mu_0$, $\Sigma_0$ the mean and (biased) covariance of
    all ID features, labels ignored. Subtracting $d_0$ removes the directions every class
    shares, which helps near-OOD detection. Targets as for `Mahalanobis`; each $\Sigma$ gets
    the same shrinkage rule.

    Args:
        shrinkage: As for `Mahalanobis`, applied to both covariances.

    Examples:
        >>> import torch
        >>> from oodscore import RelativeMahalanobis
        >>> g = torch.Generator().manual_seed(0)
        >>> features = torch.cat([torch.randn(100, 2, generator=g) - 3,
        ...                       torch.randn(100, 2, generator=g) + 3])
        >>> scorer = RelativeMahalanobis().fit(features, torch.arange(200) // 100)
        >>> scorer(torch.tensor([[-3.0, -3.0], [0.0, 0.0]]))
        tensor([  0.9249, -15.2152])

    Source: Ren, Fort, Liu, Roy, Padhy & Lakshminarayanan, 2021 (arXiv 2106.09022).
    """

    multilabel: ClassVar[bool] = True

    state_names: ClassVar[tuple[str, ...]] = (
        "means",
        "whitening",
        "background_mean",
        "background_whitening",
    )

    def __init__(self, *, shrinkage: float | None = None) -> None:
        self.shrinkage = _check_shrinkage(shrinkage)

    def fit_state(self, features: Tensor, targets: ArrayLike | None) -> dict[str, Tensor]:
        """Class Gaussians and the background Gaussian of every sample."""
        membership = class_membership(targets, features.shape[0])
        means, whiten = fit_gaussians(features, membership, self.shrinkage)
        everything = class_membership(None, features.shape[0])
        background_mean, background_whiten = fit_gaussians(features, everything, self.shrinkage)
        return {
            "means": means,
            "whitening": whiten,
            "background_mean": background_mean,
            "background_whitening": background_whiten,
        }

    def check_state(self, state: dict[str, Tensor]) -> None:
        """Check the shapes of both Gaussians."""
        _check_gaussian(state["means"], state["whitening"], "means", "whitening")
        _check_gaussian(
            state["background_mean"],
            state["background_whitening"],
            "background_mean",
            "background_whitening",
        )
        if state["background_mean"].shape != (1, state["means"].shape[1]):
            raise ValueError(
                f"Expected `state['background_mean']` of shape (1, {state['means'].shape[1]}), "
                f"got {tuple(state['background_mean'].shape)}."
            )

    def score(self, x: Tensor) -> Tensor:
        """Relative Mahalanobis score of checked features (N, D)."""
        state = self.state_on(x.device)
        distances = squared_mahalanobis(x, state["means"], state["whitening"])
        background = squared_mahalanobis(x, state["background_mean"], state["background_whitening"])
        return -(distances - background).amin(dim=1).to(x.dtype)


def _check_gaussian(means: Tensor, whiten: Tensor, means_name: str, whiten_name: str) -> None:
    dimension = means.shape[-1]
    if means.ndim != 2 or whiten.shape != (dimension, dimension):
        raise ValueError(
            f"Expected `state[{means_name!r}]` of shape (C, D) and `state[{whiten_name!r}]` of "
            f"shape (D, D), got {tuple(means.shape)} and {tuple(whiten.shape)}."
        )
