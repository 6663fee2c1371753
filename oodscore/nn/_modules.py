"""Model utilities shared by every component that walks a model: find a layer, keep its modes."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from torch import Tensor, nn
from torch.nn.utils import parametrize


def output_head(model: nn.Module) -> str | None:
    """The qualified name of the model's output head: its last ``nn.Linear`` in module order.

    Module order is the order of ``model.named_modules()``, i.e. the order in which the
    submodules were assigned in ``__init__``; ``None`` when the model has no ``Linear``.

    Examples:
        >>> import torch
        >>> from oodscore.nn import output_head
        >>> output_head(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)))
        '1'
    """
    head = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            head = name
    return head


def find_head(model: nn.Module, name: str | None = None, *, argument: str = "head") -> str:
    """The qualified name of the classifier head: the ``nn.Linear`` named ``name``, or the last.

    Args:
        model: The model to search.
        name: Dotted name of the head; ``None`` takes the last ``nn.Linear`` (`output_head`).
        argument: The caller's argument name, for error messages.

    Raises:
        ValueError: If the model has no ``nn.Linear``, or ``name`` names no module or a
            module that is not an ``nn.Linear``.
    """
    if name is None:
        found = output_head(model)
        if found is None:
            raise ValueError(
                f"Expected `model` ({type(model).__name__}) to contain an nn.Linear head, found "
                f"none; pass `{argument}` to name the layer."
            )
        return found
    module = find_module(model, name, argument=argument)
    if not isinstance(module, nn.Linear):
        raise ValueError(
            f"Expected `{argument}` to name an nn.Linear, but {name!r} is a "
            f"{type(module).__name__}."
        )
    return name


def find_module(model: nn.Module, name: str, *, argument: str = "module") -> nn.Module:
    """The submodule of ``model`` called ``name`` (dotted), with close matches on a miss.

    Raises:
        TypeError: If ``name`` is not a str.
        ValueError: If no submodule has that name (the empty name, the model itself, is
            refused too: a layer is expected).
    """
    return locate_module(model, name, argument=argument)[1]


def locate_module(
    model: nn.Module, name: str, *, argument: str = "module", unwrap: bool = False
) -> tuple[str, nn.Module]:
    """The qualified name and the submodule of ``model`` called ``name``, as `find_module`.

    With ``unwrap=True`` a name that misses on a wrapper with a ``module`` attribute
    (``DistributedDataParallel``, ``DataParallel``) is looked up in the wrapped model too,
    so that names work with or without the ``module.`` prefix; the returned name has it.

    Examples:
        >>> from torch import nn
        >>> from oodscore.nn._modules import locate_module
        >>> wrapper = nn.Module()
        >>> wrapper.module = nn.Sequential(nn.Linear(2, 2))
        >>> locate_module(wrapper, "0", unwrap=True)
        ('module.0', Linear(in_features=2, out_features=2, bias=True))
    """
    if not isinstance(name, str):
        raise TypeError(f"Expected `{argument}` to be a str or None, got {type(name).__name__}.")
    named = dict(model.named_modules())
    if name and name in named:
        return name, named[name]
    # DistributedDataParallel and DataParallel hold the model as `module`.
    wrapped = getattr(model, "module", None) if unwrap else None
    if name and isinstance(wrapped, nn.Module):
        inner = dict(wrapped.named_modules())
        if name in inner:
            return f"module.{name}", inner[name]
    close = difflib.get_close_matches(name, [n for n in named if n], n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"Expected `{argument}` to name a submodule of {type(model).__name__}, got {name!r}.{hint}"
    )


def weight_parametrizations(module: nn.Module) -> parametrize.ParametrizationList:
    """The parametrizations registered on ``module.weight`` (``torch.nn.utils.parametrize``)."""
    plist = cast(nn.ModuleDict, module.parametrizations)["weight"]
    assert isinstance(plist, parametrize.ParametrizationList)  # what parametrize stores there
    return plist


def original_weight(module: nn.Module) -> Tensor:
    """The stored weight of a parametrized ``module``; reading it runs no parametrization."""
    return weight_parametrizations(module).original


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule called ``name`` (dotted, non-empty) is."""
    parent_name, _, attribute = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attribute, new)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block; restore every submodule's own mode after.

    ``model.train(previous)`` would not do: a model in training mode may hold submodules
    frozen in eval (a fine-tuned backbone's batch norms), which it would switch to training.

    Examples:
        >>> from torch import nn
        >>> from oodscore.nn._modules import eval_mode
        >>> model = nn.Sequential(nn.BatchNorm1d(2), nn.Dropout())
        >>> model[0].eval()  # doctest: +ELLIPSIS
        BatchNorm1d(...)
        >>> with eval_mode(model):
        ...     model.training
        False
        >>> model.training, model[0].training, model[1].training
        (True, False, True)
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def inference_state(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters for the block; every flag restored after.

    Scorers that differentiate through a model (ODIN's input gradient) need gradients
    with respect to their inputs only: the parameters' ``requires_grad`` is switched off
    for the block, so no graph is built for them and their ``.grad`` is never written,
    then each parameter's own flag comes back, as does each submodule's mode
    (`eval_mode`).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from oodscore.nn._modules import inference_state
        >>> model = nn.Linear(2, 1)
        >>> model.bias.requires_grad_(False)  # doctest: +ELLIPSIS
        Parameter containing:...
        >>> with inference_state(model):
        ...     model.training, model.weight.requires_grad
        (False, False)
        >>> model.training, model.weight.requires_grad, model.bias.requires_grad
        (True, True, False)
    """
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    with eval_mode(model):
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        try:
            yield model
        finally:
            for parameter, flag in flags:
                parameter.requires_grad_(flag)
