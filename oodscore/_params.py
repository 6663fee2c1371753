"""Hyper-parameters read back from the constructor: one rule for scorers and regularizers."""

from __future__ import annotations

import inspect
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
        """``key=value`` pairs of `get_params`, for ``repr``."""
        return ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
