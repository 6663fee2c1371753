r"""EDGE: energy distribution gap expansion, a multi-label OOD loss."""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real

import torch
from torch import Tensor

from oodscore._validation import check_finite_number, check_int, check_non_negative
from oodscore.functional.edge import edge_gap_terms
from oodscore.functional.outlier_exposure import outlier_exposure_loss
from oodscore.regularizers.base import Regularizer, check_pair, register_regularizer

OFFICIAL_START = (50, 250)
"""``weg.py``: ``--start_epoch 50`` of ``--n_epoch 250``, a fifth of the run."""


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
    batch. $\beta(t) = 0$ before epoch $\tau$ (`first_gap_epoch`), ``gap_weight`` from then
    on. Choose the outlier set with `dilation_distance` / `rank_outlier_sets`; score with
    `oodscore.JointEnergy`.

    **The schedule.** The official run turns the gap term on at epoch 50 of 250; a run of
    at most 50 epochs with ``start_epoch=50`` is plain multi-label outlier exposure. State
    the start relative to the run: ``EDGELoss(start_epoch=0.2, num_epochs=30)`` turns it on
    at epoch 6. A ``UserWarning`` (once) says when the gap term never turns on: at
    construction, if ``num_epochs`` is given and $\tau \ge$ ``num_epochs``; otherwise from
    `finish`, called after the last epoch.

    After each call, `last_terms` holds ``confidence`` ($\mathcal{L}_{\text{conf}}$),
    ``gap`` ($\mathcal{L}_{\text{gap}}$, computed without gradient while $\beta(t) = 0$,
    so a log shows what the term would be), ``active_pairs`` (the fraction of
    outlier x tail pairs with a positive hinge: 0 means the gap term gives no gradient),
    ``conf_weight`` ($\alpha$) and ``gap_weight`` ($\beta(t)$ of this call).

    Args:
        conf_weight: $\alpha \ge 0$ (official 1).
        gap_weight: $\beta \ge 0$ (official 0.1), used from epoch $\tau$ on.
        margin: $m$, the required JointEnergy gap (official 1; any finite number).
        tail_size: $k \ge 1$ (official 50), ID rows of lowest JointEnergy per batch (clamped
            to N).
        start_epoch: $\tau$: an integer epoch >= 0 (0-based; official 50 of 250), or a
            fraction in [0, 1) of ``num_epochs`` (the official 50 / 250 = 0.2), rounded to
            the nearest epoch (halves up).
        num_epochs: The number of epochs of the run, or ``None`` (unknown). Required with a
            fractional ``start_epoch``; with it, ``epoch`` must be below it.
        validate_args: Check the inputs' values on every call (see `oodscore.Regularizer`).

    Examples:
        >>> import torch
        >>> from oodscore import EDGELoss
        >>> edge = EDGELoss(tail_size=2, start_epoch=0.2, num_epochs=5)  # gap from epoch 1
        >>> logits_in = torch.tensor([[4.0, -4.0], [3.0, 2.0], [-1.0, 1.0]])
        >>> logits_out = torch.tensor([[0.0, 0.0]])
        >>> edge(logits_in=logits_in, logits_out=logits_out, epoch=0)  # L_conf only
        tensor(0.6931)
        >>> edge(logits_in=logits_in, logits_out=logits_out, epoch=1)  # + 0.1 * L_gap
        tensor(0.7311)
        >>> terms = edge.last_terms
        >>> {k: round(float(terms[k]), 4) for k in ("confidence", "gap", "active_pairs")}
        {'confidence': 0.6931, 'gap': 0.3799, 'active_pairs': 0.5}
        >>> float(terms["gap_weight"])  # beta(t) of this call
        0.1

    Source: Sun, Xu, Wang, Yang & He, AAAI 2025; ``Yuchen-Sunflower/EDGE``.
    """

    weight_names = ("conf_weight", "gap_weight")
    term_names = ("confidence", "gap", "active_pairs", "conf_weight", "gap_weight")

    def __init__(
        self,
        *,
        conf_weight: float = 1.0,
        gap_weight: float = 0.1,
        margin: float = 1.0,
        tail_size: int = 50,
        start_epoch: int | float = 50,
        num_epochs: int | None = None,
        validate_args: bool = True,
    ) -> None:
        super().__init__(validate_args=validate_args)
        self.conf_weight = check_non_negative(conf_weight, "conf_weight")
        self.gap_weight = check_non_negative(gap_weight, "gap_weight")
        self.margin = check_finite_number(margin, "margin")
        self.tail_size: int = check_int(tail_size, "tail_size")
        self.start_epoch: int | float = _check_start(start_epoch)
        self.num_epochs: int | None = (
            None if num_epochs is None else check_int(num_epochs, "num_epochs")
        )
        first = self.first_gap_epoch  # a fraction without num_epochs raises here
        self._gap_turned_on = False
        self._last_epoch: int | None = None
        self._warned_schedule = False
        if self.num_epochs is not None and first >= self.num_epochs and self.gap_weight > 0:
            self._warned_schedule = True
            warnings.warn(
                f"EDGELoss: the gap term starts at epoch {first} (start_epoch="
                f"{self.start_epoch!r}) but the run has num_epochs={self.num_epochs} (epochs 0 "
                f"to {self.num_epochs - 1}): it never turns on, and the loss is plain "
                f"multi-label outlier exposure. {_ADVICE}",
                UserWarning,
                stacklevel=2,
            )

    @property
    def first_gap_epoch(self) -> int:
        r"""$\tau$, the first epoch (0-based) with the gap term on.

        ``start_epoch`` itself, or ``round(start_epoch * num_epochs)`` (halves up) for a
        fraction: 0.2 of 250 epochs is 50, of 30 epochs 6, of 4 epochs 1.
        """
        if isinstance(self.start_epoch, Integral):
            return int(self.start_epoch)
        if self.num_epochs is None:
            raise ValueError(
                f"Expected `num_epochs` with a fractional `start_epoch` (got start_epoch="
                f"{self.start_epoch!r}, a fraction of the run): pass the run's number of "
                "epochs, or an integer epoch as `start_epoch`."
            )
        return math.floor(self.start_epoch * self.num_epochs + 0.5)

    def gap_weight_at(self, epoch: int) -> float:
        r"""$\beta(t)$: 0 before `first_gap_epoch`, ``gap_weight`` from then on."""
        return self.gap_weight if epoch >= self.first_gap_epoch else 0.0

    def forward(self, *, logits_in: Tensor, logits_out: Tensor, epoch: int) -> Tensor:
        """The weighted EDGE terms at ``epoch``.

        Args:
            logits_in: Per-label logits of the ID batch (N, C), N >= 1.
            logits_out: Per-label logits of the auxiliary outliers (M, C), M >= 1.
            epoch: The current epoch (0-based), for the schedule of the gap term; below
                ``num_epochs`` when that is given.

        Raises:
            ValueError: On empty batches, non-2-D or non-finite logits, different label
                counts, or a negative or non-integer ``epoch`` (or one >= ``num_epochs``).
                float16/bfloat16 logits are computed in float32.
            TypeError: If the logits are not floating-point tensors.
        """
        logits_in, logits_out = check_pair(
            logits_in, logits_out, ("logits_in", "logits_out"), finite=self.validate_args
        )
        epoch = check_int(epoch, "epoch", minimum=0)
        if self.num_epochs is not None and epoch >= self.num_epochs:
            raise ValueError(
                f"Expected `epoch` < `num_epochs` = {self.num_epochs} (epochs are 0-based), "
                f"got {epoch}."
            )
        beta = self.gap_weight_at(epoch)
        self._last_epoch = epoch
        self._gap_turned_on = self._gap_turned_on or epoch >= self.first_gap_epoch
        confidence = outlier_exposure_loss(logits_out, target="zeros")
        loss = self.conf_weight * confidence
        # While beta = 0 the gap term is still computed, without gradient, for `last_terms`.
        with torch.set_grad_enabled(torch.is_grad_enabled() and beta > 0):
            gap = edge_gap_terms(
                logits_in, logits_out, margin=self.margin, tail_size=self.tail_size
            )
        if beta > 0:
            loss = loss + beta * gap.gap
        self._store_terms(
            loss,
            {
                "confidence": confidence,
                "gap": gap.gap,
                "active_pairs": gap.active_pairs,
                "conf_weight": self.conf_weight,
                "gap_weight": beta,
            },
        )
        return loss

    def finish(self) -> None:
        """Say whether the gap term ever turned on; call it once, after the last epoch.

        Raises a ``UserWarning`` if no call so far reached `first_gap_epoch` (the run was
        plain multi-label outlier exposure), unless ``gap_weight`` is 0 or the constructor
        has already warned. It warns at most once per instance.
        """
        if self._gap_turned_on or self._warned_schedule or self.gap_weight == 0:
            return
        self._warned_schedule = True
        seen = (
            "no call reached this loss"
            if self._last_epoch is None
            else f"the last epoch it saw was {self._last_epoch}"
        )
        warnings.warn(
            f"EDGELoss: the gap term never turned on: it starts at epoch "
            f"{self.first_gap_epoch} (start_epoch={self.start_epoch!r}) and {seen}, so the "
            f"loss was plain multi-label outlier exposure. {_ADVICE}",
            UserWarning,
            stacklevel=2,
        )


_ADVICE = (
    "State the start relative to the run, e.g. EDGELoss(start_epoch=0.2, num_epochs=...) "
    f"(the official {OFFICIAL_START[0]} of {OFFICIAL_START[1]} epochs)."
)


def _check_start(start_epoch: object) -> int | float:
    """An integer epoch >= 0 as an int, a fraction in [0, 1) as a float; else a ValueError."""
    if isinstance(start_epoch, Integral) and not isinstance(start_epoch, bool):
        return check_int(start_epoch, "start_epoch", minimum=0)
    if (
        isinstance(start_epoch, Real)
        and not isinstance(start_epoch, bool)
        and 0 <= float(start_epoch) < 1
    ):
        return float(start_epoch)
    raise ValueError(
        "Expected `start_epoch` to be an integer epoch >= 0 or a fraction in [0, 1) of "
        f"`num_epochs`, got {start_epoch!r}."
    )
