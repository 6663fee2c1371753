"""KNN fit + score: time and peak memory of oodscore, scikit-learn, pytorch-ood 0.4 and faiss.

Usage:
    python benchmarks/bench_knn.py [--rows 50000] [--dim 512] [--queries 10000] [--k 50]
        [--repeats 5] [--seed 0] [--methods ...] [--live-memory] [--threads N] [--quick]
        [--output benchmarks/results/knn.md]

Data (seeded, float32): ``--rows`` training features of 10 classes (random non-negative
means plus Gaussian noise, clipped at 0 like post-ReLU pooled features) and ``--queries``
queries, half drawn like the training features and half from shifted means. The data are
written once to a temporary folder.

Methods, each run in a fresh subprocess per method and repeat (repeats go round-robin over
the methods, so a burst of load from other jobs hits all of them alike); every one
normalises the features to unit length and returns minus the squared distance to the k-th
nearest training feature:

- ``oodscore``: ``KNN(k=k).fit(train)`` then ``scorer(queries)`` (torch backend: chunked
  products and a running ``torch.topk``);
- ``oodscore-faiss``: the same with ``backend="faiss"`` (needs faiss-cpu);
- ``sklearn``: ``NearestNeighbors(algorithm="brute")`` fitted on the normalised features
  (NumPy), then ``kneighbors`` of the normalised queries, ``-(distance[:, -1] ** 2)``;
- ``pytorch-ood``: pytorch-ood 0.4.0's ``KNN(None, k=k).fit_features(z, labels)`` then
  ``-(predict_features(q) ** 2)`` (it returns the plain distance, an outlier score; its
  package ``__init__`` imports torchvision, so the detector module is imported through a
  stub parent package);
- ``faiss``: ``faiss.IndexFlatL2`` on the normalised features directly, ``-D[:, -1]`` (the
  authors' code).

Each subprocess loads the data, runs the method once on a small slice (warm-up: imports,
thread pools, lazy kernels), then resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``) and measures the fit and then the scoring: wall time, and the
peak resident set size (``VmHWM``) over the resident size just before the step. RSS counts
every allocation that touches memory (NumPy, torch's CPU allocator, BLAS and faiss buffers),
not only Python objects. Times are the minimum over ``--repeats`` processes; memory the
range. ``--live-memory`` runs every method with glibc's ``MALLOC_MMAP_THRESHOLD_=65536`` so
that freed blocks leave the resident set and the peak is the memory live at once;
``--threads N`` gives every method N OpenMP/MKL/OpenBLAS threads (on a shared machine, one
thread each keeps the timings comparable). Agreement
of the k-th distances is checked on the scores of the first repeat.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import cpu_model, import_pytorch_ood, measure_step

MB = 1e6
LIVE_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}

METHODS = {
    "oodscore": "oodscore `KNN` (torch backend)",
    "oodscore-faiss": "oodscore `KNN(backend='faiss')`",
    "sklearn": "scikit-learn `NearestNeighbors(algorithm='brute')` on normalised features",
    "pytorch-ood": "pytorch-ood 0.4.0 `KNN` (scikit-learn inside), score −d²",
    "faiss": "faiss `IndexFlatL2` directly (the authors' code)",
}


# --- data --------------------------------------------------------------------------------


def make_data(folder: Path, *, rows: int, dim: int, queries: int, seed: int) -> None:
    """Write train.npy (rows, dim), queries.npy (queries, dim) and is_id.npy to ``folder``."""
    rng = np.random.default_rng(seed)
    means = rng.gamma(2.0, 0.5, size=(10, dim)).astype(np.float32)
    shifted_means = rng.gamma(2.0, 0.5, size=(10, dim)).astype(np.float32)

    def sample(target: np.ndarray, centres: np.ndarray) -> None:
        for start in range(0, len(target), 4096):  # chunked: no full-size temporaries
            stop = min(start + 4096, len(target))
            which = rng.integers(0, len(centres), stop - start)
            noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
            np.maximum(centres[which] + noise, 0.0, out=target[start:stop])

    train = np.empty((rows, dim), dtype=np.float32)
    sample(train, means)
    query = np.empty((queries, dim), dtype=np.float32)
    n_id = queries // 2
    sample(query[:n_id], means)
    sample(query[n_id:], shifted_means)
    is_id = np.arange(queries) < n_id
    for name, array in (("train", train), ("queries", query), ("is_id", is_id)):
        np.save(folder / f"{name}.npy", array)


# --- the methods -------------------------------------------------------------------------

Fit = Callable[[np.ndarray, int], Any]
Score = Callable[[Any, np.ndarray, int], np.ndarray]


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def oodscore_method(backend: str) -> tuple[Fit, Score]:
    import torch

    from oodscore.scorers.knn import KNN

    def fit(train: np.ndarray, k: int) -> Any:
        return KNN(k=k, backend=backend).fit(torch.from_numpy(train))  # type: ignore[arg-type]

    def score(model: Any, queries: np.ndarray, k: int) -> np.ndarray:
        return model(torch.from_numpy(queries)).numpy()

    return fit, score


def sklearn_method() -> tuple[Fit, Score]:
    from sklearn.neighbors import NearestNeighbors

    def fit(train: np.ndarray, k: int) -> Any:
        return NearestNeighbors(n_neighbors=k, algorithm="brute").fit(normalise(train))

    def score(model: Any, queries: np.ndarray, k: int) -> np.ndarray:
        distances, _ = model.kneighbors(normalise(queries), n_neighbors=k)
        return -(distances[:, -1] ** 2)

    return fit, score


def pytorch_ood_method() -> tuple[Fit, Score]:
    import torch

    detector = import_pytorch_ood("knn").KNN

    def fit(train: np.ndarray, k: int) -> Any:
        labels = torch.zeros(len(train), dtype=torch.long)
        return detector(None, k=k).fit_features(torch.from_numpy(train), labels)

    def score(model: Any, queries: np.ndarray, k: int) -> np.ndarray:
        distance = model.predict_features(torch.from_numpy(queries)).numpy()
        return -(distance**2)  # plain distance, outlier score -> minus the squared distance

    return fit, score


def faiss_method() -> tuple[Fit, Score]:
    import faiss

    def fit(train: np.ndarray, k: int) -> Any:
        index = faiss.IndexFlatL2(train.shape[1])
        index.add(np.ascontiguousarray(normalise(train), dtype=np.float32))
        return index

    def score(model: Any, queries: np.ndarray, k: int) -> np.ndarray:
        distances, _ = model.search(np.ascontiguousarray(normalise(queries)), k)
        return -distances[:, -1]

    return fit, score


def method_functions(name: str) -> tuple[Fit, Score]:
    if name == "oodscore":
        return oodscore_method("torch")
    if name == "oodscore-faiss":
        return oodscore_method("faiss")
    if name == "sklearn":
        return sklearn_method()
    if name == "pytorch-ood":
        return pytorch_ood_method()
    if name == "faiss":
        return faiss_method()
    raise ValueError(f"unknown method {name!r}")


def available(name: str) -> bool:
    if name == "pytorch-ood":
        return importlib.util.find_spec("pytorch_ood") is not None
    if name in ("faiss", "oodscore-faiss"):
        return importlib.util.find_spec("faiss") is not None
    return True


# --- one measurement (child process) -----------------------------------------------------


def threads_description(name: str) -> str:
    parts = []
    if name.startswith("oodscore") or name == "pytorch-ood":
        import torch

        parts.append(f"torch {torch.get_num_threads()} threads")
    if name in ("faiss", "oodscore-faiss"):
        import faiss

        parts.append(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads")
    if name in ("sklearn", "pytorch-ood"):
        import sklearn
        from threadpoolctl import threadpool_info

        openmp = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"]
        parts.append(f"scikit-learn {sklearn.__version__}, OpenMP threads {openmp or '?'}")
    return "; ".join(parts)


def child(name: str, folder: Path, k: int, scores_out: Path | None) -> None:
    fit, score = method_functions(name)
    train = np.load(folder / "train.npy")
    queries = np.load(folder / "queries.npy")
    warm_rows = min(len(train), max(2000, k))
    score(fit(train[:warm_rows], k), queries[:500], k)

    model, fit_s, fit_peak = measure_step(lambda: fit(train, k))
    scores, score_s, score_peak = measure_step(lambda: score(model, queries, k))
    if scores_out is not None:
        np.save(scores_out, np.asarray(scores, dtype=np.float64))
    info = {
        "fit_s": fit_s,
        "score_s": score_s,
        "fit_peak": fit_peak,
        "score_peak": score_peak,
        "threads": threads_description(name),
    }
    print(json.dumps(info))


# --- the parent --------------------------------------------------------------------------


def run_child(
    name: str, folder: Path, k: int, scores_out: Path | None, env: dict[str, str]
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", name, "--data", str(folder), "--k", str(k)]
    if scores_out is not None:
        command += ["--scores-out", str(scores_out)]
    done = subprocess.run(
        command, env=dict(os.environ) | env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def agreement(folder: Path, names: list[str]) -> list[list[str]]:
    """Max absolute and relative difference of the k-th squared distances against oodscore,
    Spearman correlation and each method's AUROC (ID positive, shifted queries negative)."""
    from scipy.stats import spearmanr

    import oodscore.metrics

    is_id = np.load(folder / "is_id.npy")
    reference = np.load(folder / "scores-oodscore.npy")
    table = []
    for name in names:
        scores = np.load(folder / f"scores-{name}.npy")
        absolute = np.max(np.abs(scores - reference))
        relative = np.max(np.abs(scores - reference) / np.maximum(np.abs(reference), 1e-30))
        rho = spearmanr(scores, reference).statistic
        auroc = float(oodscore.metrics.auroc(scores[is_id], scores[~is_id]))
        table.append(
            [METHODS[name], f"{absolute:.1e}", f"{relative:.1e}", f"{rho:.6f}", f"{auroc:.4f}"]
        )
    return table


