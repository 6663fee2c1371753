"""The `Regularizer` contract and the regularizer registry."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from oodscore._registry import Registry
from oodscore._validation import check_finite, check_float_matrix

REGULARIZERS: Registry[Regularizer] = Registry("regularizer")


class Regularizer(nn.Module, ABC):
    """Base class of train-time OOD losses: ``loss = task_loss + regularizer(...)``.

    ``forward`` returns the **weighted** term as a scalar tensor. In-distribution and
    auxiliary-outlier batches are separate arguments (never sentinel labels); everything a
    method needs (logits, features, targets, the epoch of a schedule) is an explicit
    argument. Hyper-parameters are keyword-only constructor arguments stored under the same
    names, with the official code's values as defaults; ``weight`` scales the whole term.
    Data a method needs (e.g. the class prior of balanced energy) comes first, positionally.

    Attributes:
        name: The registry name (set by `register_regularizer`).
        weight_names: The constructor arguments that scale the output linearly (the
            term is ``sum_k weight_k * term_k``): setting all of them to 0 gives 0 and
            doubling all of them doubles the output. The contract test checks this;
            a subclass with other weight names (e.g. two weighted terms) sets it.
    """

    name: ClassVar[str] = ""
    weight_names: ClassVar[tuple[str, ...]] = ("weight",)

    @abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """The weighted regularization term, a scalar tensor."""

    def get_params(self) -> dict[str, Any]:
        """The constructor's keyword arguments and their current values."""
        params = inspect.signature(type(self).__init__).parameters.values()
        named = (p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        return {name: getattr(self, name) for name in named if name != "self"}

    def extra_repr(self) -> str:
        """Hyper-parameters, shown by ``repr``."""
        return ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())


def register_regularizer(name: str) -> Any:
    """Class decorator that registers a `Regularizer` subclass under ``name``."""
    return REGULARIZERS.register(name)


def unregister_regularizer(name: str) -> None:
    """Remove the regularizer registered under ``name`` (for plugins and tests)."""
    REGULARIZERS.unregister(name)


def get_regularizer(name: str, **params: Any) -> Regularizer:
    """An instance of the regularizer registered under ``name``, built with ``params``."""
    return REGULARIZERS.create(name, **params)


def list_regularizers(pattern: str = "*") -> list[str]:
    """Sorted names of the registered regularizers that match the fnmatch ``pattern``."""
    return REGULARIZERS.names(pattern)


def _loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 run in float32 (their exp and sums lose too much); others keep theirs."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_logits_pair(logits_in: object, logits_out: object) -> tuple[Tensor, Tensor]:
    """Check ID and outlier logits of one training step; return both in one compute dtype.

    Both must be finite floating (N, C) and (M, C) tensors with N, M >= 1 and the same C.
    float16/bfloat16 are computed in float32; mixed dtypes are promoted.

    Raises:
        TypeError: If an input is not a floating-point torch tensor.
        ValueError: If a batch is empty, not 2-D, not finite, or the class counts differ.
    """
    rows_in = check_float_matrix(logits_in, "logits_in", columns="C")
    rows_out = check_float_matrix(logits_out, "logits_out", columns="C")
    if rows_in.shape[1] != rows_out.shape[1]:
        raise ValueError(
            f"Expected `logits_out` to have as many classes as `logits_in` "
            f"(C = {rows_in.shape[1]}), got shape {tuple(rows_out.shape)}."
        )
    dtype = _loss_dtype(torch.promote_types(rows_in.dtype, rows_out.dtype))
    return rows_in.to(dtype), rows_out.to(dtype)


def dense_logits_rows(
    logits: object, mask_out: object, mask_in: object | None = None
) -> tuple[Tensor, Tensor]:
    """Split dense (N, C, *spatial) logits into ID rows and outlier rows (P, C) by masks.

    The segmentation form of the energy losses: every pixel is a sample; ``mask_out`` marks
    outlier pixels, ``mask_in`` the ID pixels (default: every pixel not in ``mask_out``;
    pass it to leave out void/ignored pixels). Either set may be empty.

    Args:
        logits: Floating (N, C, *spatial) logits, C >= 1, finite.
        mask_out: Boolean (N, *spatial) mask of outlier pixels.
        mask_in: Boolean (N, *spatial) mask of ID pixels, disjoint from ``mask_out``.

    Raises:
        TypeError: If ``logits`` is not floating or a mask is not a boolean tensor.
        ValueError: On wrong shapes, overlapping masks or non-finite logits.
    """
    if not isinstance(logits, Tensor) or not logits.dtype.is_floating_point:
        raise TypeError(
            "Expected `logits_in` to be a floating-point torch.Tensor of shape (N, C, H, W) "
            f"in the dense form, got {type(logits).__name__}"
            + (f" of dtype {logits.dtype}." if isinstance(logits, Tensor) else ".")
        )
    if logits.ndim < 3 or logits.shape[1] == 0:
        raise ValueError(
            "Expected `logits_in` to be (N, C, *spatial) with C >= 1 when `mask_out` is given "
            f"(the dense form), got shape {tuple(logits.shape)}."
        )
    spatial = (logits.shape[0], *logits.shape[2:])
    masks = {"mask_out": mask_out, "mask_in": mask_in}
    for name, mask in masks.items():
        if mask is None:
            continue
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            kind = f"dtype {mask.dtype}" if isinstance(mask, Tensor) else type(mask).__name__
            raise TypeError(f"Expected `{name}` to be a boolean torch.Tensor, got {kind}.")
        if tuple(mask.shape) != spatial:
            raise ValueError(
                f"Expected `{name}` to have shape (N, *spatial) = {spatial} to match "
                f"`logits_in` {tuple(logits.shape)}, got {tuple(mask.shape)}."
            )
    assert isinstance(mask_out, Tensor)  # checked above; for mypy
    if mask_in is None:
        mask_in = ~mask_out
    assert isinstance(mask_in, Tensor)
    overlap = int((mask_in & mask_out).sum())
    if overlap:
        raise ValueError(
            f"Expected `mask_in` and `mask_out` to be disjoint, but {overlap} pixel(s) are in both."
        )
    check_finite(logits, "logits_in")
    rows = logits.to(_loss_dtype(logits.dtype)).movedim(1, -1)
    return rows[mask_in], rows[mask_out]
