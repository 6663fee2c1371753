r"""MOS: minimum "others" score over the groups of a group-softmax head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from oodscore.groups import GroupSpec, as_group_spec
from oodscore.nn.group_softmax import group_others_log_probability
from oodscore.scorers.base import Scorer, register_scorer


def mos_score(logits: Tensor, groups: GroupSpec, *, log_scale: bool = False) -> Tensor:
    r"""MOS score $-\min_k p_k(\text{others} \mid x)$ of group-softmax logits (N, C + K).

    With ``log_scale=True``: $-\min_k \log p_k(\text{others} \mid x)$, the same ranking.
    """
    lowest = group_others_log_probability(logits, groups).min(dim=1).values
    return -lowest if log_scale else -torch.exp(lowest)


@register_scorer("mos")
class MOS(Scorer):
    r"""Minimum Others Score (Huang & Li, CVPR 2021) of a `oodscore.GroupSoftmax` head.

    $$ S(x) = -\min_{k=1..K} p_k(\text{others} \mid x), \qquad
       p_k = \operatorname{softmax}\left(f_{k,0}(x), f_{k,1}(x), \dots, f_{k,n_k}(x)\right) $$

    An in-distribution input belongs to some group, whose "others" probability is low; an
    OOD input looks like "others" to every group. The score lies in $[-1, 0)$, higher = more
    in-distribution. Official code ``deeplearning-wisc/large_scale_ood``, ``test_mos.py``
    (``cal_ood_score``: the maximum over groups of $-p_k(\text{others})$).

    ``log_scale=True`` returns $-\min_k \log p_k(\text{others} \mid x) \ge 0$ instead: a
    monotone transform, so the ranking (AUROC, FPR95) is the paper's, but confident inputs
    no longer collapse onto the same value where $p$ rounds to 0 or 1 (in float32, beyond
    about $e^{-87}$ and $1 - 6 \cdot 10^{-8}$), which would create ties.

    ``logits`` are the C + K outputs of a head with the layout of ``groups`` (the same spec
    as the head's: ``MOS(groups=head.groups)``).

    Args:
        groups: A `oodscore.GroupSpec`, a sequence of group sizes (consecutive
            classes), or a sequence of per-group class ids.
        log_scale: Score with $\log p$ instead of $p$ (same ranking, no underflow ties).

    Example:
        >>> import torch
        >>> from oodscore import MOS
        >>> scorer = MOS(groups=[2, 1])  # 3 classes in 2 groups -> 5 logits
        >>> scorer
        MOS(groups=GroupSpec.from_sizes([2, 1]), log_scale=False)
        >>> logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0],    # uniform: p(others) = 1/3, 1/2
        ...                        [-5.0, 5.0, 0.0, 9.0, 0.0]])  # group 0 is sure of its class
        >>> scorer(logits)
        tensor([-3.3333e-01, -4.5094e-05])
        >>> MOS(groups=[2, 1], log_scale=True)(logits)  # -log of the same minimum
        tensor([ 1.0986, 10.0068])
    """

    def __init__(
        self,
        *,
        groups: GroupSpec | Sequence[int] | Sequence[Sequence[int]],
        log_scale: bool = False,
    ) -> None:
        self.groups = as_group_spec(groups)
        if not isinstance(log_scale, bool):
            raise TypeError(f"Expected `log_scale` to be a bool, got {log_scale!r}.")
        self.log_scale = log_scale

    def check_input(self, logits: Tensor) -> None:
        """Check that ``logits`` has C + K columns for the layout of ``groups``."""
        if logits.shape[1] != self.groups.width:
            raise ValueError(
                f"Expected `logits` with C + K = {self.groups.width} columns for {self.groups} "
                f"({self.groups.num_classes} classes + {self.groups.num_groups} 'others' "
                f"logits), got {logits.shape[1]} columns."
            )

    def score(self, logits: Tensor) -> Tensor:
        """MOS score of checked logits (N, C + K)."""
        return mos_score(logits, self.groups, log_scale=self.log_scale)
