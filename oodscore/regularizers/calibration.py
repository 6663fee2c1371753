r"""Energy margins for a new model or dataset, read off a pretrained model's energies."""

from __future__ import annotations

from typing import NamedTuple

import torch

from oodscore._arrays import as_tensor
from oodscore._validation import TEMPERATURE, check_non_negative
from oodscore.functional.energy import free_energy
from oodscore.regularizers.base import check_pair


class EnergyMargins(NamedTuple):
    """Margins for `oodscore.EnergyMarginLoss` / `oodscore.BalancedEnergyLoss`.

    Unpack them as keyword arguments: ``EnergyMarginLoss(**margins._asdict())``.
    """

    margin_in: float
    margin_out: float


def calibrate_margins(
    logits_in: object,
    logits_out: object,
    *,
    temperature: float = 1.0,
    widen: float = 0.0,
) -> EnergyMargins:
    r"""Energy margins from the mean energies of a pretrained model on ID data and outliers.

    $$ m_{in} = \bar E_{in} - w\,(\bar E_{out} - \bar E_{in}), \qquad
       m_{out} = \bar E_{out} + w\,(\bar E_{out} - \bar E_{in}) $$

    with $\bar E$ the mean free energy $E(x) = -T\log\sum_c e^{f_c(x)/T}$ of the pretrained
    (cross-entropy) model on the ID training data and on the auxiliary outliers, and $w$ =
    ``widen``. The official margins (-25/-7, -23/-5 on CIFAR) fit a WideResNet's logits;
    other models have energies on other scales. The energy paper's authors advise
    (``wetliu/energy_ood`` issues #13 and #21) to set $m_{in}$ and $m_{out}$ from the
    pretrained model's ID and outlier energies, "average is fine", so that fine-tuning
    does not have to move every energy to a far-away bound, which harms the ID accuracy.
    That is the rule with ``widen=0`` (the default): about half of each set starts inside
    its hinge, so the loss acts from the first step without dragging the energies away.
    ``widen > 0`` asks for a larger gap (their example: ID -0.5, outliers -0.3 → margins
    -1 and 0, i.e. ``widen`` ≈ 2.5).

    Args:
        logits_in: Logits (N, C) of the pretrained model on ID (training) data, N >= 1.
        logits_out: Logits (M, C) of the same model on the auxiliary outliers, M >= 1.
        temperature: $T$ in $[10^{-6}, 10^6]$ of the energy, as `EnergyMarginLoss` (the
            losses use 1).
        widen: $w \ge 0$, how far beyond the means to put the margins, in units of the gap.

    Returns:
        ``EnergyMargins(margin_in, margin_out)`` as floats.

    Raises:
        ValueError: If the inputs are empty, not 2-D, not finite, differ in C, or if the
            mean ID energy is not below the mean outlier energy (the pretrained model
            does not separate them, so no margins in the required order exist).
        TypeError: If an input is neither a tensor nor an array of real numbers.

    Examples:
        >>> import torch
        >>> from oodscore import EnergyMarginLoss, calibrate_margins
        >>> margins = calibrate_margins(torch.tensor([[9.0, 1.0], [7.0, 0.0]]),
        ...                             torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
        >>> round(margins.margin_in, 2), round(margins.margin_out, 2)
        (-8.0, -1.91)
        >>> reg = EnergyMarginLoss(**margins._asdict())
        >>> (reg.margin_in, reg.margin_out) == margins
        True
    """
    temperature = TEMPERATURE.check(temperature, "temperature")
    widen = check_non_negative(widen, "widen")
    tensor_in, tensor_out = check_pair(
        as_tensor(logits_in, "logits_in")[0],
        as_tensor(logits_out, "logits_out")[0],
        ("logits_in", "logits_out"),
    )
    with torch.no_grad():
        mean_in = float(free_energy(tensor_in.double(), temperature).mean())
        mean_out = float(free_energy(tensor_out.double(), temperature).mean())
    if not mean_in < mean_out:
        raise ValueError(
            f"Expected the mean ID energy to be below the mean outlier energy, got "
            f"{mean_in:.4g} (ID) >= {mean_out:.4g} (outliers): the model does not separate "
            "them, so margins with margin_in < margin_out cannot be read off; set them by hand."
        )
    gap = mean_out - mean_in
    return EnergyMargins(margin_in=mean_in - widen * gap, margin_out=mean_out + widen * gap)
