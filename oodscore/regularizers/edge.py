r"""EDGE: energy distribution gap expansion for multi-label OOD, and its outlier-set selection."""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from oodscore._validation import check_float_matrix, check_int, check_non_negative
from oodscore.regularizers.base import Regularizer, check_logits_pair, register_regularizer


def edge_confidence_loss(logits_out: Tensor) -> Tensor:
    r"""$\mathcal{L}_{\text{conf}}$: BCE of outlier logits toward all-zero labels, mean over M·C.

    $-\log(1 - \sigma(f)) = \operatorname{softplus}(f)$, computed without overflow.
    """
    return F.softplus(logits_out).mean()


def edge_gap_loss(
    logits_in: Tensor, logits_out: Tensor, *, margin: float = 1.0, tail_size: int = 50
) -> Tensor:
    r"""$\mathcal{L}_{\text{gap}}$: hinge between each outlier and the k lowest-energy ID rows.

    $$ \frac{1}{M k} \sum_{j=1}^{M} \sum_{i \in \text{tail}_k}
       \max\left(0,\; S(x^{\text{out}}_j) - S(x^{\text{in}}_i) + m\right) $$

    with $S$ the JointEnergy $\sum_c \operatorname{softplus}(f_c)$ and
    $\text{tail}_k$ the ``min(tail_size, N)`` ID rows of lowest $S$. Gradients flow through
    both sides, as in the official code.
    """
    energy_in = F.softplus(logits_in).sum(dim=1)
    energy_out = F.softplus(logits_out).sum(dim=1)
    k = min(tail_size, energy_in.shape[0])
    tail = torch.topk(energy_in, k, largest=False, sorted=False).values
    return F.relu(energy_out[:, None] - tail[None, :] + margin).mean()


