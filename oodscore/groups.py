r"""Class groups for MOS: the group specification shared by `GroupSoftmax` and `MOS`, and groupings.

A `GroupSpec` partitions the C classes of a classifier into K non-empty groups and fixes
the official layout of the C + K logits of a group-softmax head (Huang & Li, "MOS: Towards
Scaling Out-of-distribution Detection for Large Semantic Space", CVPR 2021; official code
``deeplearning-wisc/large_scale_ood``, ``finetune.py: get_group_slices``): group k owns the
contiguous slice of $n_k + 1$ columns that starts at $\sum_{j<k} (n_j + 1)$; the slice's first
column is the group's "others" logit, followed by the group's classes in their order.

The helpers build groupings three ways: from a taxonomy (`group_by_taxonomy`), by
k-means on class vectors (`group_by_kmeans`), and at random with balanced sizes
(`group_at_random`, the baseline the paper compares with).
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
from torch import Tensor

from oodscore._arrays import check_numeric
from oodscore._validation import check_int

__all__ = ["GroupSpec", "group_at_random", "group_by_kmeans", "group_by_taxonomy"]

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

    Example:
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

        Example:
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

        Example:
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

        Keys: ``"padded_columns"`` (K, M + 1) long, the columns of each group's slice padded
        to the largest size M with the last column of the slice (see ``"padding"``);
        ``"padding"`` (K, M + 1) bool, True at padded positions; ``"padded_class_columns"``
        and ``"class_padding"`` (K, M), the same without the "others" column;
        ``"others_columns"`` (K,), the "others" column of each group; ``"group_of_class"`` (C,)
        and ``"index_of_class"`` (C,) long; ``"class_of_position"`` (K, M) long, the original
        class id at each within-group position (0 at padding).
        """
        key = torch.device(device if device is not None else "cpu")
        cached = self._cache.get(key)
        if cached is None:
            cached = {name: t.to(key) for name, t in self._build_tensors().items()}
            self._cache[key] = cached
        return cached

    def _build_tensors(self) -> dict[str, Tensor]:
        k, m = self.num_groups, max(self.sizes)
        columns = torch.empty((k, m + 1), dtype=torch.long)
        padding = torch.zeros((k, m + 1), dtype=torch.bool)
        classes = torch.zeros((k, m), dtype=torch.long)
        for g, (start, members) in enumerate(zip(self.starts, self._groups, strict=True)):
            n = len(members)
            columns[g, : n + 1] = torch.arange(start, start + n + 1)
            columns[g, n + 1 :] = start + n
            padding[g, n + 1 :] = True
            classes[g, :n] = torch.tensor(members, dtype=torch.long)
        locations = torch.tensor(self._locations, dtype=torch.long).reshape(-1, 2)
        return {
            "padded_columns": columns,
            "padding": padding,
            "padded_class_columns": columns[:, 1:].contiguous(),
            "class_padding": padding[:, 1:].contiguous(),
            "others_columns": torch.tensor(self.starts, dtype=torch.long),
            "group_of_class": locations[:, 0].contiguous(),
            "index_of_class": locations[:, 1].contiguous(),
            "class_of_position": classes,
        }

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
    """A `GroupSpec` from a spec, a sequence of group sizes, or per-group class ids."""
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


# ---------------------------------------------------------------------- grouping helpers
def group_by_taxonomy(
    taxonomy: Mapping[Hashable, Sequence[Hashable]] | Sequence[Sequence[Hashable]],
    classes: Sequence[Hashable] | None = None,
) -> GroupSpec:
    """Groups from a taxonomy: lists of classes (names or ids), one list per group.

    The paper groups ImageNet's classes by the top level of the WordNet hierarchy
    (``group_config/taxonomy_level0.npy`` in the official code: 8 groups).

    Args:
        taxonomy: One list of classes per group, or a mapping from a group's name to its
            classes (groups then follow the mapping's order).
        classes: The classifier's classes in id order (e.g. names), so that ``classes[c]``
            is class c. ``None`` means the taxonomy already holds integer class ids.

    Raises:
        ValueError: If a class of the taxonomy is not in ``classes``, or a class is missing,
            repeated or a group empty.

    Example:
        >>> from oodscore import group_by_taxonomy
        >>> names = ["cat", "shirt", "dog", "shoe"]
        >>> group_by_taxonomy({"animal": ["dog", "cat"], "clothing": ["shirt", "shoe"]}, names)
        GroupSpec([[2, 0], [1, 3]])
    """
    members = list(taxonomy.values()) if isinstance(taxonomy, Mapping) else list(taxonomy)
    if classes is None:
        return GroupSpec(members)  # type: ignore[arg-type]
    index: dict[Hashable, int] = {}
    for c, name in enumerate(classes):
        if name in index:
            raise ValueError(f"Expected `classes` to be distinct, but {name!r} appears twice.")
        index[name] = c
    groups = []
    for k, group in enumerate(members):
        ids = []
        for name in group:
            if name not in index:
                raise ValueError(
                    f"Expected every class of the taxonomy to be in `classes`, but group {k} "
                    f"holds {name!r}."
                )
            ids.append(index[name])
        groups.append(ids)
    spec = GroupSpec(groups)
    if spec.num_classes != len(index):
        missing = sorted(set(index.values()) - {c for g in groups for c in g})
        raise ValueError(
            f"Expected the taxonomy to hold every class of `classes`, but it misses "
            f"{[classes[c] for c in missing]!r}."
        )
    return spec


