"""What a detector reads: scores, and the logits its group rule needs, from any kind of input.

A detector is calibrated and called on one of: a loader (with its model: one forward pass
per batch gives the logits, and the head's input for feature scorers), saved logits, saved
features (with logits when a group rule reads them), or precomputed scores. This module
turns each into checked ``(scores, logits or None)``, reusing the model pass of
`oodscore.evaluate` (`oodscore._model_pass.ModelPass`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from oodscore._arrays import as_tensor
from oodscore._model_pass import ModelPass
from oodscore._validation import check_finite, check_matrix
from oodscore.model_io import ModelIO
from oodscore.nn._modules import eval_mode, find_head
from oodscore.nn.features import FeatureCapture
from oodscore.scorer_set import require_heads
from oodscore.scorers.base import FittedScorer, Scorer


@dataclass(frozen=True)
class Source:
    """The inputs of one call: exactly one of a loader, logits/features, or scores."""

    loader: Iterable[Any] | None = None
    logits: Any = None
    features: Any = None
    scores: Any = None


@dataclass(frozen=True)
class ModelRunner:
    """How a detector runs its model over a loader (see `oodscore.evaluate`'s arguments)."""

    model: nn.Module
    io: ModelIO
    device: torch.device | None
    progress: bool

    @contextmanager
    def running(self, scorer: Scorer, name: str) -> Iterator[ModelPass]:
        """A `ModelPass` over the model in eval mode, without gradients (modes restored after).

        For feature scorers it records the input of the model's head (and lends the head to
        a scorer that applies it and has none, for the duration).
        """
        device = self.device or _model_device(self.model)
        with ExitStack() as stack:
            capture = None
            if scorer.input_kind == "features":
                head_name = find_head(self.model, argument="model")
                head = self.model.get_submodule(head_name)
                assert isinstance(head, nn.Linear)  # find_head finds an nn.Linear
                for lent in require_heads({name: scorer}, head, ""):
                    stack.callback(lent.set_head, None)
                capture = FeatureCapture(self.model, head_name, capture="input", detach=True)
                stack.enter_context(capture)
            stack.enter_context(eval_mode(self.model))
            stack.enter_context(torch.no_grad())
            yield ModelPass(self.model, self.io, device, capture, progress=self.progress)

    def outputs(self, scorer: Scorer, loader: Iterable[Any], name: str) -> tuple[Tensor, Tensor]:
        """The scores (N,) and the logits (N, C) of every batch of ``loader``.

        Each batch goes through the model once: logit scorers score its logits, feature
        scorers the input of the model's head (recorded in the same pass, and scored while
        the head is lent), and model scorers run the model on the batch's inputs.
        """
        kind = scorer.input_kind
        logits, features, scores = [], [], []
        with self.running(scorer, name) as runner:
            model_scorers = {name: scorer} if kind == "model" else None
            for step in runner.steps(loader, name, read_targets=False, scorers=model_scorers):
                logits.append(step.logits)
                if step.features is not None:
                    features.append(step.features)
                if kind == "model":
                    scores.append(step.model_scores[name])
            outputs = torch.cat(logits)
            check_matrix(outputs, f"model output on the {name} loader", columns="C")
            if kind == "model":
                return _as_scores(torch.cat(scores), f"{name} scores", 1), outputs
            return scorer(torch.cat(features) if kind == "features" else outputs), outputs

    def fit(self, scorer: FittedScorer, loader: Iterable[Any]) -> None:
        """Fit ``scorer`` on the logits or features, and targets, of an ID fit loader."""
        with self.running(scorer, "fit") as runner:
            data = runner.fit_data(loader, logits=scorer.input_kind == "logits")
        inputs = data.features if scorer.input_kind == "features" else data.logits
        assert inputs is not None
        scorer.fit(inputs, data.targets)


def read_source(
    scorer: Scorer,
    source: Source,
    runner: ModelRunner | None,
    *,
    need_logits: bool,
    name: str,
    min_rows: int,
) -> tuple[Tensor, Tensor | None]:
    """Checked scores (N,) and, when given or needed, logits (N, C) of one source.

    Args:
        scorer: The detector's scorer (the kind of input it reads decides what is needed).
        source: What the caller passed.
        runner: The detector's model, for loaders and model inputs (``None``: no model).
        need_logits: Whether the group rule reads logits.
        name: The set's name in messages (``"calibration"``, ``"test"``).
        min_rows: The fewest rows accepted (1 to calibrate, 0 to score).

    Raises:
        ValueError: On no source or several, a missing input the scorer or the rule reads,
            inputs that are not finite (N, C) / (N, D) / (N,) arrays, or row counts that
            differ.
        TypeError: On a loader without a model, or inputs that are not arrays or tensors.
    """
    given = [k for k, v in vars(source).items() if v is not None]
    kind = scorer.input_kind
    if source.loader is not None:
        if len(given) > 1:
            raise ValueError(f"Expected a loader or arrays for the {name} set, got {given}.")
        if runner is None:
            raise TypeError(
                f"Expected a model to run the {name} loader: build the detector with model=...; "
                "or pass logits=, features= or scores=."
            )
        return runner.outputs(scorer, source.loader, name)
    if source.logits is not None:
        logits = _as_matrix(source.logits, "logits", "C", min_rows)
    else:
        logits = None
    if need_logits and logits is None:
        raise ValueError(
            f"Expected `logits` for the {name} set: the group rule reads the predicted classes "
            "from them."
        )
    if source.scores is not None:
        if source.features is not None:
            raise ValueError(f"Expected `scores` or `features` for the {name} set, not both.")
        scores = _as_scores(source.scores, "scores", min_rows)
        _check_rows(scores, logits, "scores")
        return scores, logits
    if kind == "model":
        raise ValueError(
            f"{type(scorer).__name__} runs the model itself: build the detector with model=... "
            f"and pass a loader for the {name} set, or pass scores=."
        )
    if kind == "features":
        if source.features is None:
            raise ValueError(
                f"Expected `features` (or `scores`) for the {name} set: "
                f"{type(scorer).__name__} reads features."
            )
        features = _as_matrix(source.features, "features", "D", min_rows)
        _check_rows(features, logits, "features")
        return scorer(features), logits
    if source.features is not None:
        raise ValueError(f"Expected no `features`: {type(scorer).__name__} reads logits.")
    if logits is None:
        raise ValueError(
            f"Expected `logits` (or `scores`) for the {name} set: {type(scorer).__name__} reads "
            "logits."
        )
    return scorer(logits), logits


def _as_matrix(x: Any, name: str, columns: str, min_rows: int) -> Tensor:
    tensor, _ = as_tensor(x, name)
    check_matrix(tensor, name, columns=columns)
    if tensor.shape[0] < min_rows:
        raise ValueError(f"Expected `{name}` to have at least {min_rows} row, got shape (0, C).")
    return tensor


def _as_scores(x: Any, name: str, min_rows: int) -> Tensor:
    tensor, _ = as_tensor(x, name)
    if tensor.ndim != 1:
        raise ValueError(f"Expected `{name}` to be 1-D of shape (N,), got shape {tuple(x.shape)}.")
    if tensor.shape[0] < min_rows:
        raise ValueError(f"Expected `{name}` to have at least {min_rows} score, got none.")
    check_finite(tensor, name)
    return tensor


def _check_rows(first: Tensor, logits: Tensor | None, name: str) -> None:
    if logits is not None and logits.shape[0] != first.shape[0]:
        raise ValueError(
            f"Expected `{name}` and `logits` to have one row per input, got {first.shape[0]} "
            f"and {logits.shape[0]} rows."
        )


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")
