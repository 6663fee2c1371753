r"""KL matching: the divergence of a softmax posterior from the closest class template."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from oodscore._arrays import FIT_CHUNK_ELEMENTS, row_slices


def kl_log_templates(logits: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    r"""Log-templates $\log d_k$ (K, C) in float64: $d_k$ the mean softmax of the rows of group k.

    $$ \log d_{kc} = \operatorname{logsumexp}_{i \in G_k} \log p_{ic} - \log |G_k|,
       \qquad \log p_i = \operatorname{log\,softmax}(f_i) $$

    so an entry is never $\log 0$ from the underflow of single probabilities. Two passes
    over row chunks of about `FIT_CHUNK_ELEMENTS` values (the per-group maximum, then the
    shifted sums): memory $O(K C)$ plus one chunk.

    Args:
        logits: Logits (N, C), any floating dtype.
        groups: (N,) int64 group id of each row, each of ``0 .. num_groups - 1`` present.
        num_groups: K.
    """
    width = logits.shape[1]
    maxima = logits.new_full((num_groups, width), -math.inf, dtype=torch.float64)
    for start, chunk in row_slices(logits, FIT_CHUNK_ELEMENTS):
        index = groups[start : start + len(chunk), None].to(logits.device).expand(chunk.shape)
        maxima.scatter_reduce_(0, index, _log_softmax(chunk), reduce="amax")
    sums = torch.zeros_like(maxima)
    for start, chunk in row_slices(logits, FIT_CHUNK_ELEMENTS):
        index = groups[start : start + len(chunk)].to(logits.device)
        sums.index_add_(0, index, (_log_softmax(chunk) - maxima[index]).exp())
    counts = torch.bincount(groups, minlength=num_groups).to(maxima)
    return maxima + sums.log() - counts.log()[:, None]


def kl_matching_score(logits: Tensor, log_templates: Tensor) -> Tensor:
    r"""$-\min_k \mathrm{KL}(p \,\Vert\, d_k)$ (N,), $p = \operatorname{softmax}(f)$, in float64.

    $$ \mathrm{KL}(p \,\Vert\, d_k) = \sum_c p_c \log p_c - \sum_c p_c \log d_{kc} $$

    with $\log p$ from ``log_softmax`` and $p = e^{\log p}$: a probability that underflows to
    0 contributes $0 \cdot \log p = 0$ (the limit $0 \log 0 = 0$), never NaN.
    """
    log_p = _log_softmax(logits.to(log_templates.dtype))
    p = log_p.exp()
    divergence = (p * log_p).sum(dim=1, keepdim=True) - p @ log_templates.T
    return -divergence.amin(dim=1)


def _log_softmax(logits: Tensor) -> Tensor:
    return torch.log_softmax(logits.to(torch.float64), dim=1)