def group_by_kmeans(
    class_vectors: Tensor | np.ndarray[Any, Any],
    num_groups: int,
    *,
    normalize: bool = True,
    seed: int = 0,
    n_init: int = 10,
) -> GroupSpec:
    r"""Groups of similar classes by k-means on one vector per class.

    The MOS paper (Sec. 4.3) clusters class representations into K groups: for example the rows
    of a trained classifier's weight matrix, or the mean penultimate feature of each class.
    Uses scikit-learn's ``KMeans`` (seeded). If k-means leaves a cluster empty (possible
    with duplicate vectors), the class farthest from its centroid in the largest cluster
    moves there, until every group has a class, so the result always has exactly
    ``num_groups`` groups.

    Args:
        class_vectors: (C, D) array, row c describes class c.
        num_groups: K, with 1 <= K <= C.
        normalize: Scale each row to unit L2 norm first (cosine geometry), so classes with
            larger weights do not dominate.
        seed: ``random_state`` of ``KMeans``.
        n_init: Number of k-means restarts.

    Raises:
        ValueError: If ``class_vectors`` is not a finite 2-D array with at least
            ``num_groups`` rows.

    Example:
        >>> import numpy as np
        >>> from oodscore import group_by_kmeans
        >>> vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
        >>> group_by_kmeans(vectors, 2).num_groups
        2
    """
    from sklearn.cluster import KMeans

    x = np.asarray(
        class_vectors.detach().cpu().numpy() if isinstance(class_vectors, Tensor) else class_vectors
    )
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(
            f"Expected `class_vectors` to be a non-empty 2-D array (C, D), got shape {x.shape}."
        )
    check_numeric(x.dtype, "class_vectors")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("Expected `class_vectors` to be finite, but it holds NaN or ±inf.")
    k = check_int(num_groups, "num_groups")
    if k > x.shape[0]:
        raise ValueError(
            f"Expected `num_groups` to be at most the number of classes C = {x.shape[0]}, got {k}."
        )
    check_int(n_init, "n_init")
    if normalize:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1.0)
    with warnings.catch_warnings():
        # Duplicate vectors make sklearn warn about fewer distinct clusters; handled below.
        warnings.simplefilter("ignore")
        model = KMeans(n_clusters=k, random_state=seed, n_init=n_init).fit(x)
    labels = np.asarray(model.labels_, dtype=np.int64).copy()
    centers = np.asarray(model.cluster_centers_, dtype=np.float64)
    for empty in range(k):
        if np.any(labels == empty):
            continue
        counts = np.bincount(labels, minlength=k)
        donor = int(np.argmax(counts))
        members = np.flatnonzero(labels == donor)
        distances = np.linalg.norm(x[members] - centers[donor], axis=1)
        labels[members[int(np.argmax(distances))]] = empty
    return GroupSpec.from_assignment(labels)


def group_at_random(num_classes: int, num_groups: int, *, seed: int = 0) -> GroupSpec:
    """A random grouping with balanced sizes (they differ by at most one), the paper's baseline.

    Classes are shuffled with ``numpy.random.default_rng(seed)`` and dealt into ``num_groups``
    consecutive chunks; each group lists its classes in ascending id order.

    Raises:
        ValueError: Unless 1 <= ``num_groups`` <= ``num_classes``.

    Example:
        >>> from oodscore import group_at_random
        >>> group_at_random(10, 3, seed=0).sizes
        (4, 3, 3)
    """
    c = check_int(num_classes, "num_classes")
    k = check_int(num_groups, "num_groups")
    if k > c:
        raise ValueError(
            f"Expected `num_groups` to be at most num_classes={c}, got num_groups={k}."
        )
    order = np.random.default_rng(seed).permutation(c)
    return GroupSpec([sorted(chunk.tolist()) for chunk in np.array_split(order, k)])
