"""Scores read from the softmax distribution: MSP, negative entropy, GEN."""

from __future__ import annotations

from torch import Tensor

from oodscore._validation import TEMPERATURE, UNIT_OPEN, check_int
from oodscore.functional.softmax import entropy_score, gen_score, msp_score
from oodscore.scorers.base import Scorer, register_scorer


@register_scorer("msp")
class MSP(Scorer):
    r"""Maximum softmax probability, the baseline of every OOD paper since 2017.

    $$ S(x) = \max_c \frac{e^{f_c(x)/T}}{\sum_{c'} e^{f_{c'}(x)/T}} $$

    Scores lie in ``[1/C, 1]``. With ``temperature > 1`` it is ODIN's temperature scaling
    without input perturbation.

    Args:
        temperature: Softmax temperature $T$ in $[10^{-6}, 10^6]$ (ODIN uses 1000). Within
            it the score and its gradient are finite and accurate for every finite logit,
            in float32 too; beyond it they are not (float32 cannot hold $T = 10^{-300}$, and
            the gradient of MSP grows as $1/T$), so other values are refused.

    Examples:
        >>> import torch
        >>> from oodscore import MSP
        >>> MSP()(torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
        tensor([0.7870, 0.3333])

    Source: Hendrycks & Gimpel, ICLR 2017; ``hendrycks/error-detection``.
    """

    def __init__(self, *, temperature: float = 1.0) -> None:
        self.temperature = TEMPERATURE.check(temperature, "temperature")

    def score(self, logits: Tensor) -> Tensor:
        """MSP of checked logits (N, C)."""
        return msp_score(logits, self.temperature)


@register_scorer("entropy")
class Entropy(Scorer):
    r"""Negative entropy of the softmax distribution.

    $$ S(x) = \sum_c p_c(x) \log p_c(x), \qquad p = \operatorname{softmax}(f(x)) $$

    Scores lie in ``[-log C, 0]``; a one-hot prediction scores 0.

    Examples:
        >>> import torch
        >>> from oodscore import Entropy
        >>> Entropy()(torch.tensor([[0.0, 0.0], [50.0, 0.0]]))
        tensor([-0.6931, -0.0000])

    Source: Hendrycks, Mazeika & Dietterich, ICLR 2019; the uncertainty baseline.
    """

    def score(self, logits: Tensor) -> Tensor:
        """Negative entropy of checked logits (N, C)."""
        return entropy_score(logits)


@register_scorer("gen")
class GEN(Scorer):
    r"""Generalized entropy, negated so that higher = more in-distribution.

    $$ S(x) = -\sum_{j=1}^{M} p_{(j)}^\gamma \, (1 - p_{(j)})^\gamma $$

    over the ``top_m`` largest softmax probabilities $p_{(j)}$ (every class when C < M).

    Args:
        gamma: Exponent $0 < \gamma < 1$ (default 0.1); small values sharpen the score.
        top_m: Number $M \ge 1$ of largest probabilities summed (default 100).

    Examples:
        >>> import torch
        >>> from oodscore import GEN
        >>> GEN(gamma=0.5)(torch.tensor([[0.0, 0.0]]))
        tensor([-1.])

    Source: Liu, Lochman & Zach, CVPR 2023; ``XixiLiu95/GEN``.
    """

    def __init__(self, *, gamma: float = 0.1, top_m: int = 100) -> None:
        self.gamma = UNIT_OPEN.check(gamma, "gamma")
        self.top_m = check_int(top_m, "top_m")

    def score(self, logits: Tensor) -> Tensor:
        """GEN of checked logits (N, C)."""
        return gen_score(logits, self.gamma, self.top_m)
