"""`evaluate` and `evaluate_logits`: every scorer, logits or features, in one pass; a `Report`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from oodscore._eval_inputs import (
    as_features,
    check_no_logits,
    check_ood_names,
    check_rows,
    feature_sets,
    logit_sets,
)
from oodscore._model_pass import ModelPass
from oodscore.metrics import FprRule
from oodscore.metrics.classification import as_logits, id_task_metrics
from oodscore.model_io import Forward, ModelIO
from oodscore.nn._modules import eval_mode, find_head, locate_module
from oodscore.nn.features import CaptureWhat, FeatureCapture
from oodscore.report import Report
from oodscore.scorer_set import (
    Scorers,
    ScorerSpec,
    fit_unfitted,
    of_kind,
    require_fit_data,
    require_heads,
    resolve_scorers,
    score_all,
    unfitted,
)
from oodscore.scorers.base import Scorer
from oodscore.scorers.head import UsesHead

__all__ = ["ScorerSpec", "Scorers", "evaluate", "evaluate_logits", "resolve_scorers"]


def evaluate_logits(
    id_logits: Any,
    ood_logits: Mapping[str, Any] | None,
    scorers: Scorers,
    *,
    id_targets: Any = None,
    id_features: Any = None,
    ood_features: Mapping[str, Any] | None = None,
    fit_features: Any = None,
    fit_logits: Any = None,
    fit_targets: Any = None,
    tpr: float = 0.95,
    rule: FprRule = "first",
) -> Report:
    r"""Score saved logits and features with every scorer; report each OOD set's metrics.

    Logit scorers score the logits, feature scorers the features. Scorers that are not
    fitted yet (`oodscore.FittedScorer`) are fitted, in place, first: feature scorers on
    ``fit_features``, fitted logit scorers (KL matching, LOF, ...) on ``fit_logits``,
    both with ``fit_targets``; fitted ones are used as they are. Scorers that apply the
    classifier head (ReAct, ASH, DICE, ViM, ...) must be built with it (``head=`` or
    ``weight=``/``bias=``); model scorers (ODIN) need the model: use `evaluate`.

    With feature scorers only, ``id_logits`` and ``ood_logits`` may be ``None``: the OOD
    sets are then the keys of ``ood_features`` (and there is no ID accuracy). Arguments
    that no scorer reads are ignored (features without feature scorers, fit data when
    every scorer is fitted).

    Args:
        id_logits: (N, C) logits of the ID test set (NumPy array or tensor), or ``None``
            when only feature scorers are used.
        ood_logits: ``{name: (M, C) logits}`` of each OOD set, or ``None`` as ``id_logits``.
        scorers: Scorer names or instances, or a ``{label: scorer}`` mapping
            (see `resolve_scorers`).
        id_targets: Optional ID targets: (N,) class indices give the report an ``accuracy``
            (of the arg-max prediction), (N, C) multi-hot labels a macro ``map``
            (see `oodscore.metrics.classification.mean_average_precision`). They need
            ``id_logits``.
        id_features: (N, D) features of the ID test set, one row per row of ``id_logits``;
            required when a feature scorer is passed.
        ood_features: ``{name: (M, D) features}`` with the OOD sets of ``ood_logits``;
            required when a feature scorer is passed.
        fit_features: (N_fit, D) ID features (usually of the training set) to fit the
            feature scorers that are not fitted; required then.
        fit_logits: (N_fit, C) ID logits to fit the logit scorers that are not fitted
            (usually of a held-out ID set); required then.
        fit_targets: The targets of the fit rows: ``None``, class ids (N_fit,) or
            multi-hot labels (N_fit, C), as the scorers' ``fit`` takes them.
        tpr: The TPR at which the FPR column is read (0.95: FPR95).
        rule: How the FPR column reads the ROC curve, see
            `oodscore.metrics.fpr_at_tpr`.

    Returns:
        A `oodscore.Report` with the scores, so that `oodscore.Report.plot`
        works.

    Raises:
        ValueError: On NaN/inf inputs, OOD logits or features of another width than the
            ID ones, row counts of logits and features that differ, empty sets, targets
            that fit neither form, a missing argument (named) that a scorer needs, or a
            head scorer without a head.
        TypeError: On a model scorer.

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

        A feature scorer, fitted on training features, next to the logit scorers:

        >>> train = torch.randn(500, 3)
        >>> report = evaluate_logits(
        ...     id_logits, ood_logits, ["energy", "mahalanobis"],
        ...     id_features=torch.randn(200, 3), ood_features={"noise": 3 * torch.randn(100, 3)},
        ...     fit_features=train)
        >>> round(report["noise", "mahalanobis"]["auroc"], 3)
        0.959
    """
    resolved = resolve_scorers(scorers)
    logit_scorers = of_kind(resolved, "logits")
    feature_scorers = of_kind(resolved, "features")
    if of_kind(resolved, "model"):
        raise TypeError(
            f"The scorers {of_kind(resolved, 'model')} run the model themselves (input kind "
            "'model'); evaluate_logits has saved outputs only: use oodscore.evaluate."
        )
    require_heads(resolved, None, "evaluate_logits has no model to take the head from")
    if id_logits is None or ood_logits is None:
        check_no_logits(id_logits, ood_logits, logit_scorers, id_targets)
        id_tensor, ood_tensors = None, None
    else:
        id_tensor, ood_tensors = logit_sets(id_logits, ood_logits)
    id_feats, ood_feats = None, None
    if feature_scorers:
        id_feats, ood_feats = feature_sets(id_features, ood_features, feature_scorers)
        if id_tensor is not None and ood_tensors is not None:
            check_rows(id_tensor, ood_tensors, id_feats, ood_feats)
    names = list(ood_tensors if ood_tensors is not None else (ood_feats or {}))
    require_fit_data(
        resolved,
        {
            "features": ("fit_features", fit_features is not None),
            "logits": ("fit_logits", fit_logits is not None),
        },
    )
    if unfitted(resolved):
        fit_unfitted(
            resolved,
            logits=None if fit_logits is None else as_logits(fit_logits, "fit_logits"),
            features=None if fit_features is None else as_features(fit_features, "fit_features"),
            targets=fit_targets,
        )
    id_metrics = {}
    if id_targets is not None and id_tensor is not None:
        id_metrics = id_task_metrics(id_tensor, id_targets)
    with torch.no_grad():
        id_scores = score_all(resolved, id_tensor, id_feats)
        ood_scores = {
            name: score_all(
                resolved,
                None if ood_tensors is None else ood_tensors[name],
                None if ood_feats is None else ood_feats[name],
            )
            for name in names
        }
    return Report.from_scores(id_scores, ood_scores, id_metrics=id_metrics, tpr=tpr, rule=rule)


def evaluate(
    model: nn.Module,
    id_loader: Iterable[Any],
    ood_loaders: Mapping[str, Iterable[Any]],
    scorers: Scorers,
    *,
    fit_loader: Iterable[Any] | None = None,
    feature_layer: str | None = None,
    feature_capture: CaptureWhat | None = None,
    input_keys: str | Sequence[str] | None = None,
    target_key: str | None = "labels",
    forward: Forward | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    tpr: float = 0.95,
    rule: FprRule = "first",
) -> Report:
    r"""Run ``model`` over an ID loader and OOD loaders and report every scorer's OOD metrics.

    Each batch goes through the model once, in eval mode and without gradients: its logits
    feed the logit scorers, and the features recorded in the same forward pass feed the
    feature scorers, so K scorers of logits and features cost one pass over each test set.
    Model scorers (`oodscore.ModelScorer`: ODIN) then run the model on the batch's input
    tensor themselves. The mode of every submodule is restored afterwards (also on error);
    parameters are not touched.

    **Features** are, by default, the input of the classifier head, the last ``nn.Linear``
    in module order (`oodscore.nn.output_head`), i.e. the penultimate features. With
    ``feature_layer`` naming a submodule (e.g. ``"backbone.pool"``), its **output** is used
    instead; ``feature_capture`` (``"input"`` or ``"output"``) overrides either choice.
    Each batch's features are flattened to (B, D). The report records the layer in
    `oodscore.Report.feature_layer` (e.g. ``"fc (input)"``).

    **The head.** Scorers that apply the classifier head to the features (ReAct, ASH,
    DICE, SCALE, ViM, GradNorm) and were built without one are lent the model's head for
    the call (and have none again after it) when the features are its input (the
    default, or ``feature_layer`` naming the head with ``feature_capture="input"``); with
    other features they must be built with their head.

    **Fitting.** Scorers that are not fitted (`oodscore.FittedScorer`) are fitted, in
    place, on ``fit_loader`` (in-distribution data): feature scorers on its features,
    fitted logit scorers (KL matching, LOF, ...) on its logits, with its targets (class ids
    or multi-hot labels; none when its batches carry none); this costs one more pass, over
    ``fit_loader``. Fitted scorers are used as they are.

    **Batches and outputs** (see `oodscore.model_io`): batches are tensors,
    ``(inputs, targets, ...)`` tuples/lists, or mappings (Hugging Face style: the
    ``target_key`` entry holds the targets, the others are keyword inputs,
    ``model(**inputs)``); the model may return a tensor, an object with ``.logits``, a
    mapping with ``"logits"`` or a tuple/list whose first item is the logits. ``forward``
    covers any other case. ID targets, when present, add the ID task's quality to the
    report: ``accuracy`` for (B,) class indices, macro ``map`` for (B, C) multi-hot labels;
    OOD targets are not read.

    Under ``torch.distributed`` (an initialized default process group), give each loader a
    `torch.utils.data.DistributedSampler`: every rank scores its shard, the scores
    (and the ID predictions, and the fit features) are gathered from all ranks, and every
    rank returns the same report, computed on the whole sets. The padding a
    ``DistributedSampler`` adds to make the shards even is removed when the loader yields
    every index of its shard (no ``drop_last``), so the numbers equal a single-process run's.

    Args:
        model: A module mapping a batch of inputs to (B, C) logits (or an output holding them).
        id_loader: Iterable of ID test batches (usually a ``DataLoader``).
        ood_loaders: ``{name: loader}``, one per OOD set (``"mean"`` is reserved).
        scorers: Scorer names or instances, or a ``{label: scorer}`` mapping
            (see `resolve_scorers`): logit, feature and model scorers.
        fit_loader: ID batches (usually the training set) to fit the scorers that are not
            fitted; required then, not read otherwise.
        feature_layer: The submodule (dotted name, with or without DDP's ``module.``) whose
            output the feature scorers read; ``None``: the input of the classifier head.
        feature_capture: ``"input"`` or ``"output"`` of the feature layer; ``None``: the
            head's input, or a named layer's output.
        input_keys: For mapping batches, which entries are the inputs: ``None`` (all but
            the targets, as keywords), one key (passed positionally) or several (keywords).
        target_key: For mapping batches, the key of the targets; ``None`` reads no targets
            from any batch.
        forward: ``forward(model, batch) -> output or logits``, replacing ``model(inputs)``;
            the batch's tensors are moved to ``device`` first. Not with model scorers,
            which call ``model(inputs)`` on the batch's input tensor.
        device: Where inputs go; by default the device of the model's first parameter
            (CPU for a model without parameters).
        progress: Show a progress bar per loop when ``tqdm`` is installed (rank 0 only);
            without ``tqdm`` nothing is shown.
        tpr: The TPR at which the FPR column is read.
        rule: How the FPR column reads the ROC curve, see
            `oodscore.metrics.fpr_at_tpr`.

    Returns:
        A `oodscore.Report` holding the metrics, the scores and the feature layer.

    Raises:
        ValueError: On a scorer that is not fitted without ``fit_loader``, a head scorer
            without a head when the features are not the head's input, a feature layer
            that does not exist or does not run, NaN/inf logits or features, or loaders
            that yield nothing.
        TypeError: On batches or outputs of an unknown form (the message says what was
            found and what to pass), or on model scorers with ``forward`` or with
            keyword inputs.

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

        Mahalanobis on the head's input, fitted on a fit loader, next to energy:

        >>> mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
        ...                           torch.nn.Linear(8, 3))
        >>> fit_set = TensorDataset(torch.randn(300, 4), torch.arange(300) % 3)
        >>> report = evaluate(mlp, DataLoader(torch.randn(64, 4), batch_size=16),
        ...                   {"far": DataLoader(20 * torch.randn(32, 4), batch_size=16)},
        ...                   ["energy", "mahalanobis"], progress=False,
        ...                   fit_loader=DataLoader(fit_set, batch_size=64))
        >>> report.feature_layer, report["far", "mahalanobis"]["auroc"] > 0.9
        ('2 (input)', True)
    """
    resolved = resolve_scorers(scorers)
    check_ood_names(ood_loaders, "ood_loaders")
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected `model` to be a torch.nn.Module, got {type(model).__name__}.")
    io = ModelIO(input_keys=input_keys, target_key=target_key, forward=forward)
    if of_kind(resolved, "model") and forward is not None:
        raise TypeError(
            f"The model scorers {of_kind(resolved, 'model')} call model(inputs) on each "
            "batch's input tensor and cannot use `forward`; name the input tensor with "
            "input_keys=... instead."
        )
    given = fit_loader is not None
    require_fit_data(resolved, {"features": ("fit_loader", given), "logits": ("fit_loader", given)})
    layer = None
    if of_kind(resolved, "features"):
        layer = _feature_layer(model, feature_layer, feature_capture)
    target_device = _model_device(model) if device is None else torch.device(device)
    with ExitStack() as stack:
        if layer is not None:
            for scorer in _lend_head(model, resolved, layer):
                stack.callback(scorer.set_head, None)
        stack.enter_context(eval_mode(model))
        stack.enter_context(torch.no_grad())
        capture = None
        if layer is not None:
            capture = FeatureCapture(model, layer[0], capture=layer[1], detach=True)
            stack.enter_context(capture)
        runner = ModelPass(model, io, target_device, capture, progress=progress)
        if fit_loader is not None and unfitted(resolved):
            logits = bool(of_kind(unfitted(resolved), "logits"))
            data = runner.fit_data(fit_loader, logits=logits)
            fit_unfitted(resolved, logits=data.logits, features=data.features, targets=data.targets)
        id_run = runner.scores(id_loader, "ID", resolved, keep_targets=True)
        ood_runs = {
            name: runner.scores(loader, name, resolved, keep_targets=False)
            for name, loader in ood_loaders.items()
        }
    id_scores = id_run.gathered_scores(id_loader)
    ood_scores = {name: run.gathered_scores(ood_loaders[name]) for name, run in ood_runs.items()}
    id_metrics = id_run.gathered_id_metrics(id_loader)
    return Report.from_scores(
        id_scores,
        ood_scores,
        id_metrics=id_metrics,
        tpr=tpr,
        rule=rule,
        feature_layer=None if layer is None else f"{layer[0]} ({layer[1]})",
    )


# --------------------------------------------------------------------------- helpers


def _feature_layer(
    model: nn.Module, name: str | None, capture: CaptureWhat | None
) -> tuple[str, CaptureWhat]:
    """The qualified name of the feature layer and which side of it is captured."""
    if capture not in (None, "input", "output"):
        raise ValueError(
            f"Expected `feature_capture` to be None, 'input' or 'output', got {capture!r}."
        )
    if name is None:
        return find_head(model, argument="feature_layer"), capture or "input"
    found, _ = locate_module(model, name, argument="feature_layer", unwrap=True)
    return found, capture or "output"


def _lend_head(
    model: nn.Module, scorers: Mapping[str, Scorer], layer: tuple[str, str]
) -> list[UsesHead]:
    """Lend the model's head to the head scorers without one, when the features are its input.

    Returns the scorers that got it, for the caller to take it back after the call.
    """
    name, side = layer
    try:
        head_name = find_head(model, argument="feature_layer")
    except ValueError:
        head_name = None
    head = None
    if side == "input" and name == head_name:
        module = model.get_submodule(name)
        assert isinstance(module, nn.Linear)  # find_head finds an nn.Linear
        head = module
        why = ""
    else:
        why = f"the features are the {side} of {name!r}, not the input of the model's head"
    return require_heads(scorers, head, why)


def _model_device(model: nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")
