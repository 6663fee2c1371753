"""Every registered scorer side by side in one `oodscore.evaluate` call, on the embedded digits.

Usage:
    .venv/bin/python benchmarks/bench_baselines.py [--seeds 0 1 2] [--threads 1]
        [--output benchmarks/results/baselines.md]

For each task of ``oodscore demo`` (single-label digits 0-5; multi-label 2×2 composites of
digits 0-5) and each seed, the demo's MLP is trained (`oodscore.commands.demo_tasks.train`), then
ONE `evaluate` call scores the ID test set and the three OOD sets (digits 6-9, the same
inverted, uniform noise) with every registered scorer at its defaults: the logit scorers
read the logits, the feature scorers the head's input (post-ReLU, 128-d), the head scorers
get the model's head, the fitted scorers are fitted on the training set (features for
feature scorers, logits for LOF, IsolationForest and KL matching, with the training
targets: class ids, or multi-hot labels for the multi-label task), ODIN runs its own
passes. MOS is left out: it needs a group-softmax head, which the demo model does not
have. The multi-label task adds the multi-label forms: ODIN with sigmoids (max and sum),
JointEnergy's max, and the shaping methods composed with JointEnergy.

The table gives AUROC and FPR95 (in %), mean ± sd over the seeds, per OOD set and their
mean. It is a small, fast benchmark (8×8 images, a 2-layer MLP): it checks that every
method runs end to end from one call and gives sensible numbers; it does not rank the
methods for large models, where the papers' results apply.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import configure_threads, markdown_table, write_results

from oodscore import Report, Scorer, evaluate, get_scorer, list_scorers
from oodscore.commands.demo_tasks import FULL, train
from oodscore.data import multi_label_sets, single_label_sets
from oodscore.data.demo import DemoSets

LEFT_OUT = {"mos": "needs a group-softmax head"}


def scorers_for(multi_label: bool) -> dict[str, Scorer | str]:
    """Every registered scorer at its defaults, plus the multi-label forms for that task."""
    out: dict[str, Scorer | str] = {n: n for n in list_scorers() if n not in LEFT_OUT}
    if multi_label:
        out["odin (sigmoid, max)"] = get_scorer("odin", activation="sigmoid")
        out["odin (sigmoid, sum)"] = get_scorer("odin", activation="sigmoid", aggregation="sum")
        out["joint_energy (max)"] = get_scorer("joint_energy", top_k=1)
        for name in ("react", "ash", "dice", "scale"):
            out[f"{name} + joint_energy"] = get_scorer(name, scorer="joint_energy")
    return out


def sets_for(task: str, seed: int) -> DemoSets:
    if task == "single":
        return single_label_sets(seed=seed)
    size = FULL["multi"]
    return multi_label_sets(seed=seed, num_train=size.num_train, num_test=size.num_test)


def run(task: str, seed: int) -> tuple[Report, float]:
    """Train the demo model of ``task`` with ``seed``; one evaluate call with every scorer."""
    sets = sets_for(task, seed)
    batch = 256
    id_loader = DataLoader(TensorDataset(sets.x_test, sets.y_test), batch_size=batch)
    fit_loader = DataLoader(TensorDataset(sets.x_train, sets.y_train), batch_size=batch)
    ood = {name: DataLoader(TensorDataset(x), batch_size=batch) for name, x in sets.ood.items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = train(sets, epochs=FULL[task].epochs, seed=seed)
    start = time.perf_counter()
    report = evaluate(
        model,
        id_loader,
        ood,
        scorers_for(sets.multi_label),
        fit_loader=fit_loader,
        progress=False,
    )
    return report, time.perf_counter() - start


def mean_sd(values: list[float]) -> str:
    """``mean ± sd`` in percent (sample sd; 0 for one seed)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * sd:.1f}"


def table(reports: list[Report], metric: str) -> str:
    """Rows: scorers; columns: each OOD set and the mean, ``metric`` mean ± sd over seeds."""
    first = reports[0]
    sets = [*first.ood_scores, "mean"]
    labels = list(first.id_scores)
    rows: list[list[Any]] = []
    for label in labels:
        cells = [mean_sd([r[name, label][metric] for r in reports]) for name in sets]
        rows.append([f"`{label}`", *cells])
    return markdown_table(["scorer", *sets], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tasks", nargs="+", default=["single", "multi"])
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/baselines.md"))
    args = parser.parse_args()
    threads = configure_threads(args.threads)
    sections = []
    for task in args.tasks:
        results = [run(task, seed) for seed in args.seeds]
        reports = [report for report, _ in results]
        seconds = statistics.fmean(t for _, t in results)
        accuracy = "accuracy" if task == "single" else "map"
        quality = mean_sd([r.id_metrics[accuracy] for r in reports])
        title = "single-label digits 0-5" if task == "single" else "multi-label composites"
        sections.append(
            f"## {title}\n\n"
            f"ID {accuracy}: {quality}. One `evaluate` call with {len(reports[0].id_scores)} "
            f"scorers: {seconds:.1f} s on average (fit, ID and OOD passes).\n\n"
            f"### AUROC (%, higher is better)\n\n{table(reports, 'auroc')}\n\n"
            f"### FPR at 95% TPR (%, lower is better)\n\n{table(reports, 'fpr95')}\n"
        )
        print(sections[-1], flush=True)
    left_out = "; ".join(f"`{n}` ({why})" for n, why in LEFT_OUT.items())
    seeds = " ".join(map(str, args.seeds))
    body = (
        f"Seeds {seeds}, mean ± sd; {threads} torch thread(s). Left out: {left_out}. "
        "Defaults everywhere (e.g. KNN k = 50, ODIN T = 1000 and epsilon = 0.0014, ReAct at "
        "the 90th percentile): no method was tuned on these sets.\n\n" + "\n".join(sections)
    )
    command = "python benchmarks/bench_baselines.py --seeds " + seeds
    title = "Every scorer on the digits"
    path = write_results(args.output, title=title, command=command, body=body)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
