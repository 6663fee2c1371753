"""Training-step and eval-forward time of a small ResNet with and without spectral normalization.

Four variants of the same network, timed in one run: plain; torch's
``torch.nn.utils.parametrizations.spectral_norm`` on every conv and linear layer but the
head; ``oodscore.spectral_normalize`` on the same layers in reshape mode (the same math,
so the goal is a time ratio of at most 1.05 to torch's); and in operator mode (the exact
norm of each convolution on its input shape: one extra convolution and one transposed
convolution on a single image per layer and step).

The variants take turns one training step at a time, in a shuffled order each round, so
that load from other processes hits them alike; each step is timed alone, and the table
reports per variant the minimum and the median step time over all its timed steps, and the
ratios of those (the minimum is the least disturbed by other jobs on a shared machine). The
measurement is made ``--rounds`` times in a row and the reshape/torch ratio of each round is
listed, to show the noise.

The eval forward (``torch.no_grad()``, eval mode) is timed the same way, ``--eval-rounds``
rounds per batch size of ``--eval-batch-sizes``, against two plain baselines: the plain
network, and a plain copy holding the normalized weights (``remove_spectral_normalization``,
the same numbers without any parametrization). oodscore keeps the normalized weights between
eval forwards (``eval_cache=True``, the default); ``eval_cache=False`` shows the cost of
recomputing them, as torch's parametrization and legacy hook do at every forward.

    .venv/bin/python benchmarks/bench_spectral_norm.py
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import interleaved_times
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

from oodscore import remove_spectral_normalization, spectral_normalize


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """ResNet-style: a stem and three stages of two basic blocks (16, 32, 64 channels)."""

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        in_channels = width
        for stage, channels in enumerate((width, 2 * width, 4 * width)):
            for index in range(2):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, channels, stride))
                in_channels = channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(x))
        return self.fc(out.mean(dim=(2, 3)))


def _with_torch_spectral_norm(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            torch_spectral_norm(module)
    return model


def build_variants(image_size: int) -> dict[str, Callable[[], nn.Module]]:
    example = torch.zeros(1, 3, image_size, image_size)
    return {
        "plain": SmallResNet,
        "torch spectral_norm": lambda: _with_torch_spectral_norm(SmallResNet()),
        "oodscore reshape": lambda: spectral_normalize(SmallResNet(), include=nn.Conv2d),
        "oodscore operator": lambda: spectral_normalize(
            SmallResNet(), include=nn.Conv2d, mode="operator", example_input=example
        ),
    }


def _with_torch_legacy_hook(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.utils.spectral_norm(module)
    return model


def build_eval_variants(image_size: int) -> dict[str, Callable[[], nn.Module]]:
    """The eval-forward variants: two plain baselines, torch's two, oodscore cached or not."""
    example = torch.zeros(1, 3, image_size, image_size)
    return {
        "plain": SmallResNet,
        "plain, normalized weights": lambda: remove_spectral_normalization(
            spectral_normalize(SmallResNet(), include=nn.Conv2d)
        ),
        "torch spectral_norm": lambda: _with_torch_spectral_norm(SmallResNet()),
        "torch legacy spectral_norm hook": lambda: _with_torch_legacy_hook(SmallResNet()),
        "oodscore reshape": lambda: spectral_normalize(SmallResNet(), include=nn.Conv2d),
        "oodscore reshape, eval_cache=False": lambda: spectral_normalize(
            SmallResNet(), include=nn.Conv2d, eval_cache=False
        ),
        "oodscore operator": lambda: spectral_normalize(
            SmallResNet(), include=nn.Conv2d, mode="operator", example_input=example
        ),
        "floor: cached weight read with no check": lambda: _with_unchecked_reads(
            spectral_normalize(SmallResNet(), include=nn.Conv2d)
        ),
    }


def _with_unchecked_reads(model: nn.Module) -> nn.Module:
    """Each layer's ``weight`` property returns the kept normalized weight without checking it.

    Not a mode of the library (an edited weight would go unseen): the cost of the Python
    property alone, the floor under any checked cache.
    """
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            cls = type(module)
            checked = cls.__dict__["weight"]

            def unchecked(self: nn.Module, checked: property = checked) -> torch.Tensor:
                cached = self._modules["parametrizations"]._modules["weight"][0]._cached
                return checked.fget(self) if cached is None else cached.value

            cls.weight = property(unchecked)
    return model


@torch.no_grad()
def time_eval(image_size: int, batch_size: int, rounds: int) -> dict[str, list[float]]:
    """Seconds of one eval forward per variant and round, the variants in a shuffled order."""
    x = torch.randn(
        batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(1)
    )
    models = {}
    for name, build in build_eval_variants(image_size).items():
        torch.manual_seed(0)
        models[name] = build().eval()
        models[name](x)  # warm-up (and oodscore's cache)
    calls = {name: (lambda model=model: model(x)) for name, model in models.items()}
    return interleaved_times(calls, rounds, seed=2, warm_up=False)


