r"""Energy-bounded losses: squared hinges on the free energy, plain and class-prior balanced."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from oodscore.functional.energy import free_energy


def squared_hinges(
    energy_in: Tensor,
    energy_out: Tensor,
    *,
    margin_in: float,
    margin_out: float,
    weights_out: Tensor | None = None,
) -> Tensor:
    r"""Sum of the mean squared ID hinge and the (weighted) mean squared outlier hinge.

    $\operatorname{mean}_i \operatorname{relu}(E_i - m_{in})^2 + \operatorname{mean}_j
    \operatorname{relu}(m_{out} - E_j)^2$, the outlier mean weighted by ``weights_out``.

    An empty set contributes 0 (a segmentation crop without outlier pixels), as does an
    outlier set whose weights are all 0.
    """
    total = energy_in.new_zeros(())
    if energy_in.numel():
        total = total + F.relu(energy_in - margin_in).pow(2).mean()
    if energy_out.numel():
        hinge_out = F.relu(margin_out - energy_out).pow(2)
        if weights_out is None:
            total = total + hinge_out.mean()
        else:
            tiny = torch.finfo(hinge_out.dtype).tiny
            total = total + (hinge_out * weights_out).sum() / weights_out.sum().clamp_min(tiny)
    return total


def energy_margin_loss(
    logits_in: Tensor,
    logits_out: Tensor,
    *,
    margin_in: float = -25.0,
    margin_out: float = -7.0,
    temperature: float = 1.0,
) -> Tensor:
    r"""Unweighted energy-margin loss of ID logits (N, C) and outlier logits (M, C).

    $$ \frac{1}{N}\sum_i \operatorname{relu}(E(x_i) - m_{in})^2
       + \frac{1}{M}\sum_j \operatorname{relu}(m_{out} - E(\tilde x_j))^2 $$

    No input checks: `oodscore.EnergyMarginLoss` validates. An empty side contributes 0.
    """
    return squared_hinges(
        free_energy(logits_in, temperature),
        free_energy(logits_out, temperature),
        margin_in=margin_in,
        margin_out=margin_out,
    )


def prior_weights(class_prior: Tensor, gamma: float) -> Tensor:
    r"""$q_c = P_c^{\gamma} / \sum_k P_k^{\gamma}$ ($0^0 = 1$: $\gamma = 0$ gives uniform $q$)."""
    powered = class_prior.pow(gamma)
    return powered / powered.sum()


def class_influence(logits: Tensor, weights: Tensor) -> Tensor:
    r"""$Z(x) = \sum_c \operatorname{softmax}(f(x))_c \, q_c$ for each row of (N, C) logits."""
    return torch.softmax(logits, dim=1) @ weights.to(logits.dtype)


def balanced_energy_loss(
    logits_in: Tensor,
    logits_out: Tensor,
    class_prior: Tensor,
    *,
    margin_in: float = -23.0,
    margin_out: float = -5.0,
    alpha: float = 10.0,
    gamma: float = 0.05,
    gamma_weight: float | None = None,
) -> Tensor:
    r"""Unweighted balanced energy loss of ID logits (N, C) and outlier logits (M, C).

    $$ \frac{1}{N}\sum_i \operatorname{relu}(E(x_i) - m_{in})^2 +
       \frac{\sum_j Z_w(\tilde x_j)\,\operatorname{relu}\big(m_{out} + \alpha Z_m(\tilde x_j)
       - E(\tilde x_j)\big)^2}{\sum_j Z_w(\tilde x_j)} $$

    with $Z_m$, $Z_w$ the influences for the exponents ``gamma`` and ``gamma_weight``
    (``None``: same as ``gamma``). No input checks: `oodscore.BalancedEnergyLoss` validates.
    An empty side contributes 0, as does an outlier set whose weights $Z_w$ are all 0.
    """
    prior = class_prior.to(device=logits_out.device, dtype=logits_out.dtype)
    weight_exponent = gamma if gamma_weight is None else gamma_weight
    influence_margin = class_influence(logits_out, prior_weights(prior, gamma))
    influence_weight = class_influence(logits_out, prior_weights(prior, weight_exponent))
    # The outlier margin moves up by alpha * Z; Z is not detached (as in the official
    # code), so gradients also flow through the softmax inside Z.
    return squared_hinges(
        free_energy(logits_in),
        free_energy(logits_out) - alpha * influence_margin,
        margin_in=margin_in,
        margin_out=margin_out,
        weights_out=influence_weight,
    )
