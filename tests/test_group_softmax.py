from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from oodscore import GroupSoftmax, GroupSpec, attach_group_softmax
from oodscore.functional import group_log_softmax
from oodscore.functional import group_softmax as group_softmax_module
from tests.reference import mos as ref

# Groupings covering: equal sizes (reshape path), unequal sizes (padded gather path),
# permuted class orders, a single group (K = 1) and single-class groups.
GROUPINGS = {
    "equal": [[0, 1, 2], [3, 4, 5]],
    "unequal": [[0, 1], [2, 3, 4, 5], [6]],
    "permuted": [[5, 0, 3], [6], [2, 4, 1]],
    "one_group": [[3, 1, 0, 2]],
    "singletons": [[2], [0], [1]],
    "mixed_permuted": [[7, 2], [0], [5, 1, 6, 3], [4]],
}


def _head(groups: list[list[int]]) -> GroupSoftmax:
    return GroupSoftmax(5, GroupSpec(groups), zero_init=False)


def _random_logits(
    rng: np.random.Generator, n: int, spec: GroupSpec, scale: float = 3.0
) -> np.ndarray:
    return rng.normal(scale=scale, size=(n, spec.width))


def _extreme_logits(rng: np.random.Generator, n: int, spec: GroupSpec) -> np.ndarray:
    """Logits of ±1e4 (exp overflows without a shift) mixed with small values."""
    x = rng.choice([-1e4, -50.0, 0.0, 30.0, 1e4], size=(n, spec.width))
    return x + rng.normal(scale=1e-2, size=x.shape)  # no exact ties for the predictions


