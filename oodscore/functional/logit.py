"""Scores read directly from the logits."""

from __future__ import annotations

from torch import Tensor

from oodscore._arrays import finite_sum


def max_logit_score(logits: Tensor) -> Tensor:
    r"""The largest logit $\max_c f_c$ of each row of (N, C) logits."""
    return logits.amax(dim=1)


def sum_logit_score(logits: Tensor) -> Tensor:
    r"""The sum of the logits $\sum_c f_c$ of each row of (N, C) logits.

    Accumulated without overflow (`oodscore._arrays.finite_sum`: float32 in float64, float64
    scaled by a power of two) and rounded once to the dtype of ``logits``, so float32 logits
    of mixed signs (+1e4 and -1e4) do not cancel away their small terms, and float64
    ``[1e308, 1e308, -1e308, -1e308]`` sums to 0. A sum beyond the dtype (two logits of 3e38
    in float32) saturates at its largest finite value.
    """
    return finite_sum(logits, dim=1)
