"""The `Regularizer` contract and the regularizer registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from typing_extensions import Self

from oodscore._arrays import compute_dtype, promote
from oodscore._params import HasParams
from oodscore._registry import Registry
from oodscore._validation import check_finite, check_float_matrix, check_same_width

REGULARIZERS: Registry[Regularizer] = Registry("regularizer")

_MODULE_ATTRIBUTES = frozenset(vars(nn.Module()))
"""What ``nn.Module`` keeps in an instance: mode, hooks, parameters, buffers, submodules."""


class Regularizer(HasParams, nn.Module, ABC):
    """Base class of train-time OOD losses: ``loss = task_loss + regularizer(...)``.

    ``forward`` returns the **weighted** term as a scalar tensor. Its data arguments are
    keyword-only and named from one vocabulary: ``logits_in``, ``logits_out``,
    ``features_in``, ``features_out``, ``targets``, ``epoch`` (and ``mask_in``/``mask_out``
    for the dense form of the energy losses); ID and auxiliary-outlier batches are never
    mixed with sentinel labels. Hyper-parameters are keyword-only constructor arguments
    stored under the same names, with the official code's values as defaults; ``weight``
    scales the whole term. Data a method needs (e.g. a class prior) comes first, positionally.
    ``get_params``, ``set_params`` (which keeps the module, its mode, hooks and the device
    of its buffers) and ``sklearn.base.clone`` (a new module) follow scikit-learn.

    Args:
        validate_args: Check the inputs' values (NaN/±inf, overlapping masks) on every call.
            These checks read the data back to the host, a device synchronization per
            training step on a GPU; ``False`` skips them (shapes and dtypes, which cost
            nothing, are always checked).

    Attributes:
        name: The registry name (set by `register_regularizer`).
        weight_names: The constructor arguments that scale the output linearly (the
            term is ``sum_k weight_k * term_k``): setting all of them to 0 gives 0 and
            doubling all of them doubles the output. The contract test checks this;
            a subclass with other weight names (e.g. two weighted terms) sets it.
        term_names: The keys of `last_terms`, in order: the unweighted terms, the
            fractions of active hinges or elements, and the weights used (under the
            names of ``weight_names``). Each subclass declares its own.
    """

    name: ClassVar[str] = ""
    weight_names: ClassVar[tuple[str, ...]] = ("weight",)
    term_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, validate_args: bool = True) -> None:
        super().__init__()
        if not isinstance(validate_args, bool):
            raise TypeError(f"Expected `validate_args` to be a bool, got {validate_args!r}.")
        self.validate_args = validate_args
        self._last_terms: dict[str, Tensor] = {}

    @abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """The weighted regularization term, a scalar tensor."""

    @property
    def last_terms(self) -> dict[str, Tensor]:
        """The terms of the last ``forward`` call, for logging: ``{name: scalar tensor}``.

        The keys are `term_names`. Each value is a detached 0-dim tensor in the output's
        dtype and on its device, so recording them costs no device synchronization;
        ``float(value)`` (or a logger) reads it when wanted. An empty dict before the
        first call. A new dict on each access: changing it changes nothing here. Kept
        under ``torch.compile``; a program made by ``torch.export`` does not record them.
        """
        return dict(self._last_terms)

    def _store_terms(self, like: Tensor, terms: dict[str, Tensor | float]) -> None:
        """Keep ``terms`` as `last_terms`: tensors detached, numbers filled like ``like``.

        Skipped while ``torch.export`` traces the module: an exported program has no
        attributes to keep them in (``torch.compile`` keeps them).
        """
        if torch.compiler.is_exporting():
            return
        self._last_terms = {
            name: value.detach() if isinstance(value, Tensor) else like.new_full((), value)
            for name, value in terms.items()
        }

    def extra_repr(self) -> str:
        """Hyper-parameters, shown by ``repr``."""
        return self.params_repr()

    def _adopt(self, other: Self) -> None:
        """Take the attributes and buffers of ``other`` (for `set_params`).

        The module stays the same object, with its mode and hooks; buffers (a class prior)
        keep their device, and their floating dtype.
        """
        for key, value in vars(other).items():
            if key not in _MODULE_ATTRIBUTES:
                self.__dict__[key] = value
        buffers = {}
        for name, buffer in other._buffers.items():
            old = self._buffers.get(name)
            if old is not None and buffer is not None:
                floating = old.is_floating_point() and buffer.is_floating_point()
                buffer = buffer.to(old.device, old.dtype if floating else None)
            buffers[name] = buffer
        self._buffers = buffers
        self._non_persistent_buffers_set = set(other._non_persistent_buffers_set)
        self._parameters = dict(other._parameters)
        self._modules = dict(other._modules)


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


def check_pair(
    first: object,
    second: object,
    names: tuple[str, str],
    *,
    columns: str = "C",
    finite: bool = True,
) -> tuple[Tensor, Tensor]:
    """Check two floating (N, ``columns``) and (M, ``columns``) batches of one training step.

    Both must be finite (when ``finite``) floating tensors with N, M >= 1 and the same
    number of columns; returned in one compute dtype (mixed dtypes promoted, float16 and
    bfloat16 computed in float32).

    Raises:
        TypeError: If an input is not a floating-point torch tensor.
        ValueError: If a batch is empty, not 2-D, not finite, or the column counts differ.
    """
    rows_in = check_float_matrix(first, names[0], columns=columns, finite=finite)
    rows_out = check_float_matrix(second, names[1], columns=columns, finite=finite)
    what = "classes" if columns == "C" else "features"
    check_same_width(rows_in, rows_out, names, what=what, symbol=columns)
    dtype = compute_dtype(torch.promote_types(rows_in.dtype, rows_out.dtype), from_numpy=False)
    return rows_in.to(dtype), rows_out.to(dtype)


def dense_logits_rows(
    logits: object, mask_out: object, mask_in: object | None = None, *, finite: bool = True
) -> tuple[Tensor, Tensor]:
    """Split dense (N, C, *spatial) logits into ID rows and outlier rows (P, C) by masks.

    The segmentation form of the energy losses: every pixel is a sample; ``mask_out`` marks
    outlier pixels, ``mask_in`` the ID pixels (default: every pixel not in ``mask_out``;
    pass it to leave out void/ignored pixels). Either set may be empty.

    Args:
        logits: Floating (N, C, *spatial) logits, C >= 1, finite.
        mask_out: Boolean (N, *spatial) mask of outlier pixels.
        mask_in: Boolean (N, *spatial) mask of ID pixels, disjoint from ``mask_out``.
        finite: Check the values: finite logits and disjoint masks (a host sync).

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
    if finite:
        overlap = int((mask_in & mask_out).sum())
        if overlap:
            raise ValueError(
                f"Expected `mask_in` and `mask_out` to be disjoint, but {overlap} pixel(s) are "
                "in both."
            )
        check_finite(logits, "logits_in")
    rows = promote(logits).movedim(1, -1)
    return rows[mask_in], rows[mask_out]
