"""Activation shaping: the cost of ReAct, ASH, SCALE and DICE over plain energy, and pytorch-ood's.

Usage:
    python benchmarks/bench_shaping.py [--rows 50000] [--dim 2048] [--classes 1000]
        [--fit-rows 10000] [--repeats 5] [--seed 0] [--methods ...] [--peer-batch 256]
        [--threads N] [--no-peers] [--peer-repeats 1] [--quick]
        [--output benchmarks/results/shaping.md]

Data (seeded, float32): ``--rows`` post-ReLU features (``relu(N(0, 1))`` times a per-row
scale in [0.5, 2]: about half the entries are 0, as after a ReLU and global pooling),
``--fit-rows`` more for the fitted methods, and a ``--classes`` × ``--dim`` head (weights
N(0, 0.02), bias N(0, 0.1)). Written once to a temporary folder.

Methods, each run in a fresh subprocess per method and repeat (repeats go round-robin, so a
burst of load from other jobs hits all of them alike):

- ``energy``: the baseline, ``Energy()(torch.nn.functional.linear(x, W, b))``: the head and
  the energy of the same features, nothing shaped;
- ``react``, ``ash-s``, ``ash-p``, ``ash-b``, ``scale``, ``dice``: the oodscore scorers at
  their default percentiles (90, 90, 90, 90, 85, 90), built with ``weight=W, bias=b``;
  ``react`` and ``dice`` are fitted on the fit rows first (timed apart);
- ``pytorch-ood/<method>``: pytorch-ood 0.4.0's detector with the same percentile (as a
  fraction) and the same head as a function, called on batches of ``--peer-batch`` rows (its
  detectors score a loader's batches; ``DICE.predict_features`` forms a (B, C, D) tensor, so
  its batch is cut to keep that tensor at 2^26 floats), ASH and SCALE on (B, D, 1, 1) views;
  ``pytorch-ood/energy`` is ``EnergyBased.score`` of the same logits. Its package
  ``__init__`` imports torchvision, so the detector modules are imported through a stub
  parent package.

Each subprocess loads the data, runs the method once on 512 rows (warm-up: imports, thread
pools; DICE's masked head is computed there and cached), resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``), then measures the fit (where there is one) and the scoring of
all rows: wall time, and the peak resident set size (``VmHWM``) over the resident size just
before the step. Times are the minimum over ``--repeats`` processes; memory the range.
Agreement: each pytorch-ood method's scores against oodscore's (ours = −theirs).
``--threads`` sets torch's thread count in every process: on a shared machine, parallel
regions wait for threads that other jobs hold (a 2,000 × 256 call took 0.12 s with 2 threads
under load and 0.005 s with 1), so a loaded machine is best measured with ``--threads 1``.

The goal (issue): shaping costs little over the head's matrix product, which dominates
(N·C·D multiply-adds); DICE's product is the same size, ReAct's clip one pass, ASH's and
SCALE's top-k one more.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import import_pytorch_ood, measure_step

MB = 1e6
OURS = ["energy", "react", "ash-s", "ash-p", "ash-b", "scale", "dice"]
PERCENTILE = {"react": 90, "ash-s": 90, "ash-p": 90, "ash-b": 90, "scale": 85, "dice": 90}
PEER_ELEMENTS = 1 << 26
"""Floats in pytorch-ood DICE's (B, C, D) vote tensor per batch (256 MiB of float32)."""


# --- data --------------------------------------------------------------------------------


def make_data(folder: Path, *, rows: int, fit_rows: int, dim: int, classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)

    def features(n: int) -> np.ndarray:
        out = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, 4096):  # chunked: no float64 temporaries of the whole set
            stop = min(start + 4096, n)
            block = rng.standard_normal((stop - start, dim), dtype=np.float32)
            np.maximum(block, 0.0, out=block)
            block *= rng.uniform(0.5, 2.0, size=(stop - start, 1)).astype(np.float32)
            out[start:stop] = block
        return out

    arrays = {
        "queries": features(rows),
        "fit": features(fit_rows),
        "weight": (0.02 * rng.standard_normal((classes, dim))).astype(np.float32),
        "bias": (0.1 * rng.standard_normal(classes)).astype(np.float32),
    }
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)


# --- the methods -------------------------------------------------------------------------

Fit = Callable[[np.ndarray], Any]
Score = Callable[[Any, np.ndarray], np.ndarray]


