"""The `Scorer` contract and the scorer registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor
from typing_extensions import Self

from oodscore._arrays import ArrayT, as_tensor, map_rows
from oodscore._params import HasParams
from oodscore._registry import Registry
from oodscore._validation import check_finite, check_matrix

InputKind = Literal["logits", "features", "model"]
ArrayLike = Tensor | np.ndarray[Any, Any]

SCORERS: Registry[Scorer] = Registry("scorer")


class NotFittedError(RuntimeError):
    """Raised when a scorer that needs statistics is used before ``fit``."""


class Scorer(HasParams, ABC):
    r"""Base class of post-hoc OOD scores: ``scorer(x) -> scores`` of shape ``(N,)``.

    **Higher score = more in-distribution**, for every scorer. Three input kinds share this
    contract (`input_kind`):

    - ``"logits"``: ``scorer(logits)`` on (N, C) logits;
    - ``"features"``: ``scorer.fit(features, targets=None)`` on in-distribution features
      (returns the scorer), then ``scorer(features)`` on (N, D) features;
    - ``"model"``: scorers that run the model themselves.

    Calling a scorer converts and checks its input once, then runs the subclass's `score`:
    NumPy in gives NumPy out, torch in gives torch out on the same device with gradients
    flowing; float16/bfloat16 are computed (and returned) in float32; N = 0 gives an empty
    result. Hyper-parameters are keyword-only constructor arguments stored under the same
    names, which gives a faithful ``repr`` and scikit-learn's ``get_params(deep=True)``,
    ``set_params`` (re-checked by the constructor) and ``sklearn.base.clone`` (a new,
    unfitted scorer with the same parameters); see `oodscore._params.HasParams`.

    Attributes:
        name: The registry name (set by `register_scorer`).
        input_kind: What the scorer consumes: ``"logits"``, ``"features"`` or ``"model"``.
        requires_fit: Whether `fit` must run before scoring (see `FittedScorer`).
        needs_head: Whether the scorer applies the classifier head to features (ReAct,
            ASH, DICE, ViM, ...; see `oodscore.scorers.head.UsesHead`).
        differentiable: Whether gradients flow from the scores to the input (``False``
            for scikit-learn models such as LOF).
        multilabel: Whether the scorer has a form for multi-label (sigmoid) classifiers.
        higher_is_id: Always ``True``; stated so wrappers and tests can rely on it.
    """

    name: ClassVar[str] = ""
    input_kind: ClassVar[InputKind] = "logits"
    requires_fit: ClassVar[bool] = False
    needs_head: ClassVar[bool] = False
    differentiable: ClassVar[bool] = True
    multilabel: ClassVar[bool] = False
    higher_is_id: ClassVar[bool] = True

    def __call__(self, x: ArrayT) -> ArrayT:
        """Score a batch of logits (N, C) or features (N, D); returns shape (N,)."""
        name = self.input_kind
        tensor, restore = as_tensor(x, name)
        check_matrix(tensor, name, columns=_columns(name))
        self._check_fitted()
        self.check_input(tensor)
        if tensor.shape[0] == 0:
            result: ArrayT = restore(tensor.new_empty(0))
            return result
        result = restore(map_rows(self.score, tensor))
        return result

    @abstractmethod
    def score(self, x: Tensor) -> Tensor:
        """The formula: scores (N,) of a checked floating tensor (N, C) or (N, D)."""

    def check_input(self, x: Tensor) -> None:
        """Checks that depend on the hyper-parameters (e.g. ``top_k <= C``); none by default."""

    def _check_fitted(self) -> None:
        """Raise `NotFittedError` if the scorer needs fitted state and has none."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params_repr()})"


