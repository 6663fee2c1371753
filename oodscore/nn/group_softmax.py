r"""The MOS group-softmax head: C + K logits, one softmax per group with an "others" category.

The math lives in `oodscore.functional.group_softmax`; this module holds the head, its input
checks, and `attach_group_softmax`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from oodscore.functional.group_softmax import (
    Reduction,
    group_class_log_probability,
    group_log_softmax,
    group_others_log_probability,
    group_softmax_loss,
    group_softmax_predict,
    group_softmax_targets,
)
from oodscore.groups import GroupSpec, as_group_spec
from oodscore.nn._modules import find_head, replace_module

__all__ = ["GroupSoftmax", "attach_group_softmax"]

GroupsLike = GroupSpec | Sequence[int] | Sequence[Sequence[int]]


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

    Examples:
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
        return group_class_log_probability(logits, self.groups)

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

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from oodscore import attach_group_softmax
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 5))
        >>> head = attach_group_softmax(model, [2, 3])
        >>> model[2] is head, model(torch.randn(3, 8)).shape
        (True, torch.Size([3, 7]))
    """
    head = find_head(model, head)
    old = model.get_submodule(head)
    assert isinstance(old, nn.Linear)  # find_head checked it
    new = GroupSoftmax(
        old.in_features,
        groups,
        bias=old.bias is not None,
        zero_init=zero_init,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    replace_module(model, head, new)
    return new
