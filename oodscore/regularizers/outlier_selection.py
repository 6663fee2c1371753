r"""EDGE's choice of an auxiliary outlier set: the dilation distance between feature spectra."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor

from oodscore._validation import check_float_matrix, check_int, check_same_width
from oodscore.functional.edge import singular_value_distance


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

    Examples:
        >>> import torch
        >>> from oodscore import dilation_distance
        >>> h_id = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
        >>> h_out = torch.diag(torch.tensor([1.0, 2.0, 1.0]))
        >>> dilation_distance(h_id, h_out, k=2)  # |(3, 2) - (2, 1)| / sqrt(3)
        tensor(0.8165)
    """
    check_float_matrix(features_id, "features_id")
    check_float_matrix(features_out, "features_out")
    check_same_width(
        features_id, features_out, ("features_id", "features_out"), what="features", symbol="D"
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
        return singular_value_distance(features_id.to(dtype), features_out.to(dtype), k)


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

    Examples:
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
