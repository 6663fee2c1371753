r"""EDGE's energy-gap hinge and its spectral distance between feature sets."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from oodscore.functional.energy import joint_energy_score


def edge_gap_loss(
    logits_in: Tensor, logits_out: Tensor, *, margin: float = 1.0, tail_size: int = 50
) -> Tensor:
    r"""$\mathcal{L}_{\text{gap}}$: hinge between each outlier and the k lowest-energy ID rows.

    $$ \frac{1}{M k} \sum_{j=1}^{M} \sum_{i \in \text{tail}_k}
       \max\left(0,\; S(x^{\text{out}}_j) - S(x^{\text{in}}_i) + m\right) $$

    with $S$ the JointEnergy (`joint_energy_score`) and $\text{tail}_k$ the
    ``min(tail_size, N)`` ID rows of lowest $S$. Gradients flow through both sides.
    """
    energy_in = joint_energy_score(logits_in)
    energy_out = joint_energy_score(logits_out)
    k = min(tail_size, energy_in.shape[0])
    tail = torch.topk(energy_in, k, largest=False, sorted=False).values
    return F.relu(energy_out[:, None] - tail[None, :] + margin).mean()


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
