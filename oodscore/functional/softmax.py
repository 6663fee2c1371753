r"""Scores read from the softmax distribution: maximum probability, entropy, generalized entropy.

Each is computed from the shifted logits $z = f - \max f \le 0$. A shifted logit of
float32 logits can overflow ($-3 \cdot 10^{38} - 3 \cdot 10^{38}$): it is then $-\infty$,
its probability exactly 0, and no product $0 \cdot \infty$ is ever formed, so every finite
logit gives a finite score and a finite gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor


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
    ``top_m >= C``). With $z = f - \max f$, $e = \exp(z)$ and $S = \sum e$, each term is
    $\exp\big(\gamma\,(z_j + \log(S - e_j) - 2 \log S)\big)$: one power, taken in log space,
    so a probability that underflows still gives its exact term and a finite gradient.
    $S - e_j$ is never formed as a difference: for the top class it is
    $\log \sum_{c \ne j} e^{z_c}$ (a log-sum-exp, exact when the other probabilities
    underflow: $1 - p$ keeps its precision when $p$ rounds to 1), for the others
    $(1 - e_j) + r$, with $r = S - 1$ summed over the classes other than the top one. A
    confident float32 prediction with $1 - p = 10^{-8}$ contributes $0.158$ for
    γ = 0.1, not 0, and confident inputs keep distinct scores.
    """
    num_classes = logits.shape[1]
    if num_classes == 1:  # p = 1 and 1 - p = 0: every term is 0 for every gamma > 0
        return -(0.0 * logits[:, 0])
    lowest = torch.finfo(logits.dtype).min
    top, first = logits.max(dim=1, keepdim=True)
    # Not detached: the top class's z is then 0 with gradient 0, so its e may be taken as 1.
    z = (logits - top).clamp_min(lowest)  # overflowed differences: finite, probability 0
    is_top = torch.zeros_like(z, dtype=torch.bool).scatter_(1, first, True)
    rest = torch.exp(z).masked_fill(is_top, 0.0).sum(dim=1, keepdim=True)  # S - 1
    log_rest = torch.logsumexp(z.masked_fill(is_top, lowest), dim=1, keepdim=True)
    others = (1 - torch.exp(z)).add(rest).masked_fill(is_top, 1.0).log()  # log(S - e_j)
    log_terms = z + torch.where(is_top, log_rest, others) - 2 * torch.log1p(rest)
    if top_m < num_classes:
        log_terms = log_terms.gather(1, torch.topk(z, top_m, dim=1, sorted=False).indices)
    return -torch.exp(gamma * log_terms).sum(dim=1)
