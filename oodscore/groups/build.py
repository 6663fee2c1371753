"""Groupings of classes for MOS: from a taxonomy, by k-means on class vectors, at random.

The MOS paper (Huang & Li, CVPR 2021) groups ImageNet's classes by a taxonomy (the top
level of WordNet), compares with k-means on class representations and with random groups
of balanced sizes (its baseline). Each helper returns a `oodscore.GroupSpec`.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from oodscore._arrays import check_numeric
from oodscore._validation import check_int
from oodscore.groups.spec import GroupSpec

__all__ = ["group_at_random", "group_by_kmeans", "group_by_taxonomy"]


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

    Examples:
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

    Examples:
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

    Examples:
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