def eval_lines(times: dict[str, list[float]]) -> list[str]:
    """The eval table: min, median, and the median over rounds of the ratio to ``plain``."""
    lines = [
        "| variant | min ms | median ms | median ratio to plain (per round) |",
        "|---|---:|---:|---:|",
    ]
    for name, samples in times.items():
        ratio = statistics.median(t / p for t, p in zip(samples, times["plain"], strict=True))
        lines.append(
            f"| {name} | {1e3 * min(samples):.2f} | {1e3 * statistics.median(samples):.2f} | "
            f"{ratio:.3f} |"
        )
    return lines


def time_steps(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int
) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def time_normalization_only(
    runs: dict[str, tuple[nn.Module, torch.optim.Optimizer]], samples: int
) -> dict[str, list[float]]:
    """Forward and backward of the normalized weights alone (no convolution on the batch).

    One sample computes every normalized weight of a model (one power iteration each, as in
    a training step) and back-propagates through them: the whole cost that spectral
    normalization adds to a step, measured without the noise of the rest of the step.
    """
    layers = {
        name: [m for m in model.modules() if parametrize.is_parametrized(m, "weight")]
        for name, (model, _) in runs.items()
        if name != "plain"
    }
    times: dict[str, list[float]] = {name: [] for name in layers}
    order = list(layers)
    shuffler = random.Random(1)
    for _ in range(samples):
        shuffler.shuffle(order)
        for name in order:
            start = time.perf_counter()
            total = torch.stack([m.weight.sum() for m in layers[name]]).sum()
            total.backward()
            times[name].append(time.perf_counter() - start)
            runs[name][1].zero_grad(set_to_none=True)
    return times


def _digits_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 6),
    )  # fmt: skip


