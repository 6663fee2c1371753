r"""The MOS group-softmax head: C + K logits, one softmax per group with an "others" category.

Huang & Li, "MOS: Towards Scaling Out-of-distribution Detection for Large Semantic Space",
CVPR 2021. Official code ``deeplearning-wisc/large_scale_ood``: layout ``get_group_slices``,
loss ``get_loss`` and prediction ``cal_acc`` in ``finetune.py``, targets
``DatasetWithMetaGroup`` in ``dataset.py``. The functions work on all K groups at once, on an
(N, K, M + 1) view of the logits (M = the largest group size): a free reshape when the groups
have equal sizes, a gather padded with -inf when sizes differ a little. When they differ a
lot, padding would cost more than it saves and the logits are split into the K group slices
instead (`uses_padding`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from oodscore.groups import GroupSpec, as_group_spec

__all__ = [
    "GroupSoftmax",
    "attach_group_softmax",
    "group_log_softmax",
    "group_others_log_probability",
    "group_softmax_loss",
    "group_softmax_predict",
    "group_softmax_targets",
    "uses_padding",
]

GroupsLike = GroupSpec | Sequence[int] | Sequence[Sequence[int]]
Reduction = Literal["mean", "sum", "none"]
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_group_logits(logits: Tensor, groups: GroupSpec, name: str = "logits") -> None:
    """Check that ``logits`` is a floating (N, C + K) tensor for the layout of ``groups``."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor, got {type(logits).__name__}.")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"Expected `{name}` to be a floating tensor, got dtype {logits.dtype}.")
    if logits.ndim != 2 or logits.shape[1] != groups.width:
        raise ValueError(
            f"Expected `{name}` of shape (N, C + K) = (N, {groups.width}) for {groups} "
            f"(C = {groups.num_classes} classes + K = {groups.num_groups} 'others' logits), "
            f"got shape {tuple(logits.shape)}."
        )


def check_class_labels(labels: Tensor, num_classes: int, num_rows: int | None = None) -> None:
    """Check that ``labels`` is a 1-D integer tensor of class ids in ``0 .. num_classes - 1``."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"Expected `labels` to be a torch.Tensor, got {type(labels).__name__}.")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"Expected `labels` to hold integer class ids, got dtype {labels.dtype}.")
    if labels.ndim != 1:
        raise ValueError(
            f"Expected `labels` to be 1-D of shape (N,), got shape {tuple(labels.shape)}."
        )
    if num_rows is not None and labels.shape[0] != num_rows:
        raise ValueError(
            f"Expected `labels` to hold one class id per row of `logits` ({num_rows}), "
            f"got {labels.shape[0]}."
        )
    if labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"Expected `labels` in 0..{num_classes - 1} (C = {num_classes} classes), got {bad}."
            )


def _compute(logits: Tensor) -> Tensor:
    return logits.float() if logits.dtype in _LOW_PRECISION else logits


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


def _logsumexp(padded: Tensor) -> Tensor:
    """Log-sum-exp over the last dimension, shifted by the (constant) row maximum.

    Written out because torch's CPU ``log_softmax`` / ``logsumexp`` kernels are several
    times slower on short rows whose length is not a multiple of the vector width (a group
    of 6 classes: rows of 7), the usual case here. Treating the shift as a constant leaves
    the gradient exact (softmax), since logsumexp(x - c) + c does not depend on c.
    """
    shift = padded.detach().amax(dim=-1, keepdim=True)
    return (padded - shift).exp().sum(dim=-1).log() + shift.squeeze(-1)


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


def _group_logsumexp(logits: Tensor, groups: GroupSpec, *, classes_only: bool) -> Tensor:
    """(N, K) log-sum-exp of each group's slice (without its "others" logit if asked)."""
    if uses_padding(groups):
        return _logsumexp(_padded(logits, groups, classes_only=classes_only))
    parts = [_logsumexp(p) for p in _pieces(logits, groups, classes_only=classes_only)]
    return torch.stack(parts, dim=1)


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
    padded = _padded(_compute(logits), groups)
    return padded - _logsumexp(padded).unsqueeze(-1)


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
    logits = _compute(logits)
    targets = group_softmax_targets(labels, groups)
    columns = groups.tensors(logits.device)["others_columns"] + targets  # (N, K) target columns
    picked = logits.gather(1, columns)
    per_sample = (_group_logsumexp(logits, groups, classes_only=False) - picked).sum(dim=1)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def group_softmax_predict(logits: Tensor, groups: GroupSpec) -> Tensor:
    """Predicted original class ids (N,) of group-softmax logits (N, C + K).

    In each group the most probable non-others class; the group where that probability is
    highest wins (official ``cal_acc``). Ties go to the first.
    """
    with torch.no_grad():
        logits = _compute(logits)
        best_logit, position = _group_best_class(logits, groups)
        normalizer = _group_logsumexp(logits, groups, classes_only=False)
        group = (best_logit - normalizer).argmax(dim=1)  # best class log-probability per group
        within = position.gather(1, group.unsqueeze(1)).squeeze(1)
        return groups.tensors(logits.device)["class_of_position"][group, within]


