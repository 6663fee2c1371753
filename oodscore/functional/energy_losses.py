r"""Energy-bounded losses: squared hinges on the free energy, plain and class-prior balanced.

Every finite logit gives a finite loss and finite gradients. Two devices keep it so. A hinge
is capped at $\sqrt{\text{max}} / 4096$ of the dtype ($4.5 \cdot 10^{15}$ in float32,
$10^{150}$ in float64): its square then cannot overflow, nor can a loss weighted by up to
$10^6$ (`oodscore._validation.LOSS_SCALE`) or its gradient; a sample beyond the cap adds the
cap's square and no gradient. And the balanced loss weighs its outliers in log space, so
weights that underflow (a prior raised to the power 30) never give 0 / 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from oodscore._arrays import finite_sum
from oodscore.functional.energy import free_energy


def hinge_cap(dtype: torch.dtype) -> float:
    r"""Largest hinge value the squared hinges use: $\sqrt{\text{max}} / 2^{12}$ of ``dtype``.

    Its square is at most $\text{max} / 2^{24}$, so a sum of two mean squared hinges times a
    weight of up to $10^6 < 2^{20}$, and every gradient on the way, stay finite.
    """
    return math.sqrt(torch.finfo(dtype).max) / 4096.0


def _squared_hinge(x: Tensor) -> Tensor:
    """``relu(x)**2`` with ``relu(x)`` capped at `hinge_cap` (no gradient beyond it)."""
    return F.relu(x).clamp_max(hinge_cap(x.dtype)).square()


class HingeTerms(NamedTuple):
    """The two squared hinges of the energy losses and the share of samples each one acts on.

    ``hinge_in`` and ``hinge_out`` carry gradients; ``active_in`` and ``active_out`` are
    detached fractions in [0, 1]. An empty set gives 0 for both of its entries.
    """

    hinge_in: Tensor
    r"""$\frac{1}{N}\sum_i \operatorname{relu}(E_i - m_{in})^2$."""
    hinge_out: Tensor
    r"""$\frac{1}{M}\sum_j \operatorname{relu}(m_{out} - E_j)^2$, or its weighted mean."""
    active_in: Tensor
    r"""The fraction of ID samples with $E_i > m_{in}$ (a positive hinge)."""
    active_out: Tensor
    r"""The fraction of outliers with $E_j < m_{out}$ (unweighted)."""


class EnergyLossTerms(NamedTuple):
    """The `HingeTerms` of an energy loss and the free energies they were computed from."""

    hinge_in: Tensor
    hinge_out: Tensor
    active_in: Tensor
    active_out: Tensor
    energy_in: Tensor
    """The free energies of the ID rows (N,), with gradients."""
    energy_out: Tensor
    """The free energies of the outlier rows (M,), before any margin shift, with gradients."""


def squared_hinge_terms(
    energy_in: Tensor,
    energy_out: Tensor,
    *,
    margin_in: float,
    margin_out: float,
    weights_out: Tensor | None = None,
    log_weights_out: Tensor | None = None,
) -> HingeTerms:
    r"""The mean squared ID hinge, the (weighted) mean squared outlier hinge, and their shares.

    $\operatorname{mean}_i \operatorname{relu}(E_i - m_{in})^2$ and $\operatorname{mean}_j
    \operatorname{relu}(m_{out} - E_j)^2$, the outlier mean weighted by ``weights_out``
    (non-negative) or by ``exp(log_weights_out)`` (normalized in log space: weights that
    all underflow still average correctly); with the fraction of samples whose hinge is
    positive on each side (unweighted, detached). An empty set contributes 0, as does an
    outlier set whose weights are all 0. Each hinge is capped at `hinge_cap`.
    """
    zero = energy_in.new_zeros(())
    hinge_in, active_in = zero, zero
    if energy_in.numel():
        gap_in = energy_in - margin_in
        hinge_in = finite_sum(_squared_hinge(gap_in), mean=True)
        active_in = _active_fraction(gap_in)
    if not energy_out.numel():
        return HingeTerms(hinge_in, zero, active_in, zero)
    gap_out = margin_out - energy_out
    squared = _squared_hinge(gap_out)
    if log_weights_out is not None:
        hinge_out: Tensor = torch.linalg.vecdot(torch.softmax(log_weights_out, dim=0), squared)
    elif weights_out is not None:
        hinge_out = _weighted_mean(squared, weights_out)
    else:
        hinge_out = finite_sum(squared, mean=True)
    return HingeTerms(hinge_in, hinge_out, active_in, _active_fraction(gap_out))


def _active_fraction(gap: Tensor) -> Tensor:
    """The share of entries with a positive hinge argument, detached (no host sync)."""
    return (gap.detach() > 0).to(gap.dtype).mean()


def hinge_total(hinge_in: Tensor, hinge_out: Tensor, *, dense: bool, outliers: bool) -> Tensor:
    r"""The unweighted energy loss from its two hinges: their sum, or the dense form's rule.

    ``dense=True`` is the official segmentation weighting (``segmentation/code/losses.py``):
    the mean of the two terms, $\frac{1}{2}(\text{ID} + \text{outlier})$, when there are
    ``outliers``, and the ID term alone when there are none.
    """
    total = hinge_in + hinge_out
    return 0.5 * total if dense and outliers else total


def squared_hinges(
    energy_in: Tensor,
    energy_out: Tensor,
    *,
    margin_in: float,
    margin_out: float,
    weights_out: Tensor | None = None,
    log_weights_out: Tensor | None = None,
    dense: bool = False,
) -> Tensor:
    r"""Sum of the mean squared ID hinge and the (weighted) mean squared outlier hinge.

    $\operatorname{mean}_i \operatorname{relu}(E_i - m_{in})^2 + \operatorname{mean}_j
    \operatorname{relu}(m_{out} - E_j)^2$: the two terms of `squared_hinge_terms`, added
    by `hinge_total`. An empty set contributes 0 (a segmentation crop without outlier
    pixels), as does an outlier set whose weights are all 0. ``dense=True`` is the
    official segmentation weighting: the mean of the two terms when there are outliers,
    and the ID term alone when there are none. Each hinge is capped at `hinge_cap`.
    """
    terms = squared_hinge_terms(
        energy_in,
        energy_out,
        margin_in=margin_in,
        margin_out=margin_out,
        weights_out=weights_out,
        log_weights_out=log_weights_out,
    )
    return hinge_total(
        terms.hinge_in, terms.hinge_out, dense=dense, outliers=energy_out.numel() > 0
    )


def _weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """``sum(w * v) / sum(w)`` for non-negative ``w``, 0 when every weight is 0.

    The weights are first divided by their maximum, so neither tiny weights (whose sum
    would underflow) nor large ones (whose sum would overflow) give 0 / 0 or inf.
    """
    largest = weights.detach().amax()
    if not bool(largest > 0):
        return (values * weights).sum()  # 0, with the gradient of the official form
    scaled = weights / largest
    mean: Tensor = torch.linalg.vecdot(scaled / scaled.sum(), values)
    return mean


def energy_margin_terms(
    logits_in: Tensor,
    logits_out: Tensor,
    *,
    margin_in: float = -25.0,
    margin_out: float = -7.0,
    temperature: float = 1.0,
) -> EnergyLossTerms:
    r"""The terms of the energy-margin loss of ID logits (N, C) and outlier logits (M, C).

    The free energies $E = -T\log\sum_c e^{f_c/T}$ of both sets and their `HingeTerms`
    against $m_{in}$ and $m_{out}$. No input checks.
    """
    energy_in = free_energy(logits_in, temperature)
    energy_out = free_energy(logits_out, temperature)
    hinges = squared_hinge_terms(energy_in, energy_out, margin_in=margin_in, margin_out=margin_out)
    return EnergyLossTerms(*hinges, energy_in=energy_in, energy_out=energy_out)


def energy_margin_loss(
    logits_in: Tensor,
    logits_out: Tensor,
    *,
    margin_in: float = -25.0,
    margin_out: float = -7.0,
    temperature: float = 1.0,
    dense: bool = False,
) -> Tensor:
    r"""Unweighted energy-margin loss of ID logits (N, C) and outlier logits (M, C).

    $$ \frac{1}{N}\sum_i \operatorname{relu}(E(x_i) - m_{in})^2
       + \frac{1}{M}\sum_j \operatorname{relu}(m_{out} - E(\tilde x_j))^2 $$

    No input checks: `oodscore.EnergyMarginLoss` validates. An empty side contributes 0;
    ``dense=True`` halves the sum when there are outliers (see `hinge_total`). The two
    terms and the shares of active hinges: `energy_margin_terms`.
    """
    terms = energy_margin_terms(
        logits_in, logits_out, margin_in=margin_in, margin_out=margin_out, temperature=temperature
    )
    return hinge_total(
        terms.hinge_in, terms.hinge_out, dense=dense, outliers=logits_out.shape[0] > 0
    )


def prior_log_weights(class_prior: Tensor, gamma: float) -> Tensor:
    r"""$\log q_c$, $q_c = P_c^{\gamma} / \sum_k P_k^{\gamma}$, computed in log space.

    $\gamma \log P_c$ is shifted by its maximum before the normalization, so no power
    underflows: $P_c \approx 0.01$ with $\gamma = 30$ gives $P_c^\gamma = 10^{-60}$, 0 in
    float32 (and 0 / 0 in the direct form), but a finite $\log q_c$ here. $0^0 = 1$:
    $\gamma = 0$ gives uniform $q$; for $\gamma > 0$ a class of prior 0 gets $-\infty$.
    """
    prior = class_prior.to(torch.float64)
    if gamma == 0:
        return torch.full_like(prior, -math.log(prior.numel())).to(class_prior.dtype)
    log_prior = torch.log(prior)
    scaled = gamma * (log_prior - log_prior.max())  # 0 at the largest prior, <= 0 elsewhere
    return (scaled - torch.logsumexp(scaled, dim=0)).to(class_prior.dtype)


def prior_weights(class_prior: Tensor, gamma: float) -> Tensor:
    r"""$q_c = P_c^{\gamma} / \sum_k P_k^{\gamma}$ ($0^0 = 1$: $\gamma = 0$ gives uniform $q$).

    The exponential of `prior_log_weights`: no 0 / 0 when every power underflows.
    """
    return prior_log_weights(class_prior, gamma).exp()


def class_influence(logits: Tensor, weights: Tensor) -> Tensor:
    r"""$Z(x) = \sum_c \operatorname{softmax}(f(x))_c \, q_c$ for each row of (N, C) logits."""
    return torch.softmax(logits, dim=1) @ weights.to(logits.dtype)


def class_log_influence(logits: Tensor, log_weights: Tensor) -> Tensor:
    r"""$\log Z(x) = \operatorname{logsumexp}_c(\log \operatorname{softmax}(f(x))_c + \log q_c)$.

    `class_influence` in log space, so an influence that underflows keeps its value. Terms
    below the lowest finite value (a softmax that is exactly 0 where the logits' differences
    overflow, or a weight $q_c = 0$) are clamped to it: the result is always finite.
    """
    lowest = torch.finfo(logits.dtype).min
    terms = torch.log_softmax(logits, dim=1) + log_weights.to(logits.dtype)
    return torch.logsumexp(terms.clamp_min(lowest), dim=1)


def balanced_energy_terms(
    logits_in: Tensor,
    logits_out: Tensor,
    class_prior: Tensor,
    *,
    margin_in: float = -23.0,
    margin_out: float = -5.0,
    alpha: float = 10.0,
    gamma: float = 0.05,
    gamma_weight: float | None = None,
) -> EnergyLossTerms:
    r"""The terms of the balanced energy loss of ID logits (N, C) and outlier logits (M, C).

    The ID hinge as in `energy_margin_terms`; the outlier hinge
    $\operatorname{relu}(m_{out} + \alpha Z_\gamma(\tilde x_j) - E(\tilde x_j))^2$, its
    mean weighted by $Z_{\gamma_w}$ and its active share unweighted. ``energy_out`` holds
    the outliers' plain energies $E$, before the shift by $\alpha Z_\gamma$. No input checks.
    """
    weight_exponent = gamma if gamma_weight is None else gamma_weight
    log_q_margin = prior_log_weights(class_prior, gamma).to(logits_out.device)
    log_q_weight = prior_log_weights(class_prior, weight_exponent).to(logits_out.device)
    influence_margin = class_log_influence(logits_out, log_q_margin).exp()
    energy_in = free_energy(logits_in)
    energy_out = free_energy(logits_out)
    # The outlier margin moves up by alpha * Z; Z is not detached (as in the official
    # code), so gradients also flow through the softmax inside Z.
    hinges = squared_hinge_terms(
        energy_in,
        energy_out - alpha * influence_margin,
        margin_in=margin_in,
        margin_out=margin_out,
        log_weights_out=class_log_influence(logits_out, log_q_weight),
    )
    return EnergyLossTerms(*hinges, energy_in=energy_in, energy_out=energy_out)


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
    dense: bool = False,
) -> Tensor:
    r"""Unweighted balanced energy loss of ID logits (N, C) and outlier logits (M, C).

    $$ \frac{1}{N}\sum_i \operatorname{relu}(E(x_i) - m_{in})^2 +
       \frac{\sum_j Z_w(\tilde x_j)\,\operatorname{relu}\big(m_{out} + \alpha Z_m(\tilde x_j)
       - E(\tilde x_j)\big)^2}{\sum_j Z_w(\tilde x_j)} $$

    with $Z_m$, $Z_w$ the influences for the exponents ``gamma`` and ``gamma_weight``
    (``None``: same as ``gamma``). No input checks: `oodscore.BalancedEnergyLoss` validates.
    An empty side contributes 0; ``dense=True`` halves the sum when there are outliers (the
    official segmentation weighting, see `hinge_total`). The weights $Z_w$ are
    normalized in log space (`class_log_influence`), so they never give 0 / 0; since every
    finite logit has a positive softmax, the outlier weights are never all 0. The two
    terms and the shares of active hinges: `balanced_energy_terms`.
    """
    terms = balanced_energy_terms(
        logits_in,
        logits_out,
        class_prior,
        margin_in=margin_in,
        margin_out=margin_out,
        alpha=alpha,
        gamma=gamma,
        gamma_weight=gamma_weight,
    )
    return hinge_total(
        terms.hinge_in, terms.hinge_out, dense=dense, outliers=logits_out.shape[0] > 0
    )
