"""The `Scorer` contract and the scorer registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

from torch import Tensor

from oodscore._arrays import ArrayT, as_tensor, map_rows
from oodscore._params import HasParams
from oodscore._registry import Registry
from oodscore._validation import check_logits

InputKind = Literal["logits", "features", "model"]

SCORERS: Registry[Scorer] = Registry("scorer")


class NotFittedError(RuntimeError):
    """Raised when a scorer that needs statistics is used before ``fit``."""


class Scorer(HasParams, ABC):
    r"""Base class of post-hoc OOD scores: ``scorer(logits) -> scores`` of shape ``(N,)``.

    **Higher score = more in-distribution**, for every scorer.

    Calling a scorer converts and checks its input once, then runs the subclass's
    `score`: NumPy in gives NumPy out, torch in gives torch out on the same device with
    gradients flowing; float16/bfloat16 are computed (and returned) in float32; N = 0 gives an
    empty result. Hyper-parameters are keyword-only constructor arguments stored under the
    same names, which gives a faithful ``repr``.

    Attributes:
        name: The registry name (set by `register_scorer`).
        input_kind: What the scorer consumes: ``"logits"``, ``"features"`` or ``"model"``.
        requires_fit: Whether `fit` must run before scoring.
        higher_is_id: Always ``True``; stated so wrappers and tests can rely on it.
    """

    name: ClassVar[str] = ""
    input_kind: ClassVar[InputKind] = "logits"
    requires_fit: ClassVar[bool] = False
    higher_is_id: ClassVar[bool] = True

    def __call__(self, logits: ArrayT) -> ArrayT:
        """Score a batch of logits of shape (N, C); returns shape (N,)."""
        tensor, restore = as_tensor(logits, "logits")
        check_logits(tensor, "logits")
        self.check_input(tensor)
        self._check_fitted()
        if tensor.shape[0] == 0:
            result: ArrayT = restore(tensor.new_empty(0))
            return result
        result = restore(map_rows(self.score, tensor))
        return result

    @abstractmethod
    def score(self, logits: Tensor) -> Tensor:
        """The formula: scores of shape (N,) for a checked floating tensor of shape (N, C)."""

    def check_input(self, logits: Tensor) -> None:
        """Checks that depend on the hyper-parameters (e.g. ``top_k <= C``); none by default."""

    def _check_fitted(self) -> None:
        if self.requires_fit and not getattr(self, "is_fitted", False):
            cls = type(self).__name__
            raise NotFittedError(
                f"This {cls} instance is not fitted yet. Call 'fit' with in-distribution "
                f"data before scoring."
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params_repr()})"


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
