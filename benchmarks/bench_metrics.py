"""Exact OOD metrics at scale: time and memory of oodscore against np.sort and the peers.

Usage:
    .venv/bin/python benchmarks/bench_metrics.py [--sizes 10000000 50000000] [--repeats 5]
        [--sklearn-repeats 1] [--output benchmarks/results/metrics.md]

For each size and kind of scores (float32 normal, float32 MSP-like with heavy ties near 1,
float64 normal; half ID, half OOD, seeded), one run times, in interleaved repeats:
``np.sort`` of all the scores (the floor: the metrics need one sort of them),
``ood_metrics`` (all four metrics, exact) and ``OODMetrics().compute()`` on the same scores
fed in batches of 2**20; the ratio to ``np.sort`` is the median over repeats of the ratio
within a repeat. At the smallest size scikit-learn's four calls (roc_auc_score,
average_precision_score with ID and with OOD positive, roc_curve(drop_intermediate=False)
for the FPR) and torchmetrics' binary_auroc, binary_average_precision (twice) and
binary_roc, when it is installed, run on the float32 normal scores too, and their numbers
are compared with ours.

Memory: every measured call runs once in a fresh subprocess, under tracemalloc (NumPy
reports its buffers to it), and reports the peak allocated beyond the scores, per score;
the peak resident set size (``VmHWM``, reset just before the call) is shown alongside.
The binned mode (65,536 bins) is compared with exact at the smallest size, with its
guaranteed bounds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from measure import cpu_model, measure_step

from oodscore.metrics import OODMetrics, ood_metrics

KINDS = ("float32 normal", "float32 MSP-like", "float64 normal")
BATCH = 1 << 20


def scores(kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ID and OOD scores, n in all (half each)."""
    rng = np.random.default_rng(0)
    half = n // 2
    if kind == "float32 MSP-like":  # softmax maxima piled up near 1: few distinct values
        ids = (1 / (1 + np.exp(-rng.gamma(3.0, 3.0, half)))).astype(np.float32)
        oods = (1 / (1 + np.exp(-rng.gamma(1.5, 3.0, n - half)))).astype(np.float32)
        return ids, oods
    dtype = np.float32 if kind.startswith("float32") else np.float64
    return rng.normal(1.0, 1.0, half).astype(dtype), rng.normal(0.0, 1.0, n - half).astype(dtype)


def fed(ids: np.ndarray, oods: np.ndarray) -> OODMetrics:
    """An exact `OODMetrics` fed the scores in batches of 2**20."""
    metric = OODMetrics()
    for side, flag in ((ids, False), (oods, True)):
        for start in range(0, side.shape[0], BATCH):
            part = side[start : start + BATCH]
            metric.update(part, np.full(part.shape[0], flag))
    return metric


