"""`evaluate`: one forward pass per batch feeds every scorer; the result is a `Report`."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from oodscore._distributed import gather_samples, rank
from oodscore._validation import check_logits, check_same_width
from oodscore.metrics import FprRule
from oodscore.metrics.classification import (
    as_logits,
    check_targets,
    id_task_metrics,
    mean_average_precision,
)
from oodscore.nn._modules import eval_mode
from oodscore.report import MEAN, Report
from oodscore.scorers.base import Scorer, get_scorer

ScorerSpec = str | Scorer
"""A registered scorer name or a scorer instance."""

Scorers = ScorerSpec | Sequence[ScorerSpec] | Mapping[str, ScorerSpec]
"""One scorer, a sequence of them, or ``{label: scorer}`` to name them in the report."""

T = TypeVar("T")


def resolve_scorers(scorers: Scorers) -> dict[str, Scorer]:
    """Turn names, instances or a ``{label: name or instance}`` mapping into ``{label: Scorer}``.

    A name becomes `oodscore.get_scorer` of it with default parameters, labelled by
    the name; an instance is labelled by its registry name (or its class name when it has
    none). Two scorers with the same label are an error: pass a mapping to tell them apart.

    Raises:
        ValueError: On no scorers, an unknown name, a repeated label, or a scorer that does
            not read logits.
        TypeError: On something that is neither a name nor a `oodscore.Scorer`.

    Examples:
        >>> from oodscore import Energy
        >>> from oodscore.evaluation import resolve_scorers
        >>> resolve_scorers(["msp", Energy()])
        {'msp': MSP(temperature=1.0), 'energy': Energy(temperature=1.0)}
        >>> resolve_scorers({"energy_t2": Energy(temperature=2.0)})
        {'energy_t2': Energy(temperature=2.0)}
    """
    pairs: list[tuple[str | None, Any]]
    if isinstance(scorers, (str, Scorer)):
        pairs = [(None, scorers)]
    elif isinstance(scorers, Mapping):
        pairs = list(scorers.items())
    elif isinstance(scorers, Iterable):
        pairs = [(None, s) for s in scorers]
    else:
        raise TypeError(
            "Expected `scorers` to be a scorer name, a Scorer, a sequence of them or a "
            f"{{label: scorer}} mapping, got {type(scorers).__name__}."
        )
    if not pairs:
        raise ValueError("Expected `scorers` to name at least one scorer, got none.")
    resolved: dict[str, Scorer] = {}
    for label, spec in pairs:
        if isinstance(spec, str):
            scorer = get_scorer(spec)
            default_label = spec
        elif isinstance(spec, Scorer):
            scorer = spec
            default_label = type(spec).name or type(spec).__name__
        else:
            raise TypeError(
                f"Expected each scorer to be a registered name or a Scorer, got {spec!r}."
            )
        if scorer.input_kind != "logits":
            raise ValueError(
                f"Scorer {scorer!r} reads {scorer.input_kind}, not logits; evaluate and "
                "evaluate_logits run logit scorers only."
            )
        name = default_label if label is None else label
        if not isinstance(name, str) or not name:
            raise TypeError(f"Expected scorer labels to be non-empty strings, got {name!r}.")
        if name in resolved:
            raise ValueError(
                f"Two scorers are labelled {name!r}; pass a {{label: scorer}} mapping to "
                "tell them apart."
            )
        resolved[name] = scorer
    return resolved


def evaluate_logits(
    id_logits: Any,
    ood_logits: Mapping[str, Any],
    scorers: Scorers,
    *,
    id_targets: Any = None,
    tpr: float = 0.95,
    rule: FprRule = "first",
) -> Report:
    r"""Score saved logits with every scorer and report the OOD metrics of each OOD set.

    Args:
        id_logits: (N, C) logits of the ID test set (NumPy array or tensor).
        ood_logits: ``{name: (M, C) logits}`` of each OOD set.
        scorers: Scorer names or instances, or a ``{label: scorer}`` mapping
            (see `resolve_scorers`).
        id_targets: Optional ID targets: (N,) class indices give the report an ``accuracy``
            (of the arg-max prediction), (N, C) multi-hot labels a macro ``map``
            (see `oodscore.metrics.classification.mean_average_precision`).
        tpr: The TPR at which the FPR column is read (0.95: FPR95).
        rule: How the FPR column reads the ROC curve, see
            `oodscore.metrics.fpr_at_tpr`.

    Returns:
        A `oodscore.Report` with the scores, so that `oodscore.Report.plot`
        works.

    Raises:
        ValueError: On NaN/inf logits, OOD logits with another number of columns, empty sets,
            or targets that fit neither form.

    Examples:
        >>> import torch
        >>> from oodscore import evaluate_logits
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> id_logits = torch.randn(200, 5) + 4 * torch.eye(5)[torch.arange(200) % 5]
        >>> ood_logits = {"noise": torch.randn(100, 5)}
        >>> report = evaluate_logits(id_logits, ood_logits, ["msp", "energy"],
        ...                          id_targets=torch.arange(200) % 5)
        >>> energy = report["noise", "energy"]
        >>> round(energy["auroc"], 3), round(report.id_metrics["accuracy"], 3)
        (0.984, 0.98)
    """
    resolved = resolve_scorers(scorers)
    _check_ood_names(ood_logits, "ood_logits")
    id_tensor = as_logits(id_logits, "id_logits")
    ood_tensors = {}
    for name, logits in ood_logits.items():
        tensor = as_logits(logits, f"ood_logits[{name!r}]")
        check_same_width(id_tensor, tensor, ("id_logits", f"ood_logits[{name!r}]"))
        ood_tensors[name] = tensor
    id_metrics = {} if id_targets is None else id_task_metrics(id_tensor, id_targets)
    with torch.no_grad():
        id_scores = {label: scorer(id_tensor) for label, scorer in resolved.items()}
        ood_scores = {
            name: {label: scorer(tensor) for label, scorer in resolved.items()}
            for name, tensor in ood_tensors.items()
        }
    return Report.from_scores(id_scores, ood_scores, id_metrics=id_metrics, tpr=tpr, rule=rule)


def evaluate(
    model: nn.Module,
    id_loader: Iterable[Any],
    ood_loaders: Mapping[str, Iterable[Any]],
    scorers: Scorers,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
    tpr: float = 0.95,
    rule: FprRule = "first",
) -> Report:
    r"""Run ``model`` over an ID loader and OOD loaders and report every scorer's OOD metrics.

    Each batch goes through the model once, in eval mode and without gradients, and its
    logits feed every scorer; the mode of every submodule is restored afterwards (also on
    error). Batches are tensors or ``(inputs, targets, ...)`` tuples/lists. ID targets, when
    present, add the ID task's quality to the report: ``accuracy`` for (B,) class indices,
    macro ``map`` for (B, C) multi-hot labels; OOD targets are ignored.

    Under ``torch.distributed`` (an initialized default process group), give each loader a
    `torch.utils.data.DistributedSampler`: every rank scores its shard, the scores
    (and the ID predictions) are gathered from all ranks, and every rank returns the same
    report, computed on the whole sets. The padding a ``DistributedSampler`` adds to make
    the shards even is removed when the loader yields every index of its shard (no
    ``drop_last``), so the numbers equal a single-process run's.

    Args:
        model: A module mapping a batch of inputs to (B, C) logits.
        id_loader: Iterable of ID test batches (usually a ``DataLoader``).
        ood_loaders: ``{name: loader}``, one per OOD set (``"mean"`` is reserved).
        scorers: Scorer names or instances, or a ``{label: scorer}`` mapping
            (see `resolve_scorers`); only logit scorers apply.
        device: Where inputs go; by default the device of the model's first parameter
            (CPU for a model without parameters).
        progress: Show a progress bar per loop when ``tqdm`` is installed (rank 0 only);
            without ``tqdm`` nothing is shown.
        tpr: The TPR at which the FPR column is read.
        rule: How the FPR column reads the ROC curve, see
            `oodscore.metrics.fpr_at_tpr`.

    Returns:
        A `oodscore.Report` holding the metrics and the scores.

    Examples:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from oodscore import evaluate
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 3)
        >>> x_id, x_ood = torch.randn(64, 4) * 3, torch.randn(32, 4) * 0.1
        >>> y_id = model(x_id).argmax(1)
        >>> id_loader = DataLoader(TensorDataset(x_id, y_id), batch_size=16)
        >>> report = evaluate(model, id_loader, {"small": DataLoader(x_ood, batch_size=16)},
        ...                   ["msp", "energy"], progress=False)
        >>> msp = report["small", "msp"]
        >>> report.id_metrics, msp["auroc"] > 0.9
        ({'accuracy': 1.0}, True)
    """
    resolved = resolve_scorers(scorers)
    _check_ood_names(ood_loaders, "ood_loaders")
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected `model` to be a torch.nn.Module, got {type(model).__name__}.")
    target_device = _model_device(model) if device is None else torch.device(device)
    with eval_mode(model), torch.no_grad():
        id_run = _Run(model, resolved, target_device, keep_targets=True)
        id_run.consume(id_loader, "ID", progress)
        ood_runs = {}
        for name, loader in ood_loaders.items():
            run = _Run(model, resolved, target_device, keep_targets=False)
            run.consume(loader, name, progress)
            ood_runs[name] = run
    id_scores = id_run.gathered_scores(id_loader)
    ood_scores = {name: run.gathered_scores(ood_loaders[name]) for name, run in ood_runs.items()}
    id_metrics = id_run.gathered_id_metrics(id_loader)
    return Report.from_scores(id_scores, ood_scores, id_metrics=id_metrics, tpr=tpr, rule=rule)


SCORE_CHUNK_ELEMENTS = 1 << 20
"""Logits (elements) buffered before the scorers run: 4 MiB of float32.

