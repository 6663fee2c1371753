r"""Sparsity penalty of penultimate features (SR, SROE), and the share of active features."""

from __future__ import annotations

from torch import Tensor


def sparsity_penalty(features: Tensor) -> Tensor:
    r"""Mean over rows of the L1 norm of each row: $\frac{1}{N}\sum_i \lVert h_i \rVert_1$.

    Args:
        features: Penultimate features (N, D), N >= 1.
    """
    return features.abs().sum(dim=1).mean()


def active_fraction(features: Tensor) -> Tensor:
    r"""The share of non-zero entries, $\frac{1}{ND}\,\lvert\{(i, j) : h_{ij} \ne 0\}\rvert$.

    What the L1 penalty drives down; detached, in the dtype of ``features``.

    Args:
        features: Penultimate features (N, D), N >= 1.
    """
    return (features.detach() != 0).to(features.dtype).mean()
