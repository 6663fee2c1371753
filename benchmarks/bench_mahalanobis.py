"""Mahalanobis fit + score: time and peak memory of oodscore, scikit-learn and pytorch-ood 0.4.

Usage:
    python benchmarks/bench_mahalanobis.py [--rows 50000] [--dim 512] [--classes 10]
        [--queries 10000] [--repeats 7] [--seed 0] [--methods ...] [--no-profile]
        [--no-scaling] [--quick] [--output benchmarks/results/mahalanobis.md]

Data (seeded, float32): ``--rows`` training features of ``--classes`` Gaussian classes with
random means and one tied, non-diagonal covariance ``Q^T diag(s^2) Q`` (``Q`` a random
rotation, ``s`` falling geometrically from 3 to 0.03, so the condition number is 10^4), and
``--queries`` queries, half drawn from the class Gaussians and half shifted (a random class,
noise 1.1x wider, plus a random offset). The data are written once to a temporary folder.

Methods, each run in a fresh subprocess per method and repeat (repeats go round-robin over
the methods, so a burst of load from other jobs hits all of them alike):

- ``oodscore``: ``Mahalanobis().fit(train, targets)`` then ``scorer(queries)``;
- ``pytorch-ood``: pytorch-ood 0.4.0's ``Mahalanobis(None).fit_features(z, y)`` then
  ``-predict_features(q)`` (its package ``__init__`` imports torchvision, so the detector
  module is imported through a stub parent package);
- ``sklearn``: class means, rows centred by their class mean (one copy, filled class by
  class), ``EmpiricalCovariance(assume_centered=True).fit(centred)``, then per class
  ``(q - mu_c) @ precision_`` and a row-wise dot product, score ``-min_c`` (the official
  code fits ``assume_centered=False`` on the same centred rows: the same matrix, since
  their mean is zero, after one more centred copy in ``np.cov``);
- ``sklearn-native``: the same with ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` unset in
  that subprocess, so OpenBLAS picks its own kernel for the processor;
- ``sklearn-api``: the same fit, scored with ``EmpiricalCovariance.mahalanobis`` per class
  (``pairwise_distances(metric="mahalanobis")``, i.e. SciPy's ``cdist``).

Each subprocess loads the data, runs the method once on a small slice (warm-up: imports,
thread pools, lazy kernels), then resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``) and measures the fit and then the scoring: wall time, and the
peak resident set size (``VmHWM``) over the resident size just before the step. RSS counts
every allocation that touches memory (NumPy, torch's CPU allocator, BLAS buffers), not
only Python objects. Times are the minimum over ``--repeats`` processes; memory the
range. Agreement is checked on the scores of the first repeat.

Then, unless switched off: the fit peak of oodscore, pytorch-ood and sklearn at N and 2N
(flat for O(D^2) plus a chunk, growing for O(N*D) copies), measured with glibc's
``MALLOC_MMAP_THRESHOLD_=65536`` so that freed blocks leave the resident set and the peak is
the memory live at once, and where oodscore's time goes
(its functional steps timed in this process with ``common.best_time``).

The goal (issue): oodscore at least as fast as the fastest peer, fit + score, with memory
O(D^2) plus one chunk. On a shared 2-core machine the timings are noisy: with two threads,
each parallel region waits for a thread that another process may hold, so the minimum over
repeats is the number to read, next to the load average printed with the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import cpu_model, import_pytorch_ood, measure_step

MiB = 1 << 20
MB = 1e6
NATIVE_BLAS_UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
LIVE_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
"""glibc: blocks of 64 KiB and more are mmap-ed and unmapped when freed, so RSS follows the
bytes actually live (by default freed blocks may stay resident and be counted again)."""


@dataclass(frozen=True)
class Method:
    label: str
    unset_env: tuple[str, ...] = ()


METHODS = {
    "oodscore": Method("oodscore `Mahalanobis`"),
    "pytorch-ood": Method("pytorch-ood 0.4.0 `Mahalanobis`"),
    "sklearn": Method("scikit-learn `EmpiricalCovariance` + `precision_` (vectorised)"),
    "sklearn-native": Method(
        "scikit-learn, as above, OpenBLAS native kernel", unset_env=NATIVE_BLAS_UNSET
    ),
    "sklearn-api": Method("scikit-learn `EmpiricalCovariance.mahalanobis` per class"),
}


# --- data --------------------------------------------------------------------------------


def make_data(folder: Path, *, rows: int, dim: int, classes: int, queries: int, seed: int) -> None:
    """Write train.npy (rows, dim), labels.npy (rows,), queries.npy, is_id.npy to ``folder``."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    spread = np.geomspace(3.0, 0.03, dim)
    mix = (spread[:, None] * rotation).astype(np.float32)  # x = mu + (z * s) @ Q
    means = rng.standard_normal((classes, dim)).astype(np.float32)
    labels = rng.permutation(np.arange(rows) % classes).astype(np.int64)

    def sample(target: np.ndarray, which: np.ndarray, widen: float = 1.0) -> None:
        for start in range(0, len(target), 4096):  # chunked: no full-size temporaries
            stop = min(start + 4096, len(target))
            noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
            target[start:stop] = means[which[start:stop]] + widen * (noise @ mix)

    train = np.empty((rows, dim), dtype=np.float32)
    sample(train, labels)
    n_id = queries // 2
    query = np.empty((queries, dim), dtype=np.float32)
    sample(query, rng.integers(0, classes, queries))
    shifted = query[n_id:]
    sample(shifted, rng.integers(0, classes, len(shifted)), widen=1.1)
    offset = rng.standard_normal((len(shifted), dim)).astype(np.float32)
    offset *= 0.25 / np.linalg.norm(offset, axis=1, keepdims=True)
    shifted += offset
    is_id = np.arange(queries) < n_id
    for name, array in (("train", train), ("labels", labels), ("queries", query), ("is_id", is_id)):
        np.save(folder / f"{name}.npy", array)


