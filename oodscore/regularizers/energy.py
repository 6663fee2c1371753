r"""Energy-bounded learning: squared hinges that push ID energies down and outlier energies up."""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from oodscore._validation import check_non_negative, check_positive
from oodscore.regularizers.base import (
    Regularizer,
    check_logits_pair,
    dense_logits_rows,
    register_regularizer,
)


def free_energy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    r"""Free energy $E(x) = -T \cdot \log \sum_c e^{f_c(x)/T}$ of each row of (N, C) logits."""
    if temperature == 1.0:
        return -torch.logsumexp(logits, dim=1)
    return -temperature * torch.logsumexp(logits / temperature, dim=1)


def check_margins(margin_in: object, margin_out: object) -> tuple[float, float]:
    r"""Return both margins as floats after checking they are finite and ``margin_in < margin_out``.

    With $E = -\operatorname{logsumexp}$, ID samples should have *low* energy and outliers
    *high* energy, so the ID hinge bound must lie below the outlier one; ``margin_in >=
    margin_out`` asks for no gap at all and is almost always a sign error (the margins of
    the negative energy, i.e. the score, passed by mistake).
    """
    values = []
    for name, value in (("margin_in", margin_in), ("margin_out", margin_out)):
        if (
            isinstance(value, bool)
            or not isinstance(value, Real)
            or not math.isfinite(float(value))
        ):
            raise ValueError(f"Expected `{name}` to be a finite number, got {value!r}.")
        values.append(float(value))
    low, high = values
    if not low < high:
        raise ValueError(
            f"Expected `margin_in` < `margin_out` (energies E = -logsumexp(f): ID low, outliers "
            f"high, e.g. -25 and -7), got margin_in={margin_in!r}, margin_out={margin_out!r}."
        )
    return low, high


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

    No input checks: `EnergyMarginLoss` validates. An empty side contributes 0.
    """
    return squared_hinges(
        free_energy(logits_in, temperature),
        free_energy(logits_out, temperature),
        margin_in=margin_in,
        margin_out=margin_out,
    )


@register_regularizer("energy_margin")
class EnergyMarginLoss(Regularizer):
    r"""Energy-bounded learning loss (Liu, Wang, Owens & Li, NeurIPS 2020).

    $$ \mathcal{L}_{\text{energy}} = \lambda \Big(
       \mathbb{E}_{x \sim \text{ID}} \operatorname{relu}(E(x) - m_{in})^2 +
       \mathbb{E}_{\tilde x \sim \text{outliers}} \operatorname{relu}(m_{out} - E(\tilde x))^2
       \Big), \qquad E(x) = -T \log \sum_c e^{f_c(x)/T} $$

    Squared hinges pull the free energy of ID samples below $m_{in}$ and push that of
    auxiliary outliers above $m_{out}$; detection then uses the energy score
    (`oodscore.Energy`), which is $-E$. Added to the cross-entropy of the ID batch:
    ``loss = F.cross_entropy(logits_in, y) + reg(logits_in, logits_out)``.

    Official code ``wetliu/energy_ood`` (``CIFAR/train.py``, ``--score energy``):
    ``0.1*(relu(Ec_in - m_in)**2).mean() + (relu(m_out - Ec_out)**2).mean())`` with
    ``Ec = -logsumexp(x)``. Defaults are that script's argparse values: ``weight`` 0.1,
    ``margin_in`` -25, ``margin_out`` -7, T = 1 (the training loss has no temperature).
    The run script ``CIFAR/run.sh`` overrides the margins per dataset: **-23 / -5 for
    CIFAR-10** and **-27 / -5 for CIFAR-100** (fine-tuning a pretrained WideResNet for 10
    epochs). The margins depend on the scale of the model's logits; for a new model use
    `oodscore.calibrate_margins`. The segmentation form (PEBAL, Balanced Energy's
    ``segmentation/code/losses.py``) uses ``weight=0.5, margin_in=-12, margin_out=-6``.

    Margins must satisfy ``margin_in < margin_out`` (ID energies low, outlier energies
    high); see `oodscore.regularizers.energy.check_margins`.

    Args:
        weight: $\lambda \ge 0$ (official 0.1).
        margin_in: $m_{in}$, the energy above which ID samples are penalized (official -25).
        margin_out: $m_{out}$, the energy below which outliers are penalized (official -7).
        temperature: $T > 0$ of the free energy (official 1).

    Example:
        >>> import torch
        >>> from oodscore import EnergyMarginLoss
        >>> reg = EnergyMarginLoss(weight=1.0, margin_in=-2.0, margin_out=-1.0)
        >>> logits_in = torch.tensor([[1.0, 0.0], [4.0, 3.0]])   # energies -1.31, -4.31
        >>> logits_out = torch.tensor([[0.0, 0.0]])              # energy -0.69
        >>> reg(logits_in, logits_out)  # relu(-1.31 + 2)^2 / 2 + relu(-1 + 0.69)^2 = 0.236 + 0
        tensor(0.2358)
        >>> EnergyMarginLoss()
        EnergyMarginLoss(weight=0.1, margin_in=-25.0, margin_out=-7.0, temperature=1.0)
    """

    def __init__(
        self,
        *,
        weight: float = 0.1,
        margin_in: float = -25.0,
        margin_out: float = -7.0,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.weight = check_non_negative(weight, "weight")
        self.margin_in, self.margin_out = check_margins(margin_in, margin_out)
        self.temperature = check_positive(temperature, "temperature")

    def forward(
        self,
        logits_in: Tensor,
        logits_out: Tensor | None = None,
        *,
        mask_out: Tensor | None = None,
        mask_in: Tensor | None = None,
    ) -> Tensor:
        """The weighted loss, a scalar tensor.

        Two forms: classification, ``reg(logits_in, logits_out)`` with (N, C) and (M, C)
        logits of the ID and outlier batches (both non-empty); or dense (segmentation),
        ``reg(logits, mask_out=..., mask_in=...)`` with (N, C, H, W) logits of every pixel
        and boolean (N, H, W) masks (see
        `oodscore.regularizers.base.dense_logits_rows`), where a crop without
        outlier pixels contributes only the ID term, as in the official segmentation code.

        Raises:
            ValueError: On empty batches, mismatched class counts, non-finite logits, or
                ``logits_out`` given together with ``mask_out``.
            TypeError: If logits are not floating-point torch tensors.
        """
        rows_in, rows_out = _energy_inputs(logits_in, logits_out, mask_out, mask_in)
        loss = energy_margin_loss(
            rows_in,
            rows_out,
            margin_in=self.margin_in,
            margin_out=self.margin_out,
            temperature=self.temperature,
        )
        return self.weight * loss


def _energy_inputs(
    logits_in: Tensor,
    logits_out: Tensor | None,
    mask_out: Tensor | None,
    mask_in: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """ID and outlier rows of either form of the energy losses, checked."""
    if mask_out is not None:
        if logits_out is not None:
            raise ValueError(
                "Expected either `logits_out` (classification form) or `mask_out` (dense "
                "form), got both."
            )
        return dense_logits_rows(logits_in, mask_out, mask_in)
    if mask_in is not None:
        raise ValueError("Expected `mask_in` only together with `mask_out` (the dense form).")
    if logits_out is None:
        raise ValueError(
            "Expected `logits_out`, the logits of the auxiliary outlier batch (M, C); "
            "for segmentation logits (N, C, H, W) pass `mask_out` instead."
        )
    return check_logits_pair(logits_in, logits_out)
