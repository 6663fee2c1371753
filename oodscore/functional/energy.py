r"""Energies of softmax and multi-label (sigmoid) classifiers."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from oodscore._arrays import saturate
from oodscore._selection import largest_values


def energy_score(logits: Tensor, temperature: float = 1.0) -> Tensor:
    r"""Negative free energy $T \cdot \operatorname{logsumexp}_c(f_c / T)$ of (N, C) logits.

    Computed as $m + T \log \sum_c \exp((f_c - m) / T)$ with $m = \max_c f_c$: the logits
    are shifted before they are divided by $T$, so $f / T$ never overflows (float32 logits of
    3e38 with $T = 0.5$), and the result is finite for every finite logit and every $T$ in
    `oodscore._validation.TEMPERATURE`.
    """
    if temperature == 1.0:
        return torch.logsumexp(logits, dim=1)
    top = logits.detach().amax(dim=1, keepdim=True)
    spread = torch.logsumexp((logits - top) / temperature, dim=1)
    return top.squeeze(1) + temperature * spread


def free_energy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    r"""Free energy $E(x) = -T \cdot \operatorname{logsumexp}_c(f_c/T)$: minus `energy_score`."""
    return -energy_score(logits, temperature)


def joint_energy_score(logits: Tensor, top_k: int | None = None) -> Tensor:
    r"""JointEnergy $\sum_c \log(1 + e^{f_c})$, over the ``top_k`` largest terms if given.

    Uses ``softplus``, exact for logits of any size (``log(1 + exp(x))`` overflows in float32
    above x ≈ 88). Softplus is increasing, so the k largest terms are those of the k largest
    logits. The terms are non-negative, so the sum overflows only when its exact value lies
    beyond the dtype (two labels of 3e38 in float32); it then saturates at the largest
    finite value (`oodscore._arrays.saturate`).
    """
    if top_k is not None and top_k < logits.shape[1]:
        logits = largest_values(logits, top_k)
    return saturate(F.softplus(logits).sum(dim=1))
