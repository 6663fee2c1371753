from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from oodscore import GroupSpec, group_at_random, group_by_kmeans, group_by_taxonomy
from oodscore.groups import as_group_spec


class TestGroupSpec:
    def test_layout_of_permuted_groups(self) -> None:
        spec = GroupSpec([[4, 0], [2], [1, 3, 5]])
        assert spec.num_groups == 3
        assert spec.num_classes == 6
        assert spec.width == 9
        assert spec.sizes == (2, 1, 3)
        assert spec.starts == (0, 3, 5)
        # class 4 is first in group 0 -> column 1; class 0 second -> column 2; etc.
        assert spec.class_columns == (2, 6, 4, 7, 1, 8)
        assert [spec.locate(c) for c in range(6)] == [
            (0, 1),
            (2, 0),
            (1, 0),
            (2, 1),
            (0, 0),
            (2, 2),
        ]
        for c in range(6):
            assert spec.class_id(*spec.locate(c)) == c
        assert not spec.is_contiguous

    def test_from_sizes(self) -> None:
        spec = GroupSpec.from_sizes([3, 1, 2])
        assert spec.groups == ((0, 1, 2), (3,), (4, 5))
        assert spec.is_contiguous
        assert spec.starts == (0, 4, 6)
        assert spec.class_columns == (1, 2, 3, 5, 7, 8)
        assert GroupSpec.from_sizes(np.array([3, 1, 2])) == spec

    def test_from_assignment(self) -> None:
        spec = GroupSpec.from_assignment([2, 0, 2, 1, 0])
        assert spec.groups == ((1, 4), (3,), (0, 2))
        assert GroupSpec.from_assignment(np.array([0, 0, 0])).groups == ((0, 1, 2),)
        assert GroupSpec.from_assignment(torch.tensor([1, 0])).groups == ((1,), (0,))
        assert GroupSpec(np.array([[0, 2], [1, 3]])).groups == ((0, 2), (1, 3))

    def test_value_semantics(self) -> None:
        a = GroupSpec([[0, 2], [1]])
        b = GroupSpec(((0, 2), (1,)))
        c = GroupSpec([[2, 0], [1]])  # same partition, other column order: another layout
        assert a == b
        assert hash(a) == hash(b)
        assert a != c
        assert len({a, b, c}) == 2
        assert a != "not a spec"
        assert pickle.loads(pickle.dumps(a)) == a
        assert GroupSpec(a) == a
        with pytest.raises(AttributeError, match="immutable"):
            a.foo = 1  # type: ignore[attr-defined]
        with pytest.raises(AttributeError, match="immutable"):
            del a._groups

    def test_repr_round_trips(self) -> None:
        for spec in (GroupSpec.from_sizes([2, 3]), GroupSpec([[1], [0, 2]])):
            assert eval(repr(spec), {"GroupSpec": GroupSpec}) == spec
        big = GroupSpec.from_assignment(np.arange(100) % 7)
        assert repr(big) == (
            "GroupSpec(<7 groups of 100 classes, sizes [15, 15, 14, 14, 14, 14, 14]>)"
        )

    def test_tensors_cached_per_device(self) -> None:
        spec = GroupSpec([[2], [0, 3, 1]])
        t = spec.tensors("cpu")
        assert spec.tensors(torch.device("cpu")) is t
        assert t["padded_columns"].tolist() == [[0, 1, 1, 1], [2, 3, 4, 5]]
        assert t["padding"].tolist() == [[False, False, True, True], [False] * 4]
        assert t["group_of_class"].tolist() == [1, 1, 0, 1]
        assert t["index_of_class"].tolist() == [0, 2, 0, 1]
        assert t["class_of_position"].tolist() == [[2, 0, 0], [0, 3, 1]]
        assert t["others_columns"].tolist() == [0, 2]
        assert t["padded_class_columns"].tolist() == [[1, 1, 1], [3, 4, 5]]
        assert t["class_padding"].tolist() == [[False, True, True], [False] * 3]
        assert set(t) == {
            "padded_columns",
            "padding",
            "padded_class_columns",
            "class_padding",
            "others_columns",
            "group_of_class",
            "index_of_class",
            "class_of_position",
        }

    def test_tensors_agree_with_locate_and_columns(self) -> None:
        spec = group_at_random(23, 5, seed=3)
        spec = GroupSpec([list(reversed(g)) for g in spec.groups])  # not ascending inside
        t = spec.tensors()
        for c in range(spec.num_classes):
            k, j = spec.locate(c)
            assert (t["group_of_class"][c].item(), t["index_of_class"][c].item()) == (k, j)
            assert t["class_of_position"][k, j].item() == c
            assert t["padded_class_columns"][k, j].item() == spec.class_columns[c]

    @pytest.mark.parametrize(
        ("groups", "match"),
        [
            ([], "at least one group"),
            ([[0, 1], []], "group 1 is empty"),
            ([[0, 1], [1]], r"class 1 is in groups 0 and 1"),
            ([[0, 0]], r"class 0 is in group 0 twice"),
            ([[0, 3], [1]], r"0\.\.2 .* group 0 holds class 3"),
            ([[0, -1]], r"group 0 holds class -1"),
        ],
    )
    def test_invalid_groups(self, groups: list[list[int]], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            GroupSpec(groups)

    def test_invalid_types(self) -> None:
        with pytest.raises(TypeError, match="integer class ids"):
            GroupSpec([[0, 1.5]])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="integer class ids"):
            GroupSpec([[0, True]])
        with pytest.raises(TypeError, match="group 0 to be a sequence"):
            GroupSpec([3])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="sequence of sequences"):
            GroupSpec("ab")  # type: ignore[arg-type]

    def test_invalid_sizes(self) -> None:
        with pytest.raises(ValueError, match=r"sum to num_classes=6, got sizes \(2, 3\)"):
            GroupSpec.from_sizes([2, 3], num_classes=6)
        with pytest.raises(ValueError, match=r"`sizes\[1\]` to be an integer >= 1, got 0"):
            GroupSpec.from_sizes([2, 0])
        with pytest.raises(ValueError, match="at least one group size"):
            GroupSpec.from_sizes([])

    def test_invalid_assignment(self) -> None:
        with pytest.raises(ValueError, match="no class is assigned to group 1"):
            GroupSpec.from_assignment([0, 2, 2])
        with pytest.raises(ValueError, match="non-empty 1-D"):
            GroupSpec.from_assignment([])
        with pytest.raises(ValueError, match=">= 0, got -1"):
            GroupSpec.from_assignment([0, -1])
        with pytest.raises(TypeError, match="integer group ids"):
            GroupSpec.from_assignment([0.0, 1.0])  # type: ignore[list-item]

    def test_locate_and_class_id_errors(self) -> None:
        spec = GroupSpec.from_sizes([2, 1])
        with pytest.raises(ValueError, match=r"`class_id` in 0\.\.2, got 3"):
            spec.locate(3)
        with pytest.raises(ValueError, match=r"`group` in 0\.\.1, got 2"):
            spec.class_id(2, 0)
        with pytest.raises(ValueError, match=r"`index` in 0\.\.0 for group 1, got 1"):
            spec.class_id(1, 1)

    def test_as_group_spec(self) -> None:
        assert as_group_spec([2, 1]) == GroupSpec.from_sizes([2, 1])
        assert as_group_spec([[1], [0]]) == GroupSpec([[1], [0]])
        spec = GroupSpec([[0]])
        assert as_group_spec(spec) is spec
        with pytest.raises(TypeError, match="GroupSpec, a sequence of group sizes"):
            as_group_spec(3)  # type: ignore[arg-type]


