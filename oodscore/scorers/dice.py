"""DICE: the head's weights sparsified by their mean ID contribution, then a logit score."""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from oodscore.functional.shaping import dice_mask, feature_mean, head_scores
from oodscore.scorers.base import ArrayLike, FittedScorer, Scorer, register_scorer
from oodscore.scorers.composed import ComposesLogitScorer
from oodscore.scorers.head import HeadWeight, UsesHead
from oodscore.scorers.react import PERCENT


class _MaskedHead(NamedTuple):
    """The masked head for one (device, dtype), and what it was computed from."""

    sources: tuple[object, ...]
    versions: tuple[tuple[int, int], ...]
    weight: Tensor
    bias: Tensor | None


@register_scorer("dice")
class DICE(UsesHead, ComposesLogitScorer, FittedScorer):
    r"""DICE: keep the head's weights that contribute most on average to ID data; score logits.

    $$ V = W \odot \mathbf{1}\bar h^\top, \qquad M = V > \operatorname{percentile}_p(V),
       \qquad S(h) = s\big((W \odot M)\, h + b\big) $$

    $\bar h$ (D,) is the mean of the ID features given to ``fit`` (float64), $V_{cd} =
    W_{cd} \bar h_d$ the signed contributions (C, D), the threshold the ``percentile`` of
    all $C D$ of them (NumPy's linear interpolation, float64) and $s$ the logit scorer
    (energy by default). The masked weight is computed once per head, device and dtype; a
    change of the ``nn.Linear``'s weight (in place or replaced) recomputes it. ``targets``
    of ``fit`` are ignored.

    Args:
        percentile: $p$ in percent, in (0, 100): the share of weights dropped (default
            90, the official CIFAR runs; 70 for ImageNet; pytorch-ood writes 0.9).
        scorer: The logit scorer: a registered name (``"energy"``, ``"msp"``,
            ``"joint_energy"``, ...) or a logit `oodscore.Scorer` instance.
        head: The classifier head, an ``nn.Linear`` (read at each call).
        weight: Or the head's weight (C, D), a tensor or an array.
        bias: And its bias (C,), or ``None``.

    Examples:
        >>> import torch
        >>> from oodscore import DICE
        >>> weight = torch.tensor([[1.0, 0.5], [0.2, 1.0]])
        >>> scorer = DICE(percentile=50, weight=weight, bias=torch.zeros(2))
        >>> scorer = scorer.fit(torch.tensor([[1.0, 2.0], [3.0, 2.0]]))
        >>> scorer.state_dict()["mean"]
        tensor([2., 2.], dtype=torch.float64)
        >>> scorer(torch.tensor([[1.0, 3.0], [0.0, 0.0]]))  # W * M = [[1, 0], [0, 1]]
        tensor([3.1269, 0.6931])

    Source: Sun & Li, ECCV 2022; ``deeplearning-wisc/dice``.
    """

    state_names: ClassVar[tuple[str, ...]] = ("mean",)
    multilabel: ClassVar[bool] = True  # with scorer="joint_energy"

    def __init__(
        self,
        *,
        percentile: float = 90.0,
        scorer: str | Scorer = "energy",
        head: nn.Linear | None = None,
        weight: HeadWeight | None = None,
        bias: HeadWeight | None = None,
    ) -> None:
        self.percentile = PERCENT.check(percentile, "percentile")
        self._init_logit_scorer(scorer)
        self._init_head(head, weight, bias)

    def fit_state(self, features: Tensor, targets: ArrayLike | None) -> dict[str, Tensor]:
        """The mean of the ID features (D,), in float64."""
        return {"mean": feature_mean(features)}

    def check_state(self, state: dict[str, Tensor]) -> None:
        """Check that the mean is a vector (D,)."""
        if state["mean"].ndim != 1 or state["mean"].numel() == 0:
            raise ValueError(
                "Expected `state['mean']` to be a (D,) vector with D >= 1, got shape "
                f"{tuple(state['mean'].shape)}."
            )

    def check_input(self, features: Tensor) -> None:
        """Check the fit's width, and that the head takes it."""
        super().check_input(features)
        self.head_parameters(features)

    def masked_head(self, like: Tensor) -> tuple[Tensor, Tensor | None]:
        r"""The masked weight $W \odot M$ (C, D) and the bias, on ``like``'s device and dtype.

        Cached per device and dtype, and recomputed when the head or the fitted mean changes.

        Raises:
            NotFittedError: Before `fit`.
        """
        self._check_fitted()
        sources, versions = self._head_sources(like.device)
        key = (like.device, like.dtype)
        cached = self._masked.get(key)
        if (
            cached is not None
            and cached.versions == versions
            and all(a is b for a, b in zip(cached.sources, sources, strict=True))
        ):
            return cached.weight, cached.bias
        weight, bias = self.head_parameters(like[:0].to(torch.float64))
        mean = self.state_on(like.device)["mean"]
        mask = dice_mask(weight, mean, self.percentile)
        masked = (weight * mask).to(like.dtype)
        bias = None if bias is None else bias.to(like.dtype)
        self._masked[key] = _MaskedHead(sources, versions, masked, bias)
        return masked, bias

    def score(self, features: Tensor) -> Tensor:
        """DICE score of checked features (N, D)."""
        weight, bias = self.masked_head(features)
        return head_scores(features, weight, bias, self.score_logits)

    def _init_head(
        self, head: nn.Linear | None, weight: HeadWeight | None, bias: HeadWeight | None
    ) -> None:
        """`UsesHead._init_head`, and forget the masked weights of the previous head."""
        super()._init_head(head, weight, bias)
        self._masked: dict[tuple[torch.device, torch.dtype], _MaskedHead] = {}

    def _head_sources(
        self, device: torch.device
    ) -> tuple[tuple[object, ...], tuple[tuple[int, int], ...]]:
        """The objects the masked head depends on, and the versions of the module's tensors.

        In-place changes of the ``nn.Linear``'s weight or bias raise their version counter,
        and replacing their storage (``.data = ...``) changes their address.
        """
        state = self.state_on(device)
        if self.head is None:
            return (self._head_tensors, state), ()
        tensors = (self.head.weight, self.head.bias)
        versions = tuple((t._version, t.data_ptr()) for t in tensors if t is not None)
        return (self.head, *tensors, state), versions
