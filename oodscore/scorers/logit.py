"""Scores read directly from the logits."""

from __future__ import annotations

from torch import Tensor

from oodscore.functional.logit import max_logit_score
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

    def score(self, logits: Tensor) -> Tensor:
        """Maximum logit of checked logits (N, C)."""
        return max_logit_score(logits)