Scoring each batch separately costs one small call per scorer and batch; on CPU a small
tensor op can cost far more than its arithmetic when the thread pool has to wake up (tens
of milliseconds on a loaded machine). Buffering a few MiB of logits bounds the memory and
turns hundreds of calls into a few.
"""


class _Run:
    """Scores (and, for the ID set, predictions and targets) of one loader, batch by batch."""

    def __init__(
        self,
        model: nn.Module,
        scorers: dict[str, Scorer],
        device: torch.device,
        *,
        keep_targets: bool,
    ) -> None:
        self.model = model
        self.scorers = scorers
        self.device = device
        self.keep_targets = keep_targets
        self.scores: dict[str, list[Tensor]] = {label: [] for label in scorers}
        self.pending: list[Tensor] = []
        self.pending_elements = 0
        self.pending_first = 0
        self.logits: list[Tensor] = []
        """ID only: arg-max predictions (class targets) or logits (multi-hot targets)."""
        self.targets: list[Tensor] = []
        self.num_classes = 0

    def consume(self, loader: Iterable[Any], name: str, show: bool) -> None:
        """Run the model on every batch of ``loader`` and score its logits."""
        seen_targets: bool | None = None
        for index, batch in enumerate(_progress(loader, name, show)):
            inputs, targets = _split_batch(batch, name, index)
            logits = self.model(inputs.to(self.device, non_blocking=True))
            if not isinstance(logits, Tensor):
                raise TypeError(
                    f"Expected the model to return a logits tensor, got {type(logits).__name__} "
                    f"(batch {index} of {name!r})."
                )
            where = f"the model output on batch {index} of {name!r}"
            if logits.ndim != 2:
                raise ValueError(
                    f"Expected {where} to be 2-D (B, C) logits, got shape {tuple(logits.shape)}."
                )
            if self.num_classes and logits.shape[1] != self.num_classes:
                raise ValueError(
                    f"Expected {where} to have {self.num_classes} columns like the batches "
                    f"before, got shape {tuple(logits.shape)}."
                )
            self.num_classes = logits.shape[1]
            if not self.pending:
                self.pending_first = index
            self.pending.append(logits)
            self.pending_elements += logits.numel()
            if self.pending_elements >= SCORE_CHUNK_ELEMENTS:
                self._score_pending(name, index)
            if self.keep_targets:
                if seen_targets is not None and seen_targets != (targets is not None):
                    raise ValueError(
                        f"Expected every batch of {name!r} to carry targets or none to, but "
                        f"batch {index} differs from the first."
                    )
                seen_targets = targets is not None
                if targets is not None:
                    self._keep(logits, targets, name, index)
        if self.num_classes == 0:
            raise ValueError(f"The {name!r} loader yielded no samples.")
        self._score_pending(name, index)

    def _keep(self, logits: Tensor, targets: Tensor, name: str, index: int) -> None:
        """Keep what the ID metric needs: predictions for class indices, logits for multi-hot."""
        if self.targets and targets.ndim != self.targets[0].ndim:
            raise ValueError(
                f"Expected the targets of every batch of {name!r} to have the same number of "
                f"dimensions, but batch {index} has shape {tuple(targets.shape)} and the first "
                f"{tuple(self.targets[0].shape)}."
            )
        self.targets.append(targets.to(logits.device))
        self.logits.append(logits.argmax(dim=1) if targets.ndim == 1 else logits.float())

    def _score_pending(self, name: str, last: int) -> None:
        """Check the buffered logits once (one device sync per chunk, not per batch), score."""
        if not self.pending:
            return
        logits = self.pending[0] if len(self.pending) == 1 else torch.cat(self.pending)
        first = self.pending_first
        where = f"batch {first}" if first == last else f"batches {first}-{last}"
        check_logits(logits, f"model output on {where} of {name!r}")
        self.pending, self.pending_elements = [], 0
        for label, scorer in self.scorers.items():
            self.scores[label].append(scorer(logits).float())

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
        kept = torch.cat(self.logits)
        targets = torch.cat(self.targets)
        check_targets(targets, torch.Size((len(kept), self.num_classes)), "ID loader targets")
        if targets.ndim == 1:
            # Gather one correctness flag per sample rather than the logits.
            correct = (kept == targets).to(torch.float32)
            return {"accuracy": float(gather_samples(correct, loader).double().mean())}
        logits = gather_samples(kept, loader)
        targets = gather_samples(targets.to(torch.float32), loader)
        return {"map": mean_average_precision(logits, targets)}


# --------------------------------------------------------------------------- helpers


def _check_ood_names(sets: Mapping[str, Any], name: str) -> None:
    if not isinstance(sets, Mapping):
        raise TypeError(
            f"Expected `{name}` to be a {{name: ...}} mapping, got {type(sets).__name__}."
        )
    if not sets:
        raise ValueError(f"Expected `{name}` to hold at least one OOD set, got none.")
    for key in sets:
        if not isinstance(key, str) or not key:
            raise TypeError(f"Expected the OOD-set names in `{name}` to be strings, got {key!r}.")
        if key == MEAN:
            raise ValueError(
                f"The OOD-set name {MEAN!r} is reserved for the report's mean rows; rename it."
            )


def _split_batch(batch: Any, name: str, index: int) -> tuple[Tensor, Tensor | None]:
    """``(inputs, targets or None)`` of a tensor or an ``(inputs, targets, ...)`` batch."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        targets = batch[1] if len(batch) > 1 else None
        if targets is not None and not isinstance(targets, Tensor):
            raise TypeError(
                f"Expected the targets of batch {index} of {name!r} to be a tensor, got "
                f"{type(targets).__name__}."
            )
        return batch[0], targets
    raise TypeError(
        f"Expected batch {index} of {name!r} to be a tensor or an (inputs, targets) tuple "
        f"of tensors, got {type(batch).__name__}."
    )


def _model_device(model: nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


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
