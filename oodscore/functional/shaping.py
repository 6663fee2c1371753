r"""Activation shaping of penultimate features: ReAct, ASH, SCALE, DICE, and the head after it.

The methods change the pooled features $h$ (N, D) (or the last layer's weight, for DICE)
before the classifier head $z = W h + b$; a logit score of $z$ is the OOD score. The
percentile is NumPy's default (``method="linear"``), computed exactly at any size (unlike
``torch.quantile``, limited to $2^{24}$ values).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from oodscore._arrays import FIT_CHUNK_ELEMENTS, row_slices
from oodscore._selection import largest_values


def linear_percentile(values: Tensor, q: float) -> Tensor:
    r"""The ``q``-th percentile (in percent) of all entries of ``values``, as ``np.percentile``.

    With $s$ the sorted entries ($n$ of them), $v = (n - 1)\,q / 100$, $i = \lfloor v \rfloor$
    and $\gamma = v - i$: $s_i + \gamma (s_{i+1} - s_i)$ (written as
    $s_{i+1} - (1 - \gamma)(s_{i+1} - s_i)$ for $\gamma \ge 1/2$), NumPy's linear method
    operation for operation. The two order statistics come from ``torch.kthvalue`` and one
    pass, in the dtype of ``values`` (exact); the interpolation runs in float64, so the result
    equals ``np.percentile(values.astype(np.float64), q)`` bit for bit, for any size.

    Returns:
        A 0-d float64 tensor on the device of ``values``.
    """
    flat = values.detach().reshape(-1)
    count = flat.numel()
    position = (count - 1) * (q / 100)
    if position >= count - 1:
        return flat.max().to(torch.float64)
    below = math.floor(position)
    gamma = position - below
    low = torch.kthvalue(flat, below + 1).values
    tied = int((flat <= low).sum()) >= below + 2  # the next order statistic equals this one
    high = low if tied else flat[flat > low].min()
    a, b = float(low), float(high)
    if gamma == 0:
        result = a
    else:
        difference = b - a
        result = b - difference * (1 - gamma) if gamma >= 0.5 else a + difference * gamma
    return torch.tensor(result, dtype=torch.float64, device=values.device)


def kept_count(dim: int, percentile: float) -> int:
    r"""The count of activations ASH and SCALE keep: $k = D - \operatorname{round}(D p / 100)$.

    ``round`` halves to even, as ``np.round`` in the official code (D = 10, p = 65 keeps 4).
    """
    return dim - round(dim * percentile / 100.0)


def react_clip(features: Tensor, threshold: Tensor) -> Tensor:
    r"""ReAct's rectification $\bar h = \min(h, c)$ (upper clip only), out of place."""
    return features.clamp(max=threshold.to(features.dtype))


def ash_prune(features: Tensor, k: int) -> Tensor:
    r"""ASH-P: the ``k`` largest activations of each row kept, the others set to 0.

    Ties at the boundary are broken by ``torch.topk``, as in the official code.
    """
    values, indices = torch.topk(features, k, dim=1, sorted=False)
    return torch.zeros_like(features).scatter(1, indices, values)


def ash_binarize(features: Tensor, k: int) -> Tensor:
    r"""ASH-B: the positions of the ``k`` largest activations set to $s_1 / k$, the others to 0.

    $s_1 = \sum_d h_d$ is the sum of the whole row (summed in float64), so the row's sum is
    kept.
    """
    indices = torch.topk(features, k, dim=1, sorted=False).indices
    fill = (features.sum(dim=1, dtype=torch.float64) / k).to(features.dtype)
    return torch.zeros_like(features).scatter(1, indices, fill[:, None].expand(-1, k))


def ash_sharpen(features: Tensor, k: int) -> tuple[Tensor, Tensor]:
    r"""ASH-S as ``(pruned, r)``: the shaped features are ``pruned * exp(r)[:, None]``.

    ``pruned`` is `ash_prune`; $r$ is the `sharpening_exponent` of the kept values. The
    factor is returned as its logarithm because $e^r$ overflows float32 for $r > 88$.
    """
    values, indices = torch.topk(features, k, dim=1, sorted=False)
    pruned = torch.zeros_like(features).scatter(1, indices, values)
    return pruned, sharpening_exponent(features, values)


def scale_exponent(features: Tensor, k: int) -> Tensor:
    r"""SCALE's $r$: the shaped features are ``features * exp(r)[:, None]`` (nothing pruned)."""
    values = largest_values(features, k)
    return sharpening_exponent(features, values)


