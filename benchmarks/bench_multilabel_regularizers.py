"""Evidence for SR/SROE (single-label) and EDGE (multi-label) on scikit-learn's real 8×8 digits.

Usage:
    python benchmarks/bench_multilabel_regularizers.py [--seeds 0 1 2]
        [--output benchmarks/results/multilabel_regularizers.md]

(a) Single-label, ID = digits 0-5 (``load_digits_split``). Auxiliary outliers: digits 6-7;
    test OOD: digits 8-9 (never seen in training) and the ID test digits inverted (1 - x).
    An MLP is pretrained with cross-entropy, then each arm fine-tunes a copy of it (the SR
    paper fine-tunes a pretrained net, ``tune.py``): plain CE, CE + SR (alpha 0.02), CE + OE
    (0.5), CE + SROE (SR over ID and outlier rows + 0.5 OE). Score: energy (logsumexp).
(b) Multi-label, 2×2 composites (``make_composites``): ID composites of digits 0-5 with
    multi-hot labels; auxiliary outliers: composites of digits 6-7; test OOD: composites of
    8-9. An MLP is trained from scratch with BCE, BCE + multi-label OE (BCE of outliers toward
    all-zero labels, weight 1 = EDGE's L_conf alone) or EDGE (official alpha 1, beta 0.1,
    m 1, k 50 with 64 ID + 64 outliers per step, as in ``weg.py``; tau = 1/5 of the epochs,
    the official 50 of 250). Score: JointEnergy. ID quality: mAP on the ID test composites.
(c) EDGE's OE-set selection: the dilation distance (k = 32) between the ID features of the
    BCE model and each candidate auxiliary set, next to the FPR95 that EDGE reaches when
    trained with that set.

Every number is a mean ± sample std over seeds (each seed changes the data split, the
composites, the initialization and the batches).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from sklearn.metrics import average_precision_score
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    MLP,
    Batch,
    collect,
    configure_threads,
    markdown_table,
    mean_std,
    ood_report,
    set_seed,
    train,
    write_results,
)

from oodscore import (
    EDGELoss,
    Energy,
    JointEnergy,
    SparsityLoss,
    dilation_distance,
    get_regularizer,
)
from oodscore.data import load_digits_split, make_composites
from oodscore.functional import edge_gap_loss

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "multilabel_regularizers.md"
ID_CLASSES = (0, 1, 2, 3, 4, 5)


def pick(split_x: Tensor, split_y: Tensor, digits: tuple[int, ...]) -> Tensor:
    mask = torch.zeros(len(split_y), dtype=torch.bool)
    for d in digits:
        mask |= split_y == d
    return split_x[mask]


# --------------------------------------------------------------------------- (a) SR / SROE


def single_label(seed: int, *, pretrain_epochs: int, tune_epochs: int) -> dict[str, dict]:
    split = load_digits_split(ID_CLASSES, seed=seed)
    aux = pick(split.x_ood, split.y_ood, (6, 7))
    test_ood = {"digits 8-9": pick(split.x_ood, split.y_ood, (8, 9)), "inverted": 1 - split.x_test}
    set_seed(seed)
    base = MLP(64, len(ID_CLASSES))
    train(base, split.x_train, split.y_train, epochs=pretrain_epochs, seed=seed)

    sparsity = SparsityLoss()  # alpha = 0.02 (tune.py)
    oe = get_regularizer("outlier_exposure")  # 0.5 (tune.py --beta, energy_ood --score OE)
    arms: dict[str, tuple[Callable[[Batch], Tensor] | None, bool]] = {
        "plain (CE fine-tune)": (None, False),
        "SR": (lambda b: sparsity(features_in=b.features_in), False),
        "OE": (lambda b: oe(logits_out=b.logits_out), True),
        "SROE": (
            lambda b: (
                sparsity(features_in=b.features_in, features_out=b.features_out)
                + oe(logits_out=b.logits_out)
            ),
            True,
        ),
    }
    results: dict[str, dict] = {}
    energy = Energy()
    for name, (reg, needs_outliers) in arms.items():
        model = copy.deepcopy(base)
        train(
            model,
            split.x_train,
            split.y_train,
            epochs=tune_epochs,
            outliers=aux if needs_outliers else None,
            regularizer=reg,
            seed=seed + 1000,
        )
        logits_id, features_id = collect(model, split.x_test)
        accuracy = float((logits_id.argmax(1) == split.y_test).float().mean())
        row: dict[str, float] = {"accuracy": accuracy}
        row["l1"] = float(features_id.abs().sum(1).mean())
        row["active"] = float((features_id > 0).float().mean())
        for ood_name, x_ood in test_ood.items():
            logits_ood, _ = collect(model, x_ood)
            metrics = ood_report(energy(logits_id), energy(logits_ood))
            row[f"{ood_name} fpr95"] = metrics["fpr95"]
            row[f"{ood_name} auroc"] = metrics["auroc"]
        results[name] = row
    return results


# --------------------------------------------------------------------------- (b) EDGE


def composites(seed: int, *, n_train: int, n_test: int) -> dict[str, Tensor]:
    split = load_digits_split(ID_CLASSES, seed=seed)
    c = len(ID_CLASSES)
    x_train, y_train = make_composites(
        split.x_train, split.y_train, n_train, num_classes=c, seed=seed
    )
    x_test, y_test = make_composites(
        split.x_test, split.y_test, n_test, num_classes=c, seed=seed + 1
    )
    x67 = pick(split.x_ood, split.y_ood, (6, 7))
    x89 = pick(split.x_ood, split.y_ood, (8, 9))
    dummy67 = torch.zeros(len(x67), dtype=torch.int64)
    dummy89 = torch.zeros(len(x89), dtype=torch.int64)
    aux, _ = make_composites(x67, dummy67, n_train, num_classes=0, seed=seed + 2)
    ood, _ = make_composites(x89, dummy89, n_test, num_classes=0, seed=seed + 3)
    inverted, _ = make_composites(
        1 - split.x_train, split.y_train, n_train, num_classes=0, seed=seed + 4
    )
    generator = torch.Generator().manual_seed(seed + 5)
    noise = torch.rand(n_train, 16, 16, generator=generator)
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "aux 6-7": aux,
        "aux inverted 0-5": inverted,
        "aux uniform noise": noise,
        "ood 8-9": ood,
    }


def train_multilabel(
    data: dict[str, Tensor],
    seed: int,
    *,
    epochs: int,
    arm: str,
    aux_key: str = "aux 6-7",
    gaps: dict[str, list[float]] | None = None,
) -> MLP:
    """Train one arm; for EDGE arms, ``gaps`` collects the unweighted L_gap per step of the
    first epoch with the gap term on ("first") and of the last epoch ("last")."""
    gaps = {"first": [], "last": []} if gaps is None else gaps
    set_seed(seed)
    model = MLP(256, len(ID_CLASSES))
    start_epoch = max(1, epochs // 5)  # weg.py: --start_epoch 50 of --n_epoch 250
    margin = 10.0 if "margin 10" in arm else 1.0
    edge = EDGELoss(start_epoch=start_epoch, margin=margin)
    oe = get_regularizer("outlier_exposure", target="zeros", weight=1.0)
    reg: Callable[[Batch], Tensor] | None
    if arm == "BCE":
        reg = None
    elif arm == "BCE + OE (multi-label)":
        reg = lambda b: oe(logits_out=b.logits_out)  # noqa: E731
    else:

        def reg(b: Batch) -> Tensor:
            when = {start_epoch: "first", epochs - 1: "last"}.get(b.epoch)
            if when is not None:  # diagnostics: is the hinge still active?
                with torch.no_grad():
                    gap = edge_gap_loss(b.logits_in, b.logits_out, margin=margin, tail_size=50)
                gaps[when].append(float(gap))
            return edge(logits_in=b.logits_in, logits_out=b.logits_out, epoch=b.epoch)

    train(
        model,
        data["x_train"],
        data["y_train"],
        epochs=epochs,
        batch_size=64,
        outliers=None if reg is None else data[aux_key],
        outlier_batch_size=64,
        regularizer=reg,
        task_loss=F.binary_cross_entropy_with_logits,
        seed=seed,
    )
    return model


def evaluate_multilabel(model: MLP, data: dict[str, Tensor]) -> dict[str, float]:
    logits_id, _ = collect(model, data["x_test"])
    logits_ood, _ = collect(model, data["ood 8-9"])
    score = JointEnergy()
    metrics = ood_report(score(logits_id), score(logits_ood))
    mean_ap = average_precision_score(
        data["y_test"].numpy(), torch.sigmoid(logits_id).numpy(), average="macro"
    )
    return {"fpr95": metrics["fpr95"], "auroc": metrics["auroc"], "map": float(mean_ap)}


# --------------------------------------------------------------------------- report


def summarize(
    per_seed: list[dict[str, dict]],
    columns: list[tuple[str, str, float]],
    *,
    first: str = "method",
) -> str:
    rows = []
    for arm in per_seed[0]:
        cells: list[object] = [arm]
        for key, _, scale in columns:
            values = [result[arm][key] for result in per_seed]
            if all(np.isnan(values)):
                cells.append("–")
                continue
            cells.append(mean_std(values, scale=scale, digits=1 if scale == 100 else 2))
        rows.append(cells)
    return markdown_table([first, *[title for _, title, _ in columns]], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--tune-epochs", type=int, default=10)
    parser.add_argument("--ml-epochs", type=int, default=30)
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    threads = configure_threads()
    started = time.perf_counter()

    single = [
        single_label(s, pretrain_epochs=args.pretrain_epochs, tune_epochs=args.tune_epochs)
        for s in args.seeds
    ]
    print(f"(a) done in {time.perf_counter() - started:.0f} s", flush=True)

    arms = ["BCE", "BCE + OE (multi-label)", "EDGE", "EDGE, margin 10 (not official)"]
    multi: list[dict[str, dict]] = []
    selection: list[dict[str, dict]] = []
    for seed in args.seeds:
        data = composites(seed, n_train=args.n_train, n_test=args.n_test)
        gaps = {arm: {"first": [], "last": []} for arm in arms}
        models = {
            arm: train_multilabel(data, seed, epochs=args.ml_epochs, arm=arm, gaps=gaps[arm])
            for arm in arms
        }
        multi.append({arm: evaluate_multilabel(m, data) for arm, m in models.items()})
        for arm in arms:
            for when in ("first", "last"):
                steps = gaps[arm][when]
                multi[-1][arm][f"gap {when}"] = float(np.mean(steps)) if steps else float("nan")
        _, features_id = collect(models["BCE"], data["x_train"])
        chosen: dict[str, dict] = {}
        for key in ("aux 6-7", "aux inverted 0-5", "aux uniform noise"):
            _, features_aux = collect(models["BCE"], data[key])
            distance = float(dilation_distance(features_id, features_aux, k=32))
            if key == "aux 6-7":
                edge_model = models["EDGE"]
            else:
                edge_model = train_multilabel(
                    data, seed, epochs=args.ml_epochs, arm="EDGE", aux_key=key
                )
            chosen[key.removeprefix("aux ")] = {
                "distance": distance,
                **evaluate_multilabel(edge_model, data),
            }
        selection.append(chosen)
        print(f"(b, c) seed {seed} done at {time.perf_counter() - started:.0f} s", flush=True)
    elapsed = time.perf_counter() - started

    pct = 100.0
    table_a = summarize(
        single,
        [
            ("accuracy", "ID acc. %", pct),
            ("digits 8-9 fpr95", "FPR95 % (8-9) ↓", pct),
            ("digits 8-9 auroc", "AUROC % (8-9) ↑", pct),
            ("inverted fpr95", "FPR95 % (inverted) ↓", pct),
            ("inverted auroc", "AUROC % (inverted) ↑", pct),
            ("l1", "mean ‖h‖₁ (ID test)", 1.0),
            ("active", "active units %", pct),
        ],
    )
    table_b = summarize(
        multi,
        [
            ("map", "ID mAP %", pct),
            ("fpr95", "FPR95 % (8-9 composites) ↓", pct),
            ("auroc", "AUROC % (8-9 composites) ↑", pct),
            ("gap first", "L_gap at epoch tau", 1.0),
            ("gap last", "L_gap, last epoch", 1.0),
        ],
    )
    table_c = summarize(
        selection,
        [
            ("distance", "dilation distance (k=32) to ID", 1.0),
            ("fpr95", "EDGE FPR95 % ↓", pct),
            ("auroc", "EDGE AUROC % ↑", pct),
            ("map", "EDGE ID mAP %", pct),
        ],
        first="auxiliary set",
    )
    seeds = " ".join(map(str, args.seeds))
    command = f"python benchmarks/bench_multilabel_regularizers.py --seeds {seeds}"
    defaults = (
        args.pretrain_epochs == 30
        and args.tune_epochs == 10
        and args.ml_epochs == 30
        and args.n_train == 3000
        and args.n_test == 1000
    )
    if not defaults:
        command += (
            f" --pretrain-epochs {args.pretrain_epochs} --tune-epochs {args.tune_epochs}"
            f" --ml-epochs {args.ml_epochs} --n-train {args.n_train} --n-test {args.n_test}"
        )
    body = RESULTS_TEXT.format(
        seeds=len(args.seeds),
        threads=threads,
        elapsed=elapsed,
        pretrain=args.pretrain_epochs,
        tune=args.tune_epochs,
        ml_epochs=args.ml_epochs,
        tau=max(1, args.ml_epochs // 5),
        n_train=args.n_train,
        n_test=args.n_test,
        table_a=table_a,
        table_b=table_b,
        table_c=table_c,
    )
    path = write_results(
        args.output,
        title="SR / SROE and EDGE on real digits (CPU, short runs)",
        command=command,
        body=body,
    )
    print(body)
    print(f"written to {path}")


RESULTS_TEXT = """\
Mean ± sample std over {seeds} seeds; each seed re-draws the ID train/test split, the
composites, the initialization and the batches. Metrics: `oodscore.metrics.ood_metrics`
(ID positive, FPR at the first threshold with TPR ≥ 95%). Wall time of the whole run:
{elapsed:.0f} s on {threads} torch thread(s), while other CPU-heavy jobs shared the machine
(quality numbers do not depend on timing).