class TestTaxonomy:
    def test_names_and_mapping(self) -> None:
        names = ["cat", "shirt", "dog", "shoe", "bird"]
        spec = group_by_taxonomy(
            {"animals": ["dog", "cat", "bird"], "clothing": ["shirt", "shoe"]}, names
        )
        assert spec.groups == ((2, 0, 4), (1, 3))
        assert group_by_taxonomy([[1, 0]]) == GroupSpec([[1, 0]])

    def test_errors(self) -> None:
        names = ["a", "b", "c"]
        with pytest.raises(ValueError, match="group 1 holds 'z'"):
            group_by_taxonomy([["a"], ["z"]], names)
        with pytest.raises(ValueError, match=r"misses \['c'\]"):
            group_by_taxonomy([["a"], ["b"]], names)
        with pytest.raises(ValueError, match="'a' appears twice"):
            group_by_taxonomy([["a"]], ["a", "a"])
        with pytest.raises(ValueError, match="class 0 is in groups 0 and 1"):
            group_by_taxonomy([["a", "b"], ["a", "c"]], names)


class TestKMeans:
    def test_recovers_separated_clusters(self, rng: np.random.Generator) -> None:
        centers = np.eye(4) * 10
        assignment = rng.permutation(np.repeat(np.arange(4), 5))
        vectors = centers[assignment] + rng.normal(scale=0.1, size=(20, 4))
        spec = group_by_kmeans(vectors, 4, normalize=False, seed=0)
        found = {frozenset(g) for g in spec.groups}
        truth = {frozenset(np.flatnonzero(assignment == k).tolist()) for k in range(4)}
        assert found == truth
        # torch input, same answer; deterministic for a seed
        assert group_by_kmeans(torch.from_numpy(vectors), 4, normalize=False) == spec

    def test_normalize_uses_directions(self) -> None:
        # Same directions, very different norms: cosine geometry groups by direction.
        vectors = np.array([[1.0, 0.0], [100.0, 1.0], [0.0, 1.0], [1.0, 80.0]])
        spec = group_by_kmeans(vectors, 2)
        assert {frozenset(g) for g in spec.groups} == {frozenset({0, 1}), frozenset({2, 3})}

    def test_duplicates_never_leave_a_group_empty(self) -> None:
        # Only two distinct vectors but four groups asked for: k-means finds <4 clusters.
        vectors = np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 3)
        spec = group_by_kmeans(vectors, 4, normalize=False)
        assert spec.num_groups == 4
        assert spec.num_classes == 7
        assert min(spec.sizes) >= 1
        assert group_by_kmeans(vectors, 7, normalize=False).sizes == (1,) * 7

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="at most the number of classes C = 3, got 4"):
            group_by_kmeans(np.ones((3, 2)), 4)
        with pytest.raises(ValueError, match=r"2-D array \(C, D\), got shape \(3,\)"):
            group_by_kmeans(np.ones(3), 2)
        with pytest.raises(ValueError, match="finite"):
            group_by_kmeans(np.array([[0.0, np.nan], [1.0, 0.0]]), 1)
        with pytest.raises(ValueError, match="`num_groups` to be an integer >= 1, got 0"):
            group_by_kmeans(np.ones((3, 2)), 0)
        with pytest.raises(TypeError, match="real numbers"):
            group_by_kmeans(np.array([["a", "b"]]), 1)


class TestRandom:
    def test_balanced_and_seeded(self) -> None:
        spec = group_at_random(23, 5, seed=3)
        assert sorted(spec.sizes) == [4, 4, 5, 5, 5]
        assert sorted(c for g in spec.groups for c in g) == list(range(23))
        assert all(list(g) == sorted(g) for g in spec.groups)
        assert group_at_random(23, 5, seed=3) == spec
        assert group_at_random(23, 5, seed=4) != spec
        assert group_at_random(4, 4).sizes == (1, 1, 1, 1)
        assert group_at_random(4, 1).groups == ((0, 1, 2, 3),)

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="at most num_classes=3, got num_groups=4"):
            group_at_random(3, 4)
        with pytest.raises(ValueError, match="`num_classes` to be an integer >= 1"):
            group_at_random(0, 1)
