"""The `Regularizer` contract and the regularizer registry."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from torch import Tensor, nn

from oodscore._registry import Registry

REGULARIZERS: Registry[Regularizer] = Registry("regularizer")


class Regularizer(nn.Module, ABC):
    """Base class of train-time OOD losses: ``loss = task_loss + regularizer(...)``.

    ``forward`` returns the **weighted** term as a scalar tensor. In-distribution and
    auxiliary-outlier batches are separate arguments (never sentinel labels); everything a
    method needs (logits, features, targets, the epoch of a schedule) is an explicit
    argument. Hyper-parameters are keyword-only constructor arguments stored under the same
    names, with the official code's values as defaults; ``weight`` scales the whole term.

    Attributes:
        name: The registry name (set by :func:`register_regularizer`).
    """

    name: ClassVar[str] = ""

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
    """Class decorator that registers a :class:`Regularizer` subclass under ``name``."""
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
