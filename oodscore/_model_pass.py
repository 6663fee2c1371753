"""Passes of a model over loaders: logits, features and targets per batch, scored in chunks.

`ModelPass` runs the model once per batch (through `oodscore.model_io.ModelIO`), reads
the features a `oodscore.nn.FeatureCapture` recorded in that same forward pass, and
either collects the features of a fit loader or scores every batch of a test loader
with every scorer (`LoaderScores`). `oodscore.evaluate` is built on it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sized
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor, nn

from oodscore._distributed import gather_samples, rank
from oodscore._validation import check_logits, check_matrix
from oodscore.metrics.classification import check_targets, mean_average_precision
from oodscore.model_io import ModelIO
from oodscore.nn.features import FeatureCapture
from oodscore.scorer_set import score_all, score_model_inputs
from oodscore.scorers.base import Scorer

T = TypeVar("T")

SCORE_CHUNK_ELEMENTS = 1 << 20
"""Logits and features (elements) buffered before the scorers run: 4 MiB of float32.

Scoring each batch separately costs one small call per scorer and batch; on CPU a small
tensor op can cost far more than its arithmetic when the thread pool has to wake up (tens
of milliseconds on a loaded machine). Buffering a few MiB bounds the memory and turns
hundreds of calls into a few.
"""


class Step(NamedTuple):
    """What one batch gave: its number, logits, captured features (or None) and targets.

    ``model_scores`` holds the scores of the model scorers, which ran the model themselves.
    """

    batch: int
    logits: Tensor
    features: Tensor | None
    targets: Tensor | None
    model_scores: dict[str, Tensor]


class FitData(NamedTuple):
    """The ID data of a fit loader: logits and features (None when not kept) and targets."""

    logits: Tensor | None
    features: Tensor | None
    targets: Tensor | None


class ModelPass:
    """Run ``model`` over loaders, one forward pass per batch, logits and features together.

    Args:
        model: The model, already in eval mode and under ``torch.no_grad`` (the caller's).
        io: How batches are fed to the model and logits read from its output.
        device: Where batch tensors go.
        capture: The hook recording the features, or ``None`` when no scorer reads them.
        progress: Show a progress bar per loader (tqdm, rank 0).
    """

    def __init__(
        self,
        model: nn.Module,
        io: ModelIO,
        device: torch.device,
        capture: FeatureCapture | None,
        *,
        progress: bool,
    ) -> None:
        self.model = model
        self.io = io
        self.device = device
        self.capture = capture
        self.progress = progress
        self.classes: tuple[int, str] | None = None
        """The logit width of the first loader run, and its name: every loader must match."""

    def steps(
        self,
        loader: Iterable[Any],
        name: str,
        *,
        read_targets: bool,
        scorers: Mapping[str, Scorer] | None = None,
    ) -> Iterator[Step]:
        """Every batch of ``loader`` through the model, checked, as a `Step`.

        Targets are read only with ``read_targets`` (they are None otherwise). The model
        scorers among ``scorers`` score each batch after the forward pass (they run the
        model on its input tensor themselves).

        Raises:
            ValueError: If the logits are not 2-D, change width between batches, some
                batches carry targets and others not, or the loader yields nothing.
        """
        num_classes = 0
        has_targets: bool | None = None
        model_scorers = {
            label: s for label, s in (scorers or {}).items() if s.input_kind == "model"
        }
        for index, batch in enumerate(_progress(loader, name, self.progress)):
            where = f"batch {index} of {name!r}"
            targets = self.io.targets(batch, where) if read_targets else None
            calls = self.capture.calls if self.capture is not None else 0
            logits = self.io.logits(self.model, batch, self.device, where)
            if logits.ndim != 2:
                raise ValueError(
                    f"Expected the model output on {where} to be 2-D (B, C) logits, got shape "
                    f"{tuple(logits.shape)}."
                )
            if num_classes and logits.shape[1] != num_classes:
                raise ValueError(
                    f"Expected the model output on {where} to have {num_classes} columns like "
                    f"the batches before, got shape {tuple(logits.shape)}."
                )
            num_classes = logits.shape[1]
            self._check_classes(num_classes, name, where)
            if has_targets is not None and has_targets != (targets is not None):
                raise ValueError(
                    f"Expected every batch of {name!r} to carry targets or none to, but "
                    f"batch {index} differs from the first."
                )
            has_targets = targets is not None
            features = self._features(calls, logits, where)
            model_scores = {}
            if model_scorers:
                inputs = self.io.tensor_inputs(batch, self.device, where)
                model_scores = score_model_inputs(model_scorers, self.model, inputs)
            yield Step(index, logits, features, targets, model_scores)
        if not num_classes:
            raise ValueError(f"The {name!r} loader yielded no samples.")

    def _check_classes(self, num_classes: int, name: str, where: str) -> None:
        """The first loader fixes the logit width C; every other loader must give the same."""
        if self.classes is None:
            self.classes = (num_classes, name)
        elif self.classes[0] != num_classes:
            raise ValueError(
                f"Expected the model output on {where} to have C = {self.classes[0]} columns "
                f"like the {self.classes[1]!r} loader, got {num_classes}: every loader must "
                "give logits of the same classes."
            )

    def _features(self, calls_before: int, logits: Tensor, where: str) -> Tensor | None:
        """The features the capture recorded in this forward pass, (B, D), one per logit row."""
        capture = self.capture
        if capture is None:
            return None
        layer = f"{capture.module_name!r}"
        if capture.calls == calls_before:
            raise ValueError(
                f"The feature layer {layer} did not run in the forward pass of {where}; name "
                "a layer the forward pass uses with feature_layer=...."
            )
        features = capture.features
        if features.ndim != 2 or features.shape[0] != logits.shape[0]:
            raise ValueError(
                f"Expected the features of layer {layer} on {where} to have one row per "
                f"logit row, (B, D) with B = {logits.shape[0]} (after flattening), got shape "
                f"{tuple(features.shape)}; name another layer with feature_layer=...."
            )
        return features

    def fit_data(self, loader: Iterable[Any], *, logits: bool) -> FitData:
        """The logits (if asked), features (if captured) and targets of a fit loader, all ranks."""
        kept: dict[str, list[Tensor]] = {"logits": [], "features": [], "targets": []}
        for step in self.steps(loader, "fit", read_targets=True):
            if logits:
                kept["logits"].append(step.logits)
            if step.features is not None:
                kept["features"].append(step.features)
            if step.targets is not None:
                kept["targets"].append(step.targets.to(step.logits.device))
        gathered = {
            key: gather_samples(torch.cat(parts), loader) if parts else None
            for key, parts in kept.items()
        }
        if gathered["logits"] is not None:
            check_logits(gathered["logits"], "model output on the fit loader")
        return FitData(gathered["logits"], gathered["features"], gathered["targets"])

    def scores(
        self,
        loader: Iterable[Any],
        name: str,
        scorers: Mapping[str, Scorer],
        *,
        keep_targets: bool,
    ) -> LoaderScores:
        """Score every batch of ``loader`` with every scorer (and keep the ID predictions)."""
        result = LoaderScores(scorers, name, keep_targets=keep_targets)
        last = 0
        for step in self.steps(loader, name, read_targets=keep_targets, scorers=scorers):
            result.add(step)
            last = step.batch
        result.flush(last)
        return result


class LoaderScores:
    """Scores (and, for the ID set, predictions and targets) of one loader, batch by batch."""

    def __init__(self, scorers: Mapping[str, Scorer], name: str, *, keep_targets: bool) -> None:
        self.scorers = scorers
        self.name = name
        self.keep_targets = keep_targets
        self.scores: dict[str, list[Tensor]] = {label: [] for label in scorers}
        self.pending: list[Step] = []
        self.pending_elements = 0
        self.kept: list[Tensor] = []
        """ID only: arg-max predictions (class targets) or logits (multi-hot targets)."""
        self.targets: list[Tensor] = []
        self.num_classes = 0

    def add(self, step: Step) -> None:
        """Buffer one batch; score the buffer once it holds `SCORE_CHUNK_ELEMENTS`."""
        self.num_classes = step.logits.shape[1]
        for label, scores in step.model_scores.items():
            self.scores[label].append(scores)
        self.pending.append(step)
        self.pending_elements += step.logits.numel()
        if step.features is not None:
            self.pending_elements += step.features.numel()
        if self.pending_elements >= SCORE_CHUNK_ELEMENTS:
            self.flush(step.batch)
        if self.keep_targets and step.targets is not None:
            self._keep(step.logits, step.targets, step.batch)

    def _keep(self, logits: Tensor, targets: Tensor, index: int) -> None:
        """Keep what the ID metric needs: predictions for class indices, logits for multi-hot."""
        if self.targets and targets.ndim != self.targets[0].ndim:
            raise ValueError(
                f"Expected the targets of every batch of {self.name!r} to have the same number "
                f"of dimensions, but batch {index} has shape {tuple(targets.shape)} and the "
                f"first {tuple(self.targets[0].shape)}."
            )
        self.targets.append(targets.to(logits.device))
        self.kept.append(logits.argmax(dim=1) if targets.ndim == 1 else logits.float())

    def flush(self, last: int) -> None:
        """Check the buffered batches once (one device sync per chunk, not per batch), score."""
        if not self.pending:
            return
        first = self.pending[0].batch
        where = f"batch {first}" if first == last else f"batches {first}-{last}"
        logits = _cat([step.logits for step in self.pending])
        check_logits(logits, f"model output on {where} of {self.name!r}")
        features = None
        if self.pending[0].features is not None:
            features = _cat([step.features for step in self.pending if step.features is not None])
            check_matrix(features, f"features on {where} of {self.name!r}")
        self.pending, self.pending_elements = [], 0
        for label, scores in score_all(self.scorers, logits, features).items():
            self.scores[label].append(scores)

    def gathered_scores(self, loader: Iterable[Any]) -> dict[str, Tensor]:
        """Every scorer's scores, from all ranks under torch.distributed."""
        return {
            label: gather_samples(torch.cat(parts), loader).cpu()
            for label, parts in self.scores.items()
        }

    def gathered_id_metrics(self, loader: Iterable[Any]) -> dict[str, float]:
        """Accuracy or mAP of the ID set when its batches carried targets."""
        if not self.targets:
            return {}
        kept = torch.cat(self.kept)
        targets = torch.cat(self.targets)
        check_targets(targets, torch.Size((len(kept), self.num_classes)), "ID loader targets")
        if targets.ndim == 1:
            # Gather one correctness flag per sample rather than the logits.
            correct = (kept == targets).to(torch.float32)
            return {"accuracy": float(gather_samples(correct, loader).double().mean())}
        logits = gather_samples(kept, loader)
        targets = gather_samples(targets.to(torch.float32), loader)
        return {"map": mean_average_precision(logits, targets)}


def _cat(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _progress(iterable: Iterable[T], name: str, show: bool) -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar when asked, installed, and on rank 0."""
    if not show or rank() != 0:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    total = len(iterable) if isinstance(iterable, Sized) else None
    bar: Iterator[T] = tqdm(
        iterable, desc=f"oodscore {name}", total=total, leave=False, file=sys.stderr
    )
    return bar
