"""ReAct: features clipped at a percentile of the ID activations, then the head and a score."""

from __future__ import annotations

from numbers import Real
from typing import ClassVar

import torch
from torch import Tensor, nn

from oodscore._validation import FINITE, Interval
from oodscore.functional.shaping import head_scores, linear_percentile, react_clip
from oodscore.scorers.base import ArrayLike, FittedScorer, Scorer, register_scorer
from oodscore.scorers.composed import ComposesLogitScorer
from oodscore.scorers.head import HeadWeight, UsesHead

PERCENT = Interval(Real, 0, 100, closed="neither")
"""A percentile in percent, both ends excluded (shared by the shaping scorers)."""


@register_scorer("react")
class ReAct(UsesHead, ComposesLogitScorer, FittedScorer):
    r"""ReAct: clip the penultimate features at a threshold, apply the head, score the logits.

    $$ S(h) = s\big(W \min(h, c) + b\big), \qquad c = \operatorname{percentile}_p
       \{h_{id} : i \le N, d \le D\} $$

    $h$ (N, D) are the pooled penultimate features (the input of the classifier head), $s$
    the logit scorer (energy by default) and $c$ the ``percentile`` of all $N D$ entries of
    the ID features given to ``fit`` (NumPy's linear interpolation, computed in float64 at
    any size), or the fixed ``threshold``. ``targets`` of ``fit`` are ignored.

    Args:
        percentile: $p$ in percent, in (0, 100) (default 90, as the official
            ``compute_threshold.py``; pytorch-ood writes 0.9).
        threshold: A fixed clipping threshold $c$ (e.g. 1.0, the official value for
            ResNet-50 on ImageNet): the scorer is fitted at construction, and ``fit`` keeps
            $c$. ``None``: ``fit`` estimates it.
        scorer: The logit scorer: a registered name (``"energy"``, ``"msp"``,
            ``"joint_energy"``, ...) or a logit `oodscore.Scorer` instance.
        head: The classifier head, an ``nn.Linear`` (read at each call).
        weight: Or the head's weight (C, D), a tensor or an array.
        bias: And its bias (C,), or ``None``.

    Examples:
        >>> import torch
        >>> from oodscore import ReAct
        >>> weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> scorer = ReAct(weight=weight, bias=torch.zeros(2))
        >>> scorer = scorer.fit(torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]))
        >>> scorer.state_dict()["threshold"]
        tensor(4.5000, dtype=torch.float64)
        >>> scorer(torch.tensor([[9.0, 0.0], [1.0, 1.0]]))
        tensor([4.5110, 1.6931])

    Source: Sun, Guo & Li, NeurIPS 2021; ``deeplearning-wisc/react``.
    """

    state_names: ClassVar[tuple[str, ...]] = ("threshold",)
    multilabel: ClassVar[bool] = True  # with scorer="joint_energy"
    fixes_width: ClassVar[bool] = False

    def __init__(
        self,
        *,
        percentile: float = 90.0,
        threshold: float | None = None,
        scorer: str | Scorer = "energy",
        head: nn.Linear | None = None,
        weight: HeadWeight | None = None,
        bias: HeadWeight | None = None,
    ) -> None:
        self.percentile = PERCENT.check(percentile, "percentile")
        self.threshold = None if threshold is None else FINITE.check(threshold, "threshold")
        self._init_logit_scorer(scorer)
        self._init_head(head, weight, bias)
        if self.threshold is not None:
            self._set_state({"threshold": self._fixed_threshold()})

    def fit_state(self, features: Tensor, targets: ArrayLike | None) -> dict[str, Tensor]:
        """The ``percentile`` of all entries of ``features`` (or the fixed ``threshold``)."""
        if self.threshold is not None:
            return {"threshold": self._fixed_threshold()}
        return {"threshold": linear_percentile(features, self.percentile)}

    def check_state(self, state: dict[str, Tensor]) -> None:
        """Check that the threshold is one number (a 0-d tensor)."""
        if state["threshold"].ndim != 0:
            raise ValueError(
                "Expected `state['threshold']` to be a 0-d tensor (one clipping threshold), "
                f"got shape {tuple(state['threshold'].shape)}."
            )

    def check_input(self, features: Tensor) -> None:
        """Check that the head takes features of this width."""
        self.head_parameters(features)

    def score(self, features: Tensor) -> Tensor:
        """ReAct score of checked features (N, D)."""
        threshold = self.state_on(features.device)["threshold"]
        weight, bias = self.head_parameters(features)
        clipped = react_clip(features, threshold)
        return head_scores(clipped, weight, bias, self.score_logits)

    def _fixed_threshold(self) -> Tensor:
        return torch.tensor(self.threshold, dtype=torch.float64)
