"""Scores read from the softmax distribution: MSP, negative entropy, GEN."""

from __future__ import annotations

import torch
from torch import Tensor

from oodscore._validation import check_int, check_positive
from oodscore.scorers.base import Scorer, register_scorer


def msp_score(logits: Tensor, temperature: float = 1.0) -> Tensor:
    r"""Maximum softmax probability $\max_c \operatorname{softmax}(f/T)_c$.

    Computed as $1 / \sum_c \exp((f_c - \max f) / T)$: the shift is exact for the top
    class, so the result keeps full relative precision even for logits of $10^4$, where
    $\exp(\max f - \operatorname{logsumexp} f)$ loses three digits in float32.
    """
    shifted = logits - logits.amax(dim=1, keepdim=True)
    if temperature != 1.0:
        shifted = shifted / temperature
    return torch.exp(shifted).sum(dim=1).reciprocal()


def entropy_score(logits: Tensor) -> Tensor:
    r"""Negative Shannon entropy of the softmax, $\sum_c p_c \log p_c$ (in nats)."""
    log_p = torch.log_softmax(logits, dim=1)
    score: Tensor = torch.linalg.vecdot(log_p.exp(), log_p)
    return score


def gen_score(logits: Tensor, gamma: float = 0.1, top_m: int = 100) -> Tensor:
    r"""Negative generalized entropy $-\sum_{j \le M} p_{(j)}^\gamma (1 - p_{(j)})^\gamma$.

    The sum runs over the ``top_m`` largest probabilities $p_{(j)}$ (all of them when
    ``top_m >= C``). With $z = f - \max f$, $e = \exp(z)$ and $S = \sum e$, each term is
    $\exp(\gamma(\log(e_j (S - e_j)) - 2 \log S))$: one power instead of two. $S - e_j$ is
    formed as $r + (1 - e_j)$, where $r = S - 1$ is summed over the classes below the
    maximum ($z < 0$, found with ``sign``; other tied maxima add 1 each) rather than
    subtracted, so $1 - p$ keeps its precision when $p$ rounds to 1: a confident float32
    prediction with $1 - p = 10^{-8}$ contributes $0.158$ for γ = 0.1, not 0, and confident
    inputs keep distinct scores.
    """
    num_classes = logits.shape[1]
    z = logits - logits.amax(dim=1, keepdim=True)
    e = torch.exp(z)
    sign = z.sign_()  # -1 below the maximum, 0 at it (ties included); z is not needed again
    rest = (num_classes - 1) + sign.sum(dim=1, keepdim=True)  # tied maxima other than one
    rest -= torch.linalg.vecdot(e, sign).unsqueeze(1)
    if top_m < num_classes:
        e = torch.topk(e, top_m, dim=1, sorted=False).values
    terms = (1 - e).add_(rest).mul_(e).log_().sub_(2 * torch.log1p(rest))
    return -terms.mul_(gamma).exp_().sum(dim=1)


@register_scorer("msp")
class MSP(Scorer):
    r"""Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017).

    $$ S(x) = \max_c \frac{e^{f_c(x)/T}}{\sum_{c'} e^{f_{c'}(x)/T}} $$

    The baseline of every OOD paper since; with ``temperature > 1`` it is the temperature
    part of ODIN (Liang et al., ICLR 2018) without input perturbation. Official code:
    ``hendrycks/error-detection``. Scores lie in ``[1/C, 1]``.

    Args:
        temperature: Softmax temperature $T > 0$.

    Example:
        >>> import torch
        >>> from oodscore import MSP
        >>> MSP()(torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
        tensor([0.7870, 0.3333])
    """

    def __init__(self, *, temperature: float = 1.0) -> None:
        self.temperature = check_positive(temperature, "temperature")

    def score(self, logits: Tensor) -> Tensor:
        """MSP of checked logits (N, C)."""
        return msp_score(logits, self.temperature)


@register_scorer("entropy")
class Entropy(Scorer):
    r"""Negative entropy of the softmax distribution.

    $$ S(x) = \sum_c p_c(x) \log p_c(x), \qquad p = \operatorname{softmax}(f(x)) $$

    The uncertainty baseline of the OOD literature (e.g. Hendrycks et al., ICLR 2019,
    "Deep anomaly detection with outlier exposure"). Scores lie in ``[-log C, 0]``; a
    one-hot prediction scores 0.

    Example:
        >>> import torch
        >>> from oodscore import Entropy
        >>> Entropy()(torch.tensor([[0.0, 0.0], [50.0, 0.0]]))
        tensor([-0.6931, -0.0000])
    """

    def score(self, logits: Tensor) -> Tensor:
        """Negative entropy of checked logits (N, C)."""
        return entropy_score(logits)


@register_scorer("gen")
class GEN(Scorer):
    r"""Generalized entropy (Liu, Lochman & Zach, CVPR 2023).

    $$ S(x) = -\sum_{j=1}^{M} p_{(j)}^\gamma \, (1 - p_{(j)})^\gamma $$

    over the ``top_m`` largest softmax probabilities $p_{(j)}$. The paper defines
    $G_\gamma$ as an uncertainty and scores with its negative, so higher = more ID.
    Defaults are the paper's ImageNet values (official code ``XixiLiu95/GEN``): γ = 0.1,
    M = 100; with fewer than M classes every class counts.

    Args:
        gamma: Exponent $0 < \gamma < 1$; small values sharpen the score.
        top_m: Number $M \ge 1$ of largest probabilities summed.

    Example:
        >>> import torch
        >>> from oodscore import GEN
        >>> GEN(gamma=0.5)(torch.tensor([[0.0, 0.0]]))
        tensor([-1.])
    """

    def __init__(self, *, gamma: float = 0.1, top_m: int = 100) -> None:
        self.gamma = check_positive(gamma, "gamma")
        if self.gamma >= 1:
            raise ValueError(f"Expected `gamma` to be in (0, 1), got {gamma!r}.")
        self.top_m = check_int(top_m, "top_m")

    def score(self, logits: Tensor) -> Tensor:
        """GEN of checked logits (N, C)."""
        return gen_score(logits, self.gamma, self.top_m)
