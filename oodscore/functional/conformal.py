r"""Split-conformal p-values and rank thresholds, marginal and per group (Mondrian).

Scores follow oodscore's sign: higher = more in-distribution, so a small score is evidence
against "in-distribution". With calibration scores $s_1, \dots, s_n$ of held-out ID inputs,
the conformal p-value of a test score $s$ is

$$ p(s) = \frac{1 + \#\{i : s_i \le s\}}{n + 1}, $$

ties counted against rejection, so that $p$ is super-uniform for a test input exchangeable
with the calibration set: $P(p \le u) \le u$ for every $u \in [0, 1]$. Rejecting when
$p(s) \le \alpha$ is the same as rejecting when $s < s_{(k)}$, the $k$-th smallest
calibration score, with $k = \lfloor \alpha (n + 1) \rfloor$ (`conformal_rank`).

Everything here is pure torch without input checks (`oodscore.detection` checks); counts
are int64, p-values and calibration scores float64, so that no comparison rounds.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def conformal_rank(num_calibration: int, alpha: float) -> int:
    r"""$k = \lfloor \alpha (n + 1) \rfloor$: the rank of the rejection threshold among n scores.

    $k$ is the largest integer $j$ with $j / (n + 1) \le \alpha$, computed with the same
    float64 divisions as the p-values (not with the product $\alpha (n + 1)$, which can
    round across an integer), so that $p(s) \le \alpha \iff \#\{i : s_i \le s\} < k$ holds
    exactly. $k = 0$ (when $n + 1 < 1 / \alpha$) means that nothing can be rejected.

    Args:
        num_calibration: $n \ge 0$.
        alpha: The level, in $(0, 1)$.

    Examples:
        >>> from oodscore.functional.conformal import conformal_rank
        >>> conformal_rank(99, 0.05), conformal_rank(18, 0.05), conformal_rank(19, 0.05)
        (5, 0, 1)

    Source: Bates, Candès, Lei, Romano & Sesia, Annals of Statistics 2023, eq. (2).
    """
    total = num_calibration + 1
    k = min(math.floor(alpha * total), num_calibration)
    while k < num_calibration and (k + 1) / total <= alpha:
        k += 1
    while k > 0 and k / total > alpha:
        k -= 1
    return k


def min_calibration_size(alpha: float) -> int:
    r"""The smallest $n$ with $\lfloor \alpha (n + 1) \rfloor \ge 1$: $\lceil 1/\alpha \rceil - 1$.

    With fewer calibration scores the smallest p-value, $1 / (n + 1)$, exceeds $\alpha$ and
    the rule never rejects. Computed with the divisions of `conformal_rank`, so that
    ``conformal_rank(min_calibration_size(alpha), alpha) == 1`` for every ``alpha``.

    Examples:
        >>> from oodscore.functional.conformal import min_calibration_size
        >>> min_calibration_size(0.05), min_calibration_size(0.1), min_calibration_size(0.01)
        (19, 9, 99)
    """
    n = max(math.ceil(1 / alpha) - 1, 1)
    while 1 / (n + 1) > alpha:
        n += 1
    while n > 1 and 1 / n <= alpha:
        n -= 1
    return n


def conformal_p_values(sorted_calibration: Tensor, scores: Tensor) -> Tensor:
    r"""Marginal conformal p-values $(1 + \#\{i : s_i \le s\}) / (n + 1)$ (N,), float64.

    Args:
        sorted_calibration: The n calibration scores, sorted ascending, float64.
        scores: Test scores (N,), any floating dtype (compared in float64, exactly).

    Examples:
        >>> import torch
        >>> from oodscore.functional.conformal import conformal_p_values
        >>> calibration = torch.tensor([1.0, 2.0, 2.0, 3.0], dtype=torch.float64)
        >>> conformal_p_values(calibration, torch.tensor([0.5, 2.0, 9.0]))
        tensor([0.2000, 0.8000, 1.0000], dtype=torch.float64)
    """
    counts = torch.searchsorted(sorted_calibration, scores.to(sorted_calibration.dtype), right=True)
    return (counts + 1).to(torch.float64) / (sorted_calibration.shape[0] + 1)


def conformal_threshold(sorted_calibration: Tensor, rank: int) -> Tensor:
    r"""The rejection threshold $t = s_{(k)}$, the $k$-th smallest calibration score ($k \ge 1$).

    A test score $s$ is rejected exactly when $s < t$: $\#\{i : s_i \le s\} < k$ means
    that fewer than $k$ calibration scores lie at or below $s$, i.e. $s$ lies below the
    $k$-th smallest, ties included.

    Examples:
        >>> import torch
        >>> from oodscore.functional.conformal import conformal_threshold
        >>> conformal_threshold(torch.tensor([1.0, 2.0, 2.0, 3.0], dtype=torch.float64), 2)
        tensor(2., dtype=torch.float64)
    """
    return sorted_calibration[rank - 1]


def grouped_calibration(
    scores: Tensor, groups: Tensor, num_groups: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Calibration scores of K groups arranged for per-group counts in two binary searches.

    Every score gets its global rank $R_i = \#\{j : s_j \le s_i\} \in [1, n]$ and the key
    $g_i (n + 1) + R_i$. For a test score $s$ with $r = \#\{j : s_j \le s\}$, the
    calibration scores of group $g$ at or below $s$ are exactly those with
    $R_i \le r$ (`group_counts`), so the sorted keys answer every group's count at once,
    in O(n) memory, with no loop over groups (and `torch.export` can trace it).

    Args:
        scores: The n calibration scores (n,).
        groups: Their group ids (n,), int64 in ``0 .. num_groups - 1``.
        num_groups: K.

    Returns:
        ``(sorted_scores, keys, offsets, sizes)``: the scores sorted ascending (float64),
        the keys sorted ascending (int64), and per group the number of calibration scores
        of the groups before it and its own (K,), int64.

    Examples:
        >>> import torch
        >>> from oodscore.functional.conformal import grouped_calibration
        >>> scores = torch.tensor([3.0, 1.0, 2.0, 5.0])
        >>> sorted_scores, keys, offsets, sizes = grouped_calibration(
        ...     scores, torch.tensor([0, 1, 0, 1]), 2)
        >>> keys.tolist(), offsets.tolist(), sizes.tolist()
        ([2, 3, 6, 9], [0, 2], [2, 2])
    """
    values = scores.to(torch.float64)
    sorted_scores = torch.sort(values).values
    ranks = torch.searchsorted(sorted_scores, values, right=True)
    keys = torch.sort(groups.to(torch.int64) * (values.shape[0] + 1) + ranks).values
    sizes = torch.bincount(groups.to(torch.int64), minlength=num_groups)
    offsets = torch.cumsum(sizes, 0) - sizes
    return sorted_scores, keys, offsets, sizes


def group_counts(
    sorted_scores: Tensor, keys: Tensor, offsets: Tensor, scores: Tensor, groups: Tensor
) -> Tensor:
    r"""$\#\{i \in g : s_i \le s\}$ for each test score $s$ of group $g$ (N,), int64.

    Args:
        sorted_scores: From `grouped_calibration`: the calibration scores, sorted.
        keys: From `grouped_calibration`: the sorted group keys.
        offsets: From `grouped_calibration`: per group, the scores of the groups before it.
        scores: Test scores (N,).
        groups: Their group ids (N,), int64.
    """
    total = sorted_scores.shape[0] + 1
    below = torch.searchsorted(sorted_scores, scores.to(sorted_scores.dtype), right=True)
    upto = torch.searchsorted(keys, groups * total + below, right=True)
    return upto - offsets[groups]


def group_p_values(counts: Tensor, sizes: Tensor, groups: Tensor) -> Tensor:
    r"""Mondrian p-values $(1 + \#\{i \in g : s_i \le s\}) / (n_g + 1)$ (N,), float64.

    The marginal p-value of `conformal_p_values` computed within the test input's group
    $g$, whose $n_g$ calibration scores alone are compared with it.

    Args:
        counts: From `group_counts` (N,).
        sizes: Calibration scores per group (K,).
        groups: The test inputs' group ids (N,).

    Examples:
        >>> import torch
        >>> from oodscore.functional.conformal import (
        ...     group_counts, group_p_values, grouped_calibration)
        >>> cal = grouped_calibration(torch.tensor([3.0, 1.0, 2.0, 5.0]),
        ...                           torch.tensor([0, 1, 0, 1]), 2)
        >>> groups = torch.tensor([0, 1, 1])
        >>> counts = group_counts(cal[0], cal[1], cal[2], torch.tensor([2.5, 2.5, 0.0]), groups)
        >>> group_p_values(counts, cal[3], groups)
        tensor([0.6667, 0.6667, 0.3333], dtype=torch.float64)
    """
    return (counts + 1).to(torch.float64) / (sizes[groups] + 1).to(torch.float64)


def group_ranks(sizes: Tensor, alpha: float) -> Tensor:
    r"""$k_g = \lfloor \alpha (n_g + 1) \rfloor$ per group (K,), int64 (see `conformal_rank`)."""
    return torch.tensor([conformal_rank(int(n), alpha) for n in sizes.tolist()], dtype=torch.int64)


def group_thresholds(sorted_scores: Tensor, keys: Tensor, offsets: Tensor, ranks: Tensor) -> Tensor:
    r"""$t_g$, the $k_g$-th smallest calibration score of each group (K,), float64.

    A group's $k_g$-th key is $g (n + 1) + R$ with $R$ the global rank of that score, whose
    value is ``sorted_scores[R - 1]``. Groups with $k_g = 0$ (they never reject) get
    $-\infty$.
    """
    total = sorted_scores.shape[0] + 1
    rejecting = ranks > 0
    position = (offsets + ranks - 1).clamp_min(0)
    if keys.numel() == 0:
        return torch.full(ranks.shape, -math.inf, dtype=torch.float64)
    group = torch.arange(ranks.shape[0], dtype=torch.int64)
    rank = keys[position.clamp_max(keys.shape[0] - 1)] - group * total
    values = sorted_scores[(rank - 1).clamp(0, sorted_scores.shape[0] - 1)]
    return torch.where(rejecting, values, torch.full_like(values, -math.inf))
