r"""Energy-bounded learning: squared hinges that push ID energies down and outlier energies up."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor

from oodscore._validation import LOSS_SCALE, MARGIN, TEMPERATURE
from oodscore.functional.energy_losses import EnergyLossTerms, energy_margin_terms, hinge_total
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

    After each call, `last_terms` holds ``hinge_in`` and ``hinge_out`` (the two mean
    squared hinges, unweighted), ``active_in`` and ``active_out`` (the fractions of ID
    samples with $E > m_{in}$ and of outliers with $E < m_{out}$), ``energy_in`` and
    ``energy_out`` (the mean energies) and ``weight``. With ``validate_args``, the first
    batch whose energies make a hinge useless raises a ``UserWarning`` (once per
    instance; see `dead_hinge_message`): every ID energy above even $m_{out}$, every
    outlier energy below even $m_{in}$, or both hinges inactive (the loss and its
    gradient 0).

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
        >>> terms = reg.last_terms  # unweighted hinges, shares of active samples, ...
        >>> {k: round(float(terms[k]), 4) for k in ("hinge_in", "active_in", "energy_in")}
        {'hinge_in': 0.2358, 'active_in': 0.5, 'energy_in': -2.8133}

    Source: Liu, Wang, Owens & Li, NeurIPS 2020; ``wetliu/energy_ood``.
    """

    term_names = (
        "hinge_in",
        "hinge_out",
        "active_in",
        "active_out",
        "energy_in",
        "energy_out",
        "weight",
    )

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
        self._warned_hinges = False

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

        Warns:
            UserWarning: Once per instance, with ``validate_args``, on the first batch whose
                energies make a hinge useless (`dead_hinge_message`).
        """
        rows_in, rows_out = energy_inputs(
            logits_in, logits_out, mask_out, mask_in, finite=self.validate_args
        )
        terms = energy_margin_terms(
            rows_in,
            rows_out,
            margin_in=self.margin_in,
            margin_out=self.margin_out,
            temperature=self.temperature,
        )
        loss = self.weight * hinge_total(
            terms.hinge_in,
            terms.hinge_out,
            dense=mask_out is not None,
            outliers=rows_out.shape[0] > 0,
        )
        self._store_terms(loss, energy_terms(terms, self.weight))
        if self.validate_args and not self._warned_hinges:
            self._warn_dead_hinges(terms.energy_in, terms.energy_out)
        return loss

    def _warn_dead_hinges(self, energy_in: Tensor, energy_out: Tensor) -> None:
        """Warn (once) if this batch's energies make a hinge useless; one host sync."""
        if not energy_in.numel() or not energy_out.numel():
            return
        with torch.no_grad():
            low_in, high_in, low_out, high_out = torch.stack(
                [energy_in.min(), energy_in.max(), energy_out.min(), energy_out.max()]
            ).tolist()
        message = dead_hinge_message(
            (low_in, high_in),
            (low_out, high_out),
            margin_in=self.margin_in,
            margin_out=self.margin_out,
        )
        if message is not None:
            self._warned_hinges = True
            text = f"{type(self).__name__}: {message}"
            warnings.warn(text, UserWarning, stacklevel=_caller_stacklevel())


_INTERNAL = tuple(
    str(d) + os.sep for d in (Path(torch.nn.__file__).parent, Path(__file__).parents[1])
)
"""torch.nn (``Module.__call__``) and oodscore: the frames a warning skips to reach the user."""


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning raised by our caller at the user's line.

    Counts the frames from the caller of this function up to the first one outside
    `_INTERNAL`, so that the location is right however ``forward`` was reached
    (``module(...)``, hooks, ``module.forward(...)``).
    """
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        level, frame = level + 1, frame.f_back
    return level


def energy_terms(terms: EnergyLossTerms, weight: float) -> dict[str, Tensor | float]:
    """The `Regularizer.last_terms` of an energy loss: hinges, active shares, mean energies."""
    return {
        "hinge_in": terms.hinge_in,
        "hinge_out": terms.hinge_out,
        "active_in": terms.active_in,
        "active_out": terms.active_out,
        "energy_in": _mean_or_zero(terms.energy_in),
        "energy_out": _mean_or_zero(terms.energy_out),
        "weight": weight,
    }


def _mean_or_zero(values: Tensor) -> Tensor:
    """The mean of ``values``, 0 for an empty set (a crop without outlier pixels)."""
    return values.detach().mean() if values.numel() else values.new_zeros(())


def dead_hinge_message(
    energy_in: tuple[float, float],
    energy_out: tuple[float, float],
    *,
    margin_in: float,
    margin_out: float,
) -> str | None:
    r"""Why a batch's energies make a hinge of the energy loss useless, or ``None``.

    Given the (lowest, highest) energy of the ID and of the outlier rows of a batch:

    - every ID energy above even $m_{out}$ (lowest $E_{in} > m_{out}$): the ID hinge acts
      on every sample, more than the whole gap $m_{out} - m_{in}$ away from its bound, and
      pulls every energy toward a bound the model may not reach — what the paper's
      -25 / -7 do to a small model whose logits are bounded, e.g. by spectral
      normalization, at a large cost in accuracy;
    - every outlier energy below even $m_{in}$: the same for the outlier hinge;
    - every ID energy at most $m_{in}$ and every outlier energy at least $m_{out}$: both
      hinges are inactive, and the loss and its gradient are 0.

    Examples:
        >>> from oodscore.regularizers.energy import dead_hinge_message
        >>> print(dead_hinge_message((-4.0, -2.0), (-3.0, -1.0), margin_in=-25.0,
        ...                          margin_out=-7.0))  # doctest: +ELLIPSIS
        every ID energy of this batch (from -4 to -2) lies above even margin_out=-7, far from ...
        >>> dead_hinge_message((-9.0, -2.0), (-3.0, -1.0), margin_in=-8.0, margin_out=-2.5)
    """
    (low_in, high_in), (low_out, high_out) = energy_in, energy_out
    advice = (
        "Set the margins from the model's own energies: "
        "`calibrate_margins(logits_in, logits_out)` of the model before this training. "
        "(Shown once per loss instance.)"
    )
    found = []
    if low_in > margin_out:
        found.append(
            f"every ID energy of this batch (from {low_in:.4g} to {high_in:.4g}) lies above "
            f"even margin_out={margin_out:g}, far from margin_in={margin_in:g}: the ID hinge "
            "acts on every sample and pulls all energies toward a bound the model may not "
            "reach, which can cost much of its accuracy (bounded logits, e.g. after spectral "
            "normalization, keep energies near -log C)."
        )
    if high_out < margin_in:
        found.append(
            f"every outlier energy of this batch (from {low_out:.4g} to {high_out:.4g}) lies "
            f"below even margin_in={margin_in:g}, far from margin_out={margin_out:g}: the "
            "outlier hinge acts on every sample."
        )
    if high_in <= margin_in and low_out >= margin_out:
        found.append(
            f"the loss and its gradient are 0 on this batch: every ID energy (highest "
            f"{high_in:.4g}) lies below margin_in={margin_in:g} and every outlier energy "
            f"(lowest {low_out:.4g}) above margin_out={margin_out:g}, so both hinges are "
            "inactive; if this persists, the margins are too easy for this model."
        )
    return " ".join([*found, advice]) if found else None


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
