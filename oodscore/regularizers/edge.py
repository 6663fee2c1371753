r"""EDGE: energy distribution gap expansion, a multi-label OOD loss."""

from __future__ import annotations

from torch import Tensor

from oodscore._validation import check_finite_number, check_int, check_non_negative
from oodscore.functional.edge import edge_gap_loss
from oodscore.functional.outlier_exposure import outlier_exposure_loss
from oodscore.regularizers.base import Regularizer, check_pair, register_regularizer


@register_regularizer("edge")
class EDGELoss(Regularizer):
    r"""EDGE, energy distribution gap expansion for multi-label OOD.

    $$ \mathcal{L} = \mathcal{L}_{\text{BCE}} + \alpha\,\mathcal{L}_{\text{conf}}
       + \beta(t)\,\mathcal{L}_{\text{gap}} $$

    This module returns $\alpha\,\mathcal{L}_{\text{conf}} + \beta(t)\,\mathcal{L}_{\text{gap}}$;
    the multi-label BCE on the ID batch stays the user's. With $S(x) = \sum_c
    \operatorname{softplus}(f_c(x))$ the JointEnergy:

    $$ \mathcal{L}_{\text{conf}} = \frac{1}{MC} \sum_{j,c}
       -\log\bigl(1 - \sigma(f_c(x^{\text{out}}_j))\bigr), \qquad
       \mathcal{L}_{\text{gap}} = \frac{1}{Mk} \sum_{j=1}^{M} \sum_{i \in \text{tail}_k}
       \bigl[S(x^{\text{out}}_j) - S(x^{\text{in}}_i) + m\bigr]_+ $$

    $\mathcal{L}_{\text{conf}}$ is multi-label outlier exposure
    (`OutlierExposureLoss` with ``target="zeros"``); $\mathcal{L}_{\text{gap}}$ asks each
    outlier to score at least $m$ below each of the $k$ ID rows of lowest JointEnergy in the
    batch. $\beta(t) = 0$ before epoch $\tau$ (``start_epoch``), ``gap_weight`` from then on.
    Choose the outlier set with `dilation_distance` / `rank_outlier_sets`; score with
    `oodscore.JointEnergy`.

    Args:
        conf_weight: $\alpha \ge 0$ (official 1).
        gap_weight: $\beta \ge 0$ (official 0.1), used from epoch ``start_epoch`` on.
        margin: $m$, the required JointEnergy gap (official 1; any finite number).
        tail_size: $k \ge 1$ (official 50), ID rows of lowest JointEnergy per batch (clamped
            to N).
        start_epoch: $\tau \ge 0$ (official 50 of 250), the first epoch (0-based) at which
            the gap term is on.
        validate_args: Check the inputs' values on every call (see `oodscore.Regularizer`).

    Examples:
        >>> import torch
        >>> from oodscore import EDGELoss
        >>> edge = EDGELoss(tail_size=2, start_epoch=1)
        >>> logits_in = torch.tensor([[4.0, -4.0], [3.0, 2.0], [-1.0, 1.0]])
        >>> logits_out = torch.tensor([[0.0, 0.0]])
        >>> edge(logits_in=logits_in, logits_out=logits_out, epoch=0)  # L_conf only
        tensor(0.6931)
        >>> edge(logits_in=logits_in, logits_out=logits_out, epoch=1)  # + 0.1 * L_gap
        tensor(0.7311)

    Source: Sun, Xu, Wang, Yang & He, AAAI 2025; ``Yuchen-Sunflower/EDGE``.
    """

    weight_names = ("conf_weight", "gap_weight")

    def __init__(
        self,
        *,
        conf_weight: float = 1.0,
        gap_weight: float = 0.1,
        margin: float = 1.0,
        tail_size: int = 50,
        start_epoch: int = 50,
        validate_args: bool = True,
    ) -> None:
        super().__init__(validate_args=validate_args)
        self.conf_weight = check_non_negative(conf_weight, "conf_weight")
        self.gap_weight = check_non_negative(gap_weight, "gap_weight")
        self.margin = check_finite_number(margin, "margin")
        self.tail_size: int = check_int(tail_size, "tail_size")
        self.start_epoch: int = check_int(start_epoch, "start_epoch", minimum=0)

    def gap_weight_at(self, epoch: int) -> float:
        r"""$\beta(t)$: 0 before ``start_epoch``, ``gap_weight`` from then on."""
        return self.gap_weight if epoch >= self.start_epoch else 0.0

    def forward(self, *, logits_in: Tensor, logits_out: Tensor, epoch: int) -> Tensor:
        """The weighted EDGE terms at ``epoch``.

        Args:
            logits_in: Per-label logits of the ID batch (N, C), N >= 1.
            logits_out: Per-label logits of the auxiliary outliers (M, C), M >= 1.
            epoch: The current epoch (0-based), for the schedule of the gap term.

        Raises:
            ValueError: On empty batches, non-2-D or non-finite logits, different label
                counts, or a negative or non-integer ``epoch``. float16/bfloat16 logits are
                computed in float32.
            TypeError: If the logits are not floating-point tensors.
        """
        logits_in, logits_out = check_pair(
            logits_in, logits_out, ("logits_in", "logits_out"), finite=self.validate_args
        )
        beta = self.gap_weight_at(check_int(epoch, "epoch", minimum=0))
        loss = self.conf_weight * outlier_exposure_loss(logits_out, target="zeros")
        if beta > 0:
            gap = edge_gap_loss(
                logits_in,
                logits_out,
                margin=self.margin,
                tail_size=self.tail_size,
            )
            loss = loss + beta * gap
        return loss