def group_others_log_probability(logits: Tensor, groups: GroupSpec) -> Tensor:
    r"""$\log p_k(\text{others} \mid x)$ for every group: shape (N, K).

    Computed as $-\operatorname{softplus}(\operatorname{logsumexp}_{j \ge 1} f_{k,j} - f_{k,0})$,
    which keeps its relative precision both when "others" is almost certain (the value is a
    tiny negative number, not a rounded 0) and when it is almost impossible.
    """
    logits = _compute(logits)
    others = torch.index_select(logits, 1, groups.tensors(logits.device)["others_columns"])
    rest = _group_logsumexp(logits, groups, classes_only=True) - others
    return -F.softplus(rest)


class GroupSoftmax(nn.Module):
    r"""A linear head with C + K outputs trained with one softmax per group (MOS, CVPR 2021).

    Each of the K groups owns a contiguous slice of $n_k + 1$ logits whose first entry is the
    group's "others" category (see `oodscore.GroupSpec`). A training image of class y
    has target "others" in every group but y's, where the target is y's index in its group + 1;
    the loss sums the K cross-entropies (`loss`). `oodscore.MOS` then scores
    $-\min_k p_k(\text{others} \mid x)$.

    ```text
    logits: [ o1 | a  b  c ][ o2 | d  e ][ o3 | f ]     groups (a,b,c) (d,e) (f)
    class e  ->  targets    ( 0,         2,       0 )    softmax per bracket
    ```

    The head's parameters are ``weight`` (C + K, in_features) and ``bias`` (C + K,), as in
    ``nn.Linear``. ``zero_init=True`` starts both at zero, as the official fine-tuning does
    (``resnetv2.KNOWN_MODELS[...](zero_head=True)`` in ``finetune.py``); ``False`` uses
    ``nn.Linear``'s initialization.

    Args:
        in_features: Width of the features the head reads.
        groups: A `oodscore.GroupSpec`, a sequence of group sizes (consecutive classes)
            or a sequence of per-group class ids.
        bias: Whether the head has a bias.
        zero_init: Start weight and bias at zero (official), else ``nn.Linear``'s init.
        device: Device of the parameters.
        dtype: Dtype of the parameters.

    Example:
        >>> import torch
        >>> from oodscore import GroupSoftmax
        >>> head = GroupSoftmax(4, [3, 2])  # 5 classes in 2 groups -> 7 logits
        >>> logits = head(torch.randn(6, 4))
        >>> logits.shape
        torch.Size([6, 7])
        >>> head.targets(torch.tensor([0, 2, 4]))
        tensor([[1, 0],
                [3, 0],
                [0, 2]])
        >>> loss = head.loss(logits, torch.tensor([0, 1, 2, 3, 4, 0]))
        >>> round(loss.item(), 4)  # zero-initialized: log(4) + log(3)
        2.4849
        >>> head.predict(torch.tensor([[0.0, 5.0, 0.0, 0.0, 9.0, 0.0, 0.0]]))  # group 0 wins
        tensor([0])
    """

    def __init__(
        self,
        in_features: int,
        groups: GroupsLike,
        *,
        bias: bool = True,
        zero_init: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"Expected `in_features` to be an integer >= 1, got {in_features!r}.")
        self.groups = as_group_spec(groups)
        self.in_features = in_features
        self.out_features = self.groups.width
        self.zero_init = bool(zero_init)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty((self.out_features, in_features), **factory))  # type: ignore[arg-type]
        if bias:
            self.bias: nn.Parameter | None = nn.Parameter(
                torch.empty(self.out_features, **factory)  # type: ignore[arg-type]
            )
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero the parameters (``zero_init=True``) or initialize them as ``nn.Linear`` does."""
        if self.zero_init:
            nn.init.zeros_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)
            return
        reference = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            self.weight.copy_(reference.weight)
            if self.bias is not None:
                self.bias.copy_(reference.bias)

    def forward(self, features: Tensor) -> Tensor:
        """The C + K logits of ``features`` (..., in_features)."""
        return F.linear(features, self.weight, self.bias)

    def targets(self, labels: Tensor) -> Tensor:
        """Per-group targets (N, K) of original class ids ``labels`` (N,)."""
        check_class_labels(labels, self.groups.num_classes)
        return group_softmax_targets(labels, self.groups)

    def loss(self, logits: Tensor, labels: Tensor, *, reduction: Reduction = "mean") -> Tensor:
        """Sum over groups of the per-group cross-entropy; ``"mean"`` over the batch (official).

        Args:
            logits: Output of this head, (N, C + K).
            labels: Original class ids (N,).
            reduction: ``"mean"`` (official), ``"sum"`` or ``"none"`` (per-sample sums, (N,)).

        Raises:
            ValueError: If ``logits`` is not (N, C + K) for this head's grouping, or a label is
                outside ``0 .. C-1`` (this check reads the labels' minimum and maximum: one
                device synchronization per call on a GPU).
            TypeError: If ``labels`` is not an integer tensor.
        """
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(
                f"Expected `reduction` to be 'mean', 'sum' or 'none', got {reduction!r}."
            )
        check_group_logits(logits, self.groups)
        check_class_labels(labels, self.groups.num_classes, logits.shape[0])
        return group_softmax_loss(logits, labels.to(logits.device), self.groups, reduction)

    def predict(self, logits: Tensor) -> Tensor:
        """Predicted original class ids (N,) from logits (N, C + K)."""
        check_group_logits(logits, self.groups)
        return group_softmax_predict(logits, self.groups)

    def log_probs(self, logits: Tensor) -> Tensor:
        """Per-group log-probabilities (N, K, M + 1), "others" at index 0, -inf at padding."""
        check_group_logits(logits, self.groups)
        return group_log_softmax(logits, self.groups)

    def class_log_probs(self, logits: Tensor) -> Tensor:
        """(N, C): log-probability of each original class within its own group's softmax."""
        check_group_logits(logits, self.groups)
        columns = torch.tensor(self.groups.class_columns, device=logits.device)
        logits = _compute(logits)
        group = self.groups.tensors(logits.device)["group_of_class"]
        normalizer = _group_logsumexp(logits, self.groups, classes_only=False)
        return logits[:, columns] - normalizer[:, group]

    def others_probs(self, logits: Tensor) -> Tensor:
        r"""$p_k(\text{others} \mid x)$ of every group, (N, K)."""
        check_group_logits(logits, self.groups)
        return group_others_log_probability(logits, self.groups).exp()

    def extra_repr(self) -> str:
        """The head's sizes and grouping, shown by ``repr``."""
        return f"in_features={self.in_features}, groups={self.groups}, bias={self.bias is not None}"