# --- the methods -------------------------------------------------------------------------

Fit = Callable[[np.ndarray, np.ndarray], Any]
Score = Callable[[Any, np.ndarray], np.ndarray]


def oodscore_method() -> tuple[Fit, Score]:
    import torch

    from oodscore import Mahalanobis

    def fit(train: np.ndarray, labels: np.ndarray) -> Any:
        return Mahalanobis().fit(torch.from_numpy(train), torch.from_numpy(labels))

    def score(model: Any, queries: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(queries)).numpy()

    return fit, score


def pytorch_ood_method() -> tuple[Fit, Score]:
    import torch

    detector = import_pytorch_ood("mahalanobis").Mahalanobis

    def fit(train: np.ndarray, labels: np.ndarray) -> Any:
        return detector(None).fit_features(torch.from_numpy(train), torch.from_numpy(labels))

    def score(model: Any, queries: np.ndarray) -> np.ndarray:
        return (-model.predict_features(torch.from_numpy(queries))).numpy()  # higher = ID

    return fit, score


def sklearn_fit(train: np.ndarray, labels: np.ndarray) -> Any:
    from sklearn.covariance import EmpiricalCovariance

    num_classes = int(labels.max()) + 1
    means = np.empty((num_classes, train.shape[1]), dtype=train.dtype)
    centred = np.empty_like(train)
    for c in range(num_classes):
        index = np.flatnonzero(labels == c)
        block = train[index]
        means[c] = block.mean(axis=0)
        block -= means[c]
        centred[index] = block
    return means, EmpiricalCovariance(assume_centered=True).fit(centred)


def sklearn_score(model: Any, queries: np.ndarray) -> np.ndarray:
    means, estimator = model
    precision = estimator.precision_
    closest = np.full(len(queries), np.inf, dtype=queries.dtype)
    for mean in means:
        centred = queries - mean
        np.minimum(closest, np.einsum("ij,ij->i", centred @ precision, centred), out=closest)
    return -closest


