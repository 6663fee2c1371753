r"""Group-softmax math of MOS: one softmax per group, each with an "others" category.

The functions work on all K groups at once, on an (N, K, M + 1) view of the C + K logits
(M = the largest group size): a free reshape when the groups have equal sizes, a gather
padded with -inf when sizes differ a little. When they differ a lot, padding would cost more
than it saves and the logits are split into the K group slices instead (`uses_padding`).
float16/bfloat16 logits are computed in float32.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from oodscore._arrays import promote, saturate
from oodscore.groups import GroupSpec

Reduction = Literal["mean", "sum", "none"]


def _padded(logits: Tensor, groups: GroupSpec, *, classes_only: bool = False) -> Tensor:
    """(N, K, M + 1) view of the group slices, or (N, K, M) without the "others" column.

    Positions past a group's size hold -inf.
    """
    sizes = groups.sizes
    n, m = logits.shape[0], max(sizes)
    if min(sizes) == m:  # equal sizes: the slices tile the row, a free reshape
        view = logits.reshape(n, groups.num_groups, m + 1)
        return view[..., 1:] if classes_only else view
    index = groups.tensors(logits.device)
    columns = index["padded_class_columns" if classes_only else "padded_columns"]
    # index_select + in-place fill: about twice as fast as advanced indexing + masked_fill
    view = torch.index_select(logits, 1, columns.reshape(-1)).view(n, *columns.shape)
    return view.masked_fill_(index["class_padding" if classes_only else "padding"], -math.inf)


def _logsumexp_parts(padded: Tensor) -> tuple[Tensor, Tensor]:
    """Log-sum-exp over the last dimension as ``(shift, log_sum)``, their sum.

    ``shift`` is the (constant) row maximum and ``log_sum`` the log-sum of the shifted row.
    Written out because torch's CPU ``log_softmax`` / ``logsumexp`` kernels are several
    times slower on short rows whose length is not a multiple of the vector width (a group
    of 6 classes: rows of 7), the usual case here. Treating the shift as a constant leaves
    the gradient exact (softmax), since logsumexp(x - c) + c does not depend on c. Kept
    apart, the parts let a caller subtract another logit from the shift first: next to
    logits of 3e38, ``shift + log_sum`` rounds the log-sum (at most log of the row length)
    away, and ``(shift - x) + log_sum`` does not.
    """
    shift = padded.detach().amax(dim=-1, keepdim=True)
    return shift.squeeze(-1), (padded - shift).exp().sum(dim=-1).log()


PADDING_LIMIT = 1.25
"""Largest ratio of padded to real columns, K (M + 1) / (C + K), for the padded strategy."""


def uses_padding(groups: GroupSpec) -> bool:
    """Whether the per-group reductions run on one padded (N, K, M + 1) tensor.

    Equal sizes are a free reshape. Unequal sizes need a gather into a padded tensor, which
    pays off while the padding is small; with very unequal sizes (a taxonomy of 300 and 20
    classes pads to 2.4x the real columns) a loop over the K contiguous slices is faster, and
    its cost is only K small kernel launches (``benchmarks/results/mos.md``).
    """
    sizes = groups.sizes
    padded_columns = groups.num_groups * (max(sizes) + 1)
    return min(sizes) == max(sizes) or padded_columns <= PADDING_LIMIT * groups.width


def _pieces(logits: Tensor, groups: GroupSpec, *, classes_only: bool) -> list[Tensor]:
    # split, not one slice per group: its backward writes one (N, C + K) gradient, where
    # K separate slices would each allocate and add a full-size one.
    pieces = torch.split(logits, [n + 1 for n in groups.sizes], dim=1)
    return [p[:, 1:] for p in pieces] if classes_only else list(pieces)


def _group_logsumexp(
    logits: Tensor, groups: GroupSpec, *, classes_only: bool
) -> tuple[Tensor, Tensor]:
    """(N, K) log-sum-exp of each group's slice, as the parts of `_logsumexp_parts`.

    Without the groups' "others" logits when ``classes_only``.
    """
    if uses_padding(groups):
        return _logsumexp_parts(_padded(logits, groups, classes_only=classes_only))
    parts = [_logsumexp_parts(p) for p in _pieces(logits, groups, classes_only=classes_only)]
    return torch.stack([p[0] for p in parts], dim=1), torch.stack([p[1] for p in parts], dim=1)


def _group_best_class(logits: Tensor, groups: GroupSpec) -> tuple[Tensor, Tensor]:
    """(N, K) largest class logit of each group (not "others") and its within-group position."""
    if uses_padding(groups):
        best, position = _padded(logits, groups, classes_only=True).max(dim=-1)
        return best, position
    parts = [p.max(dim=1) for p in _pieces(logits, groups, classes_only=True)]
    return torch.stack([p.values for p in parts], 1), torch.stack([p.indices for p in parts], 1)


def group_log_softmax(logits: Tensor, groups: GroupSpec) -> Tensor:
    r"""Per-group log-probabilities, padded: shape (N, K, M + 1), M the largest group size.

    Entry $[i, k, 0]$ is $\log p_k(\text{others} \mid x_i)$ and $[i, k, j]$ (1 <= j <= n_k)
    the log-probability of the j-th class of group k, with
    $p_k = \operatorname{softmax}$ over the $n_k + 1$ logits of group k. Positions past a
    group's size hold $-\infty$.
    """
    padded = _padded(promote(logits), groups)
    shift, log_sum = _logsumexp_parts(padded)
    return (padded - shift.unsqueeze(-1)) - log_sum.unsqueeze(-1)


def group_softmax_targets(labels: Tensor, groups: GroupSpec) -> Tensor:
    """Per-group targets (N, K): 0 ("others") except the true group's, its index in the group + 1.

    Official ``DatasetWithMetaGroup.__getitem__``: ``labels[group_id] = cls_id + 1``.
    """
    index = groups.tensors(labels.device)
    labels = labels.long()
    targets = labels.new_zeros((labels.shape[0], groups.num_groups))
    targets.scatter_(
        1,
        index["group_of_class"][labels].unsqueeze(1),
        (index["index_of_class"][labels] + 1)[:, None],
    )
    return targets


def group_softmax_loss(
    logits: Tensor, labels: Tensor, groups: GroupSpec, reduction: Reduction = "mean"
) -> Tensor:
    r"""Sum over the groups of each group's cross-entropy.

    $$ \mathcal{L}(x, y) = -\sum_{k=1}^{K} \log p_k\left(t_k(y) \mid x\right) $$

    with $t_k$ the targets of `group_softmax_targets`. ``"mean"`` averages over the
    batch, which is the official ``get_loss`` exactly: it adds K ``CrossEntropyLoss()``
    terms, each a mean over the batch, and a sum of means is the mean of the per-sample sums.
    """
    logits = promote(logits)
    targets = group_softmax_targets(labels, groups)
    columns = groups.tensors(logits.device)["others_columns"] + targets  # (N, K) target columns
    picked = logits.gather(1, columns)
    shift, log_sum = _group_logsumexp(logits, groups, classes_only=False)
    per_sample = ((shift - picked) + log_sum).sum(dim=1)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def group_softmax_predict(logits: Tensor, groups: GroupSpec) -> Tensor:
    r"""Predicted original class ids (N,) of group-softmax logits (N, C + K).

    In each group the most probable non-others class; the group where that probability is
    highest wins (official ``calc_group_softmax_acc``, ``finetune.py:138-176``, which
    compares the probabilities). Ties go to the first. The probabilities are compared as
    log-probabilities in float64, each
    $\log p = (f_{best} - m) - \log(e^{f_{best} - m} + r)$ with $m$ the group's largest logit
    and $r$ the sum of the group's other exponentials, taken as $-\operatorname{log1p}(r)$
    when the best class is the group's maximum: no cancellation, so a group whose best
    class has $p = 1 - 10^{-9}$ beats one with $p = 0.99994$ at any logit scale (the
    float32 difference ``best - logsumexp`` of logits near 1000 cannot tell them apart).
    """
    with torch.no_grad():
        logits = promote(logits).to(torch.float64)
        best, position = _group_best_class(logits, groups)  # (N, K)
        shift, _ = _group_logsumexp(logits, groups, classes_only=False)
        if uses_padding(groups):
            padded = _padded(logits, groups)
            best_column = position.unsqueeze(-1) + 1  # index in the padded row (0: others)
            e = torch.exp(padded - shift.unsqueeze(-1)).scatter_(-1, best_column, 0.0)
            rest = e.sum(dim=-1)
        else:
            pieces = _pieces(logits, groups, classes_only=False)
            rest = torch.stack(
                [
                    torch.exp(p - shift[:, k : k + 1])
                    .scatter_(1, position[:, k : k + 1] + 1, 0.0)
                    .sum(dim=1)
                    for k, p in enumerate(pieces)
                ],
                dim=1,
            )
        gap = best - shift  # <= 0; 0 when the best class is the group's maximum
        log_p = gap - torch.where(gap == 0, torch.log1p(rest), torch.log(torch.exp(gap) + rest))
        group = log_p.argmax(dim=1)
        within = position.gather(1, group.unsqueeze(1)).squeeze(1)
        return groups.tensors(logits.device)["class_of_position"][group, within]


def group_others_log_probability(logits: Tensor, groups: GroupSpec) -> Tensor:
    r"""$\log p_k(\text{others} \mid x)$ for every group: shape (N, K).

    Computed as $-\operatorname{softplus}(\operatorname{logsumexp}_{j \ge 1} f_{k,j} - f_{k,0})$,
    which keeps its relative precision both when "others" is almost certain (the value is a
    tiny negative number, not a rounded 0) and when it is almost impossible.
    """
    logits = promote(logits)
    others = torch.index_select(logits, 1, groups.tensors(logits.device)["others_columns"])
    shift, log_sum = _group_logsumexp(logits, groups, classes_only=True)
    rest = (shift - others) + log_sum  # ±inf where the difference overflows: softplus is exact
    return -F.softplus(rest)


def group_class_log_probability(logits: Tensor, groups: GroupSpec) -> Tensor:
    """(N, C): log-probability of each original class within its own group's softmax."""
    logits = promote(logits)
    index = groups.tensors(logits.device)
    columns = torch.tensor(groups.class_columns, device=logits.device)
    shift, log_sum = _group_logsumexp(logits, groups, classes_only=False)
    group = index["group_of_class"]
    return (logits[:, columns] - shift[:, group]) - log_sum[:, group]


def mos_score(logits: Tensor, groups: GroupSpec, *, log_scale: bool = False) -> Tensor:
    r"""MOS score $-\min_k p_k(\text{others} \mid x)$ of group-softmax logits (N, C + K).

    With ``log_scale=True``: $-\min_k \log p_k(\text{others} \mid x)$, the same ranking;
    where it lies beyond the dtype (a class logit of 3e38 against an "others" logit of
    -3e38 in float32) it saturates at the largest finite value.
    """
    lowest = group_others_log_probability(logits, groups).min(dim=1).values
    return saturate(-lowest) if log_scale else -torch.exp(lowest)