def sklearn_four(ids: np.ndarray, oods: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as sk

    s = np.concatenate([ids, oods])
    is_id = np.r_[np.ones(len(ids), np.int8), np.zeros(len(oods), np.int8)]
    fpr, tpr, _ = sk.roc_curve(is_id, s, drop_intermediate=False)
    return {
        "auroc": float(sk.roc_auc_score(is_id, s)),
        "aupr_in": float(sk.average_precision_score(is_id, s)),
        "aupr_out": float(sk.average_precision_score(1 - is_id, -s)),
        "fpr95": float(fpr[np.argmax(tpr >= 0.95)]),
    }


def torchmetrics_four(ids: np.ndarray, oods: np.ndarray) -> dict[str, float]:
    import torch
    from torchmetrics.functional.classification import (
        binary_auroc,
        binary_average_precision,
        binary_roc,
    )

    s = torch.from_numpy(np.concatenate([ids, oods]))
    is_id = torch.cat(
        [torch.ones(len(ids), dtype=torch.long), torch.zeros(len(oods), dtype=torch.long)]
    )
    fpr, tpr, _ = binary_roc(s, is_id)
    return {
        "auroc": float(binary_auroc(s, is_id)),
        "aupr_in": float(binary_average_precision(s, is_id)),
        "aupr_out": float(binary_average_precision(-s, 1 - is_id)),
        "fpr95": float(fpr[int(torch.argmax((tpr >= 0.95).int()))]),
    }


def has_torchmetrics() -> bool:
    try:
        import torchmetrics  # noqa: F401
    except ImportError:
        return False
    return True


def _sorter(everything: np.ndarray) -> Callable[[], Any]:
    return lambda: np.sort(everything)


STEPS: dict[str, Callable[[np.ndarray, np.ndarray], Callable[[], Any]]] = {
    "np.sort": lambda ids, oods: _sorter(np.concatenate([ids, oods])),
    "ood_metrics": lambda ids, oods: lambda: ood_metrics(ids, oods),
    "OODMetrics": lambda ids, oods: fed(ids, oods).compute,
    "scikit-learn": lambda ids, oods: lambda: sklearn_four(ids, oods),
    "torchmetrics": lambda ids, oods: lambda: torchmetrics_four(ids, oods),
}


def child(step: str, kind: str, n: int) -> None:
    """One measured call in this fresh process: print its extra memory as JSON."""
    ids, oods = scores(kind, n)
    fn = STEPS[step](ids, oods)  # np.sort's input, OODMetrics' parts: built before measuring
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    _, seconds, rss = measure_step(fn)
    peak = tracemalloc.get_traced_memory()[1] - base
    print(json.dumps({"traced": peak, "rss": rss, "seconds": seconds}))


def measure_memory(step: str, kind: str, n: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", step, kind, str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall times of each function, the functions taking turns in every repeat."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: dict[str, list[float]], name: str) -> float:
    return statistics.median(t / s for t, s in zip(times[name], times["np.sort"], strict=True))


def time_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for n in args.sizes:
        for kind in KINDS:
            ids, oods = scores(kind, n)
            fns = {
                name: STEPS[name](ids, oods) for name in ("np.sort", "ood_metrics", "OODMetrics")
            }
            times = interleaved(fns, args.repeats)
            row: dict[str, Any] = {"n": n, "kind": kind, "times": times}
            row["ours"] = fns["ood_metrics"]()
            assert fns["OODMetrics"]() == row["ours"]
            if n == min(args.sizes) and kind == KINDS[0]:
                peers = ["scikit-learn"] + (["torchmetrics"] if has_torchmetrics() else [])
                for peer in peers:
                    fn = STEPS[peer](ids, oods)
                    peer_times = interleaved(
                        {"np.sort": fns["np.sort"], peer: fn}, args.sklearn_repeats
                    )
                    row[peer] = {"times": peer_times, "values": fn()}
                row["binned"] = binned_against_exact(ids, oods, row["ours"])
            rows.append(row)
            print(
                n, kind, {k: round(statistics.median(v), 3) for k, v in times.items()}, flush=True
            )
            del ids, oods, fns
    return rows


def binned_against_exact(
    ids: np.ndarray, oods: np.ndarray, exact: dict[str, float]
) -> dict[str, Any]:
    out = {}
    for name, (a, b) in {
        "float32 normal": (ids, oods),
        "float32 MSP-like": scores(KINDS[1], len(ids) * 2),
    }.items():
        want = exact if name == "float32 normal" else ood_metrics(a, b)
        metric = OODMetrics("binned")
        for side, flag in ((a, False), (b, True)):
            for start in range(0, side.shape[0], BATCH):
                part = side[start : start + BATCH]
                metric.update(part, np.full(part.shape[0], flag))
        got = metric.compute()
        out[name] = {
            "error": {k: abs(got[k] - want[k]) for k in got},
            "bounds": metric.error_bounds(),
        }
    return out


def memory_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    plan = [("np.sort", KINDS[0]), ("np.sort", KINDS[2])]
    plan += [("ood_metrics", kind) for kind in KINDS] + [("OODMetrics", KINDS[0])]
    for n in args.sizes:
        steps = plan + ([("scikit-learn", KINDS[0])] if n == min(args.sizes) else [])
        if n == min(args.sizes) and has_torchmetrics():
            steps.append(("torchmetrics", KINDS[0]))
        for step, kind in steps:
            result = measure_memory(step, kind, n)
            rows.append({"n": n, "step": step, "kind": kind} | result)
            print(rows[-1], flush=True)
    return rows


def render(
    args: argparse.Namespace,
    timed: list[dict[str, Any]],
    memory: list[dict[str, Any]],
    load: tuple[float, float],
) -> str:
    small, large = min(args.sizes), max(args.sizes)
    command = (
        f".venv/bin/python benchmarks/bench_metrics.py --sizes {' '.join(map(str, args.sizes))} "
        f"--repeats {args.repeats} --sklearn-repeats {args.sklearn_repeats}"
        + (f" --output {args.output}" if args.output else "")
    )
    import sklearn

    lines = [
        "# Exact OOD metrics: time and memory at scale",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPU cores shared with other jobs (load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end). Python {sys.version.split()[0]}, "
        f"NumPy {np.__version__}, scikit-learn {sklearn.__version__}, torchmetrics "
        f"{'installed' if has_torchmetrics() else 'not installed (its rows are absent)'}. "
        f"Date: {datetime.date.today().isoformat()}.",
        "",
        f"Times: median over {args.repeats} interleaved repeats (np.sort, ood_metrics and "
        "OODMetrics take turns in each); the ratio is the median of the per-repeat ratios to "
        "`np.sort` of the same scores (float32 scores: float32 sort). `OODMetrics` is fed the "
        "scores in batches of 2**20 before the timing and computes from the parts it keeps.",
        "",
        "| scores | n | np.sort | ood_metrics | ratio | OODMetrics.compute | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in timed:
        t = row["times"]
        lines.append(
            f"| {row['kind']} | {row['n']:,} | {ms(statistics.median(t['np.sort']))} "
            f"| {ms(statistics.median(t['ood_metrics']))} | {median_ratio(t, 'ood_metrics'):.2f}x "
            f"| {ms(statistics.median(t['OODMetrics']))} | {median_ratio(t, 'OODMetrics'):.2f}x |"
        )
    first = timed[0]
    lines += ["", f"Peers on the float32 normal scores, n = {small:,} (same run):", ""]
    lines += [
        "| what | time | ratio to np.sort | largest difference from ood_metrics |",
        "|---|---:|---:|---:|",
    ]
    for peer in ("scikit-learn", "torchmetrics"):
        if peer in first:
            pt = first[peer]["times"]
            diff = max(abs(first[peer]["values"][k] - first["ours"][k]) for k in first["ours"])
            peer_time = ms(statistics.median(pt[peer]))
            lines.append(f"| {peer} | {peer_time} | {median_ratio(pt, peer):.1f}x | {diff:.1e} |")
    lines += [
        "",
        "Memory: peak allocated during the call beyond its inputs (tracemalloc), per score, in "
        "a fresh process per row; `VmHWM` is the peak resident size over the resident size "
        "just before the call (it also counts memory the allocator keeps, and torch's "
        "buffers, which tracemalloc does not see: compare torchmetrics by that column).",
        "",
        "| call | scores | n | bytes per score (tracemalloc) | peak RSS increase |",
        "|---|---|---:|---:|---:|",
    ]
    for row in memory:
        lines.append(
            f"| {row['step']} | {row['kind']} | {row['n']:,} | {row['traced'] / row['n']:.2f} "
            f"| {row['rss'] / 2**20:,.0f} MiB |"
        )
    lines += [
        "",
        f"Binned mode (`OODMetrics('binned')`, 65,536 bins) against exact, n = {small:,}:",
        "",
    ]
    lines += ["| scores | metric | binned - exact | guaranteed bound |", "|---|---|---:|---:|"]
    for name, result in first["binned"].items():
        for key in result["bounds"]:
            lines.append(
                f"| {name} | {key} | {result['error'][key]:.1e} | {result['bounds'][key]:.1e} |"
            )
    at_large = [r for r in timed if r["n"] == large]
    worst = max(median_ratio(r["times"], "ood_metrics") for r in at_large)
    worst_memory = max(
        r["traced"] / r["n"] for r in memory if r["step"] in ("ood_metrics", "OODMetrics")
    )
    lines += [
        "",
        f"Goals: time <= 2.2x `np.sort` at {large:,} scores: worst kind {worst:.2f}x "
        f"({'met' if worst <= 2.2 else 'not met'}); extra memory <= 12 bytes per score: worst "
        f"{worst_memory:.1f} ({'met' if worst_memory <= 12 else 'not met'}).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000_000, 50_000_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sklearn-repeats", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    start_load = os.getloadavg()[0]
    timed = time_all(args)
    memory = memory_all(args)
    report = render(args, timed, memory, (start_load, os.getloadavg()[0]))
    print(report)
    if args.output is not None:
        args.output.write_text(report)


if __name__ == "__main__":
    main()
