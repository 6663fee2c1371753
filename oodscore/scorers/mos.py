r"""MOS: minimum "others" score over the groups of a group-softmax head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from oodscore.functional.group_softmax import mos_score
from oodscore.groups import GroupSpec, as_group_spec
from oodscore.scorers.base import Scorer, register_scorer


@register_scorer("mos")
class MOS(Scorer):
    r"""Minimum Others Score of a `oodscore.GroupSoftmax` head.

    $$ S(x) = -\min_{k=1..K} p_k(\text{others} \mid x), \qquad
       p_k = \operatorname{softmax}\left(f_{k,0}(x), f_{k,1}(x), \dots, f_{k,n_k}(x)\right) $$

    An in-distribution input belongs to some group, whose "others" probability is low; an
    OOD input looks like "others" to every group. Scores lie in $[-1, 0)$. ``logits`` are the
    C + K outputs of a head with the layout of ``groups`` (``MOS(groups=head.groups)``).

    Args:
        groups: A `oodscore.GroupSpec`, a sequence of group sizes (consecutive
            classes), or a sequence of per-group class ids.
        log_scale: Score with $-\min_k \log p_k(\text{others} \mid x)$ instead: the same
            ranking, without the ties of $p$ rounding to 0 or 1 on confident inputs.

    Examples:
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

    Source: Huang & Li, CVPR 2021; ``deeplearning-wisc/large_scale_ood``.
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
