"""Scores read from the per-label sigmoid probabilities of a multi-label classifier."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from oodscore.functional.sigmoid import max_sigmoid_score, sum_sigmoid_score
from oodscore.scorers.base import Scorer, register_scorer


@register_scorer("max_sigmoid")
class MaxSigmoid(Scorer):
    r"""Largest label probability of a multi-label (sigmoid) classifier.

    $$ S(x) = \max_c \sigma(f_c(x)) = \sigma\big(\max_c f_c(x)\big), \qquad
       \sigma(t) = \frac{1}{1 + e^{-t}} $$

    It ranks inputs as `MaxLogit` does, except for the ties that rounding creates near 1:
    computed in float64 and rounded once, a float32 score is exactly 1.0 for every input
    whose largest logit exceeds 17.33 (a float64 score, above 36.74). Pass float64 logits
    for the official code's values, or use `MaxLogit` for the same ranking without ties.

    Examples:
        >>> import torch
        >>> from oodscore import MaxSigmoid
        >>> MaxSigmoid()(torch.tensor([[0.0, 2.0, -2.0], [-1e4, -3.0, -5.0]]))
        tensor([0.8808, 0.0474])

    Source: Wang, Liu, Bocchieri & Li, NeurIPS 2021; ``deeplearning-wisc/multi-label-ood``.
    """

    multilabel: ClassVar[bool] = True

    def score(self, logits: Tensor) -> Tensor:
        """Largest sigmoid probability of checked logits (N, C)."""
        return max_sigmoid_score(logits)


@register_scorer("sum_sigmoid")
class SumSigmoid(Scorer):
    r"""Sum of the label probabilities of a multi-label (sigmoid) classifier.

    $$ S(x) = \sum_{c=1}^{C} \sigma(f_c(x)) \in [0, C] $$

    The expected number of positive labels under the model. Each term saturates at 1
    (`JointEnergy`'s softplus terms keep growing). Computed in float64, returned in the
    dtype of the logits.

    Examples:
        >>> import torch
        >>> from oodscore import SumSigmoid
        >>> SumSigmoid()(torch.tensor([[0.0, 2.0, -2.0], [1e4, 1e4, -1e4]]))
        tensor([1.5000, 2.0000])

    Source: Wang, Liu, Bocchieri & Li, NeurIPS 2021; ``deeplearning-wisc/multi-label-ood``.
    """

    multilabel: ClassVar[bool] = True

    def score(self, logits: Tensor) -> Tensor:
        """Sum of the sigmoid probabilities of checked logits (N, C)."""
        return sum_sigmoid_score(logits)