def quality(seeds: list[int], epochs: int) -> list[str]:
    """JointEnergy AUROC of the docs' SNoJoE recipe on digit composites, with and without."""
    from oodscore import JointEnergy
    from oodscore.data import load_digits_split, make_composites
    from oodscore.metrics import auroc

    split = load_digits_split()
    x_train, y_train = make_composites(split.x_train, split.y_train, 4000, num_classes=6)
    x_test, _ = make_composites(split.x_test, split.y_test, 600, num_classes=6, seed=1)
    x_ood, _ = make_composites(split.x_ood, split.y_ood, 600, num_classes=0, seed=2)
    ood_sets = {"digits 6-9": x_ood, "inverted ID (1 - x)": 1.0 - x_test}
    example = torch.zeros(1, 1, 16, 16)
    variants: dict[str, Callable[[nn.Module], nn.Module]] = {
        "plain": lambda model: model,
        "SNoJoE: hard, reshape, every Conv2d": lambda model: spectral_normalize(
            model, include=nn.Conv2d
        ),
        "DUE-style: coeff 3, operator, + batch norm": lambda model: spectral_normalize(
            model, coeff=3.0, mode="operator", batch_norm=True, example_input=example
        ),
    }
    score = JointEnergy()
    results: dict[str, dict[str, list[float]]] = {
        name: {ood: [] for ood in ood_sets} for name in variants
    }
    for seed in seeds:
        for name, normalize in variants.items():
            torch.manual_seed(seed)
            model = normalize(_digits_cnn())
            optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
            loss_fn = nn.BCEWithLogitsLoss()
            for _ in range(epochs):
                model.train()
                for batch in torch.randperm(len(x_train)).split(64):
                    loss = loss_fn(model(x_train[batch, None]), y_train[batch])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            model.eval()
            with torch.no_grad():
                s_id = score(model(x_test[:, None]))
                for ood, x in ood_sets.items():
                    results[name][ood].append(auroc(s_id, score(model(x[:, None]))))
    header = " | ".join(f"AUROC vs {ood}" for ood in ood_sets)
    lines = [f"| variant | {header} |", "|---|" + "---:|" * len(ood_sets)]
    for name, by_ood in results.items():
        cells = " | ".join(
            f"{statistics.mean(v):.3f} ({', '.join(f'{a:.3f}' for a in v)})"
            for v in by_ood.values()
        )
        lines.append(f"| {name} | {cells} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=300, help="normalization-only samples")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--eval-rounds", type=int, default=400)
    parser.add_argument(
        "--quality", action="store_true", help="also train the docs' recipe and report AUROC"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--output", type=Path, default=None, help="write the markdown table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator)
    y = torch.randint(0, 10, (args.batch_size,), generator=generator)
    runs = {}
    for name, build in build_variants(args.image_size).items():
        torch.manual_seed(0)
        model = build().train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        time_steps(model, optimizer, x, y, 2)  # warm-up
        runs[name] = (model, optimizer)
    samples: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    shuffler = random.Random(0)
    round_ratios = []
    for _ in range(args.rounds):
        this_round: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.steps):
            shuffler.shuffle(order)  # no variant always runs right after another
            for name in order:
                model, optimizer = runs[name]
                this_round[name].append(time_steps(model, optimizer, x, y, 1))
        round_ratios.append(
            min(this_round["oodscore reshape"]) / min(this_round["torch spectral_norm"])
        )
        for name, times in this_round.items():
            samples[name].extend(times)

    best = {name: min(times) for name, times in samples.items()}
    median = {name: statistics.median(times) for name, times in samples.items()}
    torch_name = "torch spectral_norm"
    lines = [
        "| variant | min ms/step | median ms/step | min × plain | min × torch | median × torch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in samples:
        lines.append(
            f"| {name} | {1e3 * best[name]:.1f} | {1e3 * median[name]:.1f} | "
            f"{best[name] / best['plain']:.3f} | {best[name] / best[torch_name]:.3f} | "
            f"{median[name] / median[torch_name]:.3f} |"
        )
    alone = time_normalization_only(runs, args.samples)
    alone_lines = [
        "| variant | min µs | median µs | min × torch | median × torch |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, times in alone.items():
        low, mid = min(times), statistics.median(times)
        alone_lines.append(
            f"| {name} | {1e6 * low:.0f} | {1e6 * mid:.0f} | "
            f"{low / min(alone[torch_name]):.3f} | "
            f"{mid / statistics.median(alone[torch_name]):.3f} |"
        )
    ratio = best["oodscore reshape"] / best[torch_name]
    verdict = "met" if ratio <= 1.05 else "missed"
    load_before_eval = os.getloadavg()
    eval_sections = []
    for batch_size in args.eval_batch_sizes:
        eval_times = time_eval(args.image_size, batch_size, args.eval_rounds)
        eval_sections += [
            f"Batch {batch_size} of 3×{args.image_size}×{args.image_size}:",
            "",
            *eval_lines(eval_times),
            "",
        ]
    load_after_eval = os.getloadavg()
    command = " ".join(["python", "benchmarks/bench_spectral_norm.py", *(argv or sys.argv[1:])])
    num_convs = sum(isinstance(m, nn.Conv2d) for m in SmallResNet().modules())
    report = "\n".join(
        [
            "# Spectral normalization: training-step time",
            "",
            f"Command: `{command}`  ",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch "
            f"{torch.__version__}, {args.threads} threads (timings are noisy on a machine that "
            "may run other jobs; compare ratios within this run).  ",
            f"Date: {datetime.date.today().isoformat()}  ",
            f"Model: ResNet-style CNN (stem + 3 stages × 2 basic blocks, 16/32/64 channels, "
            f"{num_convs} Conv2d), batch {args.batch_size} of "
            f"3×{args.image_size}×{args.image_size}, "
            "SGD; normalization on every Conv2d (the SNoJoE configuration), 1 power "
            "iteration per step.  ",
            f"Timing: {args.rounds} rounds × {args.steps} timed steps per variant after 2 "
            "warm-up steps, the variants taking turns step by step in a shuffled order; min "
            "and median step time over all rounds.",
            "",
            *lines,
            "",
            f"Goal (reshape mode ≤ 1.05 × torch's spectral_norm, ratio of the minima): "
            f"**{verdict}** (ratio {ratio:.3f}; per round: "
            f"{', '.join(f'{r:.3f}' for r in round_ratios)}).",
            "",
            "## The normalization alone",
            "",
            f"Forward and backward through the {num_convs} normalized weights only (one power "
            "iteration each, as in a training step), without the convolutions on the batch: "
            "the cost spectral normalization adds to a step, "
            f"{args.samples} samples per variant taken in turns.",
            "",
            *alone_lines,
            "",
            "## Eval forward",
            "",
            "One forward in eval mode under `torch.no_grad()`, the variants taking turns in a "
            f"shuffled order, {args.eval_rounds} rounds per batch size after a warm-up; the "
            "ratio is the median over rounds of each variant's time over the plain network's "
            "in the same round. `plain, normalized weights` is the plain network holding the "
            "normalized weights: the difference between the two plain rows is noise. "
            "`floor: ...` serves the kept weight through the same kind of Python property "
            "with no check at all (not a mode of the library: it would miss edited weights), "
            "the least a parametrized weight can cost. Load "
            f"average {', '.join(f'{x:.1f}' for x in load_before_eval)} before and "
            f"{', '.join(f'{x:.1f}' for x in load_after_eval)} after these runs (other jobs "
            "shared the machine).",
            "",
            *eval_sections,
        ]
    )
    if args.quality:
        report += "\n".join(
            [
                "",
                "## Quality on the demo data (JointEnergy, multi-label)",
                "",
                "The recipe of docs/spectral_norm.md: a 3-conv CNN with batch norm trained "
                f"{args.epochs} epochs with BCE (Adam, lr 3e-3, batch 64) on 4,000 2×2 "
                "composites of digits 0-5; scored with JointEnergy on 600 ID test composites "
                "against 600 composites of digits 6-9 and against the ID test composites "
                f"inverted. Mean (per seed) over seeds 0..{args.seeds - 1}.",
                "",
                *quality(list(range(args.seeds)), args.epochs),
                "",
            ]
        )
    print(report)
    if args.output is not None:
        args.output.write_text(report)


if __name__ == "__main__":
    main()