## (a) SR and SROE on single-label digits (ID 0-5), energy score

MLP 64-128-128-6 (features = the 128 post-ReLU units feeding the linear head), pretrained
{pretrain} epochs with cross-entropy (Adam, lr 1e-3), then each arm fine-tunes a copy for {tune}
epochs (the SR recipe, `tune.py`, fine-tunes a pretrained net). Auxiliary outliers for OE and
SROE: digits 6-7 (128 per step); test OOD: digits 8-9 and the ID test digits inverted.
Official weights: SR alpha = 0.02, OE 0.5; SROE's L1 mean covers ID and outlier rows.

{table_a}

## (b) EDGE on multi-label 2×2 composites (ID digits 0-5), JointEnergy score

MLP 256-128-128-6 trained from scratch for {ml_epochs} epochs with BCE (Adam, lr 1e-3) on
{n_train} ID composites, 64 ID + 64 auxiliary composites of digits 6-7 per step (`weg.py`'s
batch sizes). EDGE: official alpha 1, beta 0.1, m 1, k 50; tau = {tau} (the official 50 of
250 epochs, scaled). "BCE + OE" is the multi-label OE (BCE of outliers toward all-zero labels,
weight 1), i.e. EDGE's L_conf without the gap term, so the difference between the OE row and
the EDGE row is the gap term alone. The last row raises the margin from 1 to 10 (not an official
value) to see what the gap term does when its hinge stays active. The L_gap columns are the
unweighted gap term (with the row's margin) averaged over the steps of the first epoch with
the term on and of the last epoch: 0 means every outlier already scores at least m below every
tail ID example of its batch. Test: {n_test} ID composites and {n_test} composites of 8-9.

{table_b}

## (c) EDGE's outlier-set selection: dilation distance vs. the FPR95 EDGE reaches

Dilation distance (k = 32) between the penultimate features of the BCE model on the ID
training composites and on each candidate auxiliary set; then EDGE is trained with that set
(same settings as (b)) and evaluated on the 8-9 composites. `rank_outlier_sets(...,
prefer="closest")` puts the smallest distance first.

{table_c}
"""


if __name__ == "__main__":
    main()