def fmt_mb(n_bytes: float) -> str:
    return f"{n_bytes / MB:.1f}"


def fmt_range(values: list[float]) -> str:
    low, high = fmt_mb(min(values)), fmt_mb(max(values))
    return low if low == high else f"{low}–{high}"


def report(
    args: argparse.Namespace,
    runs: dict[str, list[dict[str, Any]]],
    agree: list[list[str]],
    skipped: list[str],
    load: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:
    from common import markdown_table

    from oodscore.functional.knn import CHUNK_SIZE, QUERY_BLOCK

    n, d, q, k = args.rows, args.dim, args.queries, args.k
    rows, threads = [], []
    totals: dict[str, float] = {}
    for name, results in runs.items():
        fit_s = min(r["fit_s"] for r in results)
        score_s = min(r["score_s"] for r in results)
        both = [r["fit_s"] + r["score_s"] for r in results]
        totals[name] = min(both)
        rows.append(
            [
                f"`{name}`",
                f"{fit_s:.3f}",
                f"{score_s:.3f}",
                f"{min(both):.3f}",
                f"{statistics.median(both):.3f}",
                fmt_range([r["fit_peak"] for r in results]),
                fmt_range([r["score_peak"] for r in results]),
            ]
        )
        threads.append(f"- `{name}`: {METHODS[name]}; {results[0]['threads']}.")
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
    block = min(q, QUERY_BLOCK)
    sizes = markdown_table(
        ["what", "size (MB)"],
        [
            [f"training features N×D float32 ({n:,}×{d}), the data itself", fmt_mb(n * d * 4)],
            [f"queries Q×D float32 ({q:,}×{d})", fmt_mb(q * d * 4)],
            [f"all query-to-training distances Q×N float32 ({q:,}×{n:,})", fmt_mb(q * n * 4)],
            [
                f"oodscore search step: one product of {block:,} queries × "
                f"{min(CHUNK_SIZE, n):,} training rows, float32",
                fmt_mb(block * min(CHUNK_SIZE, n) * 4),
            ],
            [
                f"its running top-k: {block:,} × k float32 keys + int64 indices",
                fmt_mb(block * k * 12),
            ],
        ],
    )
    before, after = load
    threads_note = (
        f"Every method runs with {args.threads} thread(s) (OMP_NUM_THREADS, MKL_NUM_THREADS, "
        "OPENBLAS_NUM_THREADS)."
        if args.threads
        else "Thread counts are left as the libraries set them."
    )
    env = (
        "with `MALLOC_MMAP_THRESHOLD_=65536` (memory live at once)"
        if args.live_memory
        else ("with the default allocator (freed blocks may stay resident)")
    )
    lines = [
        f"Data: {n:,} training features × {d} float32 (10 classes, non-negative, like pooled "
        f"post-ReLU features), {q:,} queries (half like the training data, half from shifted "
        f"means), k = {k}, seed {args.seed}. Each method runs in a fresh process per repeat "
        f"({args.repeats} repeats, round-robin over the methods); times are the minimum over "
        "repeats (the median of fit + score shows the spread), memory the range, "
        f"{env}. {threads_note} Load average (1, 5, 15 "
        f"min) {', '.join(f'{x:.1f}' for x in before)} at the start and "
        f"{', '.join(f'{x:.1f}' for x in after)} at the end. Processor: {cpu_model()}.",
        "",
        "Peak memory is the peak resident set size (`VmHWM`, reset through "
        "`/proc/self/clear_refs` before each step) minus the resident size just before the "
        "step: it counts NumPy, torch, BLAS and faiss allocations alike, and not the data, "
        "loaded before. Fit and score are measured separately.",
        "",
        table,
        "",
        "What each row runs, and its threads:",
        "",
        *threads,
        "",
        "Sizes to read the memory columns against:",
        "",
        sizes,
        "",
        "Agreement with oodscore on the same queries (first repeat): the scores are minus the "
        "squared distance to the k-th neighbour for every method.",
        "",
        markdown_table(
            ["method", "max abs. diff", "max rel. diff", "Spearman", "AUROC"],
            agree,
        ),
    ]
    peers = {name: t for name, t in totals.items() if not name.startswith("oodscore")}
    if peers and "oodscore" in totals:
        fastest = min(peers, key=peers.__getitem__)
        lines += [
            "",
            f"- fit + score: fastest peer `{fastest}` {peers[fastest]:.3f} s, oodscore "
            f"{totals['oodscore']:.3f} s, ratio {totals['oodscore'] / peers[fastest]:.2f}.",
        ]
    if skipped:
        lines += ["", f"Not installed, skipped: {', '.join(skipped)}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--live-memory", action="store_true", help="MALLOC_MMAP_THRESHOLD_")
    parser.add_argument("--threads", type=int, help="OMP/MKL/OpenBLAS threads of every method")
    parser.add_argument("--quick", action="store_true", help="small smoke run (5,000 × 64)")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scores-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.k, args.scores_out)
        return
    if args.quick:
        args.rows, args.dim, args.queries, args.repeats = 5000, 64, 1000, 1
    if args.k > args.rows:
        parser.error(f"--k {args.k} is larger than --rows {args.rows}")

    names = [m for m in args.methods if available(m)]
    skipped = [m for m in args.methods if m not in names]
    if "oodscore" not in names:
        names.insert(0, "oodscore")
    env = dict(LIVE_MEMORY_ENV) if args.live_memory else {}
    if args.threads:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[key] = str(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-knn-") as tmp:
        folder = Path(tmp)
        make_data(folder, rows=args.rows, dim=args.dim, queries=args.queries, seed=args.seed)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for repeat in range(args.repeats):
            for name in names:
                out = folder / f"scores-{name}.npy" if repeat == 0 else None
                result = run_child(name, folder, args.k, out, env)
                runs[name].append(result)
                print(
                    f"repeat {repeat + 1}/{args.repeats} {name}: fit {result['fit_s']:.3f} s, "
                    f"score {result['score_s']:.3f} s, peaks {fmt_mb(result['fit_peak'])} / "
                    f"{fmt_mb(result['score_peak'])} MB",
                    file=sys.stderr,
                )
        agree = agreement(folder, names)
    body = report(args, runs, agree, skipped, (load_before, os.getloadavg()))

    from common import write_results

    command = "python benchmarks/bench_knn.py " + " ".join(sys.argv[1:])
    title = (
        f"KNN fit + score on {args.rows:,} × {args.dim} float32, {args.queries:,} queries, "
        f"k = {args.k}"
    )
    if args.output:
        write_results(args.output, title=title, command=command.strip(), body=body)
        print(args.output.read_text())
    else:
        print(f"# {title}\n\nCommand: `{command.strip()}`\n\n{body}")


if __name__ == "__main__":
    main()
