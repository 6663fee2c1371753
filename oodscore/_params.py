"""Hyper-parameters read back from the constructor: one rule for scorers and regularizers.

`HasParams` gives every scorer and regularizer scikit-learn's estimator interface:
``get_params(deep=True)``, ``set_params(**params)`` and ``sklearn.base.clone``.
"""

from __future__ import annotations

import copy
import inspect
import math
from typing import Any

from torch import Tensor, nn
from typing_extensions import Self


class HasParams:
    """Mixin: the constructor's keyword arguments are the parameters, read and set by name.

    Every hyper-parameter is a constructor argument stored under the same name (the
    scikit-learn convention), so the constructor's signature is the list of parameters.

    - `get_params` returns them; with ``deep=True`` (the default, as in scikit-learn) the
      parameters of a nested scorer follow as ``scorer__temperature``.
    - `set_params` changes some of them by rebuilding with the constructor, so its checks
      run again: a bad value raises the constructor's error and leaves the object as it
      was. A fitted scorer comes back unfitted.
    - ``sklearn.base.clone`` (through ``__sklearn_clone__``) returns a new, unfitted object
      with the same parameters; tensors and arrays are copied, and nested scorers cloned,
      but an ``nn.Module`` parameter (a classifier head, read at each call so that it
      follows the model's weights) is shared.

    Examples:
        >>> from sklearn.base import clone
        >>> from oodscore import Energy, ReAct
        >>> react = ReAct(scorer=Energy(temperature=2.0))
        >>> react.get_params()["scorer__temperature"]
        2.0
        >>> react.set_params(percentile=80.0, scorer__temperature=3.0)
        ReAct(percentile=80.0, threshold=None, scorer=Energy(temperature=3.0), head=None, weight=None, bias=None)
        >>> clone(react).get_params(deep=False)["percentile"]
        80.0
        >>> Energy().set_params(temperature=-1)
        Traceback (most recent call last):
        ...
        ValueError: Expected `temperature` to be a finite number in [1e-06, 1000000], got -1.
    """  # noqa: E501

    @classmethod
    def _param_names(cls) -> list[str]:
        """The names of the constructor's arguments, in order (``*args``/``**kwargs`` excluded)."""
        params = inspect.signature(cls.__init__).parameters.values()
        named = (p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        return [name for name in named if name != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments and their current values.

        Args:
            deep: Also list the parameters of nested objects that have parameters (a
                scorer given as ``scorer=``), as ``<name>__<parameter>``.
        """
        params = {name: getattr(self, name) for name in self._param_names()}
        if deep:
            for name, value in list(params.items()):
                if _has_params(value):
                    nested = value.get_params(deep=True)
                    params.update({f"{name}__{key}": item for key, item in nested.items()})
        return params

    def set_params(self, **params: Any) -> Self:
        """Change parameters by name (``scorer__temperature`` for a nested scorer's).

        The object is rebuilt with its constructor, whose checks run on the new values; on
        an error nothing changes. A fitted scorer comes back unfitted, since its fitted
        statistics may depend on any parameter: fit it again. A nested scorer is changed in
        place, as in scikit-learn.

        Returns:
            The object itself.

        Raises:
            ValueError: On an unknown name (the message lists the valid ones), or a value
                the constructor refuses.
            TypeError: On a value of a type the constructor refuses.
        """
        if not params:
            return self
        merged = self.get_params(deep=False)
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, nests, inner = key.partition("__")
            if name not in merged:
                raise ValueError(self._unknown(key))
            if nests:
                nested.setdefault(name, {})[inner] = value
            else:
                merged[name] = value
        candidate = type(self)(**merged)  # the constructor's checks, before any change
        if nested:
            for name, inner_params in nested.items():
                target = merged[name]
                if not _has_params(target) or not hasattr(target, "set_params"):
                    key = f"{name}__{next(iter(inner_params))}"
                    raise ValueError(
                        f"{self._unknown(key)} (`{name}` is {target!r}, which has no "
                        f"parameters of its own: pass {name}= an instance instead)"
                    )
            for name, inner_params in nested.items():
                merged[name].set_params(**inner_params)
            candidate = type(self)(**merged)
        self._adopt(candidate)
        return self

    def __sklearn_clone__(self) -> Self:
        """A new, unfitted object with the same parameters (``sklearn.base.clone``)."""
        params = {k: _clone_value(v) for k, v in self.get_params(deep=False).items()}
        return type(self)(**params)

    def _adopt(self, other: Self) -> None:
        """Become ``other``, a freshly built object of the same class (for `set_params`)."""
        vars(self).clear()
        vars(self).update(vars(other))

    def _unknown(self, key: str) -> str:
        valid = sorted(self.get_params(deep=True))
        return f"Invalid parameter {key!r} for {type(self).__name__}; valid parameters are {valid}"

    def params_repr(self) -> str:
        """``key=value`` pairs of `get_params`, for ``repr``; arrays show their shape only."""
        items = self.get_params(deep=False).items()
        return ", ".join(f"{k}={_short_repr(v)}" for k, v in items)


SHOWN_ELEMENTS = 16
"""Tensors and arrays up to this size appear in ``repr`` with their values."""


def _has_params(value: object) -> bool:
    """Whether ``value`` is an object with parameters (scikit-learn's test), not a class."""
    return hasattr(value, "get_params") and not isinstance(value, type)


def _clone_value(value: Any) -> Any:
    """A parameter's value for a clone: as ``sklearn.base.clone`` does, modules shared.

    Objects with parameters are cloned; an ``nn.Module`` is shared (a head is read at each
    call, to follow its model); tensors are copied (detached); the rest is deep-copied.
    """
    if isinstance(value, HasParams):
        return value.__sklearn_clone__()
    if _has_params(value):
        from sklearn.base import clone

        return clone(value, safe=False)
    if isinstance(value, nn.Module):
        return value
    if isinstance(value, Tensor):
        return value.detach().clone()
    if type(value) in (list, tuple):
        return type(value)(_clone_value(item) for item in value)
    return copy.deepcopy(value)


def _short_repr(value: Any) -> str:
    """``repr(value)``; ``<Tensor of shape (C, D)>`` for big tensors and arrays (a head's weight).

    Values are shown up to `SHOWN_ELEMENTS` elements (a class prior), the shape beyond.
    """
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype") and math.prod(shape) > SHOWN_ELEMENTS:
        return f"<{type(value).__name__} of shape {tuple(shape)}>"
    return repr(value)