@pytest.mark.parametrize("name", list(GROUPINGS))
class TestAgainstReference:
    def test_targets(self, name: str, rng: np.random.Generator) -> None:
        groups = GROUPINGS[name]
        head = _head(groups)
        labels = rng.integers(0, head.groups.num_classes, size=40)
        got = head.targets(torch.from_numpy(labels))
        assert got.dtype == torch.long
        np.testing.assert_array_equal(got.numpy(), ref.targets(labels.tolist(), groups))

    @pytest.mark.parametrize("kind", ["random", "extreme"])
    def test_loss(self, name: str, kind: str, rng: np.random.Generator) -> None:
        groups = GROUPINGS[name]
        head = _head(groups)
        make = _random_logits if kind == "random" else _extreme_logits
        x = make(rng, 30, head.groups)
        labels = rng.integers(0, head.groups.num_classes, size=30)
        got = head.loss(torch.from_numpy(x), torch.from_numpy(labels))
        assert got.dtype == torch.float64
        assert got.ndim == 0
        expected = ref.loss(x, labels.tolist(), groups)
        np.testing.assert_allclose(got.item(), expected, rtol=1e-12)
        per_sample = head.loss(torch.from_numpy(x), torch.from_numpy(labels), reduction="none")
        assert per_sample.shape == (30,)
        np.testing.assert_allclose(per_sample.mean().item(), expected, rtol=1e-12)
        total = head.loss(torch.from_numpy(x), torch.from_numpy(labels), reduction="sum")
        np.testing.assert_allclose(total.item(), 30 * expected, rtol=1e-12)

    @pytest.mark.parametrize("kind", ["random", "extreme"])
    def test_predict(self, name: str, kind: str, rng: np.random.Generator) -> None:
        groups = GROUPINGS[name]
        head = _head(groups)
        make = _random_logits if kind == "random" else _extreme_logits
        x = make(rng, 50, head.groups)
        got = head.predict(torch.from_numpy(x))
        assert got.dtype == torch.long
        if kind == "random":
            np.testing.assert_array_equal(got.numpy(), ref.predict(x, groups))
            return
        # Extreme logits tie probabilities at exactly 1 or 0 in float64, where the official
        # rule (first maximum) is arbitrary; the head ranks in log space, which resolves
        # some of them. Any tied best class is right; untied rows must match exactly.
        candidates = ref.predict_candidates(x, groups)
        assert all(int(c) in best for c, best in zip(got, candidates, strict=True))
        untied = [i for i, best in enumerate(candidates) if len(best) == 1]
        assert len(untied) > 10
        np.testing.assert_array_equal(got.numpy()[untied], ref.predict(x, groups)[untied])

    def test_log_probs_and_others(self, name: str, rng: np.random.Generator) -> None:
        groups = GROUPINGS[name]
        head = _head(groups)
        x = _random_logits(rng, 20, head.groups)
        others = head.others_probs(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(others, ref.others_probabilities(x, groups), rtol=1e-10)
        padded = head.log_probs(torch.from_numpy(x))
        sizes = head.groups.sizes
        assert padded.shape == (20, len(groups), max(sizes) + 1)
        for k, size in enumerate(sizes):
            assert torch.isinf(padded[:, k, size + 1 :]).all()
            np.testing.assert_allclose(padded[:, k, : size + 1].exp().sum(1).numpy(), 1.0)
        # class_log_probs: log-probability of each original class within its group
        per_class = head.class_log_probs(torch.from_numpy(x)).numpy()
        for c in range(head.groups.num_classes):
            k, j = head.groups.locate(c)
            np.testing.assert_allclose(per_class[:, c], padded[:, k, j + 1].numpy(), rtol=1e-10)

    def test_gradcheck(self, name: str, rng: np.random.Generator) -> None:
        groups = GROUPINGS[name]
        spec = GroupSpec(groups)
        x = torch.from_numpy(_random_logits(rng, 4, spec)).requires_grad_()
        labels = torch.from_numpy(rng.integers(0, spec.num_classes, size=4))
        head = _head(groups)
        assert torch.autograd.gradcheck(lambda t: head.loss(t, labels), (x,))
        assert torch.autograd.gradcheck(lambda t: head.others_probs(t), (x,))


@pytest.mark.parametrize("limit", [0.0, float("inf")], ids=["slice_loop", "padded"])
def test_both_strategies_match_reference(
    limit: float, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unequal groups run as a loop over slices or on a padded tensor; both are exact."""
    monkeypatch.setattr(group_softmax_module, "PADDING_LIMIT", limit)
    for groups in (GROUPINGS["unequal"], GROUPINGS["permuted"], GROUPINGS["mixed_permuted"]):
        head = _head(groups)
        assert group_softmax_module.uses_padding(head.groups) == (limit > 1)
        x = _random_logits(rng, 25, head.groups)
        labels = rng.integers(0, head.groups.num_classes, size=25)
        t = torch.from_numpy(x)
        np.testing.assert_allclose(
            head.loss(t, torch.from_numpy(labels)).item(),
            ref.loss(x, labels.tolist(), groups),
            rtol=1e-12,
        )
        np.testing.assert_array_equal(head.predict(t).numpy(), ref.predict(x, groups))
        np.testing.assert_allclose(
            head.others_probs(t).numpy(), ref.others_probabilities(x, groups), rtol=1e-10
        )
        padded = head.log_probs(t)
        for c in range(head.groups.num_classes):
            k, j = head.groups.locate(c)
            torch.testing.assert_close(head.class_log_probs(t)[:, c], padded[:, k, j + 1])
        x_grad = t[:4].clone().requires_grad_()
        assert torch.autograd.gradcheck(head.loss, (x_grad, torch.from_numpy(labels[:4])))


def test_loss_equals_official_loop_of_cross_entropies(rng: np.random.Generator) -> None:
    """The official get_loss: K CrossEntropyLoss() terms (each a batch mean), added."""
    spec = GroupSpec.from_sizes([3, 1, 4])
    x = torch.from_numpy(_random_logits(rng, 16, spec)).float()
    labels = torch.from_numpy(rng.integers(0, 8, size=16))
    targets = torch.from_numpy(ref.targets(labels.tolist(), spec.groups))
    expected = sum(
        F.cross_entropy(x[:, start:end], targets[:, k])
        for k, (start, end) in enumerate(ref.group_slices(spec.groups))
    )
    head = GroupSoftmax(2, spec)
    torch.testing.assert_close(head.loss(x, labels), expected)


def test_equal_size_fast_path_matches_padded_gather(rng: np.random.Generator) -> None:
    spec = GroupSpec.from_sizes([3, 3, 3])
    x = torch.from_numpy(_random_logits(rng, 10, spec))
    fast = group_log_softmax(x, spec)
    slow = torch.log_softmax(x[:, spec.tensors()["padded_columns"]], dim=-1)
    torch.testing.assert_close(fast, slow, rtol=1e-14, atol=1e-14)
    unequal = GroupSpec.from_sizes([3, 1, 2])
    y = torch.from_numpy(_random_logits(rng, 10, unequal))
    gathered = group_log_softmax(y, unequal)
    for k, (start, end) in enumerate(ref.group_slices(unequal.groups)):
        torch.testing.assert_close(
            gathered[:, k, : end - start], torch.log_softmax(y[:, start:end], dim=1)
        )


def test_float16_runs_in_float32() -> None:
    head = GroupSoftmax(3, [2, 2])
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.5, -1.0, 4.0]], dtype=torch.float16)
    assert head.loss(logits, torch.tensor([3])).dtype == torch.float32
    assert head.log_probs(logits).dtype == torch.float32
    assert head.predict(logits).tolist() == [3]  # 0.96 in group 1 beats 0.67 in group 0


@pytest.mark.parametrize("name", ["equal", "unequal", "permuted", "singletons"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [10.0, 100.0, 1e3])
def test_predict_follows_the_official_rule_at_large_logit_scales(
    name: str, dtype: type, scale: float
) -> None:
    """The official ``calc_group_softmax_acc`` (``finetune.py:138-176``) compares the
    groups' best probabilities. Ranking by the float32 difference ``best - logsumexp``
    disagreed with the float64 rule on up to 58 of 2000 rows at scale 10 and 265 at scale
    100 (cancellation), and float64 logits on 30 at scale 100; the head now decides
    exactly. Ties of the float64 probabilities (at 1 or 0) are broken by the exact
    log-probabilities, so any tied class is right."""
    groups = GROUPINGS[name]
    head = _head(groups)
    rng = np.random.default_rng(int(scale) + 7 * len(groups))
    x = rng.normal(scale=scale, size=(2000, head.groups.width)).astype(dtype)
    got = head.predict(torch.from_numpy(x)).tolist()
    candidates = ref.predict_candidates(x.astype(np.float64), groups)
    wrong = [i for i, (c, best) in enumerate(zip(got, candidates, strict=True)) if c not in best]
    assert wrong == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_predict_prefers_probability_one_over_0_99994(dtype: torch.dtype) -> None:
    """Logits near 1e3: group 0's best class has p = 1/(1 + e^-9.75 + e^-40) = 0.99994,
    group 1's 1 - 4e-18 (1.0 in float32). Ranked by the float32 difference
    ``best - logsumexp`` (ulp 6e-5 at 1024), group 0 won."""
    head = GroupSoftmax(3, [[0, 1], [2, 3]])
    base = 1024.0
    row = [base - 9.75, base, base - 40.0, base - 40.0, base, base - 45.0]
    logits = torch.tensor([row], dtype=dtype)
    assert head.predict(logits).tolist() == [2]
    assert ref.predict(logits.double().numpy(), [[0, 1], [2, 3]]).tolist() == [2]


def test_training_separates_classes() -> None:
    """A few steps of SGD on the loss learn the classes (the gradient points the right way)."""
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(6, 4, generator=gen) * 4
    labels = torch.arange(6).repeat(8)
    features = centers[labels] + 0.3 * torch.randn(48, 4, generator=gen)
    head = GroupSoftmax(4, [[4, 1], [0, 5, 2], [3]])
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5)
    start = head.loss(head(features), labels).item()
    for _ in range(60):
        optimizer.zero_grad()
        head.loss(head(features), labels).backward()
        optimizer.step()
    assert head.loss(head(features), labels).item() < 0.2 * start
    assert (head.predict(head(features)) == labels).float().mean() > 0.95


class TestModule:
    def test_zero_init_and_parameters(self) -> None:
        head = GroupSoftmax(4, [3, 2])
        assert head.weight.shape == (7, 4)
        assert head.bias is not None
        assert head.bias.shape == (7,)
        assert not head.weight.any()
        assert list(head.state_dict()) == ["weight", "bias"]
        # zero logits: p(others) = 1/(n_k + 1), loss = sum_k log(n_k + 1)
        loss = head.loss(head(torch.randn(5, 4)), torch.tensor([0, 1, 2, 3, 4]))
        torch.testing.assert_close(loss, torch.tensor(np.log(4.0) + np.log(3.0)).float())

    def test_linear_init_and_no_bias(self) -> None:
        torch.manual_seed(1)
        head = GroupSoftmax(4, [3, 2], zero_init=False, bias=False)
        assert head.bias is None
        assert head.weight.abs().max() <= 0.5  # kaiming-uniform bound 1/sqrt(4)
        assert head.weight.std() > 0.1
        x = torch.randn(3, 4)
        torch.testing.assert_close(head(x), x @ head.weight.T)

    def test_dtype_device_and_repr(self) -> None:
        head = GroupSoftmax(2, [[1], [0]], dtype=torch.float64, device="cpu")
        assert head.weight.dtype == torch.float64
        assert repr(head) == (
            "GroupSoftmax(in_features=2, groups=GroupSpec([[1], [0]]), bias=True)"
        )

    def test_errors(self) -> None:
        head = GroupSoftmax(3, [2, 2])
        good = torch.zeros(4, 6)
        with pytest.raises(ValueError, match=r"\(N, 6\) .* got shape \(4, 5\)"):
            head.loss(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))
        with pytest.raises(ValueError, match=r"\(N, 6\) .* got shape \(6,\)"):
            head.predict(torch.zeros(6))
        with pytest.raises(ValueError, match=r"`labels` in 0\.\.3 \(C = 4 classes\), got 4"):
            head.loss(good, torch.tensor([0, 1, 4, 2]))
        with pytest.raises(ValueError, match=r"`labels` in 0\.\.3 .* got -1"):
            head.targets(torch.tensor([-1]))
        with pytest.raises(TypeError, match=r"integer class ids, got dtype torch\.float32"):
            head.loss(good, torch.zeros(4))
        with pytest.raises(ValueError, match=r"one class id per row of `logits` \(4\), got 3"):
            head.loss(good, torch.zeros(3, dtype=torch.long))
        with pytest.raises(ValueError, match=r"1-D of shape \(N,\)"):
            head.loss(good, torch.zeros(4, 1, dtype=torch.long))
        with pytest.raises(ValueError, match="`reduction` to be 'mean', 'sum' or 'none'"):
            head.loss(good, torch.zeros(4, dtype=torch.long), reduction="avg")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="floating tensor"):
            head.predict(torch.zeros(4, 6, dtype=torch.long))
        with pytest.raises(TypeError, match=r"torch\.Tensor"):
            head.predict(np.zeros((4, 6)))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="`in_features` to be an integer >= 1, got 0"):
            GroupSoftmax(0, [2])
        with pytest.raises(ValueError, match="class 1 is in groups 0 and 1"):
            GroupSoftmax(3, [[0, 1], [1]])

    def test_copy_and_pickle_keep_the_grouping(self) -> None:
        import copy
        import io

        head = GroupSoftmax(3, [[1, 0], [2]], zero_init=False)
        head.groups.tensors()  # a filled cache must not break copies
        clone = copy.deepcopy(head)
        assert clone.groups == head.groups
        torch.testing.assert_close(clone.weight, head.weight)
        buffer = io.BytesIO()
        torch.save(head, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        assert loaded.groups == head.groups
        x = torch.randn(4, 3)
        torch.testing.assert_close(loaded.predict(loaded(x)), head.predict(head(x)))

    def test_empty_batch(self) -> None:
        head = GroupSoftmax(3, [1, 2])
        empty = torch.zeros(0, 5)
        assert head.predict(empty).shape == (0,)
        assert head.loss(empty, torch.zeros(0, dtype=torch.long), reduction="none").shape == (0,)


class TestAttach:
    def test_replaces_last_linear(self) -> None:
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 5))
        head = attach_group_softmax(model, [[4, 0], [1, 2, 3]])
        assert model[2] is head
        assert isinstance(model[0], nn.Linear)
        assert head.in_features == 16
        assert model(torch.randn(3, 8)).shape == (3, 7)

    def test_named_nested_head_keeps_dtype(self) -> None:
        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = nn.Linear(4, 6)
                self.classifier = nn.Sequential(nn.Dropout(0.0), nn.Linear(6, 3, bias=False))
                self.aux = nn.Linear(6, 2)  # registered last, but not the classifier

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.classifier(self.body(x))  # type: ignore[no-any-return]

        model = Net().double()
        head = attach_group_softmax(model, [1, 2], head="classifier.1", zero_init=False)
        assert model.classifier[1] is head
        assert head.weight.dtype == torch.float64
        assert head.weight.device == model.body.weight.device
        assert head.bias is None
        assert model(torch.randn(2, 4, dtype=torch.float64)).shape == (2, 5)
        assert isinstance(model.aux, nn.Linear)

    def test_errors(self) -> None:
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
        with pytest.raises(
            ValueError, match=r"contain an nn\.Linear head, found none; pass `head`"
        ):
            attach_group_softmax(model, [2])
        model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
        with pytest.raises(ValueError, match="'1' is a ReLU"):
            attach_group_softmax(model, [2], head="1")
        with pytest.raises(ValueError, match=r"`head` to name a submodule of Sequential, got 'fc'"):
            attach_group_softmax(model, [2], head="fc")
