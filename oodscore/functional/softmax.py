r"""Scores read from the softmax distribution: maximum probability, entropy, generalized entropy.

Each is computed from the shifted logits $z = f - \max f \le 0$. A shifted logit of
float32 logits can overflow ($-3 \cdot 10^{38} - 3 \cdot 10^{38}$): it is then $-\infty$,
its probability exactly 0, and no product $0 \cdot \infty$ is ever formed, so every finite
logit gives a finite score and a finite gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from oodscore._selection import largest_values


def msp_score(logits: Tensor, temperature: float = 1.0) -> Tensor:
    r"""Maximum softmax probability $\max_c \operatorname{softmax}(f/T)_c$.

    Computed as $1 / \sum_c \exp((f_c - \max f) / T)$: the shift is exact for the top
    class, so the result keeps full relative precision even for logits of $10^4$, where
    $\exp(\max f - \operatorname{logsumexp} f)$ loses three digits in float32. The logits
    are shifted before they are divided by $T$, so $f / T$ never overflows.
    """
    shifted = logits - logits.amax(dim=1, keepdim=True)
    if temperature != 1.0:
        shifted = shifted / temperature
    return torch.exp(shifted).sum(dim=1).reciprocal()


def entropy_score(logits: Tensor) -> Tensor:
    r"""Negative Shannon entropy of the softmax, $\sum_c p_c \log p_c$ (in nats).

    A class whose log-probability is $-\infty$ (its shifted logit overflowed) contributes
    $0$: the log-probabilities are clamped to the lowest finite value, so the term is
    $0 \cdot (\text{lowest})$, not $0 \cdot (-\infty)$.
    """
    log_p = torch.log_softmax(logits, dim=1).clamp_min(torch.finfo(logits.dtype).min)
    score: Tensor = torch.linalg.vecdot(log_p.exp(), log_p)
    return score


def gen_score(logits: Tensor, gamma: float = 0.1, top_m: int = 100) -> Tensor:
    r"""Negative generalized entropy $-\sum_{j \le M} p_{(j)}^\gamma (1 - p_{(j)})^\gamma$.

    The sum runs over the ``top_m`` largest probabilities $p_{(j)}$ (all of them when
    ``top_m >= C``); only their logits are selected (`largest_values`), so the terms are
    taken over M classes, not C. With gaps $d_j = \max f - f_j \ge 0$ and
    $S = \sum_c e^{-d_c}$, term $j$ is
    $\exp\big(\gamma\,(\log(S - e^{-d_j}) - d_j)\big)\, S^{-2\gamma}$: one power, taken in
    log space, so a probability that underflows still gives its exact term and a finite
    gradient. $S - 1$ is summed relative to the second largest logit $f_{(2)}$ (equal to
    $\max f$ on a tie): $S - 1 = e^{f_{(2)} - \max f} R$ with
    $R = \sum_c e^{\min(f_c - f_{(2)}, 0)} - 1 \ge 1$, so $\log(S - 1)$, the top class's
    $\log(1 - p)$, stays exact when $p$ rounds to 1 or every other probability underflows.
    A confident float32 prediction with $1 - p = 10^{-8}$ contributes $0.158$ for
    γ = 0.1, not 0, and confident inputs keep distinct scores.
    """
    if top_m < 1:
        raise ValueError(f"Expected `top_m` >= 1, got {top_m}.")
    num_classes = logits.shape[1]
    if num_classes == 1:  # p = 1 and 1 - p = 0: every term is 0 for every gamma > 0
        return -(0.0 * logits[:, 0])
    finfo = torch.finfo(logits.dtype)
    largest = finfo.max
    # The top M logits, and at least the two largest (for f_(2)). In-place steps below act
    # only on tensors made here: each full-size temporary is a fresh allocation to fault in.
    kept = largest_values(logits, min(max(top_m, 2), num_classes))
    top = kept.amax(dim=1, keepdim=True)
    # d_j, saturated (an overflowed gap is a probability of 0); inf marks a tie at the top.
    apart = F.threshold((top - kept).clamp_max_(largest), 0.0, torch.inf, inplace=True)
    ties = (apart - largest).clamp_(0.0, 1.0).sum(dim=1, keepdim=True)  # 1 or more
    second_gap = torch.where(ties > 1, 0.0, apart.amin(dim=1, keepdim=True))  # max f - f_(2)
    kept_ratios = (second_gap - apart).clamp_max_(0.0).exp_()  # e^{f - f_(2)}; 0 if tied
    if kept is logits:
        ratio = kept_ratios.sum(dim=1, keepdim=True) + (ties - 1)
    else:  # every class, relative to f_(2) itself: one pass over the logits
        untied = kept.masked_fill(apart.isinf(), -torch.inf).amax(dim=1, keepdim=True)
        # f_(2) = -inf (every other logit is -inf): the lowest finite value, so f - f_(2)
        # is -inf or finite, never -inf - (-inf).
        second = torch.where(ties > 1, top, untied.clamp_min(-largest))
        ratio = (logits - second).clamp_max_(0.0).exp_().sum(dim=1, keepdim=True) - 1
    rest = ratio * torch.exp(-second_gap)  # S - 1
    # log(S - e_j) - d_j for the untied classes, -inf for the tied, whose terms come next.
    minus_e = kept_ratios * -torch.exp(-second_gap)  # -e_j; not in place: exp_ keeps it
    log_others = torch.log(minus_e.add_(1 + rest)).sub_(apart)
    # R = 0 only when every other probability is exactly 0 (logits of -inf): log(S - 1) is
    # then -inf, and R is raised to the smallest normal number for a finite gradient.
    log_rest = ratio.clamp_min(finfo.tiny).log() - second_gap
    terms = ties.clamp_max(top_m) * torch.exp(gamma * log_rest)
    if top_m > 1:
        terms = terms + log_others.mul_(gamma).exp_().sum(dim=1, keepdim=True)
    return -(terms * torch.exp(-2 * gamma * torch.log1p(rest))).squeeze(1)
