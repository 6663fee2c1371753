r"""The group specification of MOS: a partition of C classes into K groups, and the head's layout.

A `GroupSpec` partitions the C classes of a classifier into K non-empty groups and fixes
the official layout of the C + K logits of a group-softmax head (Huang & Li, "MOS: Towards
Scaling Out-of-distribution Detection for Large Semantic Space", CVPR 2021; official code
``deeplearning-wisc/large_scale_ood``, ``finetune.py: get_group_slices``): group k owns the
contiguous slice of $n_k + 1$ columns that starts at $\sum_{j<k} (n_j + 1)$; the slice's first
column is the group's "others" logit, followed by the group's classes in their order.
`GroupSoftmax` and `MOS` share one spec, so they cannot disagree about the layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
from torch import Tensor

from oodscore._validation import check_int
from oodscore.groups.layout import build_layout_tensors

__all__ = ["GroupSpec", "as_group_spec"]

_REPR_MAX_CLASSES = 40
"""Beyond this many classes a permuted spec's repr summarizes instead of listing every class."""


def _as_class_id(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"Expected `{name}` to hold integer class ids, got {value!r}.")
    return int(value)


class GroupSpec:
    r"""A partition of C classes into K non-empty groups, and the layout of a C + K-logit head.

    ``GroupSpec(groups)`` takes the original class ids of each group (a taxonomy: classes in
    any order, every class of ``0 .. C-1`` exactly once); the order inside a group is the order
    of that group's columns. `from_sizes` builds groups of consecutive classes and
    `from_assignment` builds them from each class's group id.

    Logit layout (official ``get_group_slices``), for sizes $(n_1, \dots, n_K)$:

    ```text
    | others_1 | class_1,1 ... class_1,n1 | others_2 | class_2,1 ... | ... | others_K | ... |
    ```

    The spec is immutable, hashable and compared by its groups. It holds plain tuples; the
    index tensors used on a device are built on first use and cached per device.

    Args:
        groups: For each group, the original class ids it contains, in order.

    Raises:
        ValueError: If there is no group, a group is empty, or the groups do not hold every
            class id of ``0 .. C-1`` exactly once (C = the total number of ids).
        TypeError: If a class id is not an integer.

    Examples:
        >>> from oodscore import GroupSpec
        >>> spec = GroupSpec([[0, 3], [2], [1, 4]])
        >>> spec.num_groups, spec.num_classes, spec.width
        (3, 5, 8)
        >>> spec.locate(3)  # (group, index within the group)
        (0, 1)
        >>> spec.class_id(2, 0)
        1
        >>> spec.class_columns  # column of each original class in the head's output
        (1, 6, 4, 2, 7)
        >>> GroupSpec.from_sizes([2, 3]) == GroupSpec([[0, 1], [2, 3, 4]])
        True
    """

    __slots__ = ("_cache", "_groups", "_locations")

    _groups: tuple[tuple[int, ...], ...]
    _locations: tuple[tuple[int, int], ...]
    _cache: dict[torch.device, dict[str, Tensor]]

    def __init__(self, groups: Sequence[Sequence[int]]) -> None:
        if isinstance(groups, GroupSpec):
            normalized = groups.groups
        else:
            if isinstance(groups, (str, bytes)) or not isinstance(groups, (Sequence, np.ndarray)):
                raise TypeError(
                    "Expected `groups` to be a sequence of sequences of class ids, "
                    f"got {type(groups).__name__}."
                )
            normalized = tuple(self._normalize_group(g, k) for k, g in enumerate(groups))
        if not normalized:
            raise ValueError("Expected `groups` to hold at least one group, got none.")
        for k, members in enumerate(normalized):
            if not members:
                raise ValueError(f"Expected every group to be non-empty, but group {k} is empty.")
        num_classes = sum(len(g) for g in normalized)
        seen: dict[int, int] = {}
        for k, members in enumerate(normalized):
            for c in members:
                if c < 0 or c >= num_classes:
                    raise ValueError(
                        f"Expected class ids in 0..{num_classes - 1} (the groups hold "
                        f"{num_classes} classes in all), but group {k} holds class {c}."
                    )
                if c in seen:
                    where = f"groups {seen[c]} and {k}" if seen[c] != k else f"group {k} twice"
                    raise ValueError(
                        f"Expected every class exactly once, but class {c} is in {where}."
                    )
                seen[c] = k
        locations = [(0, 0)] * num_classes
        for k, members in enumerate(normalized):
            for j, c in enumerate(members):
                locations[c] = (k, j)
        object.__setattr__(self, "_groups", normalized)
        object.__setattr__(self, "_locations", tuple(locations))
        object.__setattr__(self, "_cache", {})

    @staticmethod
    def _normalize_group(group: object, k: int) -> tuple[int, ...]:
        if isinstance(group, (str, bytes)) or not isinstance(group, (Sequence, np.ndarray)):
            raise TypeError(
                f"Expected group {k} to be a sequence of class ids, got {type(group).__name__}."
            )
        return tuple(_as_class_id(c, f"groups[{k}]") for c in group)

    @classmethod
    def from_sizes(cls, sizes: Sequence[int], *, num_classes: int | None = None) -> GroupSpec:
        """Groups of consecutive classes: the first ``sizes[0]`` classes, the next ``sizes[1]``...

        This is the official code's group configuration (``classes_per_group``).

        Args:
            sizes: The number of classes of each group, each >= 1.
            num_classes: If given, the sizes must sum to it.

        Raises:
            ValueError: If a size is not an integer >= 1, or the sizes do not sum to
                ``num_classes``.

        Examples:
            >>> from oodscore import GroupSpec
            >>> GroupSpec.from_sizes([2, 1]).groups
            ((0, 1), (2,))
        """
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, (Sequence, np.ndarray)):
            raise TypeError(f"Expected `sizes` to be a sequence of integers, got {sizes!r}.")
        if len(sizes) == 0:
            raise ValueError("Expected `sizes` to hold at least one group size, got none.")
        checked = [check_int(s, f"sizes[{k}]") for k, s in enumerate(sizes)]
        if num_classes is not None:
            total = check_int(num_classes, "num_classes")
            if sum(checked) != total:
                raise ValueError(
                    f"Expected `sizes` to sum to num_classes={total}, got sizes {tuple(checked)} "
                    f"summing to {sum(checked)}."
                )
        starts = np.cumsum([0, *checked])
        bounds = starts.tolist()
        return cls([list(range(bounds[k], bounds[k + 1])) for k in range(len(checked))])

    @classmethod
    def from_assignment(cls, assignment: Sequence[int] | np.ndarray[Any, Any]) -> GroupSpec:
        """Groups from the group id of each class: class c goes to group ``assignment[c]``.

        Group ids must be ``0 .. K-1`` with none unused; inside a group, classes keep
        ascending id order.

        Raises:
            ValueError: If ``assignment`` is empty, not 1-D, or leaves a group id unused.

        Examples:
            >>> from oodscore import GroupSpec
            >>> GroupSpec.from_assignment([1, 0, 1, 0]).groups
            ((1, 3), (0, 2))
        """
        ids = np.asarray(assignment)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(
                f"Expected `assignment` to be a non-empty 1-D sequence of group ids, "
                f"got shape {ids.shape}."
            )
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Expected `assignment` to hold integer group ids, got {ids.dtype}.")
        if ids.min() < 0:
            raise ValueError(f"Expected group ids >= 0, got {int(ids.min())}.")
        num_groups = int(ids.max()) + 1
        counts = np.bincount(ids, minlength=num_groups)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise ValueError(
                f"Expected group ids 0..{num_groups - 1} to be used each at least once, "
                f"but no class is assigned to group {int(empty[0])}."
            )
        return cls([np.flatnonzero(ids == k).tolist() for k in range(num_groups)])

    # ------------------------------------------------------------------ read-only views
    @property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        """The original class ids of each group, in column order."""
        return self._groups

    @property
    def num_groups(self) -> int:
        """K, the number of groups."""
        return len(self._groups)

    @property
    def num_classes(self) -> int:
        """C, the number of classes."""
        return len(self._locations)

    @property
    def width(self) -> int:
        """C + K, the number of logits of a head with this layout."""
        return self.num_classes + self.num_groups

    @property
    def sizes(self) -> tuple[int, ...]:
        """The number of classes of each group."""
        return tuple(len(g) for g in self._groups)

    @property
    def starts(self) -> tuple[int, ...]:
        """The column of each group's "others" logit (the start of its slice)."""
        out, start = [], 0
        for size in self.sizes:
            out.append(start)
            start += size + 1
        return tuple(out)

    @property
    def class_columns(self) -> tuple[int, ...]:
        """For each original class id, its column in the C + K logits."""
        starts = self.starts
        return tuple(starts[k] + 1 + j for k, j in self._locations)

    @property
    def is_contiguous(self) -> bool:
        """Whether the groups hold consecutive classes in order (a `from_sizes` spec)."""
        return all(c == i for i, c in enumerate(c for g in self._groups for c in g))

    def locate(self, class_id: int) -> tuple[int, int]:
        """The (group, index within the group) of an original class id."""
        c = _as_class_id(class_id, "class_id")
        if not 0 <= c < self.num_classes:
            raise ValueError(f"Expected `class_id` in 0..{self.num_classes - 1}, got {class_id!r}.")
        return self._locations[c]

    def class_id(self, group: int, index: int) -> int:
        """The original class id at ``index`` within ``group``."""
        k = _as_class_id(group, "group")
        if not 0 <= k < self.num_groups:
            raise ValueError(f"Expected `group` in 0..{self.num_groups - 1}, got {group!r}.")
        j = _as_class_id(index, "index")
        if not 0 <= j < len(self._groups[k]):
            raise ValueError(
                f"Expected `index` in 0..{len(self._groups[k]) - 1} for group {k}, got {index!r}."
            )
        return self._groups[k][j]

    # ------------------------------------------------------------------ device tensors
    def tensors(self, device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Index tensors of the layout on ``device``, built once per device and cached.

        Keys: ``"padded_columns"``, ``"padding"``, ``"padded_class_columns"``,
        ``"class_padding"``, ``"others_columns"``, ``"group_of_class"``,
        ``"index_of_class"`` and ``"class_of_position"``; their shapes and meaning are
        documented at `oodscore.groups.layout.build_layout_tensors`, which builds them.
        """
        key = torch.device(device if device is not None else "cpu")
        cached = self._cache.get(key)
        if cached is None:
            cached = {name: t.to(key) for name, t in build_layout_tensors(self).items()}
            self._cache[key] = cached
        return cached

    # ------------------------------------------------------------------ value semantics
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GroupSpec):
            return NotImplemented
        return self._groups == other._groups

    def __hash__(self) -> int:
        return hash((GroupSpec, self._groups))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"GroupSpec is immutable; cannot set {name!r}.")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"GroupSpec is immutable; cannot delete {name!r}.")

    def __reduce__(self) -> tuple[type[GroupSpec], tuple[tuple[tuple[int, ...], ...]]]:
        return (GroupSpec, (self._groups,))

    def __len__(self) -> int:
        return self.num_groups

    def __repr__(self) -> str:
        if self.is_contiguous:
            return f"GroupSpec.from_sizes({list(self.sizes)})"
        if self.num_classes <= _REPR_MAX_CLASSES:
            return f"GroupSpec({[list(g) for g in self._groups]})"
        return (
            f"GroupSpec(<{self.num_groups} groups of {self.num_classes} classes, "
            f"sizes {list(self.sizes)}>)"
        )


def as_group_spec(groups: GroupSpec | Sequence[int] | Sequence[Sequence[int]]) -> GroupSpec:
    """A `GroupSpec` from a spec, a sequence of group sizes, or per-group class ids.

    Raises:
        TypeError: If ``groups`` is none of these.

    Examples:
        >>> from oodscore.groups import as_group_spec
        >>> as_group_spec([2, 1])
        GroupSpec.from_sizes([2, 1])
        >>> as_group_spec([[1], [0, 2]])
        GroupSpec([[1], [0, 2]])
    """
    if isinstance(groups, GroupSpec):
        return groups
    if isinstance(groups, (str, bytes)) or not isinstance(groups, (Sequence, np.ndarray)):
        raise TypeError(
            "Expected `groups` to be a GroupSpec, a sequence of group sizes or a sequence of "
            f"per-group class ids, got {type(groups).__name__}."
        )
    if len(groups) and all(isinstance(g, Integral) and not isinstance(g, bool) for g in groups):
        return GroupSpec.from_sizes(groups)  # type: ignore[arg-type]
    return GroupSpec(groups)  # type: ignore[arg-type]
