r"""Balanced energy regularization: outlier margins and weights set by the outliers' class prior."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import Tensor

from oodscore._arrays import ArrayT, as_tensor
from oodscore._validation import LOSS_SCALE, check_float_matrix, check_non_negative
from oodscore.functional.energy_losses import balanced_energy_terms, hinge_total
from oodscore.regularizers.base import Regularizer, register_regularizer
from oodscore.regularizers.energy import (
    EnergyMarginLoss,
    check_margins,
    energy_inputs,
    energy_terms,
)


def estimate_class_prior(logits_out: ArrayT) -> ArrayT:
    r"""Class prior of auxiliary outliers: the share a pretrained model assigns to each class.

    $$ P_c = \frac{1}{M} \bigl|\{\, j : \arg\max_k f_k(\tilde x_j) = c \,\}\bigr| $$

    the procedure of Choi et al. (CVPR 2023): classify the auxiliary outlier set with
    the pretrained classifier and count the predictions per class (the official scripts
    hard-code the result, e.g. ``prior_gamma1=torch.tensor([0.1151, 0.0362, ...])`` for
    CIFAR-10 with 300K random images). Classes that no outlier is assigned to get 0 (and
    then $q_c = 0$ for $\gamma > 0$). Ties in the arg max go to the lowest class index.

    Args:
        logits_out: Logits (M, C) of the pretrained model on the auxiliary outliers, M >= 1;
            a torch tensor or a NumPy array.

    Returns:
        The prior (C,), float64, summing to 1; a NumPy array for NumPy input.

    Raises:
        ValueError: If ``logits_out`` is empty, not 2-D or not finite.
        TypeError: If it is neither a tensor nor an array of real numbers.

    Examples:
        >>> import torch
        >>> from oodscore import estimate_class_prior
        >>> estimate_class_prior(torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [5.0, 0.0, 0.0]]))
        tensor([0.6667, 0.3333, 0.0000], dtype=torch.float64)
    """
    logits, back = as_tensor(logits_out, "logits_out")
    check_float_matrix(logits, "logits_out", columns="C")
    with torch.no_grad():
        predicted = logits.argmax(dim=1)
        counts = torch.bincount(predicted, minlength=logits.shape[1]).to(torch.float64)
    result: ArrayT = back(counts / counts.sum())
    return result


@register_regularizer("balanced_energy")
class BalancedEnergyLoss(Regularizer):
    r"""Balanced energy loss: outlier margins and weights set by the outliers' class prior.

    The energy-margin loss (`EnergyMarginLoss`) with the outlier hinge adapted to the class
    prior $P$ of the auxiliary outliers (`estimate_class_prior`). With
    $q^{(\gamma)}_c = P_c^{\gamma} / \sum_k P_k^{\gamma}$ and the influence
    $Z_\gamma(x) = \sum_c \operatorname{softmax}(f(x))_c \, q^{(\gamma)}_c$:

    $$ \mathcal{L} = \lambda \left( \frac{1}{N}\sum_i \operatorname{relu}(E(x_i) - m_{in})^2
       + \frac{\sum_j Z_{\gamma_w}(\tilde x_j)\, \operatorname{relu}\big(m_{out}
       + \alpha Z_{\gamma}(\tilde x_j) - E(\tilde x_j)\big)^2}
       {\sum_j Z_{\gamma_w}(\tilde x_j)} \right), \quad E(x) = -\log\sum_c e^{f_c(x)} $$

    Outliers of majority classes get a higher margin and a larger share of the loss;
    $\gamma = 0$ reduces it to `EnergyMarginLoss` with margin $m_{out} + \alpha / C$.

    Every finite logit, prior and exponent gives a finite loss and finite gradients: $q$
    and the weights $Z_{\gamma_w}$ are normalized in log space (a prior of 100 classes
    raised to $\gamma = 30$ underflows to 0 in float32, and the direct form is 0 / 0), and
    each hinge is capped at `oodscore.functional.energy_losses.hinge_cap`.

    Dense (segmentation) form: as the official segmentation code, the two terms are
    averaged, $\frac{\lambda}{2}(\text{ID} + \text{outlier})$, when the batch has outlier
    pixels, and the ID term counts alone, $\lambda \cdot \text{ID}$, when it has none
    (``losses.py``); the official trainer then weights the loss by $\lambda = 0.1$. The
    official run adds smoothness and sparsity terms that this class does not have (see
    the docs page).

    After each call, `last_terms` holds the terms named as for `EnergyMarginLoss`:
    ``hinge_in``, ``hinge_out`` (the $Z$-weighted mean), ``active_in``, ``active_out``
    (the unweighted fraction of outliers with $E < m_{out} + \alpha Z_\gamma$),
    ``energy_in``, ``energy_out`` (mean energies, the outliers' before the shift) and
    ``weight``.

    Args:
        class_prior: The outliers' class prior $P$ (C,), non-negative with a positive sum
            (normalization does not matter); stored as a float64 buffer.
        weight: $\lambda$ in $[0, 10^6]$ (official 0.1, classification and segmentation).
        margin_in: $m_{in}$ in $[-10^6, 10^6]$ (CIFAR-10 script: -23).
        margin_out: $m_{out}$ in $[-10^6, 10^6]$ before the shift (CIFAR-10 script: -5).
        alpha: $\alpha$ in $[0, 10^6]$, scale of the margin shift (official ``--lamb``;
            CIFAR-10 10).
        gamma: $\gamma \ge 0$ of the margin's influence (official ``--gamma1``; 0.05).
        gamma_weight: $\gamma_w \ge 0$ of the hinge weights (official ``--gamma2``);
            ``None`` uses ``gamma``, as every official run does.
        validate_args: Check the inputs' values on every call (see `oodscore.Regularizer`).

    Examples:
        >>> import torch
        >>> from oodscore import BalancedEnergyLoss, estimate_class_prior
        >>> prior = estimate_class_prior(torch.tensor([[2.0, 0.0], [3.0, 1.0], [0.0, 1.0]]))
        >>> reg = BalancedEnergyLoss(prior, weight=1.0, margin_in=-3.0, margin_out=-1.0,
        ...                          alpha=1.0, gamma=1.0)
        >>> reg(logits_in=torch.tensor([[4.0, 0.0]]),
        ...     logits_out=torch.tensor([[0.0, 0.0], [0.0, 5.0]]))
        tensor(7.5947)

    Source: Choi, Jeong & Choi, CVPR 2023; ``hyunjunChhoi/Balanced_Energy``.
    """

    class_prior: Tensor
    term_names = EnergyMarginLoss.term_names

    def __init__(
        self,
        class_prior: Tensor | np.ndarray[Any, Any] | Sequence[float],
        *,
        weight: float = 0.1,
        margin_in: float = -23.0,
        margin_out: float = -5.0,
        alpha: float = 10.0,
        gamma: float = 0.05,
        gamma_weight: float | None = None,
        validate_args: bool = True,
    ) -> None:
        super().__init__(validate_args=validate_args)
        self.register_buffer("class_prior", _check_prior(class_prior))
        self.weight = LOSS_SCALE.check(weight, "weight")
        self.margin_in, self.margin_out = check_margins(margin_in, margin_out)
        self.alpha = LOSS_SCALE.check(alpha, "alpha")
        self.gamma = check_non_negative(gamma, "gamma")
        self.gamma_weight = (
            None if gamma_weight is None else check_non_negative(gamma_weight, "gamma_weight")
        )

    def forward(
        self,
        *,
        logits_in: Tensor,
        logits_out: Tensor | None = None,
        mask_out: Tensor | None = None,
        mask_in: Tensor | None = None,
    ) -> Tensor:
        """The weighted loss, a scalar tensor.

        Classification form with (N, C) and (M, C) logits (both non-empty), or dense form
        with (N, C, H, W) ``logits_in`` and boolean (N, H, W) masks, as in
        `EnergyMarginLoss.forward` (half the sum of the two terms when the batch has outlier
        pixels, the ID term alone when it has none, as ``losses.py``). C must equal the
        length of ``class_prior``.

        Raises:
            ValueError: On empty batches, mismatched class counts, non-finite logits, or
                ``logits_out`` given together with ``mask_out``.
            TypeError: If logits are not floating-point torch tensors.
        """
        rows_in, rows_out = energy_inputs(
            logits_in, logits_out, mask_out, mask_in, finite=self.validate_args
        )
        if rows_in.shape[1] != len(self.class_prior):
            raise ValueError(
                f"Expected logits with C = len(class_prior) = {len(self.class_prior)} "
                f"classes, got {rows_in.shape[1]}."
            )
        terms = balanced_energy_terms(
            rows_in,
            rows_out,
            self.class_prior,
            margin_in=self.margin_in,
            margin_out=self.margin_out,
            alpha=self.alpha,
            gamma=self.gamma,
            gamma_weight=self.gamma_weight,
        )
        loss = self.weight * hinge_total(
            terms.hinge_in,
            terms.hinge_out,
            dense=mask_out is not None,
            outliers=rows_out.shape[0] > 0,
        )
        self._store_terms(loss, energy_terms(terms, self.weight))
        return loss


def _check_prior(class_prior: object) -> Tensor:
    """The prior as a float64 tensor after checking it is 1-D, finite, >= 0, with sum > 0."""
    if isinstance(class_prior, Tensor):
        prior = class_prior.detach().to(device="cpu", dtype=torch.float64)
    elif isinstance(class_prior, np.ndarray) or (
        isinstance(class_prior, Sequence)
        and all(isinstance(p, Real) and not isinstance(p, bool) for p in class_prior)
    ):
        prior = torch.as_tensor(np.asarray(class_prior, dtype=np.float64))
    else:
        raise TypeError(
            "Expected `class_prior` to be a tensor, array or sequence of numbers, got "
            f"{type(class_prior).__name__}."
        )
    values = prior.tolist() if prior.ndim == 1 else []
    if not values or not all(math.isfinite(p) and p >= 0 for p in values) or sum(values) <= 0:
        raise ValueError(
            "Expected `class_prior` to be a non-empty 1-D vector of finite numbers >= 0 with "
            f"a positive sum, got {class_prior!r}."
        )
    return prior