def sklearn_api_score(model: Any, queries: np.ndarray) -> np.ndarray:
    means, estimator = model
    distances = [estimator.mahalanobis(queries - mean + estimator.location_) for mean in means]
    return -np.min(distances, axis=0)


def method_functions(name: str) -> tuple[Fit, Score]:
    if name == "oodscore":
        return oodscore_method()
    if name == "pytorch-ood":
        return pytorch_ood_method()
    if name in ("sklearn", "sklearn-native"):
        return sklearn_fit, sklearn_score
    if name == "sklearn-api":
        return sklearn_fit, sklearn_api_score
    raise ValueError(f"unknown method {name!r}")


# --- one measurement (child process) -----------------------------------------------------


def blas_description() -> str:
    from threadpoolctl import threadpool_info

    parts = []
    for info in threadpool_info():
        if info["user_api"] != "blas":
            continue
        owner = Path(info["filepath"]).parent.name.replace(".libs", "")
        kernel = info.get("architecture") or "?"
        parts.append(
            f"{owner}: {info['internal_api']} {info.get('version')} {kernel}, "
            f"{info['num_threads']} threads"
        )
    return "; ".join(sorted(parts))


def child(name: str, folder: Path, scores_out: Path | None) -> None:
    fit, score = method_functions(name)
    train = np.load(folder / "train.npy")
    labels = np.load(folder / "labels.npy")
    queries = np.load(folder / "queries.npy")
    warm_rows = min(len(train), 2000)
    score(fit(train[:warm_rows], labels[:warm_rows]), queries[:500])

    model, fit_s, fit_peak = measure_step(lambda: fit(train, labels))
    scores, score_s, score_peak = measure_step(lambda: score(model, queries))
    if scores_out is not None:
        np.save(scores_out, np.asarray(scores, dtype=np.float64))
    info: dict[str, Any] = {
        "fit_s": fit_s,
        "score_s": score_s,
        "fit_peak": fit_peak,
        "score_peak": score_peak,
    }
    if name.startswith("sklearn"):
        info["blas"] = blas_description()
    else:
        import torch

        info["blas"] = (
            f"torch {'MKL' if torch.backends.mkl.is_available() else 'BLAS'}, "
            f"{torch.get_num_threads()} threads"
        )
    print(json.dumps(info))


# --- the parent --------------------------------------------------------------------------


def available(name: str) -> bool:
    if name == "pytorch-ood":
        return importlib.util.find_spec("pytorch_ood") is not None
    return True


