"""ASH and SCALE: per-sample pruning and scaling of the features, then the head and a score."""

from __future__ import annotations

from typing import ClassVar, Literal, get_args

from torch import Tensor, nn

from oodscore.functional.shaping import (
    ash_binarize,
    ash_prune,
    ash_sharpen,
    head_scores,
    kept_count,
    scale_exponent,
)
from oodscore.scorers.base import InputKind, Scorer, register_scorer
from oodscore.scorers.composed import ComposesLogitScorer
from oodscore.scorers.head import HeadWeight, UsesHead
from oodscore.scorers.react import PERCENT

Variant = Literal["p", "b", "s"]


class _KeepsTopActivations(UsesHead, ComposesLogitScorer, Scorer):
    """What ASH and SCALE share: features in, the per-row kept count k, the head's check."""

    input_kind: ClassVar[InputKind] = "features"
    multilabel: ClassVar[bool] = True  # with scorer="joint_energy"
    percentile: float

    def kept(self, dim: int) -> int:
        r"""$k = D - \operatorname{round}(D p / 100)$ (`oodscore.functional.shaping.kept_count`)."""
        return kept_count(dim, self.percentile)

    def check_input(self, features: Tensor) -> None:
        """Check that at least one activation is kept and that the head takes this width."""
        dim = features.shape[1]
        if self.kept(dim) < 1:
            raise ValueError(
                f"Expected `percentile` to keep at least one of the D = {dim} features, got "
                f"percentile={self.percentile!r}, which keeps k = D - round(D * percentile / "
                f"100) = {self.kept(dim)}; use a lower percentile."
            )
        self.head_parameters(features)


@register_scorer("ash")
class ASH(_KeepsTopActivations):
    r"""ASH: keep each sample's largest activations, reshape them, apply the head, score.

    With $k = D - \operatorname{round}(D p / 100)$, $T(h)$ the $k$ largest entries of $h$
    and $s_1 = \sum_d h_d$:

    $$ \text{P: } \tilde h_d = h_d [d \in T], \quad \text{B: } \tilde h_d = \frac{s_1}{k}
       [d \in T], \quad \text{S: } \tilde h_d = h_d [d \in T] \, e^{s_1 / s_2},
       \; s_2 = \sum_{d \in T} h_d $$

    then $S(h) = s(W \tilde h + b)$ with the logit scorer $s$ (energy by default). ASH
    assumes non-negative (post-ReLU) features. Nothing is fitted; the input is not
    modified. Where $s_2 = 0$ the factor is 1; rows whose scaled logits overflow float32
    are computed in float64.

    Args:
        variant: ``"s"`` (ASH-S, scale; default), ``"p"`` (prune only) or ``"b"``
            (binarize).
        percentile: $p$ in percent, in (0, 100): the share of each sample's activations
            pruned (default 90, the official ImageNet ResNet-50 configuration; pytorch-ood
            writes 0.9).
        scorer: The logit scorer: a registered name (``"energy"``, ``"msp"``,
            ``"joint_energy"``, ...) or a logit `oodscore.Scorer` instance.
        head: The classifier head, an ``nn.Linear`` (read at each call).
        weight: Or the head's weight (C, D), a tensor or an array.
        bias: And its bias (C,), or ``None``.

    Examples:
        >>> import torch
        >>> from oodscore import ASH
        >>> weight = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
        >>> h = torch.tensor([[1.0, 0.5, 0.25, 0.25]])  # keeps 1.0 and 0.5
        >>> ASH(variant="p", percentile=50, weight=weight, bias=None)(h)
        tensor([1.3133])
        >>> ASH(variant="s", percentile=50, weight=weight, bias=None)(h)  # e^(2 / 1.5)
        tensor([3.8159])

    Source: Djurisic, Bozanic, Ashok & Liu, ICLR 2023; ``andrijazz/ash``.
    """

    def __init__(
        self,
        *,
        variant: Variant = "s",
        percentile: float = 90.0,
        scorer: str | Scorer = "energy",
        head: nn.Linear | None = None,
        weight: HeadWeight | None = None,
        bias: HeadWeight | None = None,
    ) -> None:
        if variant not in get_args(Variant):
            raise ValueError(f"Expected `variant` to be 'p', 'b' or 's', got {variant!r}.")
        self.variant: Variant = variant
        self.percentile = PERCENT.check(percentile, "percentile")
        self._init_logit_scorer(scorer)
        self._init_head(head, weight, bias)

    def score(self, features: Tensor) -> Tensor:
        """ASH score of checked features (N, D)."""
        weight, bias = self.head_parameters(features)
        k = self.kept(features.shape[1])
        if self.variant == "p":
            return head_scores(ash_prune(features, k), weight, bias, self.score_logits)
        if self.variant == "b":
            return head_scores(ash_binarize(features, k), weight, bias, self.score_logits)
        pruned, exponent = ash_sharpen(features, k)
        return head_scores(pruned, weight, bias, self.score_logits, exponent)


@register_scorer("scale")
class SCALE(_KeepsTopActivations):
    r"""SCALE: multiply each sample's features by ASH-S's factor, without pruning; head; score.

    $$ S(h) = s\big(W (h \, e^{s_1 / s_2}) + b\big), \qquad s_1 = \sum_d h_d, \quad
       s_2 = \sum_{d \in T} h_d $$

    with $T$ the $k = D - \operatorname{round}(D p / 100)$ largest entries of $h$ (as in
    `ASH`) and $s$ the logit scorer (energy by default). Assumes non-negative (post-ReLU)
    features. Nothing is fitted; the input is not modified. Where $s_2 = 0$ the factor is
    1; rows whose scaled logits overflow float32 are computed in float64.

    Args:
        percentile: $p$ in percent, in (0, 100) (default 85, the official configuration;
            pytorch-ood writes 0.65).
        scorer: The logit scorer: a registered name (``"energy"``, ``"msp"``,
            ``"joint_energy"``, ...) or a logit `oodscore.Scorer` instance.
        head: The classifier head, an ``nn.Linear`` (read at each call).
        weight: Or the head's weight (C, D), a tensor or an array.
        bias: And its bias (C,), or ``None``.

    Examples:
        >>> import torch
        >>> from oodscore import SCALE
        >>> weight = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
        >>> h = torch.tensor([[1.0, 0.5, 0.25, 0.25]])  # factor e^(2 / 1.5), nothing pruned
        >>> SCALE(percentile=50, weight=weight, bias=None)(h)
        tensor([3.8502])

    Source: Xu, Chen, Franchi & Yao, ICLR 2024; ``kai422/SCALE``.
    """

    def __init__(
        self,
        *,
        percentile: float = 85.0,
        scorer: str | Scorer = "energy",
        head: nn.Linear | None = None,
        weight: HeadWeight | None = None,
        bias: HeadWeight | None = None,
    ) -> None:
        self.percentile = PERCENT.check(percentile, "percentile")
        self._init_logit_scorer(scorer)
        self._init_head(head, weight, bias)

    def score(self, features: Tensor) -> Tensor:
        """SCALE score of checked features (N, D)."""
        weight, bias = self.head_parameters(features)
        exponent = scale_exponent(features, self.kept(features.shape[1]))
        return head_scores(features, weight, bias, self.score_logits, exponent)
