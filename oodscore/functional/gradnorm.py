r"""GradNorm in closed form: the L1 norm of the last layer's weight gradient, no backward pass."""

from __future__ import annotations

import torch
from torch import Tensor


def gradnorm_score(logits: Tensor, features: Tensor, temperature: float = 1.0) -> Tensor:
    r"""$\lVert \partial \mathcal{L} / \partial W \rVert_1$ of the head $z = W h + b$, per sample.

    $$ S = \frac{1}{T} \big\lVert C \operatorname{softmax}(z/T) - \mathbf{1} \big\rVert_1
       \lVert h \rVert_1 = \frac{C}{T} \big\lVert \operatorname{softmax}(z/T) - \tfrac{1}{C}
       \big\rVert_1 \lVert h \rVert_1 $$

    for $\mathcal{L} = -\sum_c \log \operatorname{softmax}(z/T)_c$ (all-ones targets, one
    sample at a time, as the official code): $\partial \mathcal{L} / \partial z =
    (C \operatorname{softmax}(z/T) - \mathbf{1}) / T$ and $\partial \mathcal{L} / \partial W$
    is its outer product with $h$, whose L1 norm is the product of the two L1 norms.

    Args:
        logits: $z$ (N, C), the head's logits of ``features``.
        features: $h$ (N, D), the head's input.
        temperature: $T > 0$.
    """
    num_classes = logits.shape[1]
    probabilities = torch.softmax(logits / temperature, dim=1)
    logit_gradient = (num_classes * probabilities - 1).abs().sum(dim=1)
    return logit_gradient * features.abs().sum(dim=1) / temperature