class FittedScorer(Scorer):
    """A `Scorer` with statistics fitted on in-distribution data (Mahalanobis, KNN, LOF, ...).

    ``fit(x, targets=None)`` takes what the scorer scores: features (N, D) for feature
    scorers (the default `input_kind`), logits (N, C) for fitted logit scorers (LOF, KL
    matching). It checks its inputs once and hands them to the subclass's `fit_state`,
    which returns the fitted tensors; they live in `state_dict` (tensors only, loadable
    with ``torch.load(..., weights_only=True)``) and move to the device of the scored input
    on first use. Scoring before fitting raises `NotFittedError`; scoring inputs of another
    width than the fit's is a ``ValueError``.

    Attributes:
        state_names: The keys of `state_dict`, in order; the last axis of the first one is
            the fit's width (see `num_features`).
        fixes_width: Whether the state fixes the width of the inputs (``True`` by default).
    """

    input_kind: ClassVar[InputKind] = "features"
    requires_fit: ClassVar[bool] = True
    state_names: ClassVar[tuple[str, ...]] = ()
    fixes_width: ClassVar[bool] = True

    _state: dict[str, Tensor] | None = None
    _on_device: dict[torch.device, dict[str, Tensor]]

    def fit(self, x: ArrayLike, /, targets: ArrayLike | None = None) -> Self:
        """Fit the statistics on in-distribution ``x`` (N, D) and optional ``targets``.

        Args:
            x: ID features (N, D) for feature scorers, ID logits (N, C) for fitted logit
                scorers; N >= 1; a tensor or a NumPy array. Where the statistic allows,
                large sets are accumulated in chunks (float64), never copied whole.
            targets: ``None``, class ids (N,), or multi-hot labels (N, C) (multi-label),
                as the scorer accepts.

        Returns:
            The scorer itself, fitted.

        Raises:
            ValueError: On empty, non-2-D or non-finite inputs, or bad targets.
            TypeError: On inputs that are not tensors or arrays of real numbers.
        """
        name = self.input_kind
        tensor, _ = as_tensor(x, name)
        check_matrix(tensor, name, columns=_columns(name))
        if tensor.shape[0] == 0:
            raise ValueError(
                f"Expected `{name}` to have at least 1 row to fit on, got shape "
                f"{tuple(tensor.shape)}."
            )
        with torch.no_grad():
            state = self.fit_state(tensor.detach(), targets)
        self._set_state({k: v.detach().cpu() for k, v in state.items()})
        return self

    @abstractmethod
    def fit_state(self, x: Tensor, targets: ArrayLike | None) -> dict[str, Tensor]:
        """The fitted tensors (keys `state_names`) of checked inputs (N, D), N >= 1."""

    @property
    def is_fitted(self) -> bool:
        """Whether `fit` or `load_state_dict` has run."""
        return self._state is not None

    @property
    def num_features(self) -> int | None:
        """The width seen at fit time: the feature size D (or the class count C of logits).

        ``None`` for a state that does not fix the width (`fixes_width` is ``False``, e.g.
        ReAct's one clipping threshold).
        """
        if not self.fixes_width:
            return None
        return int(self.state_dict()[self.state_names[0]].shape[-1])

    def state_dict(self) -> dict[str, Tensor]:
        """The fitted tensors, on the CPU: save with ``torch.save``, restore with `load_state_dict`.

        Raises:
            NotFittedError: Before `fit`.
        """
        self._check_fitted()
        assert self._state is not None
        return dict(self._state)

    def load_state_dict(self, state: Mapping[str, object]) -> Self:
        """Restore fitted tensors from `state_dict` (e.g. after ``torch.load(weights_only=True)``).

        Raises:
            ValueError: If keys are missing or unexpected, or a value is not a finite tensor.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"Expected `state` to be a mapping, got {type(state).__name__}.")
        missing = [k for k in self.state_names if k not in state]
        extra = [k for k in state if k not in self.state_names]
        if missing or extra:
            raise ValueError(
                f"Expected the state of {type(self).__name__} to have the keys "
                f"{list(self.state_names)}, got missing {missing} and unexpected {extra}."
            )
        tensors = {}
        for key in self.state_names:
            value = state[key]
            if not isinstance(value, Tensor) or not value.dtype.is_floating_point:
                raise ValueError(
                    f"Expected `state[{key!r}]` to be a floating tensor, got {value!r}."
                )
            check_finite(value.reshape(1, -1), f"state[{key!r}]")
            tensors[key] = value.detach().cpu().clone()
        self.check_state(tensors)
        self._set_state(tensors)
        return self

    def check_state(self, state: dict[str, Tensor]) -> None:
        """Check the shapes of loaded state; none by default."""

    def state_on(self, device: torch.device) -> dict[str, Tensor]:
        """The fitted tensors on ``device`` (moved once per device and cached)."""
        assert self._state is not None
        cached = self._on_device.get(device)
        if cached is None:
            cached = {k: v.to(device) for k, v in self._state.items()}
            self._on_device[device] = cached
        return cached

    def check_input(self, x: Tensor) -> None:
        """Check that the input has the fit's width (D features, or C logits)."""
        width = self.num_features
        if width is not None and x.shape[1] != width:
            name = self.input_kind
            symbol = _columns(name)
            raise ValueError(
                f"Expected `{name}` with {symbol} = {width} columns, the width "
                f"{type(self).__name__} was fitted on, got shape {tuple(x.shape)}."
            )

    def _set_state(self, state: dict[str, Tensor]) -> None:
        self._state = state
        self._on_device = {}

    def _check_fitted(self) -> None:
        if self._state is None:
            cls = type(self).__name__
            raise NotFittedError(
                f"This {cls} instance is not fitted yet. Call 'fit' with in-distribution "
                f"{self.input_kind} (or 'load_state_dict') before scoring."
            )


def _columns(input_kind: str) -> str:
    """The symbol of the column count of an input kind: C for logits, D for features."""
    return "C" if input_kind == "logits" else "D"


def register_scorer(name: str) -> Any:
    """Class decorator that registers a `Scorer` subclass under ``name``.

    Examples:
        >>> import torch
        >>> from oodscore import Scorer, get_scorer, register_scorer, unregister_scorer
        >>> @register_scorer("doc_min_logit")
        ... class MinLogit(Scorer):
        ...     '''Negative of the smallest logit (an example, not a method).'''
        ...     def score(self, logits):
        ...         return logits.min(dim=1).values
        >>> MinLogit()(torch.tensor([[1.0, 3.0]]))
        tensor([1.])
        >>> get_scorer("doc_min_logit")
        MinLogit()
        >>> unregister_scorer("doc_min_logit")
    """
    return SCORERS.register(name)


def unregister_scorer(name: str) -> None:
    """Remove the scorer registered under ``name`` (for plugins and tests)."""
    SCORERS.unregister(name)


def get_scorer(name: str, **params: Any) -> Scorer:
    """An instance of the scorer registered under ``name``, built with ``params``.

    Examples:
        >>> from oodscore import get_scorer
        >>> get_scorer("energy", temperature=2.0)
        Energy(temperature=2.0)
    """
    return SCORERS.create(name, **params)


def list_scorers(pattern: str = "*") -> list[str]:
    """Sorted names of the registered scorers that match the fnmatch ``pattern``.

    Examples:
        >>> from oodscore import list_scorers
        >>> list_scorers("*energy")
        ['energy', 'joint_energy']
    """
    return SCORERS.names(pattern)
