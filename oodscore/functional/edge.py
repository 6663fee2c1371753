r"""EDGE's energy-gap hinge and its spectral distance between feature sets."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from oodscore.functional.energy import joint_energy_score


class GapTerms(NamedTuple):
    r"""$\mathcal{L}_{\text{gap}}$ and the share of its pairs whose hinge is positive."""

    gap: Tensor
    """The mean hinge over the outlier x tail pairs, with gradients."""
    active_pairs: Tensor
    """The fraction of those pairs with a positive hinge, detached."""


def edge_gap_terms(
    logits_in: Tensor, logits_out: Tensor, *, margin: float = 1.0, tail_size: int = 50
) -> GapTerms:
    r"""$\mathcal{L}_{\text{gap}}$ (`edge_gap_loss`) and the fraction of its active pairs.

    The fraction is $\frac{1}{Mk}\,\lvert\{(j, i) : S(x^{\text{out}}_j) - S(x^{\text{in}}_i)
    + m > 0\}\rvert$ over the same pairs: 0 when every outlier already scores $m$ below
    every tail ID row (the hinge gives no gradient), 1 when none does.
    """
    energy_in = joint_energy_score(logits_in)
    energy_out = joint_energy_score(logits_out)
    k = min(tail_size, energy_in.shape[0])
    tail = torch.topk(energy_in, k, largest=False, sorted=False).values
    hinge = energy_out[:, None] - tail[None, :] + margin
    active = (hinge.detach() > 0).to(hinge.dtype).mean()
    return GapTerms(F.relu(hinge).mean(), active)


def edge_gap_loss(
    logits_in: Tensor, logits_out: Tensor, *, margin: float = 1.0, tail_size: int = 50
) -> Tensor:
    r"""$\mathcal{L}_{\text{gap}}$: hinge between each outlier and the k lowest-energy ID rows.

    $$ \frac{1}{M k} \sum_{j=1}^{M} \sum_{i \in \text{tail}_k}
       \max\left(0,\; S(x^{\text{out}}_j) - S(x^{\text{in}}_i) + m\right) $$

    with $S$ the JointEnergy (`joint_energy_score`) and $\text{tail}_k$ the
    ``min(tail_size, N)`` ID rows of lowest $S$. Gradients flow through both sides.
    """
    return edge_gap_terms(logits_in, logits_out, margin=margin, tail_size=tail_size).gap


def top_singular_values(features: Tensor, k: int) -> Tensor:
    r"""The k largest singular values of $H / \sqrt{N}$ for features $H$ of shape (N, D)."""
    scaled = features / features.shape[0] ** 0.5
    values: Tensor = torch.linalg.svdvals(scaled)
    return values[:k]


def singular_value_distance(features_id: Tensor, features_out: Tensor, k: int) -> Tensor:
    r"""$\lVert \sigma_{1..k}(H_{in}/\sqrt{N}) - \sigma_{1..k}(H_{out}/\sqrt{M}) \rVert_2$."""
    distance: Tensor = torch.linalg.vector_norm(
        top_singular_values(features_id, k) - top_singular_values(features_out, k)
    )
    return distance