def oodscore_method(name: str, weight: np.ndarray, bias: np.ndarray) -> tuple[Fit | None, Score]:
    import torch

    from oodscore import Energy
    from oodscore.scorers.ash import ASH, SCALE
    from oodscore.scorers.dice import DICE
    from oodscore.scorers.react import ReAct

    w, b = torch.from_numpy(weight), torch.from_numpy(bias)
    if name == "energy":
        energy = Energy()

        def plain(_: Any, x: np.ndarray) -> np.ndarray:
            logits = torch.nn.functional.linear(torch.from_numpy(x), w, b)
            return energy(logits).numpy()

        return None, plain
    p = PERCENTILE[name]
    scorer: Any
    if name == "react":
        scorer = ReAct(percentile=p, weight=w, bias=b)
    elif name == "dice":
        scorer = DICE(percentile=p, weight=w, bias=b)
    elif name == "scale":
        scorer = SCALE(percentile=p, weight=w, bias=b)
    else:
        scorer = ASH(variant=name[-1], percentile=p, weight=w, bias=b)

    def score(model: Any, x: np.ndarray) -> np.ndarray:
        return (model or scorer)(torch.from_numpy(x)).numpy()

    if name in ("react", "dice"):
        return (lambda fit: scorer.fit(torch.from_numpy(fit))), score
    return None, score


