r"""Balanced energy regularization: outlier margins and weights set by the outliers' class prior."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from oodscore._arrays import as_tensor
from oodscore._validation import check_float_matrix, check_non_negative
from oodscore.regularizers.base import Regularizer, register_regularizer
from oodscore.regularizers.energy import _energy_inputs, check_margins, free_energy, squared_hinges

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray[Any, Any])


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

    Example:
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
    (``None``: same as ``gamma``). No input checks: `BalancedEnergyLoss` validates.
    An empty side contributes 0, as does an outlier set whose weights $Z_w$ are all 0.
    """
    prior = class_prior.to(device=logits_out.device, dtype=logits_out.dtype)
    weight_exponent = gamma if gamma_weight is None else gamma_weight
    influence_margin = class_influence(logits_out, prior_weights(prior, gamma))
    influence_weight = class_influence(logits_out, prior_weights(prior, weight_exponent))
    # Official code: Ec_out - lamb * Z, i.e. the outlier margin moves up by alpha * Z; Z
    # is not detached there, so gradients also flow through the softmax in Z.
    return squared_hinges(
        free_energy(logits_in),
        free_energy(logits_out) - alpha * influence_margin,
        margin_in=margin_in,
        margin_out=margin_out,
        weights_out=influence_weight,
    )


