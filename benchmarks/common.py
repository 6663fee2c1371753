"""Reusable parts of the quality benchmarks: small models, a seeded training loop, logits.

Everything runs on CPU in seconds on scikit-learn's 8×8 digits (``oodscore.data``):

- :class:`MLP` and :class:`SmallCNN` expose ``forward_features`` (penultimate features) next to
  ``forward`` (logits), so feature-based regularizers and scorers get both from one pass.
- :func:`train` is a seeded mini-batch loop: a task loss on the ID batch plus an optional
  regularizer callback that receives a :class:`Batch` (ID and auxiliary-outlier logits and
  features, ID targets, the epoch) and returns the term to add. Calling it again on a trained
  model fine-tunes it (the energy and outlier-exposure papers fine-tune a pretrained net).
- :func:`collect` runs a model over a tensor in evaluation mode and returns logits and features.
- :func:`ood_report` turns ID/OOD scores into the metrics of ``oodscore.metrics.ood_metrics``;
  :func:`mean_std`, :func:`markdown_table`, :func:`machine_description` and
  :func:`write_results` format the committed tables.

Example (a regularized fine-tuning step in four lines)::

    from oodscore import EnergyMarginLoss
    reg = EnergyMarginLoss()
    train(model, x, y, epochs=5, outliers=x_aux,
          regularizer=lambda b: reg(logits_in=b.logits_in, logits_out=b.logits_out))
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

TaskLoss = Callable[[Tensor, Tensor], Tensor]
"""``task_loss(logits_in, targets_in) -> scalar``; cross-entropy by default."""


@dataclass(frozen=True)
class Batch:
    """What a regularizer callback sees at one training step.

    ``*_out`` fields are ``None`` when :func:`train` runs without auxiliary outliers.
    Logits and features carry the autograd graph of the current step.
    """

    inputs_in: Tensor
    targets_in: Tensor
    logits_in: Tensor
    features_in: Tensor
    inputs_out: Tensor | None
    logits_out: Tensor | None
    features_out: Tensor | None
    epoch: int
    step: int


RegularizerCallback = Callable[[Batch], Tensor]
"""``callback(batch) -> scalar`` term added to the task loss."""


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - legacy global state some libraries still read
    torch.manual_seed(seed)


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads (default: ``OODSCORE_BENCH_THREADS`` or 1); return it.

    Tiny models train fastest on one thread, and one thread keeps timings comparable when
    other work shares the machine.
    """
    n = num_threads or int(os.environ.get("OODSCORE_BENCH_THREADS", "1"))
    torch.set_num_threads(n)
    return n