def pytorch_ood_method(
    name: str, weight: np.ndarray, bias: np.ndarray, batch: int
) -> tuple[Fit | None, Score]:
    import torch

    w, b = torch.from_numpy(weight), torch.from_numpy(bias)

    def head(z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(z.flatten(1), w, b)

    def batched(predict: Callable[[torch.Tensor], torch.Tensor], rows: int) -> Score:
        def score(_: Any, x: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(x)
            with torch.no_grad():
                parts = [-predict(t[i : i + rows]) for i in range(0, len(t), rows)]
            return torch.cat(parts).numpy()

        return score

    method = name.removeprefix("pytorch-ood/")
    no_labels = torch.zeros  # pytorch-ood drops labels < 0; all fit rows are ID
    if method == "energy":
        energy = import_pytorch_ood("energy").EnergyBased
        return None, batched(lambda x: energy.score(head(x)), batch)
    p = PERCENTILE[method] / 100
    if method == "react":
        react = import_pytorch_ood("react").ReAct(None, head, percentile=p)

        def fit_react(fit: np.ndarray) -> Any:
            f = torch.from_numpy(fit)
            return react.fit_feature_maps(f, no_labels(len(f), dtype=torch.long))

        return fit_react, batched(react.predict_feature_maps, batch)
    if method == "dice":
        dice = import_pytorch_ood("dice").DICE(None, w, b, p=p)
        rows = max(1, min(batch, PEER_ELEMENTS // weight.size))

        def fit_dice(fit: np.ndarray) -> Any:
            f = torch.from_numpy(fit)
            return dice.fit_features(f, no_labels(len(f), dtype=torch.long))

        return fit_dice, batched(dice.predict_features, rows)
    if method == "scale":
        detector = import_pytorch_ood("scale").SCALE(None, head, percentile=p)
    else:
        variant = f"ash-{method[-1]}"
        detector = import_pytorch_ood("ash").ASH(None, head, variant=variant, percentile=p)
    return None, batched(lambda x: detector.predict_feature_maps(x[:, :, None, None]), batch)


# --- one measurement (child process) -----------------------------------------------------


def child(
    name: str, folder: Path, scores_out: Path | None, peer_batch: int, threads: int | None
) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)

    weight, bias = np.load(folder / "weight.npy"), np.load(folder / "bias.npy")
    queries, fit_rows = np.load(folder / "queries.npy"), np.load(folder / "fit.npy")
    if name.startswith("pytorch-ood/"):
        fit, score = pytorch_ood_method(name, weight, bias, peer_batch)
    else:
        fit, score = oodscore_method(name, weight, bias)
    model = fit(fit_rows[:512]) if fit is not None else None
    score(model, queries[:512])  # warm-up (DICE: computes and caches the masked head)
    fit_s = fit_peak = 0.0
    if fit is not None:
        model, fit_s, fit_peak = measure_step(lambda: fit(fit_rows))
        score(model, queries[:512])
    scores, score_s, score_peak = measure_step(lambda: score(model, queries))
    if scores_out is not None:
        np.save(scores_out, np.asarray(scores, dtype=np.float64))
    info = {
        "fit_s": fit_s,
        "score_s": score_s,
        "fit_peak": fit_peak,
        "score_peak": score_peak,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(info))


# --- the parent --------------------------------------------------------------------------


def run_child(
    name: str, folder: Path, scores_out: Path | None, args: argparse.Namespace
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", name, "--data", str(folder)]
    command += ["--peer-batch", str(args.peer_batch)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if scores_out is not None:
        command += ["--scores-out", str(scores_out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def fmt_mb(n_bytes: float) -> str:
    return f"{n_bytes / MB:.1f}"


def fmt_range(values: list[float]) -> str:
    low, high = fmt_mb(min(values)), fmt_mb(max(values))
    return low if low == high else f"{low}–{high}"


def max_relative(folder: Path, ours: str, theirs: str) -> str:
    a = np.load(folder / f"scores-{ours}.npy")
    b = np.load(folder / f"scores-{theirs.replace('/', '-')}.npy")
    scale = np.maximum(np.abs(a), 1e-30)
    return f"{np.max(np.abs(a - b) / scale):.1e}"


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]], folder: Path) -> str:
    from common import markdown_table

    best = {name: min(r["score_s"] for r in results) for name, results in runs.items()}
    base = best.get("energy")
    rows = []
    for name in [m for m in OURS if m in runs]:
        results = runs[name]
        peer = f"pytorch-ood/{name}"
        row = [
            f"`{name}`",
            f"{best[name]:.3f}",
            f"{best[name] / base:.2f}×" if base else "–",
            fmt_range([r["score_peak"] for r in results]),
            f"{min(r['fit_s'] for r in results):.3f}" if name in ("react", "dice") else "–",
        ]
        if peer in runs:
            row += [
                f"{best[peer]:.3f}",
                fmt_range([r["score_peak"] for r in runs[peer]]),
                max_relative(folder, name, peer),
            ]
        else:
            row += ["–", "–", "–"]
        rows.append(row)
    n, d, c = args.rows, args.dim, args.classes
    table = markdown_table(
        [
            "method",
            "score (s)",
            "over `energy`",
            "score peak (MB), min–max",
            "fit (s)",
            "pytorch-ood score (s)",
            "pytorch-ood peak (MB)",
            "max rel. diff",
        ],
        rows,
    )
    medians = ", ".join(
        f"`{k}` {statistics.median(r['score_s'] for r in v):.3f}" for k, v in runs.items()
    )
    threads = sorted({r["threads"] for v in runs.values() for r in v})
    lines = [
        f"Data: {n:,} post-ReLU features × {d} float32, a {c}-class head, {args.fit_rows:,} "
        f"fit rows (ReAct's percentile, DICE's mean), seed {args.seed}. Each method runs in a "
        f"fresh process per repeat ({args.repeats} repeats, round-robin; pytorch-ood in the "
        f"first {min(args.peer_repeats, args.repeats)}); times are the "
        "minimum over repeats, memory the range of the peak RSS over the RSS before the step "
        f"(the data loaded before). torch threads: {threads}. pytorch-ood scores batches of "
        f"{args.peer_batch} rows (DICE: {max(1, min(args.peer_batch, PEER_ELEMENTS // (c * d)))}, "
        "its (B, C, D) vote tensor capped at 2^26 floats).",
        "",
        table,
        "",
        f"Medians of the scoring time: {medians}.",
        "",
        f"Sizes: the features {fmt_mb(n * d * 4)} MB, their logits {fmt_mb(n * c * 4)} MB, "
        f"the head {fmt_mb(c * d * 4)} MB (float32).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--fit-rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", choices=OURS, default=OURS)
    parser.add_argument("--peer-batch", type=int, default=256)
    parser.add_argument(
        "--peer-repeats",
        type=int,
        default=1,
        help="run pytorch-ood in the first N repeats only (its DICE takes minutes per call)",
    )
    parser.add_argument(
        "--threads", type=int, help="torch threads in each process (default: torch's own)"
    )
    parser.add_argument("--no-peers", action="store_true", help="skip pytorch-ood")
    parser.add_argument("--quick", action="store_true", help="smoke run (2,000 × 256, 100 classes)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/shaping.md"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scores-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.scores_out, args.peer_batch, args.threads)
        return
    if args.quick:
        args.rows, args.dim, args.classes, args.fit_rows, args.repeats = 2000, 256, 100, 1000, 2

    methods = list(dict.fromkeys(["energy", *args.methods]))
    names = list(methods)
    if not args.no_peers and importlib.util.find_spec("pytorch_ood") is not None:
        names += [f"pytorch-ood/{m}" for m in methods]
    with tempfile.TemporaryDirectory(prefix="bench-shaping-") as tmp:
        folder = Path(tmp)
        make_data(
            folder,
            rows=args.rows,
            fit_rows=args.fit_rows,
            dim=args.dim,
            classes=args.classes,
            seed=args.seed,
        )
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for repeat in range(args.repeats):
            for name in names:
                if name.startswith("pytorch-ood/") and repeat >= args.peer_repeats:
                    continue
                out = folder / f"scores-{name.replace('/', '-')}.npy" if repeat == 0 else None
                result = run_child(name, folder, out, args)
                runs[name].append(result)
                print(
                    f"repeat {repeat + 1}/{args.repeats} {name}: score {result['score_s']:.3f} s, "
                    f"peak {fmt_mb(result['score_peak'])} MB",
                    file=sys.stderr,
                )
        body = report(args, runs, folder)

    from common import write_results

    command = "python benchmarks/bench_shaping.py " + " ".join(sys.argv[1:])
    title = (
        f"Activation shaping on {args.rows:,} × {args.dim} float32 features, {args.classes} classes"
    )
    write_results(args.output, title=title, command=command.strip(), body=body)
    print(args.output.read_text())


if __name__ == "__main__":
    main()
