"""Scores read directly from the logits."""

from __future__ import annotations

from torch import Tensor

from oodscore.scorers.base import Scorer, register_scorer


def max_logit_score(logits: Tensor) -> Tensor:
    r"""The largest logit $\max_c f_c$."""
    return logits.amax(dim=1)


@register_scorer("max_logit")
class MaxLogit(Scorer):
    r"""Maximum logit (Hendrycks et al., ICML 2022).

    From "Scaling out-of-distribution detection for real-world settings".

    $$ S(x) = \max_c f_c(x) $$

    Unlike MSP it keeps the scale of the logits, which separates OOD inputs better when
    there are many classes. Also the "MaxLogit" baseline of the JointEnergy paper's table
    (``deeplearning-wisc/multi-label-ood``, ``lib.py``, ``ood == "logit"``, ``method == "max"``).

    Example:
        >>> import torch
        >>> from oodscore import MaxLogit
        >>> MaxLogit()(torch.tensor([[1.0, 5.0, -2.0]]))
        tensor([5.])
    """

    def score(self, logits: Tensor) -> Tensor:
        """Maximum logit of checked logits (N, C)."""
        return max_logit_score(logits)
