"""The index tensors of a group-softmax layout: padded columns, masks and class positions.

The group-softmax loss, prediction and MOS score (`oodscore.nn.GroupSoftmax`,
`oodscore.MOS`) work on all K groups at once through an (N, K, M + 1) view of the C + K
logits, M being the largest group size. These tensors say which logit column sits at each
(group, position) of that view, which positions are padding, and where each original class
went. `oodscore.GroupSpec.tensors` builds them once per device and caches them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from oodscore.groups.spec import GroupSpec

__all__ = ["build_layout_tensors"]


def build_layout_tensors(spec: GroupSpec) -> dict[str, Tensor]:
    """Index tensors of ``spec``'s layout, on the CPU.

    Keys, for K groups, C classes and M the largest group size:

    - ``"padded_columns"`` (K, M + 1) long: the columns of each group's slice ("others"
      first), padded to M + 1 with the last column of the slice;
    - ``"padding"`` (K, M + 1) bool: True at padded positions;
    - ``"padded_class_columns"`` and ``"class_padding"`` (K, M): the same without the
      "others" column;
    - ``"others_columns"`` (K,) long: the "others" column of each group;
    - ``"group_of_class"`` and ``"index_of_class"`` (C,) long: the group of each original
      class and its index within the group;
    - ``"class_of_position"`` (K, M) long: the original class id at each within-group
      position (0 at padding).

    Examples:
        >>> from oodscore import GroupSpec
        >>> from oodscore.groups.layout import build_layout_tensors
        >>> layout = build_layout_tensors(GroupSpec([[0, 3], [2], [1, 4]]))
        >>> layout["padded_columns"]
        tensor([[0, 1, 2],
                [3, 4, 4],
                [5, 6, 7]])
        >>> layout["padding"]
        tensor([[False, False, False],
                [False, False,  True],
                [False, False, False]])
        >>> layout["class_of_position"]
        tensor([[0, 3],
                [2, 0],
                [1, 4]])
    """
    k, m = spec.num_groups, max(spec.sizes)
    columns = torch.empty((k, m + 1), dtype=torch.long)
    padding = torch.zeros((k, m + 1), dtype=torch.bool)
    classes = torch.zeros((k, m), dtype=torch.long)
    group_of_class = torch.empty(spec.num_classes, dtype=torch.long)
    index_of_class = torch.empty(spec.num_classes, dtype=torch.long)
    for g, (start, members) in enumerate(zip(spec.starts, spec.groups, strict=True)):
        n = len(members)
        ids = torch.tensor(members, dtype=torch.long)
        columns[g, : n + 1] = torch.arange(start, start + n + 1)
        columns[g, n + 1 :] = start + n
        padding[g, n + 1 :] = True
        classes[g, :n] = ids
        group_of_class[ids] = g
        index_of_class[ids] = torch.arange(n)
    return {
        "padded_columns": columns,
        "padding": padding,
        "padded_class_columns": columns[:, 1:].contiguous(),
        "class_padding": padding[:, 1:].contiguous(),
        "others_columns": torch.tensor(spec.starts, dtype=torch.long),
        "group_of_class": group_of_class,
        "index_of_class": index_of_class,
        "class_of_position": classes,
    }