@register_regularizer("balanced_energy")
class BalancedEnergyLoss(Regularizer):
    r"""Balanced energy regularization loss (Choi, Jeong & Choi, CVPR 2023).

    The energy-margin loss (`EnergyMarginLoss`) with the outlier hinge adapted to
    the class prior $P$ of the auxiliary outliers — the share of them a pretrained model
    assigns to each class (`estimate_class_prior`). With
    $q^{(\gamma)}_c = P_c^{\gamma} / \sum_k P_k^{\gamma}$ and the influence
    $Z_\gamma(x) = \sum_c \operatorname{softmax}(f(x))_c \, q^{(\gamma)}_c$ (large for an
    outlier that looks like a class many outliers fall into):

    $$ \mathcal{L} = \lambda \left( \frac{1}{N}\sum_i \operatorname{relu}(E(x_i) - m_{in})^2
       + \frac{\sum_j Z_{\gamma_w}(\tilde x_j)\, \operatorname{relu}\big(m_{out}
       + \alpha Z_{\gamma}(\tilde x_j) - E(\tilde x_j)\big)^2}
       {\sum_j Z_{\gamma_w}(\tilde x_j)} \right), \quad E(x) = -\log\sum_c e^{f_c(x)} $$

    Outliers of majority classes get a higher energy margin ($m_{out} + \alpha Z$) and a
    larger share of the loss (the $Z$-weighted mean); $\gamma = 0$ makes $q$ uniform and
    reduces the loss to `EnergyMarginLoss` with margin $m_{out} + \alpha / C$.

    Official code ``hyunjunChhoi/Balanced_Energy``, read for this implementation:
    ``classification/inf_train_res.py`` (``Ec_out = Ec_out - lamb * Z_gamma1``; loss
    ``0.1*(relu(Ec_in-m_in)**2).mean() + (relu(m_out-Ec_out)**2 * Z_gamma2).sum() /
    Z_gamma2.sum())``; ``q = F.normalize(P**gamma, p=1)``; $Z$ is **not** detached, so
    gradients flow through the softmax inside $Z$ too, as here) and
    ``segmentation/code/losses.py`` (``balanced_energy_loss_pure``: the same on pixels, an
    image without outlier pixels gives only the ID term). The ID term is the plain energy
    hinge. Defaults are the CIFAR-10 run script's (``inf_run_res.sh``): ``weight`` 0.1,
    ``margin_in`` -23, ``margin_out`` -5, ``alpha`` (``--lamb``) 10, ``gamma`` =
    ``gamma_weight`` (``--gamma1``/``--gamma2``) 0.05. Other official settings:
    CIFAR-100 ``margin_in=-27, margin_out=-5, alpha=100, gamma=0.005``; long-tailed
    CIFAR-10-LT / CIFAR-100-LT (ResNet-18, ``inf_run_im_res.sh``) ``gamma=0.75`` with
    alpha 10 / 100; segmentation (``config.py``) ``weight=0.5, margin_in=-12,
    margin_out=-6, alpha=5, gamma=3``. The argparse defaults (``--lamb 5``, gammas 0) are
    not used by any run script. Note that ``inf_train_res.py`` fine-tunes on
    ``CIFAR10(train=False)``, the test split it later evaluates on; use your training
    split.

    Args:
        class_prior: The outliers' class prior $P$ (C,), non-negative with a positive sum
            (normalization does not matter); stored as a float64 buffer.
        weight: $\lambda \ge 0$ (official 0.1; 0.5 for segmentation).
        margin_in: $m_{in}$ (CIFAR-10 script: -23).
        margin_out: $m_{out}$ before the shift (CIFAR-10 script: -5).
        alpha: $\alpha \ge 0$, scale of the margin shift (official ``--lamb``; CIFAR-10 10).
        gamma: $\gamma \ge 0$ of the margin's influence (official ``--gamma1``; 0.05).
        gamma_weight: $\gamma_w \ge 0$ of the hinge weights (official ``--gamma2``);
            ``None`` uses ``gamma``, as every official run does.

    Example:
        >>> import torch
        >>> from oodscore import BalancedEnergyLoss, estimate_class_prior
        >>> prior = estimate_class_prior(torch.tensor([[2.0, 0.0], [3.0, 1.0], [0.0, 1.0]]))
        >>> reg = BalancedEnergyLoss(prior, weight=1.0, margin_in=-3.0, margin_out=-1.0,
        ...                          alpha=1.0, gamma=1.0)
        >>> reg(torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 5.0]]))
        tensor(7.5947)
    """

    class_prior: Tensor

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
    ) -> None:
        super().__init__()
        self.register_buffer("class_prior", _check_prior(class_prior))
        self.weight = check_non_negative(weight, "weight")
        self.margin_in, self.margin_out = check_margins(margin_in, margin_out)
        self.alpha = check_non_negative(alpha, "alpha")
        self.gamma = check_non_negative(gamma, "gamma")
        self.gamma_weight = (
            None if gamma_weight is None else check_non_negative(gamma_weight, "gamma_weight")
        )

    def forward(
        self,
        logits_in: Tensor,
        logits_out: Tensor | None = None,
        *,
        mask_out: Tensor | None = None,
        mask_in: Tensor | None = None,
    ) -> Tensor:
        """The weighted loss, a scalar tensor.

        Classification form ``reg(logits_in, logits_out)`` with (N, C) and (M, C) logits
        (both non-empty), or dense form ``reg(logits, mask_out=..., mask_in=...)`` with
        (N, C, H, W) logits and boolean (N, H, W) masks, as in
        `EnergyMarginLoss.forward`. C must equal the length of ``class_prior``.

        Raises:
            ValueError: On empty batches, mismatched class counts, non-finite logits, or
                ``logits_out`` given together with ``mask_out``.
            TypeError: If logits are not floating-point torch tensors.
        """
        rows_in, rows_out = _energy_inputs(logits_in, logits_out, mask_out, mask_in)
        if rows_in.shape[1] != len(self.class_prior):
            raise ValueError(
                f"Expected logits with C = len(class_prior) = {len(self.class_prior)} "
                f"classes, got {rows_in.shape[1]}."
            )
        loss = balanced_energy_loss(
            rows_in,
            rows_out,
            self.class_prior,
            margin_in=self.margin_in,
            margin_out=self.margin_out,
            alpha=self.alpha,
            gamma=self.gamma,
            gamma_weight=self.gamma_weight,
        )
        return self.weight * loss


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
