"""Speed of the exact OOD metrics on 10M scores, against scikit-learn and a plain np.sort.

Usage:
    .venv/bin/python benchmarks/bench_metrics.py [--n 10000000] [--repeats 7]
        [--sklearn-repeats 2] [--output benchmarks/results/metrics.md]

Every timing is the minimum over repeats, measured in one run, so that the ratios compare
like with like on a shared machine. The scikit-learn reference is the four calls a user
would make: roc_auc_score, average_precision_score twice (ID and OOD positive) and
roc_curve(drop_intermediate=False) for the FPR at 95% TPR. The numbers are also checked
for equality with scikit-learn.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
from sklearn import metrics as sk

from oodscore.metrics import OODMetrics, _ranking, ood_metrics


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def best_of_interleaved(fns: list[Callable[[], Any]], repeats: int) -> list[tuple[float, Any]]:
    """Minimum time of each function, the functions taking turns in every repeat (so that a
    change of load on the shared machine hits them alike)."""
    results: list[tuple[float, Any]] = [(float("inf"), None) for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            out = fn()
            results[i] = (min(results[i][0], time.perf_counter() - start), out)
    return results


def tagged_sort(id_scores: np.ndarray, ood_scores: np.ndarray) -> object:
    """The first step of ood_metrics alone: build and sort the tagged 64-bit keys (float32
    input) or sort and merge the sides (float64 input)."""
    if _ranking.taggable(id_scores, ood_scores):
        return _ranking.sorted_tagged(id_scores, ood_scores)
    both = np.concatenate((np.sort(id_scores), np.sort(ood_scores)))
    return np.argsort(both, kind="stable")


def sklearn_four(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    scores = np.concatenate([id_scores, ood_scores])
    is_id = np.r_[np.ones(len(id_scores), np.int8), np.zeros(len(ood_scores), np.int8)]
    fpr, tpr, _ = sk.roc_curve(is_id, scores, drop_intermediate=False)
    return {
        "auroc": sk.roc_auc_score(is_id, scores),
        "aupr_in": sk.average_precision_score(is_id, scores),
        "aupr_out": sk.average_precision_score(1 - is_id, -scores),
        "fpr95": float(fpr[np.argmax(tpr >= 0.95)]),
    }


def datasets(n: int, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    half = n // 2
    normal = (
        rng.normal(1.0, 1.0, half).astype(np.float32),
        rng.normal(0.0, 1.0, n - half).astype(np.float32),
    )
    # MSP-like: softmax maxima piled up near 1, where float32 leaves few distinct values.
    msp = tuple(
        (1 / (1 + np.exp(-rng.gamma(shape, 3.0, size)))).astype(np.float32)
        for shape, size in ((3.0, half), (1.5, n - half))
    )
    return {
        "float32, normal scores": normal,
        "float32, MSP-like (heavy ties)": msp,  # type: ignore[dict-item]
        "float64, normal scores": (normal[0].astype(np.float64), normal[1].astype(np.float64)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sklearn-repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for name, (id_scores, ood_scores) in datasets(args.n, rng).items():
        everything = np.concatenate([id_scores, ood_scores])
        wide = everything.astype(np.float64)
        (t_sort, _), (t_ours, ours), (t_wide, _), (t_keys, _) = best_of_interleaved(
            [
                lambda e=everything: np.sort(e),
                lambda a=id_scores, b=ood_scores: ood_metrics(a, b),
                lambda w=wide: np.sort(w),
                lambda a=id_scores, b=ood_scores: tagged_sort(a, b),
            ],
            args.repeats,
        )
        del wide
        row = {"data": name, "sort": t_sort, "ours": t_ours, "sort64": t_wide, "keys": t_keys}
        if name.startswith("float32, normal"):
            t_sk, ref = best_of(
                lambda a=id_scores, b=ood_scores: sklearn_four(a, b), args.sklearn_repeats
            )
            t_arg, _ = best_of(lambda e=everything: np.argsort(e), 1)
            binned = OODMetrics("binned")
            is_ood = np.r_[np.zeros(len(id_scores), bool), np.ones(len(ood_scores), bool)]
            chunk = 1 << 20

            def stream(
                m: OODMetrics = binned,
                e: np.ndarray = everything,
                flags: np.ndarray = is_ood,
                size: int = chunk,
            ) -> dict[str, float]:
                m.reset()
                for start in range(0, len(e), size):
                    m.update(e[start : start + size], flags[start : start + size])
                return m.compute()

            t_binned, approx = best_of(stream, max(1, args.repeats // 2))
            row |= {
                "sklearn": t_sk,
                "argsort": t_arg,
                "binned": t_binned,
                "max_diff": max(abs(ours[k] - ref[k]) for k in ref),
                "binned_diff": max(abs(approx[k] - ours[k]) for k in ours),
                "bounds": binned.error_bounds(),
                "values": ours,
            }
        rows.append(row)
        print(row, flush=True)
    report = render(rows, args)
    print(report)
    if args.output is not None:
        args.output.write_text(report)


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    main_row = rows[0]
    ms = lambda seconds: f"{seconds * 1000:,.0f} ms"  # noqa: E731
    lines = [
        f"# Metrics speed: exact OOD metrics on {args.n:,} scores",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_metrics.py --n {args.n} "
        f"--repeats {args.repeats} --sklearn-repeats {args.sklearn_repeats}"
        + (f" --output {args.output}`" if args.output else "`"),
        "",
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"timings are noisy on a machine that may run other jobs: each is the "
        f"minimum over repeats ({args.repeats} for np.sort and ood_metrics, taking turns "
        f"in each repeat; "
        f"{args.sklearn_repeats} for scikit-learn, 1 for argsort), and the ratios compare "
        f"timings taken in the same run. Python {sys.version.split()[0]}, NumPy "
        f"{np.__version__}, scikit-learn {sklearn.__version__}. "
        f"Date: {datetime.date.today().isoformat()}.",
        "",
        f"Data: {args.n:,} scores, half ID (N(1, 1)) and half OOD (N(0, 1)), float32 "
        "unless stated.",
        "",
        "| what | time | ratio to np.sort of the same array |",
        "|---|---:|---:|",
        f"| `np.sort` (float32, all {args.n:,}) | {ms(main_row['sort'])} | 1.0x |",
        f"| `oodscore.metrics.ood_metrics` (all four metrics, exact) | {ms(main_row['ours'])} "
        f"| {main_row['ours'] / main_row['sort']:.1f}x |",
        f"| scikit-learn, four calls (roc_auc, AP in, AP out, roc_curve) "
        f"| {ms(main_row['sklearn'])} | {main_row['sklearn'] / main_row['sort']:.1f}x |",
        f"| `np.sort` of the same scores as float64 (one 64-bit key sort: the floor here) "
        f"| {ms(main_row['sort64'])} | {main_row['sort64'] / main_row['sort']:.1f}x |",
        f"| `np.argsort` (float32), for reference | {ms(main_row['argsort'])} "
        f"| {main_row['argsort'] / main_row['sort']:.1f}x |",
        f"| `OODMetrics('binned')`, updates of 2**20 scores + compute "
        f"| {ms(main_row['binned'])} "
        f"| {main_row['binned'] / main_row['sort']:.1f}x |",
        "",
        f"Speed-up over scikit-learn: {main_row['sklearn'] / main_row['ours']:.0f}x. "
        f"Largest difference from scikit-learn over the four metrics: "
        f"{main_row['max_diff']:.1e}. Binned mode (65,536 bins) differs from exact by at "
        f"most {main_row['binned_diff']:.1e}; its guaranteed AUROC bound is "
        f"{main_row['bounds']['auroc']:.1e}.",
        "",
        f"**Goal (≤ 2x `np.sort`): not met**, {main_row['ours'] / main_row['sort']:.1f}x. "
        f"The first step alone — building and sorting the tagged 64-bit keys — takes "
        f"{ms(main_row['keys'])} ({main_row['keys'] / main_row['sort']:.1f}x): a 64-bit sort "
        f"costs {main_row['sort64'] / main_row['sort']:.1f}x the 32-bit one on this CPU "
        "(AVX2, no AVX-512; the `np.sort` as float64 row). "
        f"The rest ({ms(main_row['ours'] - main_row['keys'])}) is the checks, finding the "
        "runs of equal scores, the block-wise sums over the sorted labels and one term per "
        f"run; every step is a NumPy pass over {args.n:,} entries, bound by memory "
        "traffic. Reaching 2x would take a 32-bit sort that "
        "carries the labels along, which NumPy does not offer, or compiled code.",
        "",
        "Other inputs (same run):",
        "",
        "| data | np.sort | np.sort as float64 | first step (sort) | ood_metrics "
        "| ratio to np.sort |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['data']} | {ms(row['sort'])} | {ms(row['sort64'])} | {ms(row['keys'])} "
            f"| {ms(row['ours'])} "
            f"| {row['ours'] / row['sort']:.1f}x |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
