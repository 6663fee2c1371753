"""Class groups for MOS: the group specification, its layout tensors, and groupings.

- `spec`: `GroupSpec`, the partition of C classes into K groups and the layout of the
  C + K logits shared by `oodscore.nn.GroupSoftmax` and `oodscore.MOS`; `as_group_spec`.
- `layout`: the index tensors of that layout (`GroupSpec.tensors`).
- `build`: groupings from a taxonomy, by k-means, or at random.
"""

from oodscore.groups.build import group_at_random, group_by_kmeans, group_by_taxonomy
from oodscore.groups.spec import GroupSpec, as_group_spec

__all__ = ["GroupSpec", "as_group_spec", "group_at_random", "group_by_kmeans", "group_by_taxonomy"]
