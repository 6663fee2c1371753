"""Hyper-parameters read back from the constructor: one rule for scorers and regularizers."""

from __future__ import annotations

import inspect
import math
from typing import Any


class HasParams:
    """Mixin: ``get_params()`` lists the constructor's keyword arguments and current values.

    Every hyper-parameter is a constructor argument stored under the same name (the
    scikit-learn convention), so the constructor's signature is the list of parameters.
    """

    def get_params(self) -> dict[str, Any]:
        """The constructor's keyword arguments and their current values."""
        params = inspect.signature(type(self).__init__).parameters.values()
        named = (p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        return {name: getattr(self, name) for name in named if name != "self"}

    def params_repr(self) -> str:
        """``key=value`` pairs of `get_params`, for ``repr``; arrays show their shape only."""
        return ", ".join(f"{k}={_short_repr(v)}" for k, v in self.get_params().items())


SHOWN_ELEMENTS = 16
"""Tensors and arrays up to this size appear in ``repr`` with their values."""


def _short_repr(value: Any) -> str:
    """``repr(value)``; ``<Tensor of shape (C, D)>`` for big tensors and arrays (a head's weight).

    Values are shown up to `SHOWN_ELEMENTS` elements (a class prior), the shape beyond.
    """
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype") and math.prod(shape) > SHOWN_ELEMENTS:
        return f"<{type(value).__name__} of shape {tuple(shape)}>"
    return repr(value)
