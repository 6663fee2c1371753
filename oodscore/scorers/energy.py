"""Energy scores: the free energy of a softmax classifier and JointEnergy of a multi-label one."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from oodscore._validation import TEMPERATURE, check_int
from oodscore.functional.energy import energy_score, joint_energy_score
from oodscore.scorers.base import Scorer, register_scorer


@register_scorer("energy")
class Energy(Scorer):
    r"""Energy score, the negative free energy of a softmax classifier.

    $$ S(x) = -E(x; f) = T \cdot \log \sum_c e^{f_c(x)/T} $$

    Always at least the maximum logit and at most ``max logit + T log C``.

    Args:
        temperature: $T$ in $[10^{-6}, 10^6]$ (default 1, as the official test script).
            Within it the score and its gradient are finite for every finite logit, in
            float32 too; beyond it they are not ($T \log C$ overflows for large $T$, and
            float32 cannot hold $T = 10^{-40}$), so other values are refused.

    Examples:
        >>> import torch
        >>> from oodscore import Energy
        >>> Energy()(torch.tensor([[0.0, 0.0], [1e4, -1e4]]))
        tensor([6.9315e-01, 1.0000e+04])

    Source: Liu, Wang, Owens & Li, NeurIPS 2020; ``wetliu/energy_ood``.
    """

    def __init__(self, *, temperature: float = 1.0) -> None:
        self.temperature = TEMPERATURE.check(temperature, "temperature")

    def score(self, logits: Tensor) -> Tensor:
        """Energy score of checked logits (N, C)."""
        return energy_score(logits, self.temperature)


@register_scorer("joint_energy")
class JointEnergy(Scorer):
    r"""JointEnergy of a multi-label (sigmoid) classifier: the sum of the labels' energies.

    $$ S(x) = \sum_{c=1}^{C} \log\left(1 + e^{f_c(x)}\right) $$

    An input that fires several labels confidently scores high. ``top_k=1`` is the official
    code's ``max`` variant; ``top_k=k`` sums the k largest label energies. SNoJoE scores
    with this after training with `oodscore.spectral_normalize`.

    Args:
        top_k: Sum only the k largest per-label terms (``1 <= k <= C``); ``None`` sums
            every label.

    Examples:
        >>> import torch
        >>> from oodscore import JointEnergy
        >>> JointEnergy()(torch.tensor([[0.0, 0.0], [3.0, -20.0]]))
        tensor([1.3863, 3.0486])
        >>> JointEnergy(top_k=1)(torch.tensor([[3.0, 1.0]]))
        tensor([3.0486])

    Source: Wang, Liu, Bocchieri & Li, NeurIPS 2021; ``deeplearning-wisc/multi-label-ood``.
    """

    multilabel: ClassVar[bool] = True

    def __init__(self, *, top_k: int | None = None) -> None:
        self.top_k = None if top_k is None else check_int(top_k, "top_k")

    def check_input(self, logits: Tensor) -> None:
        """Check ``top_k <= C``."""
        if self.top_k is not None and self.top_k > logits.shape[1]:
            raise ValueError(
                f"Expected `top_k` to be at most the number of labels C = {logits.shape[1]}, "
                f"got top_k={self.top_k}."
            )

    def score(self, logits: Tensor) -> Tensor:
        """JointEnergy of checked per-label logits (N, C)."""
        return joint_energy_score(logits, self.top_k)
