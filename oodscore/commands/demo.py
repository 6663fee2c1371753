"""``oodscore demo``: train small classifiers on the embedded digits and report OOD detection.

Nothing is downloaded: the data are scikit-learn's 8×8 digits (see `oodscore.data.demo`).
This module only defines the options; the work lives in `oodscore.commands.demo_tasks`,
imported when the demo runs, so that other commands do not load what the demo needs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

TASKS = ("single", "multi", "both")


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="train on the embedded digits and report OOD detection (no download)",
        description=(
            "Train a small MLP on scikit-learn's digits 0-5 (CPU, seconds), then report how "
            "well each applicable scorer separates ID test digits from held-out digits 6-9, "
            "inverted digits 6-9 and uniform noise; the same for a multi-label model on 2x2 "
            "composites of digits (sigmoid head, JointEnergy), trained plainly, with spectral "
            "normalization, with outlier exposure and with EDGE, side by side; and a "
            "conformal OOD gate calibrated on held-out ID data. Deterministic for a --seed."
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
        help="save figures (needs matplotlib): the single-label histograms and ROC curves to "
        "IMAGE, the multi-label trainings' ROC curves to IMAGE's name + '-multilabel' (with "
        "--task multi: to IMAGE)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing plot files")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Train, evaluate and print each task's report; save the plots when asked."""
    import torch

    from oodscore.commands import demo_gate, demo_tasks
    from oodscore.io import check_outputs
    from oodscore.plotting import check_plot_path

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
            result = demo_tasks.run_task(task, seed=args.seed, quick=args.quick)
            if i:
                print()
            print(demo_tasks.describe(task, result), flush=True)
            if task == "single":
                print()
                print(demo_gate.decide(result, seed=args.seed), flush=True)
            if task in plots:
                demo_tasks.save_plot(task, result, plots[task], force=args.force)
    finally:
        torch.set_num_threads(threads)
    return 0


def _plot_paths(path: Path | None, tasks: list[str]) -> dict[str, Path]:
    if path is None:
        return {}
    if len(tasks) == 1:
        return {tasks[0]: path}
    return {"single": path, "multi": path.with_name(f"{path.stem}-multilabel{path.suffix}")}
