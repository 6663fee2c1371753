"""Scores read directly from the logits."""

from __future__ import annotations

import torch
from torch import Tensor


def max_logit_score(logits: Tensor) -> Tensor:
    r"""The largest logit $\max_c f_c$ of each row of (N, C) logits."""
    return logits.amax(dim=1)


def sum_logit_score(logits: Tensor) -> Tensor:
    r"""The sum of the logits $\sum_c f_c$ of each row of (N, C) logits.

    Accumulated in float64 and rounded once to the dtype of ``logits``, so float32 logits of
    mixed signs (+1e4 and -1e4) do not cancel away their small terms.
    """
    return logits.sum(dim=1, dtype=torch.float64).to(logits.dtype)
