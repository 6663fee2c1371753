"""The contract of scorers that run the model themselves (input perturbation, gradients)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from oodscore._arrays import compute_dtype, promote
from oodscore._validation import check_finite
from oodscore.model_io import Forward, read_logits
from oodscore.nn._modules import inference_state
from oodscore.scorers.base import InputKind, Scorer

LogitsFn = Callable[[Tensor], Tensor]
"""``logits_fn(inputs) -> logits`` (B, C): the model as a `ModelScorer` sees it."""


class ModelScorer(Scorer):
    r"""A `Scorer` that runs the model itself: ``scorer(model, inputs) -> scores`` (N,).

    The call leaves the model as it found it: it runs in eval mode, its parameters do not
    require gradients for the duration (only the inputs do, where the method needs an
    input gradient), no parameter's ``.grad`` is written, and every flag is restored
    after, also when the scorer raises. It works inside ``torch.no_grad()`` and
    ``torch.inference_mode()``: a scorer that needs gradients enables them locally.
    Scores come back detached, on the device of the model's output, in float32 for
    half-precision models.

    A subclass writes `score_model`, which gets ``logits_fn`` (inputs → checked logits)
    and the checked inputs.

    Args of the call:
        model: The classifier, an ``nn.Module``.
        inputs: A floating tensor (N, ...) of model inputs, on the model's device.
        forward: ``forward(model, inputs) -> output`` when the model is not called as
            ``model(inputs)``; the output may be logits, an object with ``.logits``, a
            mapping with ``"logits"`` or a tuple whose first item is the logits.
    """

    input_kind: ClassVar[InputKind] = "model"
    differentiable: ClassVar[bool] = False  # the scores come back detached

    def __call__(  # type: ignore[override]
        self, model: nn.Module, inputs: Tensor, /, *, forward: Forward | None = None
    ) -> Tensor:
        """Score the batch ``inputs`` (N, ...) by running ``model`` on it; returns (N,)."""
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"Expected `model` to be a torch.nn.Module, got {type(model).__name__}."
            )
        if not isinstance(inputs, Tensor):
            raise TypeError(
                f"Expected `inputs` to be a torch.Tensor of model inputs, got "
                f"{type(inputs).__name__}; {type(self).__name__} perturbs or differentiates "
                "its inputs, so they must be one floating tensor."
            )
        if not inputs.dtype.is_floating_point or inputs.ndim == 0:
            raise TypeError(
                f"Expected `inputs` to be a floating tensor (N, ...), got dtype {inputs.dtype} "
                f"and shape {tuple(inputs.shape)}."
            )
        if forward is not None and not callable(forward):
            raise TypeError(
                "Expected `forward` to be a function (model, inputs) -> output, got "
                f"{type(forward).__name__}."
            )
        if inputs.shape[0] == 0:
            return inputs.new_empty(0, dtype=compute_dtype(inputs.dtype, from_numpy=False))
        check_finite(inputs.detach().reshape(inputs.shape[0], -1), "inputs")
        call: Forward = forward if forward is not None else _call

        def logits_fn(x: Tensor) -> Tensor:
            logits = read_logits(call(model, x), where="the model output")
            if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
                raise ValueError(
                    f"Expected the model output to be (N, C) logits with N = {x.shape[0]}, "
                    f"got shape {tuple(logits.shape)}."
                )
            return promote(logits)

        # Under torch.inference_mode no tensor can join a graph: leave it for the call, and
        # copy inputs made there into ordinary tensors.
        with torch.inference_mode(False), inference_state(model):
            x = inputs.detach()
            scores = self.score_model(logits_fn, x.clone() if x.is_inference() else x)
        return promote(scores.detach())

    @abstractmethod
    def score_model(self, logits_fn: LogitsFn, inputs: Tensor) -> Tensor:
        """The method: scores (N,) of checked ``inputs``, running the model via ``logits_fn``."""

    def score(self, x: Tensor) -> Tensor:
        """Not used: a model scorer is called as ``scorer(model, inputs)``."""
        raise TypeError(
            f"{type(self).__name__} runs the model itself: call it as scorer(model, inputs), "
            "not on logits or features."
        )


def _call(model: nn.Module, inputs: Tensor) -> Any:
    return model(inputs)


def input_gradient(logits_fn: LogitsFn, inputs: Tensor, loss: Callable[[Tensor], Tensor]) -> Tensor:
    """The gradient of ``loss(logits_fn(inputs))`` (a scalar) with respect to ``inputs`` only.

    Computed with ``torch.autograd.grad`` under ``torch.enable_grad()``, so it works inside
    ``torch.no_grad()`` and writes no ``.grad`` anywhere.
    """
    with torch.enable_grad():
        x = inputs.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(loss(logits_fn(x)), x)
    return gradient
