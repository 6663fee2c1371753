"""What extra scorers cost in `oodscore.evaluate`: 6 scorers against 1, with a small CPU CNN.

Usage:
    .venv/bin/python benchmarks/bench_evaluate.py [--repeats 7] [--threads 1]
        [--id-size 1024] [--ood-size 512] [--batch-size 128]
        [--output benchmarks/results/evaluate.md]

`evaluate` runs the model once per batch and feeds the logits to every scorer, so adding
scorers should cost little next to the forward pass. The model is a small VGG-style CNN
for 32×32 RGB images (0.24 M parameters, 4 convolutions with batch norm, about 13 M
multiply-adds per image), a CIFAR-sized baseline that runs on a laptop CPU; inputs are
random (speed does not depend on the pixel values). One ID loader and two OOD loaders.

Variants, timed in the same run, round-robin (A B C A B C ...) so that load from other
processes hits all of them alike; each timing is the minimum over ``--repeats``, of the
wall-clock time and of this process's CPU time (``time.process_time``; with one torch
thread it hardly depends on what else runs on the machine):

- forward only: the same loops calling the model with no scorer (the floor);
- evaluate, 1 scorer (energy);
- evaluate, 6 scorers (msp, energy, max_logit, entropy, gen, joint_energy).

The goal is ``6 scorers / 1 scorer <= 1.1``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from oodscore import evaluate

SIX = ["msp", "energy", "max_logit", "entropy", "gen", "joint_energy"]


def small_cnn(num_classes: int = 10) -> nn.Module:
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(
        *block(3, 32),
        nn.MaxPool2d(2),
        *block(32, 64),
        nn.MaxPool2d(2),
        *block(64, 128),
        nn.MaxPool2d(2),
        *block(128, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )


def forward_only(model: nn.Module, loaders: list[DataLoader[Any]]) -> None:
    model.eval()
    with torch.no_grad():
        for loader in loaders:
            for batch in loader:
                x = batch[0] if isinstance(batch, (list, tuple)) else batch
                model(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--id-size", type=int, default=1024)
    parser.add_argument("--ood-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = small_cnn()
    parameters = sum(p.numel() for p in model.parameters())
    x_id = torch.randn(args.id_size, 3, 32, 32)
    y_id = torch.randint(0, 10, (args.id_size,))
    ood = {name: torch.randn(args.ood_size, 3, 32, 32) for name in ("ood_a", "ood_b")}
    id_loader = DataLoader(TensorDataset(x_id, y_id), batch_size=args.batch_size)
    ood_loaders = {n: DataLoader(x, batch_size=args.batch_size) for n, x in ood.items()}
    all_loaders: list[DataLoader[Any]] = [id_loader, *ood_loaders.values()]

    variants: dict[str, Callable[[], Any]] = {
        "forward only (no scorer)": lambda: forward_only(model, all_loaders),
        "evaluate, 1 scorer (energy)": lambda: evaluate(
            model, id_loader, ood_loaders, ["energy"], progress=False
        ),
        "evaluate, 6 scorers": lambda: evaluate(model, id_loader, ood_loaders, SIX, progress=False),
    }
    for fn in variants.values():  # warm-up: allocator, oneDNN kernels, lazy imports
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)

    one = min(times["evaluate, 1 scorer (energy)"])
    six = min(times["evaluate, 6 scorers"])
    floor = min(times["forward only (no scorer)"])
    one_cpu = min(cpu["evaluate, 1 scorer (energy)"])
    six_cpu = min(cpu["evaluate, 6 scorers"])
    images = args.id_size + 2 * args.ood_size
    # The scoring and metrics alone, on the logits of the same images.
    with torch.no_grad():
        model.eval()
        logits = torch.cat([model(x_id[:512])] * (images // 512 + 1))[:images]
    scoring: dict[str, float] = {}
    for label, names in (("1 scorer", ["energy"]), ("6 scorers", SIX)):
        from oodscore.evaluation import resolve_scorers

        resolved = resolve_scorers(names)
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            for scorer in resolved.values():
                scorer(logits)
            best = min(best, time.perf_counter() - start)
        scoring[label] = best

    command = "python benchmarks/bench_evaluate.py " + " ".join(sys.argv[1:])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# evaluate: cost of extra scorers",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: 2 CPU cores ({platform.machine()}, {platform.system()}); timings on a "
        f"machine that may run other jobs are noisy, so variants take turns; "
        f"Python {platform.python_version()}, torch "
        f"{torch.__version__}, {args.threads} torch thread(s); no GPU. Date: {now}.",
        "",
        f"Model: VGG-style CNN, 4 conv+BN+ReLU blocks (32-64-128-128 channels), "
        f"{parameters / 1e6:.2f} M parameters, 32×32×3 inputs, 10 classes, eval mode. "
        f"Data: {args.id_size} ID images (with class targets, so accuracy is computed too) and "
        f"two OOD sets of {args.ood_size}, batch {args.batch_size}: {images} forward passes "
        f"per run. Six scorers: {', '.join(SIX)}.",
        "",
        f"Each time is the minimum of {args.repeats} runs; the variants ran round-robin in one "
        "process, so a burst of load from other jobs hits all of them; the median is shown to "
        "give the spread.",
        "",
        "| variant | wall min (s) | wall median (s) | wall ratio | CPU min (s) | CPU ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, values in times.items():
        lines.append(
            f"| {name} | {min(values):.3f} | {statistics.median(values):.3f} | "
            f"{min(values) / one:.3f} | {min(cpu[name]):.3f} | {min(cpu[name]) / one_cpu:.3f} |"
        )
    verdict = "met" if max(six / one, six_cpu / one_cpu) <= 1.1 else "missed"
    lines += [
        "",
        "Ratios are to the 1-scorer run of the same column.",
        "",
        f"**6 scorers / 1 scorer = {six / one:.3f} (wall), {six_cpu / one_cpu:.3f} (CPU)** "
        f"(goal ≤ 1.1: {verdict}). "
        f"Forward only / 1 scorer = {floor / one:.3f}: what `evaluate` adds to the forward "
        "passes (scoring, gathering, the exact metrics, the ID accuracy) is within the noise "
        "of the timings.",
        "",
        f"Scoring alone on the {images} × 10 logits of the same run (minimum of "
        f"{args.repeats}): 1 scorer {scoring['1 scorer'] * 1e3:.2f} ms, 6 scorers "
        f"{scoring['6 scorers'] * 1e3:.2f} ms, i.e. {scoring['6 scorers'] / one:.2%} of a "
        "1-scorer evaluate run.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.output is not None:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