@register_regularizer("edge")
class EDGELoss(Regularizer):
    r"""EDGE, energy distribution gap expansion for multi-label OOD (Sun et al., AAAI 2025).

    From Sun, Xu, Wang, Yang & He, "EDGE: Unknown-aware multi-label learning by energy
    distribution gap expansion", AAAI 2025:

    $$ \mathcal{L} = \mathcal{L}_{\text{BCE}} + \alpha\,\mathcal{L}_{\text{conf}}
       + \beta(t)\,\mathcal{L}_{\text{gap}} $$

    This module returns $\alpha\,\mathcal{L}_{\text{conf}} + \beta(t)\,\mathcal{L}_{\text{gap}}$;
    the multi-label BCE task loss on the ID batch stays the user's. With $S(x) = \sum_c
    \operatorname{softplus}(f_c(x))$ the JointEnergy score (higher = more in-distribution):

    $$ \mathcal{L}_{\text{conf}} = \frac{1}{MC} \sum_{j=1}^{M}\sum_{c=1}^{C}
       -\log\bigl(1 - \sigma(f_c(x^{\text{out}}_j))\bigr), \qquad
       \mathcal{L}_{\text{gap}} = \frac{1}{Mk} \sum_{j=1}^{M} \sum_{i \in \text{tail}_k}
       \bigl[S(x^{\text{out}}_j) - S(x^{\text{in}}_i) + m\bigr]_+ $$

    $\mathcal{L}_{\text{conf}}$ pushes every label of an outlier toward "absent";
    $\mathcal{L}_{\text{gap}}$ asks each outlier to score at least $m$ below each of the
    $k$ ID examples of lowest JointEnergy in the batch (the "tail" ID samples, often those
    showing only minority classes). $\beta(t) = 0$ before epoch $\tau$ (``start_epoch``)
    and ``gap_weight`` from then on.

    Official code ``Yuchen-Sunflower/EDGE`` (``weg.py``, ``--score joint``), whose argparse
    defaults are used here: ``--alpha 1`` (``conf_weight``), ``--energy_beta 0.1``
    (``gap_weight``), ``--m 1`` (``margin``), ``--k 50`` (``tail_size``),
    ``--start_epoch 50`` (``start_epoch``, of ``--n_epoch 250``), with ID and outlier
    batches of 64. Faithful to that code: both means are plain means (over M·C entries and
    over the M·k pairs), nothing is detached (gradients reach the ID tail as well as the
    outliers), and the tail is taken per batch. Two deliberate differences: JointEnergy
    uses ``softplus`` where the code's ``log(1 + exp(f))`` overflows in float32 for
    $f \gtrsim 88$, and a batch with fewer than $k$ ID rows uses all of them (the code's
    ``topk`` would raise), so a short last batch does not stop training.

    Choose the auxiliary outlier set with `dilation_distance` /
    `rank_outlier_sets`; score test inputs with `oodscore.JointEnergy`.

    Args:
        conf_weight: $\alpha \ge 0$.
        gap_weight: $\beta \ge 0$, used from epoch ``start_epoch`` on.
        margin: $m$, the required JointEnergy gap (any finite number).
        tail_size: $k \ge 1$, ID rows of lowest JointEnergy per batch (clamped to N).
        start_epoch: $\tau \ge 0$, the first epoch (0-based, as ``range(n_epoch)`` counts)
            at which the gap term is on.

    Example:
        >>> import torch
        >>> from oodscore import EDGELoss
        >>> edge = EDGELoss(tail_size=2, start_epoch=1)
        >>> logits_in = torch.tensor([[4.0, -4.0], [3.0, 2.0], [-1.0, 1.0]])
        >>> logits_out = torch.tensor([[0.0, 0.0]])
        >>> edge(logits_in, logits_out, epoch=0)  # before start_epoch: L_conf only
        tensor(0.6931)
        >>> edge(logits_in, logits_out, epoch=1)  # + 0.1 * (relu(1 - 0.24) + relu(1 - 2.65)) / 2
        tensor(0.7311)
    """

    weight_names = ("conf_weight", "gap_weight")

    def __init__(
        self,
        *,
        conf_weight: float = 1.0,
        gap_weight: float = 0.1,
        margin: float = 1.0,
        tail_size: int = 50,
        start_epoch: int = 50,
    ) -> None:
        super().__init__()
        self.conf_weight = check_non_negative(conf_weight, "conf_weight")
        self.gap_weight = check_non_negative(gap_weight, "gap_weight")
        if (
            isinstance(margin, bool)
            or not isinstance(margin, Real)
            or not math.isfinite(float(margin))
        ):
            raise ValueError(f"Expected `margin` to be a finite number, got {margin!r}.")
        self.margin: float = float(margin)
        self.tail_size: int = check_int(tail_size, "tail_size")
        self.start_epoch: int = check_int(start_epoch, "start_epoch", minimum=0)

    def gap_weight_at(self, epoch: int) -> float:
        r"""$\beta(t)$: 0 before ``start_epoch``, ``gap_weight`` from then on."""
        return self.gap_weight if epoch >= self.start_epoch else 0.0

    def forward(self, logits_in: Tensor, logits_out: Tensor, epoch: int) -> Tensor:
        """The weighted EDGE terms at ``epoch``.

        Args:
            logits_in: Per-label logits of the ID batch (N, C), N >= 1.
            logits_out: Per-label logits of the auxiliary outliers (M, C), M >= 1.
            epoch: The current epoch (0-based), for the schedule of the gap term.

        Raises:
            ValueError: On empty batches, non-2-D or non-finite logits, different label
                counts, or a negative or non-integer ``epoch``. float16/bfloat16 logits are
                computed in float32.
            TypeError: If the logits are not floating-point tensors.
        """
        logits_in, logits_out = check_logits_pair(logits_in, logits_out)
        beta = self.gap_weight_at(check_int(epoch, "epoch", minimum=0))
        loss = self.conf_weight * edge_confidence_loss(logits_out)
        if beta > 0:
            gap = edge_gap_loss(
                logits_in,
                logits_out,
                margin=self.margin,
                tail_size=self.tail_size,
            )
            loss = loss + beta * gap
        return loss


def top_singular_values(features: Tensor, k: int) -> Tensor:
    r"""The k largest singular values of $H / \sqrt{N}$ for features $H$ of shape (N, D)."""
    scaled = features / features.shape[0] ** 0.5
    values: Tensor = torch.linalg.svdvals(scaled)
    return values[:k]


