r"""Scores read from the per-label sigmoid probabilities of a multi-label classifier."""

from __future__ import annotations

import torch
from torch import Tensor


def max_sigmoid_score(logits: Tensor) -> Tensor:
    r"""The largest label probability $\max_c \sigma(f_c) = \sigma(\max_c f_c)$.

    $\sigma$ is increasing, so the sigmoid of the largest logit is taken: one sigmoid per
    row, in float64, rounded once to the dtype of ``logits``. The value then is the correctly
    rounded probability: in float32 it is 1.0 for $\max_c f_c > 17.33$ (torch's float32
    sigmoid already from 16.64) and 0 below $-103.97$; in float64, 1.0 above 36.74.
    """
    return torch.sigmoid(logits.amax(dim=1).to(torch.float64)).to(logits.dtype)


def sum_sigmoid_score(logits: Tensor) -> Tensor:
    r"""The sum of the label probabilities $\sum_c \sigma(f_c)$, in $[0, C]$.

    Each sigmoid and the sum are computed in float64 (as the official code, whose cached
    logits are float64) and rounded once to the dtype of ``logits``.
    """
    return torch.sigmoid(logits.to(torch.float64)).sum(dim=1).to(logits.dtype)
