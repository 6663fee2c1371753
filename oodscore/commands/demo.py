"""``oodscore demo``: train small classifiers on the embedded digits and report OOD detection.

Nothing is downloaded: the data are scikit-learn's 8×8 digits (see `oodscore.data.demo`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from oodscore.data.demo import DemoSets, multi_label_sets, single_label_sets
from oodscore.evaluation import Scorers, evaluate
from oodscore.io import check_outputs
from oodscore.plotting import check_plot_path
from oodscore.report import Report

SINGLE_LABEL_SCORERS: tuple[str, ...] = ("msp", "max_logit", "energy", "entropy", "gen")
"""Scorers of the single-label (softmax) demo: every registered scorer made for softmax logits."""

MULTI_LABEL_SCORERS: tuple[str, ...] = ("joint_energy", "max_logit")
"""Scorers of the multi-label (sigmoid) demo. Softmax scores (MSP, energy, entropy, GEN)
assume mutually exclusive classes and are left out; JointEnergy with ``top_k=1`` ranks
exactly as MaxLogit (softplus is increasing), so it would repeat that row."""

TASKS = ("single", "multi", "both")


@dataclass(frozen=True)
class DemoSize:
    """Training budget of one task."""

    epochs: int
    num_train: int = 3000
    num_test: int = 600


FULL = {"single": DemoSize(epochs=30), "multi": DemoSize(epochs=15)}
QUICK = {"single": DemoSize(epochs=10), "multi": DemoSize(epochs=5, num_train=1000, num_test=300)}


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="train on the embedded digits and report OOD detection (no download)",
        description=(
            "Train a small MLP on scikit-learn's digits 0-5 (CPU, seconds), then report how "
            "well each applicable scorer separates ID test digits from held-out digits 6-9, "
            "inverted digits 6-9 and uniform noise; and the same for a multi-label model on "
            "2x2 composites of digits (sigmoid head, JointEnergy). Deterministic for a --seed."
        ),
    )
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="both",
        help="single-label, multi-label or both (default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data and training")
    parser.add_argument(
        "--quick", action="store_true", help="train briefly (for tests; weaker numbers)"
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="IMAGE",
        help="save histograms and ROC curves (needs matplotlib); with --task both the "
        "multi-label figure goes to IMAGE's name + '-multilabel'",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing plot files")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Train, evaluate and print each task's report; save the plots when asked."""
    tasks = ["single", "multi"] if args.task == "both" else [args.task]
    plots = _plot_paths(args.plot, tasks)
    check_outputs(plots.values(), [], force=args.force)
    for path in plots.values():
        check_plot_path(path)
    threads = torch.get_num_threads()
    # One thread: these models are too small to gain from more, and on a busy machine
    # extra threads that wait on each other make training many times slower.
    torch.set_num_threads(1)
    try:
        for i, task in enumerate(tasks):
            sets, report = run_task(task, seed=args.seed, quick=args.quick)
            if i:
                print()
            print(describe(task, sets, report))
            if task in plots:
                report.plot(plots[task], force=args.force)
    finally:
        torch.set_num_threads(threads)
    return 0


def run_task(task: str, *, seed: int = 0, quick: bool = False) -> tuple[DemoSets, Report]:
    """Build the data of ``task`` ("single" or "multi"), train its model, evaluate it.

    The global torch random state is left as it was; the result depends only on ``seed``
    (and on the machine's floating-point arithmetic).
    """
    if task not in ("single", "multi"):
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
    # Training and iterating DataLoaders draw from the global generator: fork it, so the
    # result depends on `seed` only and the caller's random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = train(sets, epochs=size.epochs, seed=seed)
        report = evaluate(model, id_loader, ood_loaders, scorers, progress=False)
    return sets, report


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
) -> nn.Module:
    """Train `make_model` with Adam: cross-entropy, or BCE when multi-label."""
    pixels = sets.x_train[0].numel()
    model = make_model(pixels, sets.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn: nn.Module = nn.BCEWithLogitsLoss() if sets.multi_label else nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    # Slicing shuffled index blocks is far cheaper than a DataLoader over a TensorDataset,
    # which indexes and collates sample by sample; on tiny models that overhead dominates.
    n = len(sets.x_train)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss: Tensor = loss_fn(model(sets.x_train[index]), sets.y_train[index])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    return model


def describe(task: str, sets: DemoSets, report: Report) -> str:
    """The printed section of one task: what was trained, what the OOD sets are, the table."""
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
        report.to_markdown(),
    ]
    return "\n".join(lines)


def _plot_paths(path: Path | None, tasks: list[str]) -> dict[str, Path]:
    if path is None:
        return {}
    if len(tasks) == 1:
        return {tasks[0]: path}
    return {"single": path, "multi": path.with_name(f"{path.stem}-multilabel{path.suffix}")}
