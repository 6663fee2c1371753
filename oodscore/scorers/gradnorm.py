"""GradNorm: the norm of the gradient of the last layer, from the features in closed form."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from oodscore._validation import TEMPERATURE
from oodscore.functional.gradnorm import gradnorm_score
from oodscore.scorers.base import InputKind, Scorer, register_scorer
from oodscore.scorers.head import HeadWeight, UsesHead


@register_scorer("gradnorm")
class GradNorm(UsesHead, Scorer):
    r"""GradNorm: the L1 norm of the gradient of the last layer's weight, in closed form.

    $$ S(h) = \Big\lVert \frac{\partial}{\partial W} \sum_{c=1}^{C}
       -\log \operatorname{softmax}\big(z/T\big)_c \Big\rVert_1
       = \frac{C}{T} \big\lVert \operatorname{softmax}(z/T) - \tfrac{1}{C} \big\rVert_1
       \lVert h \rVert_1, \qquad z = W h + b $$

    The loss is the cross-entropy to the uniform distribution times C (the official all-ones
    targets); its gradient is large for confident (ID) predictions and vanishes for a
    uniform one. The closed form equals the official per-sample backward pass exactly, for
    any batch size, from the features alone: it runs in `oodscore.evaluate`'s single
    forward pass. Scores features $h$ (N, D), the input of the classifier head.

    Args:
        temperature: $T \in [10^{-6}, 10^6]$ (default 1, the official).
        head: The classifier head, an ``nn.Linear`` (or ``weight=``/``bias=``).
        weight: The head's weight (C, D), a tensor or array, instead of ``head``.
        bias: The head's bias (C,), or ``None``.

    Examples:
        >>> import torch
        >>> from oodscore.scorers.gradnorm import GradNorm
        >>> scorer = GradNorm(weight=torch.eye(2), bias=torch.zeros(2))
        >>> scorer(torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.5, 0.0]]))
        tensor([5.4309, 0.0000, 0.2449])

    Source: Huang, Geng & Li, NeurIPS 2021; ``deeplearning-wisc/gradnorm_ood``.
    """

    input_kind: ClassVar[InputKind] = "features"

    def __init__(
        self,
        *,
        temperature: float = 1.0,
        head: nn.Linear | None = None,
        weight: HeadWeight | None = None,
        bias: HeadWeight | None = None,
    ) -> None:
        self.temperature = TEMPERATURE.check(temperature, "temperature")
        self._init_head(head, weight, bias)

    def score(self, x: Tensor) -> Tensor:
        """GradNorm of checked features (N, D)."""
        return gradnorm_score(self.head_logits(x), x, self.temperature)
