"""The classifier head that some feature scorers apply: given as an ``nn.Linear`` or as tensors."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from oodscore._arrays import to_torch
from oodscore._validation import check_finite

HeadWeight = Tensor | np.ndarray[Any, Any]


class UsesHead:
    r"""Mixin of scorers that apply the classifier head $z = W h + b$ to features $h$.

    The head is given at construction, as ``head=`` an ``nn.Linear`` (read at each call,
    so it follows the model's current weights) or as ``weight=`` (C, D) and ``bias=`` (C,)
    tensors or arrays (copied). `oodscore.evaluate` hands the model's own head to a scorer
    built without one (`set_head`). Scoring without a head, or with features whose size D
    differs from the head's, is a ``ValueError``.

    Attributes:
        needs_head: ``True``: read by `oodscore.evaluate` and the contract tests.
    """

    needs_head: ClassVar[bool] = True

    head: nn.Linear | None
    weight: HeadWeight | None
    bias: HeadWeight | None
    _head_tensors: tuple[Tensor, Tensor | None] | None

    def _init_head(
        self, head: nn.Linear | None, weight: HeadWeight | None, bias: HeadWeight | None
    ) -> None:
        """Check and store ``head`` or ``weight``/``bias`` (the constructor's arguments)."""
        self.head, self.weight, self.bias = head, weight, bias
        self._head_tensors = None
        if head is not None:
            if weight is not None or bias is not None:
                raise ValueError(
                    "Expected either `head` or `weight`/`bias`, got both: pass the nn.Linear "
                    "alone, or its weight and bias alone."
                )
            if not isinstance(head, nn.Linear):
                raise TypeError(
                    f"Expected `head` to be a torch.nn.Linear, got {type(head).__name__}; "
                    "pass weight= and bias= for another head."
                )
        elif weight is not None:
            self._head_tensors = _head_tensors(weight, bias)
        elif bias is not None:
            raise ValueError("Expected `weight` with `bias`, got a bias alone.")

    @property
    def has_head(self) -> bool:
        """Whether a head was given (at construction or by `set_head`)."""
        return self.head is not None or self._head_tensors is not None

    def set_head(
        self,
        head: nn.Linear | None = None,
        *,
        weight: HeadWeight | None = None,
        bias: HeadWeight | None = None,
    ) -> None:
        """Use ``head`` (an ``nn.Linear``), or ``weight`` and ``bias``, from now on.

        With no argument, the scorer has no head. `oodscore.evaluate` lends the model's
        head this way for one call, then takes it back; the command line gives a scorer
        read from a state file without a head the one of ``--head``. The arguments are
        checked as the constructor's.
        """
        self._init_head(head, weight, bias)

    def head_parameters(self, like: Tensor) -> tuple[Tensor, Tensor | None]:
        """The head's weight (C, D) and bias (C,) or ``None``, on ``like``'s device and dtype.

        Detached; ``like`` (N, D) is checked to have the head's D first.

        Raises:
            ValueError: Without a head, or when the feature sizes differ.
        """
        weight, bias = self.head_tensors()
        if weight.shape[1] != like.shape[1]:
            raise ValueError(
                f"Expected `features` with D = {weight.shape[1]} columns, the input size of "
                f"the head of {type(self).__name__} (weight {tuple(weight.shape)}), got shape "
                f"{tuple(like.shape)}."
            )
        weight = weight.to(like.device, like.dtype)
        return weight, None if bias is None else bias.to(like.device, like.dtype)

    def head_tensors(self) -> tuple[Tensor, Tensor | None]:
        """The head's weight (C, D) and bias (C,) or ``None`` as they are now, detached.

        Raises:
            ValueError: Without a head.
        """
        if self.head is not None:
            bias = None if self.head.bias is None else self.head.bias.detach()
            return self.head.weight.detach(), bias
        if self._head_tensors is not None:
            return self._head_tensors
        raise ValueError(
            f"{type(self).__name__} applies the classifier head and has none: build it with "
            "head= (an nn.Linear) or weight=/bias=, or let oodscore.evaluate use the model's "
            "head."
        )

    def head_logits(self, features: Tensor) -> Tensor:
        r"""$z = h W^\top + b$ of checked features (N, D), in their dtype."""
        weight, bias = self.head_parameters(features)
        return nn.functional.linear(features, weight, bias)


HEAD_ARGUMENTS = ("head", "weight", "bias")
"""The constructor arguments of a `UsesHead` scorer that give its head."""


def params_and_head(scorer: object) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A scorer's ``get_params(deep=False)`` for a file, and its classifier head apart.

    A file keeps parameters as JSON, which holds no ``nn.Linear`` and no tensor: for a
    scorer that applies the head (`UsesHead`), the head's arguments are left out of the
    parameters and the head is returned as ``{"weight": (C, D), "bias": (C,)}`` CPU copies
    of its current values (no ``"bias"`` for a head without one; ``{}`` for a scorer
    without a head). A head given as an ``nn.Linear`` is thus saved as its weights at this
    moment. Other scorers: their parameters and ``{}``.
    """
    params: dict[str, Any] = scorer.get_params(deep=False)  # type: ignore[attr-defined]
    if not isinstance(scorer, UsesHead):
        return params, {}
    for key in HEAD_ARGUMENTS:
        params.pop(key, None)
    if not scorer.has_head:
        return params, {}
    weight, bias = scorer.head_tensors()
    head = {"weight": weight.cpu().clone()}
    if bias is not None:
        head["bias"] = bias.cpu().clone()
    return params, head


def params_with_head(params: dict[str, Any], head: object) -> dict[str, Any]:
    """The constructor arguments that rebuild a scorer: ``params`` and a saved ``head``.

    Args:
        params: Parameters read from a file.
        head: The head saved beside them by `params_and_head` (``{}`` for none).

    Raises:
        ValueError: If ``head`` is not a dict of ``"weight"`` and optionally ``"bias"``.
    """
    if not isinstance(head, dict) or not set(head) <= {"weight", "bias"}:
        raise ValueError(
            "the saved head must be a dict of 'weight' and optionally 'bias', got "
            f"{sorted(head) if isinstance(head, dict) else type(head).__name__}"
        )
    if not head:
        return params
    if "weight" not in head:
        raise ValueError("the saved head has a bias and no weight")
    return {**params, "weight": head["weight"], "bias": head.get("bias")}


def _head_tensors(weight: HeadWeight, bias: HeadWeight | None) -> tuple[Tensor, Tensor | None]:
    """Checked CPU copies of a head's weight (C, D) and bias (C,) or None."""
    w = _floating(weight, "weight")
    if w.ndim != 2 or 0 in w.shape:
        raise ValueError(
            f"Expected `weight` to be a (C, D) matrix with C, D >= 1, got shape {tuple(w.shape)}."
        )
    check_finite(w, "weight")
    if bias is None:
        return w, None
    b = _floating(bias, "bias")
    if b.shape != (w.shape[0],):
        raise ValueError(
            f"Expected `bias` of shape (C,) = ({w.shape[0]},) to match `weight` "
            f"{tuple(w.shape)}, got shape {tuple(b.shape)}."
        )
    check_finite(b.reshape(1, -1), "bias")
    return w, b


def _floating(value: object, name: str) -> Tensor:
    if isinstance(value, np.ndarray):
        tensor = to_torch(value)
    elif isinstance(value, Tensor):
        tensor = value.detach()
    else:
        raise TypeError(
            f"Expected `{name}` to be a torch.Tensor or a numpy.ndarray, got "
            f"{type(value).__name__}."
        )
    if not (tensor.dtype.is_floating_point or tensor.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"Expected `{name}` to hold real numbers, got dtype {tensor.dtype}.")
    dtype = tensor.dtype if tensor.dtype.is_floating_point else torch.float64
    return tensor.to("cpu", dtype, copy=True)
