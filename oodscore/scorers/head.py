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

    def set_head(self, head: nn.Linear | None) -> None:
        """Use ``head`` (an ``nn.Linear``) from now on, or no head with ``None``.

        `oodscore.evaluate` lends the model's head this way for one call, then takes it back.
        """
        self._init_head(head, None, None)

    def head_parameters(self, like: Tensor) -> tuple[Tensor, Tensor | None]:
        """The head's weight (C, D) and bias (C,) or ``None``, on ``like``'s device and dtype.

        Detached; ``like`` (N, D) is checked to have the head's D first.

        Raises:
            ValueError: Without a head, or when the feature sizes differ.
        """
        bias: Tensor | None
        if self.head is not None:
            weight: Tensor = self.head.weight.detach()
            bias = None if self.head.bias is None else self.head.bias.detach()
        elif self._head_tensors is not None:
            weight, bias = self._head_tensors
        else:
            cls = type(self).__name__
            raise ValueError(
                f"{cls} applies the classifier head and has none: build it with head= (an "
                "nn.Linear) or weight=/bias=, or let oodscore.evaluate use the model's head."
            )
        if weight.shape[1] != like.shape[1]:
            raise ValueError(
                f"Expected `features` with D = {weight.shape[1]} columns, the input size of "
                f"the head of {type(self).__name__} (weight {tuple(weight.shape)}), got shape "
                f"{tuple(like.shape)}."
            )
        weight = weight.to(like.device, like.dtype)
        return weight, None if bias is None else bias.to(like.device, like.dtype)

    def head_logits(self, features: Tensor) -> Tensor:
        r"""$z = h W^\top + b$ of checked features (N, D), in their dtype."""
        weight, bias = self.head_parameters(features)
        return nn.functional.linear(features, weight, bias)


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
