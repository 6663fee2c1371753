r"""Energy-bounded learning: squared hinges that push ID energies down and outlier energies up."""

from __future__ import annotations

from torch import Tensor

from oodscore._validation import LOSS_SCALE, MARGIN, TEMPERATURE
from oodscore.functional.energy_losses import energy_margin_loss
from oodscore.regularizers.base import (
    Regularizer,
    check_pair,
    dense_logits_rows,
    register_regularizer,
)


def check_margins(margin_in: object, margin_out: object) -> tuple[float, float]:
    r"""Return both margins as floats after checking their range and ``margin_in < margin_out``.

    Energies of trained models lie within a few hundred of 0; a margin beyond ±1e6 would
    make the squared hinges of ordinary logits saturate, so it is refused
    (`oodscore._validation.MARGIN`).

    With $E = -\operatorname{logsumexp}$, ID samples should have *low* energy and outliers
    *high* energy, so the ID hinge bound must lie below the outlier one; ``margin_in >=
    margin_out`` asks for no gap at all and is almost always a sign error (the margins of
    the negative energy, i.e. the score, passed by mistake).
    """
    low = MARGIN.check(margin_in, "margin_in")
    high = MARGIN.check(margin_out, "margin_out")
    if not low < high:
        raise ValueError(
            f"Expected `margin_in` < `margin_out` (energies E = -logsumexp(f): ID low, outliers "
            f"high, e.g. -25 and -7), got margin_in={margin_in!r}, margin_out={margin_out!r}."
        )
    return low, high


@register_regularizer("energy_margin")
class EnergyMarginLoss(Regularizer):
    r"""Energy-bounded learning loss: ID energies below $m_{in}$, outlier energies above $m_{out}$.

    $$ \mathcal{L}_{\text{energy}} = \lambda \Big(
       \mathbb{E}_{x \sim \text{ID}} \operatorname{relu}(E(x) - m_{in})^2 +
       \mathbb{E}_{\tilde x \sim \text{outliers}} \operatorname{relu}(m_{out} - E(\tilde x))^2
       \Big), \qquad E(x) = -T \log \sum_c e^{f_c(x)/T} $$

    Added to the cross-entropy of the ID batch; detection then uses `oodscore.Energy`
    ($-E$). The margins depend on the scale of the model's logits: for a new model, read
    them off with `oodscore.calibrate_margins`. ``margin_in < margin_out`` is required.

    Every finite logit gives a finite loss and finite gradients: each hinge is capped at
    `oodscore.functional.energy_losses.hinge_cap` ($4.5 \cdot 10^{15}$ in float32), far
    beyond the energies of any trained model.

    Args:
        weight: $\lambda$ in $[0, 10^6]$ (official 0.1).
        margin_in: $m_{in}$ in $[-10^6, 10^6]$ (official argparse -25; CIFAR-10 run script
            -23).
        margin_out: $m_{out}$ in $[-10^6, 10^6]$ (official argparse -7; CIFAR-10 run script
            -5).
        temperature: $T$ in $[10^{-6}, 10^6]$ of the free energy (official 1).
        validate_args: Check the inputs' values on every call (see `oodscore.Regularizer`).

    Examples:
        >>> import torch
        >>> from oodscore import EnergyMarginLoss
        >>> reg = EnergyMarginLoss(weight=1.0, margin_in=-2.0, margin_out=-1.0)
        >>> logits_in = torch.tensor([[1.0, 0.0], [4.0, 3.0]])   # energies -1.31, -4.31
        >>> logits_out = torch.tensor([[0.0, 0.0]])              # energy -0.69
        >>> reg(logits_in=logits_in, logits_out=logits_out)  # relu(-1.31 + 2)^2 / 2 + 0
        tensor(0.2358)

    Source: Liu, Wang, Owens & Li, NeurIPS 2020; ``wetliu/energy_ood``.
    """

    def __init__(
        self,
        *,
        weight: float = 0.1,
        margin_in: float = -25.0,
        margin_out: float = -7.0,
        temperature: float = 1.0,
        validate_args: bool = True,
    ) -> None:
        super().__init__(validate_args=validate_args)
        self.weight = LOSS_SCALE.check(weight, "weight")
        self.margin_in, self.margin_out = check_margins(margin_in, margin_out)
        self.temperature = TEMPERATURE.check(temperature, "temperature")

    def forward(
        self,
        *,
        logits_in: Tensor,
        logits_out: Tensor | None = None,
        mask_out: Tensor | None = None,
        mask_in: Tensor | None = None,
    ) -> Tensor:
        """The weighted loss, a scalar tensor.

        Two forms: classification, with (N, C) and (M, C) logits of the ID and outlier
        batches (both non-empty); or dense (segmentation), with (N, C, H, W) logits of
        every pixel as ``logits_in`` and boolean (N, H, W) masks (see
        `oodscore.regularizers.base.dense_logits_rows`), weighted as the official
        segmentation code (``losses.py``): half the sum of the two terms when the batch has
        outlier pixels, the ID term alone when it has none.

        Raises:
            ValueError: On empty batches, mismatched class counts, non-finite logits, or
                ``logits_out`` given together with ``mask_out``.
            TypeError: If logits are not floating-point torch tensors.
        """
        rows_in, rows_out = energy_inputs(
            logits_in, logits_out, mask_out, mask_in, finite=self.validate_args
        )
        loss = energy_margin_loss(
            rows_in,
            rows_out,
            margin_in=self.margin_in,
            margin_out=self.margin_out,
            temperature=self.temperature,
            dense=mask_out is not None,
        )
        return self.weight * loss


def energy_inputs(
    logits_in: Tensor,
    logits_out: Tensor | None,
    mask_out: Tensor | None,
    mask_in: Tensor | None,
    *,
    finite: bool = True,
) -> tuple[Tensor, Tensor]:
    """ID and outlier rows of either form (classification or dense) of the energy losses."""
    if mask_out is not None:
        if logits_out is not None:
            raise ValueError(
                "Expected either `logits_out` (classification form) or `mask_out` (dense "
                "form), got both."
            )
        return dense_logits_rows(logits_in, mask_out, mask_in, finite=finite)
    if mask_in is not None:
        raise ValueError("Expected `mask_in` only together with `mask_out` (the dense form).")
    if logits_out is None:
        raise ValueError(
            "Expected `logits_out`, the logits of the auxiliary outlier batch (M, C); "
            "for segmentation logits (N, C, H, W) pass `mask_out` instead."
        )
    return check_pair(logits_in, logits_out, ("logits_in", "logits_out"), finite=finite)
