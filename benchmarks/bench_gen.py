"""GEN against torch.logsumexp and the peers' GEN, at 100k x 1000 (top_m = 100) and 1M x 80.

Variants, timed in one run on the same float32 logits:

- ``torch.logsumexp``: the baseline of the goal (GEN at most 1.5x it at C = 1000 with the
  default ``top_m = 100``).
- ``oodscore GEN``: ``GEN(gamma=0.1, top_m=100)(logits)``, everything a user's call does
  (input checks included).
- ``pytorch-ood GEN``: pytorch-ood 0.4.0's ``GEN.score(logits, gamma=0.1, M=100)``
  (softmax, probabilities clamped to [1e-7, 1 - 1e-7], a full descending sort, mean of the
  top M terms). Skipped when pytorch-ood is not installed (requirements/bench.txt).
- ``official formula (NumPy)``: the GEN repository's scoring rule written out: softmax,
  ``np.sort`` of every row, the sum of ``p**gamma * (1 - p)**gamma`` over the last M.

The variants take turns in a shuffled order in each of ``--rounds`` rounds, so that load
from other jobs on a shared machine hits them alike. The table gives each variant's
minimum and median time, and the median over rounds of its time divided by the same
round's ``torch.logsumexp`` time.

Agreement: on the first 2,000 rows, each variant's scores against a float64 evaluation of
the official formula (scaled and signed as oodscore's: the negative sum).

    .venv/bin/python benchmarks/bench_gen.py --output benchmarks/results/gen.md
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import interleaved_times, markdown_table, write_results
from measure import import_pytorch_ood

from oodscore import GEN

GAMMA = 0.1
TOP_M = 100
GOAL = 1.5
CHECK_ROWS = 2000


def official_formula(logits: np.ndarray, top_m: int = TOP_M) -> np.ndarray:
    """GEN as the official repository scores it (sum over the M largest probabilities)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    top = np.sort(probs, axis=1)[:, -top_m:]
    return -np.sum(top**GAMMA * (1 - top) ** GAMMA, axis=1)


def variants(logits: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The timed calls for one input, by label; the baseline first."""
    array = logits.numpy()
    scorer = GEN(gamma=GAMMA, top_m=TOP_M)
    timed: dict[str, Callable[[], object]] = {
        "torch.logsumexp (baseline)": lambda: torch.logsumexp(logits, dim=1),
        "oodscore GEN": lambda: scorer(logits),
    }
    try:
        peer = import_pytorch_ood("gen").GEN
    except ImportError:
        pass
    else:
        timed["pytorch-ood 0.4.0 GEN"] = lambda: peer.score(logits, gamma=GAMMA, M=TOP_M)
    timed["official formula (NumPy)"] = lambda: official_formula(array)
    return timed


def agreement(logits: torch.Tensor) -> list[list[object]]:
    """Largest relative difference of each variant's scores from the float64 formula."""
    head = logits[:CHECK_ROWS]
    exact = official_formula(head.double().numpy())
    rows: list[list[object]] = []
    outputs = {"oodscore GEN": GEN(gamma=GAMMA, top_m=TOP_M)(head).double().numpy()}
    try:
        peer = import_pytorch_ood("gen").GEN
    except ImportError:
        pass
    else:
        mean = peer.score(head, gamma=GAMMA, M=min(TOP_M, head.shape[1])).double().numpy()
        outputs["pytorch-ood 0.4.0 GEN (x -M)"] = -min(TOP_M, head.shape[1]) * mean
    outputs["official formula (NumPy, float32)"] = official_formula(head.numpy())
    for label, values in outputs.items():
        error = float(np.max(np.abs(values - exact) / np.abs(exact)))
        rows.append([label, f"{error:.1e}"])
    return rows


def run(rows: int, classes: int, rounds: int, seed: int) -> str:
    """Time every variant on ``rows`` x ``classes`` logits; a markdown section."""
    torch.manual_seed(seed)
    logits = torch.randn(rows, classes) * 4
    timed = variants(logits)
    times = interleaved_times(timed, rounds, seed=seed)
    baseline = times["torch.logsumexp (baseline)"]
    table_rows = []
    for label, seconds in times.items():
        ratio = statistics.median(t / b for t, b in zip(seconds, baseline, strict=True))
        table_rows.append(
            [
                label,
                f"{min(seconds) * 1e3:.0f}",
                f"{statistics.median(seconds) * 1e3:.0f}",
                f"{ratio:.2f}",
                ", ".join(f"{t / b:.2f}" for t, b in zip(seconds, baseline, strict=True)),
            ]
        )
    headers = ["variant", "min (ms)", "median (ms)", "x logsumexp (median)", "per round"]
    return "\n\n".join(
        [
            f"## {rows:,} x {classes} float32 logits, top_m = {TOP_M}, gamma = {GAMMA}",
            markdown_table(headers, table_rows),
            f"Agreement with the float64 formula on the first {CHECK_ROWS:,} rows "
            "(largest relative difference):",
            markdown_table(["variant", "max relative difference"], agreement(logits)),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    sections = [
        run(100_000, 1000, args.rounds, args.seed),
        run(1_000_000, 80, args.rounds, args.seed),
    ]
    body = "\n\n".join(
        [
            f"Goal: oodscore GEN at most {GOAL}x torch.logsumexp at 100,000 x 1000 with the "
            f"default top_m = {TOP_M}. {torch.get_num_threads()} torch threads; NumPy "
            "single-threaded.",
            *sections,
        ]
    )
    print(body)
    if args.output:
        command = f"python benchmarks/bench_gen.py --rounds {args.rounds} --output {args.output}"
        write_results(args.output, title="GEN at 1000 and 80 classes", command=command, body=body)


if __name__ == "__main__":
    main()