def attach_group_softmax(
    model: nn.Module,
    groups: GroupsLike,
    head: str | None = None,
    *,
    zero_init: bool = True,
) -> GroupSoftmax:
    """Replace a model's final ``nn.Linear`` (or the one named ``head``) with a GroupSoftmax head.

    The new head reads the same ``in_features`` and sits on the old layer's device and dtype;
    the model is changed in place. "Final" means the last ``nn.Linear`` in
    ``model.named_modules()`` order (registration order), which is the classifier of the usual
    torchvision / timm models; name it with ``head`` (e.g. ``"fc"``, ``"classifier.1"``) when
    that is not so.

    Args:
        model: The network to change in place.
        groups: The grouping (see `GroupSoftmax`).
        head: Dotted name of the ``nn.Linear`` to replace; ``None`` finds the last one.
        zero_init: Passed to `GroupSoftmax`.

    Returns:
        The new head, for its `GroupSoftmax.loss` and `GroupSoftmax.predict`.

    Raises:
        ValueError: If the model has no ``nn.Linear``, or ``head`` names no module or a module
            that is not an ``nn.Linear``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from oodscore import attach_group_softmax
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 5))
        >>> head = attach_group_softmax(model, [2, 3])
        >>> model[2] is head, model(torch.randn(3, 8)).shape
        (True, torch.Size([3, 7]))
    """
    if head is None:
        linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(
                f"Expected `model` to contain an nn.Linear to replace, found none in "
                f"{type(model).__name__}; pass `head` to name the layer."
            )
        head = linears[-1]
    modules = dict(model.named_modules())
    if head not in modules or head == "":
        close = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        raise ValueError(
            f"Expected `head` to name a module of the model, got {head!r}; its nn.Linear "
            f"layers are {close!r}."
        )
    old = modules[head]
    if not isinstance(old, nn.Linear):
        raise ValueError(
            f"Expected `head` to name an nn.Linear, but {head!r} is a {type(old).__name__}."
        )
    new = GroupSoftmax(
        old.in_features,
        groups,
        bias=old.bias is not None,
        zero_init=zero_init,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    parent_name, _, attribute = head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attribute, new)
    return new
