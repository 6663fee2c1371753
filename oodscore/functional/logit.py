"""Scores read directly from the logits."""

from __future__ import annotations

from torch import Tensor


def max_logit_score(logits: Tensor) -> Tensor:
    r"""The largest logit $\max_c f_c$ of each row of (N, C) logits."""
    return logits.amax(dim=1)
