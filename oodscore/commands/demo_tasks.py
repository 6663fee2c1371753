"""What ``oodscore demo`` trains and measures: the tasks, the model, the training recipes.

The command line part (`oodscore.commands.demo`) imports this module only when the demo
runs, so that ``oodscore --help`` does not load scikit-learn or SciPy.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from oodscore.data.demo import NEAR, DemoSets, blobs, multi_label_sets, single_label_sets
from oodscore.evaluation import Scorers, evaluate
from oodscore.nn import spectral_normalize
from oodscore.plotting import comparison_figure, save_figure
from oodscore.regularizers import EDGELoss, OutlierExposureLoss, Regularizer
from oodscore.report import Report

SINGLE_LABEL_SCORERS: tuple[str, ...] = ("msp", "max_logit", "energy", "entropy", "gen")
"""Scorers of the single-label (softmax) demo: every registered scorer made for softmax logits."""

MULTI_LABEL_SCORERS: tuple[str, ...] = ("joint_energy", "max_logit")
"""Scorers of the multi-label (sigmoid) demo. Softmax scores (MSP, energy, entropy, GEN)
assume mutually exclusive classes and are left out; JointEnergy with ``top_k=1`` ranks
exactly as MaxLogit (softplus is increasing), so it would repeat that row."""

MULTI_LABEL_SCORER = "joint_energy"
"""The score of the multi-label training comparison (the seeds' multi-label score)."""

TASKS = ("single", "multi")

EDGE_START = 0.2
"""EDGE's gap term starts after this fraction of the run (the official 50 of 250 epochs)."""


@dataclass(frozen=True)
class DemoSize:
    """Training budget of one task."""

    epochs: int
    num_train: int = 3000
    num_test: int = 600


FULL = {"single": DemoSize(epochs=30), "multi": DemoSize(epochs=15)}
QUICK = {"single": DemoSize(epochs=10), "multi": DemoSize(epochs=5, num_train=1000, num_test=300)}


@dataclass(frozen=True)
class Recipe:
    """One way to train the multi-label model: a label, the method, and how to build it."""

    label: str
    method: str
    spectral: bool = False
    regularizer: Callable[[int], Regularizer] | None = None
    """Builds the regularizer from the number of epochs; ``None``: no outliers used."""


MULTI_LABEL_RECIPES: tuple[Recipe, ...] = (
    Recipe("plain", "binary cross-entropy only"),
    Recipe(
        "spectral norm",
        "SNoJoE: spectral normalization of the hidden layers, scored with JointEnergy",
        spectral=True,
    ),
    Recipe(
        "outlier exposure",
        "multi-label outlier exposure on blobs (every label pushed to 0)",
        regularizer=lambda epochs: OutlierExposureLoss(weight=1.0, target="zeros"),
    ),
    Recipe(
        "EDGE",
        f"outlier exposure on blobs + EDGE's energy-gap term from {EDGE_START:.0%} of the run",
        regularizer=lambda epochs: EDGELoss(start_epoch=EDGE_START, num_epochs=epochs),
    ),
)
"""The multi-label trainings the demo compares, plain first."""


@dataclass(frozen=True)
class TaskResult:
    """The data of one demo task and the report of each model trained on it."""

    sets: DemoSets
    reports: dict[str, Report]
    """``{recipe label: report}``; the single-label task has one model, ``"plain"``."""
    outliers: str = ""
    """What the outlier-trained models saw as outliers (empty if none was trained)."""
    models: dict[str, nn.Module] = field(default_factory=dict)
    """``{recipe label: trained model}`` (in eval mode)."""
    gap_activity: float | None = None
    """EDGE's mean fraction of active (outlier, ID tail) hinge pairs over the steps with its
    gap term on (`oodscore.EDGELoss.last_terms`); ``None`` without an EDGE run."""


def run_task(task: str, *, seed: int = 0, quick: bool = False) -> TaskResult:
    """Build the data of ``task`` ("single" or "multi"), train its model(s), evaluate them.

    The single-label task trains one softmax MLP. The multi-label task trains the same
    sigmoid MLP once per entry of `MULTI_LABEL_RECIPES` (same data, same seed).

    The global torch random state is left as it was; the result depends only on ``seed``
    (and on the machine's floating-point arithmetic).
    """
    if task not in TASKS:
        raise ValueError(f"Expected `task` to be 'single' or 'multi', got {task!r}.")
    size = (QUICK if quick else FULL)[task]
    if task == "single":
        sets = single_label_sets(seed=seed)
    else:
        sets = multi_label_sets(seed=seed, num_train=size.num_train, num_test=size.num_test)
    scorers: Scorers = MULTI_LABEL_SCORERS if sets.multi_label else SINGLE_LABEL_SCORERS
    id_loader = DataLoader(TensorDataset(sets.x_test, sets.y_test), batch_size=256)
    ood_loaders: dict[str, DataLoader[Any]] = {
        name: DataLoader(TensorDataset(x), batch_size=256) for name, x in sets.ood.items()
    }
    recipes = MULTI_LABEL_RECIPES if sets.multi_label else (Recipe("plain", "cross-entropy"),)
    shape = (int(sets.x_train.shape[1]), int(sets.x_train.shape[2]))
    outliers = blobs(len(sets.x_train), shape, seed=seed + 10)
    reports: dict[str, Report] = {}
    models: dict[str, nn.Module] = {}
    gap_activity: float | None = None
    # Training and iterating DataLoaders draw from the global generator: fork it, so the
    # result depends on `seed` only and the caller's random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        for recipe in recipes:
            torch.manual_seed(seed)
            regularizer = None if recipe.regularizer is None else recipe.regularizer(size.epochs)
            terms: list[dict[str, float]] = []
            model = train(
                sets,
                epochs=size.epochs,
                seed=seed,
                spectral=recipe.spectral,
                regularizer=regularizer,
                outliers=None if regularizer is None else outliers,
                terms=terms,
            )
            if isinstance(regularizer, EDGELoss):
                on = [step["active_pairs"] for step in terms if step["gap_weight"] > 0]
                gap_activity = sum(on) / len(on) if on else 0.0
            models[recipe.label] = model
            reports[recipe.label] = evaluate(model, id_loader, ood_loaders, scorers, progress=False)
    described = (
        f"{len(outliers)} synthetic blob images (oodscore.data.blobs, {shape[0]}x{shape[1]}): "
        "no digit, no inversion, no uniform noise, so no OOD test set is seen in training"
    )
    return TaskResult(sets, reports, described if sets.multi_label else "", models, gap_activity)


def make_model(input_pixels: int, num_classes: int, hidden: int = 128) -> nn.Module:
    """The demo's classifier: an MLP with two hidden ReLU layers of ``hidden`` units."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(input_pixels, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def train(
    sets: DemoSets,
    *,
    epochs: int,
    seed: int = 0,
    batch_size: int = 128,
    learning_rate: float = 3e-3,
    spectral: bool = False,
    regularizer: Regularizer | None = None,
    outliers: Tensor | None = None,
    terms: list[dict[str, float]] | None = None,
) -> nn.Module:
    """Train `make_model` with Adam: cross-entropy, or BCE when multi-label.

    Args:
        sets: The task's data.
        epochs: Passes over the training set.
        seed: Seed of the batch order (the caller seeds the weights' initialization).
        batch_size: ID rows per step (and as many outlier rows with a regularizer).
        learning_rate: Adam's learning rate.
        spectral: Spectral-normalize the hidden layers (`oodscore.spectral_normalize`).
        regularizer: A loss added to the task loss, given those of ``logits_in``,
            ``logits_out`` and ``epoch`` its ``forward`` takes; needs ``outliers``.
        outliers: Images fed as ``logits_out`` to ``regularizer``, in their own shuffled
            order each epoch.
        terms: If given, the regularizer's `oodscore.Regularizer.last_terms` of every step
            are appended to it (as floats).
    """
    pixels = sets.x_train[0].numel()
    model = make_model(pixels, sets.num_classes)
    if spectral:
        spectral_normalize(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn: nn.Module = nn.BCEWithLogitsLoss() if sets.multi_label else nn.CrossEntropyLoss()
    if regularizer is not None and outliers is None:
        raise ValueError("A `regularizer` needs `outliers`.")
    generator = torch.Generator().manual_seed(seed)
    # the data arguments this regularizer's forward takes, among those the loop has
    takes = set() if regularizer is None else set(inspect.signature(regularizer.forward).parameters)
    # Slicing shuffled index blocks is far cheaper than a DataLoader over a TensorDataset,
    # which indexes and collates sample by sample; on tiny models that overhead dominates.
    n = len(sets.x_train)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        out_order = None if outliers is None else torch.randperm(len(outliers), generator=generator)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            if regularizer is None or outliers is None or out_order is None:
                logits = model(sets.x_train[index])
                loss: Tensor = loss_fn(logits, sets.y_train[index])
            else:
                out_index = out_order[start : start + batch_size]
                both = model(torch.cat([sets.x_train[index], outliers[out_index]]))
                logits_in, logits_out = both[: len(index)], both[len(index) :]
                offered = {"logits_in": logits_in, "logits_out": logits_out, "epoch": epoch}
                data = {k: v for k, v in offered.items() if k in takes}
                loss = loss_fn(logits_in, sets.y_train[index]) + regularizer(**data)
                if terms is not None:
                    terms.append({k: float(v) for k, v in regularizer.last_terms.items()})
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    if isinstance(regularizer, EDGELoss):
        regularizer.finish()
    model.eval()
    return model


def describe(task: str, result: TaskResult) -> str:
    """The printed section of one task: what was trained, the OOD sets, the tables."""
    sets = result.sets
    plain = result.reports["plain"]
    if task == "single":
        title = "## Single-label: digits 0-5, MLP with a softmax head"
        scorers = "msp, max_logit, energy, entropy, gen (every scorer made for softmax logits)"
    else:
        title = "## Multi-label: 2x2 composites of digits 0-5, MLP with a sigmoid (BCE) head"
        scorers = (
            "joint_energy, max_logit; softmax scorers (msp, energy, entropy, gen) assume "
            "one class per input and are not run"
        )
    lines = [
        title,
        "",
        f"Trained on {len(sets.x_train)} images, tested on {len(sets.x_test)} ID images.",
        f"Scorers: {scorers}.",
        "OOD sets:",
        *(f"- {name}: {text}" for name, text in sets.descriptions.items()),
        "Higher score = more in-distribution; an AUROC below 0.5 means the scorer ranks that "
        "OOD set as more in-distribution than the ID test set.",
        "",
    ]
    if task == "multi":
        lines += ["### Trained plainly (binary cross-entropy)", ""]
    lines.append(plain.to_markdown())
    if task == "multi":
        lines += ["", *compare_trainings(result)]
    return "\n".join(lines)


def compare_trainings(result: TaskResult) -> list[str]:
    """The multi-label remedies side by side: a JointEnergy AUROC table and a reading."""
    reports = result.reports
    ood_sets = list(result.sets.ood)
    lines = [
        f"### The remedies side by side ({MULTI_LABEL_SCORER} AUROC ↑ per OOD set)",
        "",
        "Same data, model, seed and epochs; outliers: " + result.outliers + ".",
        "",
        "| training | ID mAP ↑ | " + " | ".join(ood_sets) + " | mean FPR@95TPR ↓ |",
        "|---|---:|" + "---:|" * len(ood_sets) + "---:|",
    ]
    for recipe in MULTI_LABEL_RECIPES:
        report = reports[recipe.label]
        aurocs = [report[name, MULTI_LABEL_SCORER]["auroc"] for name in ood_sets]
        fpr = report.mean(MULTI_LABEL_SCORER)["fpr95"]
        cells = " | ".join(f"{a:.4f}" for a in aurocs)
        lines.append(
            f"| {recipe.label} | {report.id_metrics.get('map', float('nan')):.4f} | {cells} "
            f"| {fpr:.4f} |"
        )
    lines += ["", *(f"- {r.label}: {r.method}" for r in MULTI_LABEL_RECIPES), ""]
    if result.gap_activity is not None:
        lines.append(
            f"EDGE's gap term, once on: {result.gap_activity:.1%} of (outlier, ID tail) pairs "
            "within the margin on average"
            + (
                " - the hinge is dead, so EDGE trains as outlier exposure here."
                if result.gap_activity == 0
                else "."
            )
        )
    lines.append("Reading: " + reading(reports, ood_sets))
    return lines


def reading(reports: Mapping[str, Report], ood_sets: list[str]) -> str:
    """One line that says what the comparison table shows, from its numbers."""
    far = [name for name in ood_sets if name != NEAR]

    def aurocs(label: str, names: list[str]) -> str:
        values = [reports[label][name, MULTI_LABEL_SCORER]["auroc"] for name in names]
        return "/".join(f"{v:.2f}" for v in values)

    far_sum = {
        label: sum(reports[label][n, MULTI_LABEL_SCORER]["auroc"] for n in far) for label in reports
    }
    top = max(far_sum.values())
    best = " and ".join(label for label, value in far_sum.items() if value == top)
    near = [reports[label][NEAR, MULTI_LABEL_SCORER]["auroc"] for label in reports]
    far_names = " and ".join(far)
    return (
        f"on far OOD ({far_names}) AUROC goes from {aurocs('plain', far)} trained plainly "
        f"to {aurocs('spectral norm', far)} with spectral normalization alone, "
        f"{aurocs('outlier exposure', far)} with outlier exposure and {aurocs('EDGE', far)} "
        f"with EDGE (best: {best}); near OOD ({NEAR}) lies within "
        f"{min(near):.2f}-{max(near):.2f} whatever the training: outliers that are not digits "
        "teach the model what is not a digit, not which digits it has never seen."
    )


def save_plot(task: str, result: TaskResult, path: Path, *, force: bool = False) -> None:
    """Save the figure of ``task``: histograms and ROC curves, or the trainings compared."""
    if task == "single":
        result.reports["plain"].plot(
            path,
            force=force,
            title="oodscore demo, single-label: MLP on digits 0-5 - ID test digits vs each "
            "OOD set (higher score = more ID)",
        )
        return
    figure = comparison_figure(
        result.reports,
        MULTI_LABEL_SCORER,
        title="oodscore demo, multi-label: JointEnergy ROC curves of the same MLP trained "
        "four ways (outliers: synthetic blobs, no test set)",
    )
    save_figure(figure, path, force=force)
