r"""Outlier exposure: teach the classifier to be uncertain on auxiliary outliers."""

from __future__ import annotations

from typing import get_args

from torch import Tensor

from oodscore._arrays import promote, saturate
from oodscore._validation import LOSS_SCALE, check_float_matrix
from oodscore.functional.outlier_exposure import OutlierTarget, outlier_exposure_loss
from oodscore.regularizers.base import Regularizer, register_regularizer

_TARGETS: tuple[str, ...] = get_args(OutlierTarget)


@register_regularizer("outlier_exposure")
class OutlierExposureLoss(Regularizer):
    r"""Outlier exposure: cross-entropy from the uniform distribution to the outliers' softmax.

    $$ \mathcal{L}_{\text{OE}} = \lambda \, \mathbb{E}_{\tilde x \sim \text{outliers}}
       \Big[ \log \sum_{c=1}^{C} e^{f_c(\tilde x)} - \frac{1}{C} \sum_{c=1}^{C} f_c(\tilde x)
       \Big] $$

    smallest, $\log C$, when all logits of the outlier are equal. ``target="zeros"`` is the
    multi-label form for sigmoid (BCE-trained) heads: every label of an outlier pushed toward
    0, $\lambda \frac{1}{MC}\sum_{j,c} -\log(1 - \sigma(f_c(\tilde x_j)))$ (EDGE's
    $\mathcal{L}_{\text{conf}}$).

    After each call, `last_terms` holds ``outlier_exposure`` (the unweighted loss: the
    mean cross-entropy to the uniform distribution, or the mean BCE toward 0) and
    ``weight``.

    Args:
        weight: $\lambda$ in $[0, 10^6]$ (official 0.5). Every finite logit gives a finite
            loss and finite gradients; a loss beyond the dtype (logits near 1e38) saturates
            at its largest finite value, without gradient.
        target: ``"uniform"`` (softmax, the paper) or ``"zeros"`` (multi-label BCE).
        validate_args: Check the inputs' values on every call (see `oodscore.Regularizer`).

    Examples:
        >>> import torch
        >>> from oodscore import OutlierExposureLoss
        >>> reg = OutlierExposureLoss(weight=1.0)
        >>> reg(logits_out=torch.tensor([[0.0, 0.0], [2.0, 0.0]]))  # (log 2 + 1.1269) / 2
        tensor(0.9101)
        >>> OutlierExposureLoss(target="zeros", weight=1.0)(logits_out=torch.zeros(1, 2))
        tensor(0.6931)

    Source: Hendrycks, Mazeika & Dietterich, ICLR 2019; ``hendrycks/outlier-exposure``.
    """

    term_names = ("outlier_exposure", "weight")

    def __init__(
        self,
        *,
        weight: float = 0.5,
        target: OutlierTarget = "uniform",
        validate_args: bool = True,
    ) -> None:
        super().__init__(validate_args=validate_args)
        self.weight = LOSS_SCALE.check(weight, "weight")
        if target not in _TARGETS:
            raise ValueError(
                f"Expected `target` to be one of {', '.join(map(repr, _TARGETS))}, got {target!r}."
            )
        self.target: OutlierTarget = target

    def forward(self, *, logits_out: Tensor) -> Tensor:
        """The weighted loss of the outlier batch's logits (M, C), M >= 1.

        Raises:
            ValueError: If ``logits_out`` is empty, not 2-D or not finite.
            TypeError: If it is not a floating-point torch tensor.
        """
        check_float_matrix(logits_out, "logits_out", columns="C", finite=self.validate_args)
        term = outlier_exposure_loss(promote(logits_out), target=self.target)
        loss = saturate(self.weight * term)  # finite for any finite logits
        self._store_terms(loss, {"outlier_exposure": term, "weight": self.weight})
        return loss