class MLP(nn.Module):
    """Fully connected ReLU network on flattened inputs.

    Args:
        in_features: Size of a flattened input (64 for 8×8 digits).
        num_outputs: Number of logits.
        hidden: Widths of the hidden layers; the last one is the feature dimension.
    """

    def __init__(
        self, in_features: int = 64, num_outputs: int = 6, *, hidden: Sequence[int] = (128, 128)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.body = nn.Sequential(nn.Flatten(), *layers)
        self.head = nn.Linear(width, num_outputs)
        self.feature_dim = width

    def forward_features(self, x: Tensor) -> Tensor:
        """Penultimate features (N, D), after the last ReLU."""
        out: Tensor = self.body(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_outputs)."""
        out: Tensor = self.head(self.forward_features(x))
        return out


class SmallCNN(nn.Module):
    """Two 3×3 conv blocks, global average pooling and a linear head, for (N, H, W) images.

    Args:
        num_outputs: Number of logits.
        channels: Channels of the two conv blocks; the second is the feature dimension.
    """

    def __init__(self, num_outputs: int = 6, *, channels: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        c1, c2 = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(c2, num_outputs)
        self.feature_dim = c2

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled penultimate features (N, D)."""
        if x.ndim == 3:
            x = x.unsqueeze(1)
        out: Tensor = self.body(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_outputs)."""
        out: Tensor = self.head(self.forward_features(x))
        return out


def _features_and_logits(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    forward_features = getattr(model, "forward_features", None)
    head = getattr(model, "head", None)
    if forward_features is None or head is None:
        logits = model(x)
        return logits, logits
    features = forward_features(x)
    return features, head(features)


def train(
    model: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 5e-4,
    outliers: Tensor | None = None,
    outlier_batch_size: int | None = None,
    regularizer: RegularizerCallback | None = None,
    task_loss: TaskLoss = F.cross_entropy,
    seed: int = 0,
) -> list[float]:
    """Train ``model`` in place with Adam; return the mean total loss of each epoch.

    Each step draws an ID batch (a seeded shuffle per epoch) and, when ``outliers`` are
    given, an outlier batch drawn at random from them (``outlier_batch_size``, default
    twice ``batch_size`` as in the energy and OE fine-tuning scripts). ID and outliers go
    through the model in one forward pass (as in the official scripts); the loss is
    ``task_loss(logits_in, targets_in) + regularizer(batch)``.

    Args:
        model: A module with ``forward``; if it also has ``forward_features`` and ``head``,
            the callback sees penultimate features, otherwise features are the logits.
        x_train: ID inputs (N, ...).
        y_train: ID targets (class indices or multi-hot), passed to ``task_loss``.
        epochs: Passes over the ID data.
        batch_size: ID examples per step.
        lr: Adam learning rate.
        weight_decay: Adam (L2) weight decay.
        outliers: Auxiliary outlier inputs (M, ...) or ``None``.
        outlier_batch_size: Outliers per step.
        regularizer: Callback returning the term added to the task loss.
        task_loss: ``(logits_in, targets_in) -> scalar``.
        seed: Seeds the initialization-independent randomness (shuffles, outlier draws).
    """
    if outliers is not None and len(outliers) == 0:
        raise ValueError("Expected `outliers` to hold at least one example, got an empty tensor.")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    out_size = outlier_batch_size or 2 * batch_size
    history: list[float] = []
    step = 0
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(x_train), batch_size):
            idx = order[start : start + batch_size]
            inputs_in, targets_in = x_train[idx], y_train[idx]
            inputs_out = None
            if outliers is not None:
                pick = torch.randint(len(outliers), (out_size,), generator=generator)
                inputs_out = outliers[pick]
                features, logits = _features_and_logits(model, torch.cat([inputs_in, inputs_out]))
                n = len(inputs_in)
                features_in, features_out = features[:n], features[n:]
                logits_in, logits_out = logits[:n], logits[n:]
            else:
                features_in, logits_in = _features_and_logits(model, inputs_in)
                features_out = logits_out = None
            loss = task_loss(logits_in, targets_in)
            if regularizer is not None:
                batch = Batch(
                    inputs_in=inputs_in,
                    targets_in=targets_in,
                    logits_in=logits_in,
                    features_in=features_in,
                    inputs_out=inputs_out,
                    logits_out=logits_out,
                    features_out=features_out,
                    epoch=epoch,
                    step=step,
                )
                loss = loss + regularizer(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            step += 1
        history.append(total / max(count, 1))
    model.eval()
    return history


@torch.no_grad()
def collect(model: nn.Module, x: Tensor, *, batch_size: int = 2048) -> tuple[Tensor, Tensor]:
    """Logits and penultimate features of ``model`` on ``x``, in evaluation mode."""
    was_training = model.training
    model.eval()
    logits, features = [], []
    for start in range(0, len(x), batch_size):
        f, z = _features_and_logits(model, x[start : start + batch_size])
        features.append(f)
        logits.append(z)
    model.train(was_training)
    return torch.cat(logits), torch.cat(features)


def collect_logits(model: nn.Module, x: Tensor, *, batch_size: int = 2048) -> Tensor:
    """Logits of ``model`` on ``x``, in evaluation mode."""
    return collect(model, x, batch_size=batch_size)[0]


def long_tailed(
    x: Tensor, y: Tensor, *, imbalance_ratio: float, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Subsample classes exponentially (CIFAR-LT style): class c keeps n_max·ρ^(-c/(C-1)).

    Class 0 keeps all its examples, the last class ``1/imbalance_ratio`` of the largest
    class count (at least one example).
    """
    classes = int(y.max()) + 1
    n_max = int(torch.bincount(y, minlength=classes).max())
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for c in range(classes):
        members = torch.nonzero(y == c).flatten()
        share = imbalance_ratio ** (-c / max(classes - 1, 1))
        n_keep = max(1, min(len(members), round(n_max * share)))
        keep.append(members[torch.randperm(len(members), generator=generator)[:n_keep]])
    index = torch.cat(keep)
    index = index[torch.randperm(len(index), generator=generator)]
    return x[index], y[index]


def ood_report(id_scores: Tensor, ood_scores: Tensor) -> dict[str, float]:
    """AUROC, FPR at 95% TPR and AUPR of scores where higher means in-distribution.

    Uses ``oodscore.metrics.ood_metrics`` (exact FPR at the first TPR >= 95%, ID positive).
    """
    from oodscore.metrics import ood_metrics  # the one call the benchmarks depend on

    return {k: float(v) for k, v in ood_metrics(id_scores, ood_scores).items()}


def ood_results(
    id_logits: Tensor,
    ood_logits: dict[str, Tensor],
    scorers: dict[str, Callable[[Tensor], Tensor]],
) -> dict[str, float]:
    """FPR95 and AUROC of every scorer on every OOD set, keyed ``"{scorer}/{set}/{metric}"``."""
    out: dict[str, float] = {}
    for score_name, scorer in scorers.items():
        id_scores = scorer(id_logits)
        for ood, logits in ood_logits.items():
            metrics = ood_report(id_scores, scorer(logits))
            out[f"{score_name}/{ood}/fpr95"] = metrics["fpr95"]
            out[f"{score_name}/{ood}/auroc"] = metrics["auroc"]
    return out


def mean_std(values: Sequence[float], *, scale: float = 100.0, digits: int = 1) -> str:
    """``"mean ± std"`` (sample std, ddof=1) of ``values`` × ``scale``, e.g. percentages."""
    arr = np.asarray(values, dtype=np.float64) * scale
    std = float(arr.std(ddof=1)) if len(arr) > 1 else math.nan
    return f"{arr.mean():.{digits}f} ± {std:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_description() -> str:
    """CPU count, platform, Python and torch versions and torch's thread count."""
    return (
        f"{os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s); no GPU"
    )


def write_results(path: str | Path, *, title: str, command: str, body: str) -> Path:
    """Write a results table with its command, machine and UTC date; return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"# {title}\n\nCommand: `{command}`\n\nMachine: {machine_description()}. Date: {date}.\n\n"
    )
    target.write_text(header + body.rstrip() + "\n")
    return target


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall time of ``repeats`` calls of ``fn`` after one warm-up call, in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def interleaved_times(
    calls: dict[str, Callable[[], object]], rounds: int, *, seed: int = 0, warm_up: bool = True
) -> dict[str, list[float]]:
    """Seconds of each call in each of ``rounds`` rounds, in a new shuffled order every round.

    Taking turns spreads the load of other jobs on a shared machine over every call alike;
    compare calls by the median over rounds of their ratio within a round.
    """
    if warm_up:
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {label: [] for label in calls}
    order = list(calls)
    shuffler = random.Random(seed)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for label in order:
            start = time.perf_counter()
            calls[label]()
            times[label].append(time.perf_counter() - start)
    return times