def sharpening_exponent(features: Tensor, kept: Tensor) -> Tensor:
    r"""$r = s_1 / s_2$ of ASH-S and SCALE, in float64: the factor is $e^r$.

    $s_1 = \sum_d h_d$ sums the whole row, $s_2$ the ``kept`` values (N, k). Where
    $s_2 = 0$ (an all-zero row, for non-negative features) $r = 0$: factor 1, not the
    official NaN.
    """
    total = features.sum(dim=1, dtype=torch.float64)
    top = kept.sum(dim=1, dtype=torch.float64)
    zero = top == 0
    return torch.where(zero, 0.0, total / torch.where(zero, 1.0, top))


def feature_mean(features: Tensor) -> Tensor:
    r"""The mean $\bar h = \frac{1}{N} \sum_i h_i$ (D,) in float64, summed chunk by chunk."""
    total = features.new_zeros(features.shape[1], dtype=torch.float64)
    for _, chunk in row_slices(features, FIT_CHUNK_ELEMENTS):
        total += chunk.sum(dim=0, dtype=torch.float64)
    return total / features.shape[0]


def dice_mask(weight: Tensor, mean: Tensor, percentile: float) -> Tensor:
    r"""DICE's mask $M = V > \operatorname{percentile}_p(V)$ of the contributions $V$.

    $V_{cd} = W_{cd} \bar h_d$ (C, D) in float64, signed; the threshold is the
    `linear_percentile` over all $C D$ entries; the comparison is strict, so at most
    $(100 - p)\%$ of the weights are kept (fewer on ties).
    """
    contributions = weight.to(torch.float64) * mean.to(weight.device, torch.float64)
    return contributions > linear_percentile(contributions, percentile)


def head_scores(
    features: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    score_logits: Callable[[Tensor], Tensor],
    exponent: Tensor | None = None,
) -> Tensor:
    r"""``score_logits`` of the logits $z = e^{r}\,(h W^\top) + b$ of shaped features $h$ (N, D).

    $r$ (N,) is the log of a per-row factor (ASH-S, SCALE), or absent (factor 1). Applying
    $e^r$ to the logits equals applying it to the features. Rows with a logit beyond a
    quarter of the largest value of the dtype of ``features`` (the factor overflows float32
    for $r > 88$, or huge activations overflow the product) are recomputed and scored in
    float64, with $0 \cdot e^r = 0$ and logits beyond a quarter of float64's largest value
    saturated there (so that differences of logits stay finite); their scores are cast back
    (a score beyond float32 becomes ±inf, never NaN).
    """
    logits = _logits(features, weight, bias, exponent)
    inside = logits.detach().abs().amax(dim=1) <= _limit(logits.dtype)  # NaN: outside
    if bool(inside.all()):
        return score_logits(logits)
    wide = torch.float64
    outside = ~inside
    wide_logits = _logits(
        features[outside].to(wide),
        weight.to(wide),
        None if bias is None else bias.to(wide),
        None if exponent is None else exponent[outside],
        saturate=True,
    )
    scores = features.new_empty(features.shape[0])
    scores[outside] = score_logits(wide_logits).to(features.dtype)
    if bool(inside.any()):
        scores[inside] = score_logits(logits[inside])
    return scores


def _limit(dtype: torch.dtype) -> float:
    """A quarter of the largest value of ``dtype``: logits and their differences stay finite."""
    return torch.finfo(dtype).max / 4


def _logits(
    features: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    exponent: Tensor | None,
    *,
    saturate: bool = False,
) -> Tensor:
    """$e^r (h W^T) + b$ in the dtype of ``features``; ``saturate``: 0·inf = 0, then clamped."""
    if exponent is None and not saturate:
        return torch.nn.functional.linear(features, weight, bias)
    logits = features @ weight.T
    if saturate:
        if exponent is not None:
            logits = logits * torch.exp(exponent).to(features.dtype)[:, None]
        limit = _limit(logits.dtype)
        logits = torch.nan_to_num(logits, nan=0.0).clamp(-limit, limit)
        return logits if bias is None else (logits + bias).clamp(-limit, limit)
    assert exponent is not None
    factor = torch.exp(exponent).to(features.dtype)[:, None]
    return logits * factor if bias is None else torch.addcmul(bias, logits, factor)
