"""Scores read directly from the logits."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from oodscore.functional.logit import max_logit_score, sum_logit_score
from oodscore.scorers.base import Scorer, register_scorer


@register_scorer("max_logit")
class MaxLogit(Scorer):
    r"""Maximum logit: keeps the logits' scale, which MSP normalizes away.

    $$ S(x) = \max_c f_c(x) $$

    Examples:
        >>> import torch
        >>> from oodscore import MaxLogit
        >>> MaxLogit()(torch.tensor([[1.0, 5.0, -2.0]]))
        tensor([5.])

    Source: Hendrycks et al., ICML 2022; "Scaling out-of-distribution detection".
    """

    multilabel: ClassVar[bool] = True

    def score(self, logits: Tensor) -> Tensor:
        """Maximum logit of checked logits (N, C)."""
        return max_logit_score(logits)


@register_scorer("sum_logit")
class SumLogit(Scorer):
    r"""Sum of the logits of a multi-label (sigmoid) classifier: the JointEnergy paper's baseline.

    $$ S(x) = \sum_{c=1}^{C} f_c(x) $$

    Every label counts, the confident ones and the rejected ones alike (a label logit of
    -20 lowers the score by 20, where it adds almost nothing to `JointEnergy`). Summed in
    float64, returned in the dtype of the logits.

    Examples:
        >>> import torch
        >>> from oodscore import SumLogit
        >>> SumLogit()(torch.tensor([[1.0, 5.0, -2.0], [1e4, -1e4, 0.5]]))
        tensor([4.0000, 0.5000])

    Source: Wang, Liu, Bocchieri & Li, NeurIPS 2021; ``deeplearning-wisc/multi-label-ood``.
    """

    multilabel: ClassVar[bool] = True

    def score(self, logits: Tensor) -> Tensor:
        """Sum of checked logits (N, C)."""
        return sum_logit_score(logits)