def dilation_distance(features_id: Tensor, features_out: Tensor, *, k: int = 32) -> Tensor:
    r"""EDGE's dilation distance between the spectra of ID and outlier features.

    $$ d_{\text{dilation}} = \bigl\lVert \Sigma^k_{\text{in}} - \Sigma^k_{\text{out}}
       \bigr\rVert_F = \Bigl(\sum_{i=1}^{k} (\sigma_i^{\text{in}} - \sigma_i^{\text{out}})^2
       \Bigr)^{1/2} $$

    where $\sigma_1 \ge \dots \ge \sigma_k$ are the top-k singular values of each
    feature matrix (penultimate features of a trained model, one row per example). The
    singular values are those of $H/\sqrt{N}$ (the square roots of the eigenvalues of the
    uncentred second-moment matrix $H^\top H / N$), so sets of different sizes compare
    fairly; the official script gets the same size-independence by averaging the singular
    values of equal-sized (64 × D) batches.

    This is the paper's definition (Sun et al., AAAI 2025, OE-set selection). The official
    ``oe.py`` of ``Yuchen-Sunflower/EDGE`` adds each batch's singular-value vector into a
    (batch_size × oe_batch_size) zero matrix, which broadcasts it into every row, and then
    takes the norm of the first ``k`` rows: that equals $\sqrt{k}$ times the distance over
    **all** min(64, D) singular values, not the top k. We implement the paper, not that
    accident.

    Args:
        features_id: ID features (N, D).
        features_out: Candidate outlier features (M, D).
        k: Number of leading singular values compared (official default 32); at most
            min(N, M, D).

    Returns:
        A 0-d tensor (float32 or float64, following the inputs) on the inputs' device,
        computed without gradient.

    Raises:
        ValueError: On empty, non-2-D or non-finite features, different feature sizes, or
            ``k`` larger than min(N, M, D).

    Example:
        >>> import torch
        >>> from oodscore import dilation_distance
        >>> h_id = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
        >>> h_out = torch.diag(torch.tensor([1.0, 2.0, 1.0]))
        >>> dilation_distance(h_id, h_out, k=2)  # |(3, 2) - (2, 1)| / sqrt(3)
        tensor(0.8165)
    """
    check_float_matrix(features_id, "features_id")
    check_float_matrix(features_out, "features_out")
    if features_out.shape[1] != features_id.shape[1]:
        raise ValueError(
            f"Expected `features_out` to have the feature size of `features_id` "
            f"(D = {features_id.shape[1]}), got shape {tuple(features_out.shape)}."
        )
    k = check_int(k, "k")
    limit = min(features_id.shape[0], features_out.shape[0], features_id.shape[1])
    if k > limit:
        raise ValueError(
            f"Expected `k` to be at most min(N, M, D) = {limit} (the number of singular values "
            f"both feature matrices have), got k={k}."
        )
    with torch.no_grad():
        dtype = torch.promote_types(features_id.dtype, features_out.dtype)
        dtype = torch.promote_types(dtype, torch.float32)
        sigma_id = top_singular_values(features_id.to(dtype), k)
        sigma_out = top_singular_values(features_out.to(dtype), k)
        distance: Tensor = torch.linalg.vector_norm(sigma_id - sigma_out)
    return distance


def rank_outlier_sets(
    features_id: Tensor,
    candidates: Mapping[str, Tensor],
    *,
    k: int = 32,
    prefer: Literal["closest", "farthest"],
) -> list[tuple[str, float]]:
    r"""Rank candidate auxiliary-outlier sets by `dilation_distance` to the ID features.

    Returns ``(name, distance)`` pairs, best first. ``prefer`` has no default because the
    direction is not settled: the paper calls the measure a way to select "more informative"
    OE sets, and the official code only prints it (``oe.py``) without a selection rule.
    ``prefer="closest"`` sorts by **increasing** distance (outliers whose feature spectrum
    resembles the ID spectrum first: they shape the boundary where test OOD data is hard);
    ``prefer="farthest"`` sorts the other way. Either way it is a heuristic, not a
    guarantee: on the digits benchmark (``benchmarks/results/multilabel_regularizers.md``)
    the closest set was not the best one.

    Args:
        features_id: ID features (N, D), from the model that will be trained with EDGE.
        candidates: Name → features (M_j, D) of each candidate outlier set, from the same
            model and layer.
        k: Leading singular values compared (official default 32).
        prefer: ``"closest"`` (smallest distance first) or ``"farthest"``; required.

    Raises:
        ValueError: If ``candidates`` is empty, ``prefer`` is unknown, or as
            `dilation_distance`.

    Example:
        >>> import torch
        >>> from oodscore import rank_outlier_sets
        >>> g = torch.Generator().manual_seed(0)
        >>> h_id = torch.randn(200, 8, generator=g)
        >>> sets = {"far": 5 * torch.randn(200, 8, generator=g),
        ...         "near": 1.1 * torch.randn(200, 8, generator=g)}
        >>> (first, _), (second, _) = rank_outlier_sets(h_id, sets, k=4, prefer="closest")
        >>> first, second
        ('near', 'far')
    """
    if not candidates:
        raise ValueError("Expected `candidates` to hold at least one outlier set, got none.")
    if prefer not in ("closest", "farthest"):
        raise ValueError(f"Expected `prefer` to be 'closest' or 'farthest', got {prefer!r}.")
    distances = []
    for name, features in candidates.items():
        try:
            d = float(dilation_distance(features_id, features, k=k))
        except ValueError as error:
            raise ValueError(f"Candidate outlier set {name!r}: {error}") from error
        distances.append((name, d))
    return sorted(distances, key=lambda pair: pair[1], reverse=prefer == "farthest")