def run_child(
    name: str, folder: Path, scores_out: Path | None, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    env = dict(os.environ) | (extra_env or {})
    for key in METHODS[name].unset_env:
        env.pop(key, None)
    command = [sys.executable, __file__, "--child", name, "--data", str(folder)]
    if scores_out is not None:
        command += ["--scores-out", str(scores_out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def agreement(folder: Path, names: list[str], rows: int) -> list[list[str]]:
    """Spearman and max relative difference against oodscore, and each method's AUROC."""
    from scipy.stats import spearmanr

    import oodscore.metrics

    is_id = np.load(folder / "is_id.npy")
    reference = np.load(folder / "scores-oodscore.npy")
    table = []
    for name in names:
        scores = np.load(folder / f"scores-{name}.npy")
        scale, note = (2.0 * rows, " (scores × 2N)") if name == "pytorch-ood" else (1.0, "")
        relative = np.max(np.abs(scores * scale - reference) / np.abs(reference))
        rho = spearmanr(scores, reference).statistic
        auroc = float(oodscore.metrics.auroc(scores[is_id], scores[~is_id]))
        table.append([METHODS[name].label, f"{rho:.6f}", f"{relative:.1e}{note}", f"{auroc:.4f}"])
    return table


def profile_oodscore(folder: Path, repeats: int) -> dict[str, tuple[str, float]]:
    """Minimum times (s) of the steps of oodscore's fit and score, in this process.

    Each round runs every step once after a warm-up call (``common.best_time(fn, 1)``);
    the rounds go round-robin over the steps and each step keeps its minimum.
    """
    import torch
    from common import best_time

    from oodscore import Mahalanobis
    from oodscore._arrays import as_tensor
    from oodscore._validation import check_matrix
    from oodscore.functional.mahalanobis import (
        FIT_CHUNK_ELEMENTS,
        class_means,
        squared_mahalanobis,
        tied_covariance,
        whitening,
    )
    from oodscore.scorers.membership import class_membership

    train = torch.from_numpy(np.load(folder / "train.npy"))
    labels = torch.from_numpy(np.load(folder / "labels.npy"))
    queries = torch.from_numpy(np.load(folder / "queries.npy"))
    membership = class_membership(labels, len(train))
    rows, classes, c = membership.rows, membership.classes, membership.num_classes
    means, _ = class_means(train, rows, classes, c)
    covariance = tied_covariance(train, rows, classes, means)
    whiten, _ = whitening(covariance)
    scorer = Mahalanobis().fit(train, labels)
    chunk = min(len(train), FIT_CHUNK_ELEMENTS // train.shape[1])
    centred64 = train[:chunk].double() - means[labels[:chunk]]
    centred32 = centred64.float()
    n_chunks = math.ceil(len(train) / chunk)
    steps: dict[str, tuple[str, Callable[[], object]]] = {
        "check": (
            "fit: input check (finite sum) + targets",
            lambda: (
                check_matrix(as_tensor(train, "features")[0], "features"),
                class_membership(labels, len(train)),
            ),
        ),
        "means": (
            "fit: class means (pass 1, float64 `index_add_`)",
            lambda: class_means(train, rows, classes, c),
        ),
        "cov": (
            "fit: tied covariance (pass 2: centred in float64, float32 product)",
            lambda: tied_covariance(train, rows, classes, means),
        ),
        "eigh": ("fit: whitening (`eigh` of D×D float64)", lambda: whitening(covariance)),
        "fit": ("fit: whole `Mahalanobis().fit`", lambda: Mahalanobis().fit(train, labels)),
        "score_check": ("score: input check (finite sum)", lambda: check_matrix(queries, "f")),
        "score_once": (
            "score: `squared_mahalanobis` on all queries at once (no `map_rows` blocks)",
            lambda: squared_mahalanobis(queries, means, whiten),
        ),
        "score": ("score: whole `scorer(queries)`", lambda: scorer(queries)),
        "xtx64": (
            f"for scale: {n_chunks} × torch float64 X^T X of a {chunk:,}-row chunk",
            lambda: [centred64.T @ centred64 for _ in range(n_chunks)],
        ),
        "xtx32": (
            f"for scale: {n_chunks} × torch float32 X^T X of a {chunk:,}-row chunk",
            lambda: [centred32.T @ centred32 for _ in range(n_chunks)],
        ),
    }
    best = dict.fromkeys(steps, math.inf)
    for _ in range(repeats):  # round-robin, so that a burst of load hits every step alike
        for key, (_, fn) in steps.items():
            best[key] = min(best[key], best_time(fn, 1))
    return {key: (label, best[key]) for key, (label, _) in steps.items()}


def fmt_mb(n_bytes: float) -> str:
    return f"{n_bytes / MB:.1f}"


def fmt_range(values: list[float]) -> str:
    low, high = fmt_mb(min(values)), fmt_mb(max(values))
    return low if low == high else f"{low}–{high}"


@dataclass
class Outcome:
    """Everything the report needs from one benchmark run."""

    runs: dict[str, list[dict[str, Any]]]
    agree: list[list[str]]
    profile: dict[str, tuple[str, float]]
    scaling: dict[str, dict[int, float]]
    skipped: list[str]
    load: tuple[tuple[float, ...], tuple[float, ...]]


def report(args: argparse.Namespace, outcome: Outcome) -> str:
    from common import markdown_table

    from oodscore._arrays import CHUNK_ELEMENTS
    from oodscore.functional.mahalanobis import FIT_CHUNK_ELEMENTS

    n, d, q = args.rows, args.dim, args.queries
    data_bytes = n * d * 4
    rows = []
    blas = []
    best: dict[str, dict[str, float]] = {}
    for name, results in outcome.runs.items():
        fit_s = min(r["fit_s"] for r in results)
        score_s = min(r["score_s"] for r in results)
        totals = [r["fit_s"] + r["score_s"] for r in results]
        fit_peaks = [r["fit_peak"] for r in results]
        score_peaks = [r["score_peak"] for r in results]
        fit_peak = max(fit_peaks)
        best[name] = {
            "total": min(totals),
            "median": statistics.median(totals),
            "fit": fit_s,
            "score": score_s,
            "peak": fit_peak,
        }
        rows.append(
            [
                f"`{name}`",
                f"{fit_s:.3f}",
                f"{score_s:.3f}",
                f"{min(totals):.3f}",
                f"{statistics.median(totals):.3f}",
                fmt_range(fit_peaks),
                fmt_range(score_peaks),
            ]
        )
        blas.append(f"- `{name}`: {METHODS[name].label}; {results[0]['blas']}.")
    table = markdown_table(
        [
            "method",
            "fit (s)",
            "score (s)",
            "fit + score (s)",
            "fit + score, median (s)",
            "fit peak (MB), min–max",
            "score peak (MB), min–max",
        ],
        rows,
    )
    sizes = markdown_table(
        ["what", "size (MB)"],
        [
            [f"training features N×D float32 ({n:,}×{d}), the data itself", fmt_mb(data_bytes)],
            ["one float64 copy of them", fmt_mb(2 * data_bytes)],
            [f"queries Q×D float32 ({q:,}×{d})", fmt_mb(q * d * 4)],
            ["queries as float64", fmt_mb(q * d * 8)],
            ["D×D float64 (covariance, whitening)", fmt_mb(d * d * 8)],
            [
                f"oodscore fit chunk: {FIT_CHUNK_ELEMENTS // d:,} rows float64 "
                "(`FIT_CHUNK_ELEMENTS`)",
                fmt_mb(FIT_CHUNK_ELEMENTS * 8),
            ],
            [
                f"oodscore score block: {CHUNK_ELEMENTS // d:,} rows float64 (`map_rows`)",
                fmt_mb(CHUNK_ELEMENTS * 8),
            ],
        ],
    )
    before, after = outcome.load
    lines = [
        f"Data: {n:,} training features × {d} float32 in {args.classes} Gaussian classes "
        f"(random means, one tied non-diagonal covariance, condition number 10^4), "
        f"{q:,} queries (half ID, half shifted), seed {args.seed}. Each method runs in a fresh "
        f"process per repeat ({args.repeats} repeats, round-robin over the methods); times "
        "are the minimum over repeats (the median of fit + score shows the spread), memory "
        "the range. Thread counts are left as the libraries set them. The machine is "
        "shared: load average (1, 5, 15 min) "
        f"{', '.join(f'{x:.1f}' for x in before)} at the start and "
        f"{', '.join(f'{x:.1f}' for x in after)} at the end. Processor: {cpu_model()}.",
        "",
        "Peak memory is the peak resident set size (`VmHWM`, reset through "
        "`/proc/self/clear_refs` before each step) minus the resident size just before the "
        "step: it counts NumPy, torch and BLAS allocations alike, and not the data, loaded "
        "before. Fit and score are measured separately.",
        "",
        table,
        "",
        "What each row runs, and its BLAS (threadpoolctl for NumPy/SciPy; torch uses its own "
        "MKL). OPENBLAS_CORETYPE="
        f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')} and OPENBLAS_L2_SIZE="
        f"{os.environ.get('OPENBLAS_L2_SIZE', '(unset)')} are set on this machine (for old "
        "OpenBLAS builds); `sklearn-native` runs with both unset, so OpenBLAS picks the kernel "
        "it detects:",
        "",
        *blas,
        "",
        "Sizes to read the memory columns against:",
        "",
        sizes,
    ]
    if outcome.scaling:
        multiples = sorted(next(iter(outcome.scaling.values())))
        lines += [
            "",
            "Fit peak against N (one process each, same D, classes and seed), with glibc's "
            "`MALLOC_MMAP_THRESHOLD_=65536` so that freed blocks leave the resident set and "
            "the peak is the memory actually live (with the default allocator, freed blocks "
            "can stay resident and the fit peaks above vary from run to run). O(D²) plus a "
            "chunk stays flat in N, O(N·D) copies grow with it.",
            "",
            markdown_table(
                ["method", *[f"N = {m * n:,} (MB)" for m in multiples]],
                [
                    [f"`{name}`", *[fmt_mb(peaks[m]) for m in multiples]]
                    for name, peaks in outcome.scaling.items()
                ],
            ),
        ]
    lines += [
        "",
        "Agreement with oodscore on the same queries (first repeat). pytorch-ood does not "
        "divide the scatter matrix by N, adds a 1e-6 ridge and returns half the distance, so "
        "its scores are compared after × 2N; AUROC is ID (positive) against shifted queries.",
        "",
        markdown_table(
            ["method", "Spearman vs oodscore", "max rel. diff vs oodscore", "AUROC"],
            outcome.agree,
        ),
    ]
    peers = {k: v for k, v in best.items() if k != "oodscore"}
    if peers and "oodscore" in best:
        ours = best["oodscore"]
        lines.append("")
        for part in ("total", "fit", "score"):
            fastest = min(peers, key=lambda k, part=part: peers[k][part])
            ratio = ours[part] / peers[fastest][part]
            what = {"total": "fit + score", "fit": "fit", "score": "score"}[part]
            lines.append(
                f"- {what}: fastest peer `{fastest}` {peers[fastest][part]:.3f} s, oodscore "
                f"{ours[part]:.3f} s, ratio {ratio:.2f}"
                + (
                    " (goal ≤ 1: " + ("met)" if ratio <= 1 else "**missed**)")
                    if part == "total"
                    else ""
                )
                + "."
            )
        live = outcome.scaling.get("oodscore", {})
        lines.append(
            f"- oodscore fit peak {fmt_mb(ours['peak'])} MB at most with the default allocator"
            + (
                f", {fmt_mb(live[1])} MB live ({fmt_mb(live[2])} MB at 2N)"
                if 1 in live and 2 in live
                else ""
            )
            + f", against {fmt_mb(data_bytes)} MB for one float32 copy of the features."
        )
    if outcome.profile:
        lines += [
            "",
            f"Where oodscore's time goes (same data, in the parent process; each step's "
            f"minimum over {args.profile_repeats} round-robin rounds, each call after a "
            "warm-up call):",
            "",
            markdown_table(
                ["step", "time (ms)"],
                [[label, f"{seconds * 1e3:.0f}"] for label, seconds in outcome.profile.values()],
            ),
        ]
    if outcome.skipped:
        lines += ["", f"Skipped (not installed): {', '.join(outcome.skipped)}."]
    lines += reading(args, best, outcome)
    return "\n".join(lines)


def comparison(what: str, ours: float, theirs: float, peer: str) -> str:
    """'<what>, oodscore is the fastest, 2.0× faster than `peer`' or '... 1.3× slower ...'."""
    if ours <= theirs:
        return f"{what}, oodscore is the fastest, {theirs / ours:.1f}× faster than `{peer}`"
    return f"{what}, oodscore is {ours / theirs:.1f}× slower than `{peer}`"


def reading(
    args: argparse.Namespace, best: dict[str, dict[str, float]], outcome: Outcome
) -> list[str]:
    """The written verdict, from this run's numbers."""
    from oodscore._arrays import CHUNK_ELEMENTS
    from oodscore.functional.mahalanobis import FIT_CHUNK_ELEMENTS

    peers = {k: v for k, v in best.items() if k != "oodscore"}
    if "oodscore" not in best or not peers:
        return []
    ours = best["oodscore"]

    def fastest(part: str) -> str:
        return min(peers, key=lambda k: peers[k][part])

    total, fit, score = fastest("total"), fastest("fit"), fastest("score")
    ratio = ours["total"] / peers[total]["total"]
    out = ["", "## Reading", ""]
    scoring = comparison("Scoring", ours["score"], peers[score]["score"], score)
    out.append(
        f"**Speed goal {'met' if ratio <= 1 else 'missed'}**: fit + score, oodscore takes "
        f"{ours['total']:.3f} s, the fastest peer (`{total}`) {peers[total]['total']:.3f} s "
        f"({ratio:.2f}×; medians over the repeats {ours['median']:.3f} s and "
        f"{peers[total]['median']:.3f} s). {scoring}; oodscore whitens each block of "
        "queries once (one product with the D×D whitening) and takes squared distances to "
        "the C whitened means, where the peers multiply each class's centred queries by "
        "the precision (C products of the same size). "
        + comparison("Fitting", ours["fit"], peers[fit]["fit"], fit)
        + "."
    )
    profile = outcome.profile
    if {"cov", "fit", "xtx64", "xtx32"} <= profile.keys():
        cov, whole = profile["cov"][1], profile["fit"][1]
        x64, x32 = profile["xtx64"][1], profile["xtx32"][1]
        out += [
            "",
            f"Where the fit goes: the scatter matrix (pass 2) takes {cov * 1e3:.0f} ms "
            f"of the {whole * 1e3:.0f} ms fit; the class means (pass 1) "
            f"{profile['means'][1] * 1e3:.0f} ms, the `eigh` {profile['eigh'][1] * 1e3:.0f} ms. "
            "Pass 2 centres each chunk in float64 (so a large offset of the features cannot "
            "cancel), takes the D×D product of the centred chunk in float32 and adds it to a "
            "float64 sum; the same products take "
            f"{x64 * 1e3:.0f} ms in float64 and {x32 * 1e3:.0f} ms in float32 "
            f"({x64 / x32:.1f}×). scikit-learn forms X^T X in float32 (NumPy sends "
            "`X.T @ X` to BLAS `syrk`, half the multiply-adds), pytorch-ood one float32 `mm` "
            "per class.",
        ]
    live = outcome.scaling.get("oodscore", {})
    chunk_bytes = FIT_CHUNK_ELEMENTS * 8
    if 1 in live and 2 in live:
        sk = outcome.scaling.get("sklearn", {})
        po = outcome.scaling.get("pytorch-ood", {})
        others = []
        if 1 in sk and 2 in sk:
            others.append(
                f"scikit-learn's way holds a centred copy of the features "
                f"({fmt_mb(sk[1])} → {fmt_mb(sk[2])} MB)"
            )
        if 1 in po and 2 in po:
            others.append(
                f"pytorch-ood one class's rows and their centred copies "
                f"({fmt_mb(po[1])} → {fmt_mb(po[2])} MB)"
            )
        flat = live[2] <= 1.2 * live[1]
        text = (
            f"**Memory**: oodscore's fit {'does not grow' if flat else 'grows'} with N "
            f"({fmt_mb(live[1])} MB live at N = {args.rows:,}, {fmt_mb(live[2])} MB at 2N)"
        )
        text += (
            ": O(D²) plus chunk buffers, not O(N·D) copies"
            if flat
            else ": at this size all rows fit in one chunk"
        )
        if others:
            text += ", while " + " and ".join(others)
        text += "."
        if flat and live[1] > 1.5 * chunk_bytes:
            text += (
                f" It is not one chunk, though: {live[1] / chunk_bytes:.1f}× the "
                f"{fmt_mb(chunk_bytes)} MB float64 chunk is live at once in pass 2 (the "
                "float64 copy of the chunk's rows, centred in place, the gathered class "
                "means, and the float32 cast of the centred chunk)"
            )
            if ours["peak"] > 1.2 * live[1]:
                text += (
                    ", and with the default allocator freed chunks can stay resident (up to "
                    f"{fmt_mb(ours['peak'])} MB)"
                )
            text += "."
        score_peaks = {k: [r["score_peak"] for r in v] for k, v in outcome.runs.items()}
        peer_low = min(min(v) for k, v in score_peaks.items() if k != "oodscore")
        text += (
            f" Scoring: oodscore at most {fmt_mb(max(score_peaks['oodscore']))} MB "
            f"({CHUNK_ELEMENTS // args.dim:,}-row blocks), the peers {fmt_mb(peer_low)} MB "
            "or more."
        )
        out += ["", text]
    if "sklearn" in best and "sklearn-native" in best:
        out += [
            "",
            f"BLAS: with OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')} "
            "as set on this machine, scikit-learn's fit + score takes "
            f"{best['sklearn']['total']:.3f} s; with OpenBLAS's own kernel "
            f"{best['sklearn-native']['total']:.3f} s. The goal is read against the faster.",
        ]
    return out


def measure_scaling(
    args: argparse.Namespace, folder: Path, names: list[str]
) -> dict[str, dict[int, float]]:
    """Fit peak of each method at N and 2N (one process each)."""
    names = [m for m in names if m in ("oodscore", "pytorch-ood", "sklearn")]
    peaks: dict[str, dict[int, float]] = {name: {} for name in names}
    for multiple in (1, 2):
        sub = folder / f"scaling-{multiple}"
        sub.mkdir()
        make_data(
            sub,
            rows=multiple * args.rows,
            dim=args.dim,
            classes=args.classes,
            queries=args.queries,
            seed=args.seed,
        )
        for name in names:
            peaks[name][multiple] = run_child(name, sub, None, LIVE_MEMORY_ENV)["fit_peak"]
        for file in sub.iterdir():
            file.unlink()
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--profile-repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--no-profile", action="store_true", help="skip oodscore's breakdown")
    parser.add_argument("--no-scaling", action="store_true", help="skip the fit peak at 2N")
    parser.add_argument("--quick", action="store_true", help="small smoke run (5,000 × 64)")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scores-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.scores_out)
        return
    if args.quick:
        args.rows, args.dim, args.queries, args.repeats, args.profile_repeats = (
            5000,
            64,
            1000,
            1,
            1,
        )

    names = [m for m in args.methods if available(m)]
    skipped = [m for m in args.methods if m not in names]
    if "oodscore" not in names:
        names.insert(0, "oodscore")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-mahalanobis-") as tmp:
        folder = Path(tmp)
        make_data(
            folder,
            rows=args.rows,
            dim=args.dim,
            classes=args.classes,
            queries=args.queries,
            seed=args.seed,
        )
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for repeat in range(args.repeats):
            for name in names:
                out = folder / f"scores-{name}.npy" if repeat == 0 else None
                result = run_child(name, folder, out)
                runs[name].append(result)
                print(
                    f"repeat {repeat + 1}/{args.repeats} {name}: fit {result['fit_s']:.3f} s, "
                    f"score {result['score_s']:.3f} s, peaks {fmt_mb(result['fit_peak'])} / "
                    f"{fmt_mb(result['score_peak'])} MB",
                    file=sys.stderr,
                )
        agree = agreement(folder, names, args.rows)
        profile = {} if args.no_profile else profile_oodscore(folder, args.profile_repeats)
        scaling = {} if args.no_scaling else measure_scaling(args, folder, names)
    outcome = Outcome(runs, agree, profile, scaling, skipped, (load_before, os.getloadavg()))

    from common import write_results

    body = report(args, outcome)
    command = "python benchmarks/bench_mahalanobis.py " + " ".join(sys.argv[1:])
    title = (
        f"Mahalanobis fit + score on {args.rows:,} × {args.dim} float32, {args.queries:,} queries"
    )
    if args.output:
        write_results(args.output, title=title, command=command.strip(), body=body)
        print(args.output.read_text())
    else:
        print(f"# {title}\n\nCommand: `{command.strip()}`\n\n{body}")


if __name__ == "__main__":
    main()
