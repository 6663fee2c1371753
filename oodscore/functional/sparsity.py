r"""Sparsity penalty of penultimate features (SR, SROE)."""

from __future__ import annotations

from torch import Tensor


def sparsity_penalty(features: Tensor) -> Tensor:
    r"""Mean over rows of the L1 norm of each row: $\frac{1}{N}\sum_i \lVert h_i \rVert_1$.

    Args:
        features: Penultimate features (N, D), N >= 1.
    """
    return features.abs().sum(dim=1).mean()
