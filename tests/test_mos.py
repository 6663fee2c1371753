from __future__ import annotations

import numpy as np
import pytest
import torch

import oodscore._arrays
from oodscore import MOS, GroupSoftmax, GroupSpec, get_scorer, list_scorers
from oodscore.functional import mos_score
from tests.reference import mos as ref

GROUPINGS = {
    "equal": [[0, 1, 2], [3, 4, 5]],
    "unequal": [[0, 1], [2, 3, 4, 5], [6]],
    "permuted": [[5, 0, 3], [6], [2, 4, 1]],
    "one_group": [[3, 1, 0, 2]],
    "singletons": [[2], [0], [1]],
}


@pytest.mark.parametrize("name", list(GROUPINGS))
@pytest.mark.parametrize("kind", ["random", "extreme"])
def test_matches_reference(name: str, kind: str, rng: np.random.Generator) -> None:
    groups = GROUPINGS[name]
    spec = GroupSpec(groups)
    if kind == "random":
        x = rng.normal(scale=3.0, size=(40, spec.width))
    else:
        x = rng.choice([-1e4, -60.0, 0.0, 25.0, 1e4], size=(40, spec.width))
    got = MOS(groups=spec)(x)
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.float64
    assert got.shape == (40,)
    np.testing.assert_allclose(got, ref.score(x, groups), rtol=1e-10, atol=1e-300)
    assert ((got >= -1) & (got <= 0)).all()
    logged = MOS(groups=spec, log_scale=True)(x)
    np.testing.assert_allclose(logged, ref.log_score(x, groups), rtol=1e-10, atol=1e-300)


def test_log_scale_resolves_float32_ties(rng: np.random.Generator) -> None:
    """Every group sure of "others" (p = 1 - 1e-9): float32 probabilities all round to -1, while
    the log-scale score keeps the float64 reference's ranking."""
    spec = GroupSpec([[0, 3], [1], [2, 4, 5]])
    x = rng.normal(size=(30, spec.width))
    x[:, list(spec.starts)] += 24.0
    x32 = torch.from_numpy(x).float()
    assert (MOS(groups=spec)(x32) == -1).all()
    logged = MOS(groups=spec, log_scale=True)(x32)
    expected = ref.log_score(x32.double().numpy(), spec.groups)
    np.testing.assert_allclose(logged.double().numpy(), expected, rtol=1e-5)
    assert len(set(logged.tolist())) == 30
    # the same ranking as the probability form wherever that one has no ties
    y = torch.from_numpy(rng.normal(scale=3.0, size=(50, spec.width)))
    np.testing.assert_array_equal(
        torch.argsort(MOS(groups=spec)(y)), torch.argsort(MOS(groups=spec, log_scale=True)(y))
    )


def test_known_values() -> None:
    # uniform logits: p(others)_k = 1 / (n_k + 1); the smallest is in the largest group
    scorer = MOS(groups=[3, 1])
    assert scorer(torch.zeros(2, 6)).tolist() == pytest.approx([-0.25, -0.25])
    # group 1 ("others" at column 4) is sure of its class: p(others) = 1 / (1 + e^20)
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, -10.0, 10.0]])
    assert scorer(logits).item() == pytest.approx(-1 / (1 + np.exp(20.0)), rel=1e-5)


def test_in_distribution_scores_higher() -> None:
    """An input that one group claims scores higher than one every group calls "others"."""
    scorer = MOS(groups=[2, 2])
    claimed = torch.tensor([[-3.0, 4.0, 0.0, 3.0, 0.0, 0.0]])
    rejected = torch.tensor([[3.0, 0.0, 0.0, 3.0, 0.0, 0.0]])
    assert scorer(claimed).item() > scorer(rejected).item()


def test_torch_io_gradients_and_half_precision(rng: np.random.Generator) -> None:
    spec = GroupSpec([[1, 3], [0], [2, 4]])
    x = torch.from_numpy(rng.normal(size=(5, spec.width))).requires_grad_()
    scorer = MOS(groups=spec)
    out = scorer(x)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float64
    assert torch.autograd.gradcheck(lambda t: scorer(t), (x,))
    half = scorer(x.detach().half())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half.double(), out.detach(), atol=2e-3, rtol=0)


def test_shares_the_heads_spec(rng: np.random.Generator) -> None:
    head = GroupSoftmax(3, [[2, 0], [1, 3, 4]], zero_init=False)
    logits = head(torch.from_numpy(rng.normal(size=(7, 3))).float())
    scorer = MOS(groups=head.groups)
    expected = -head.others_probs(logits).min(dim=1).values
    torch.testing.assert_close(scorer(logits), expected)


def test_large_batch_uses_row_blocks(rng: np.random.Generator, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    spec = GroupSpec([[0, 4], [3], [1, 2, 5]])
    x = torch.from_numpy(rng.normal(size=(1000, spec.width)))
    whole = mos_score(x, spec)
    monkeypatch.setattr(oodscore._arrays, "CHUNK_ELEMENTS", 90)
    torch.testing.assert_close(MOS(groups=spec)(x), whole)


def test_registry_and_repr() -> None:
    assert "mos" in list_scorers()
    scorer = get_scorer("mos", groups=[2, 3])
    assert isinstance(scorer, MOS)
    assert scorer.groups == GroupSpec.from_sizes([2, 3])
    assert repr(scorer) == "MOS(groups=GroupSpec.from_sizes([2, 3]), log_scale=False)"
    assert repr(MOS(groups=[[1], [0]], log_scale=True)) == (
        "MOS(groups=GroupSpec([[1], [0]]), log_scale=True)"
    )
    assert MOS.higher_is_id
    assert not MOS.requires_fit


def test_empty_batch() -> None:
    out = MOS(groups=[1, 1])(np.zeros((0, 4)))
    assert out.shape == (0,)


def test_errors() -> None:
    scorer = MOS(groups=[2, 3])
    with pytest.raises(ValueError, match=r"C \+ K = 7 columns .* got 5 columns"):
        scorer(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="finite"):
        scorer(torch.tensor([[0.0, 0.0, float("nan"), 0.0, 0.0, 0.0, 0.0]]))
    with pytest.raises(TypeError, match="GroupSpec, a sequence of group sizes"):
        MOS(groups="ab")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group 1 is empty"):
        MOS(groups=[[0], []])
    with pytest.raises(TypeError, match="`log_scale` to be a bool, got 1"):
        MOS(groups=[2], log_scale=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'groups'"):
        MOS()  # type: ignore[call-arg]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logits_near_the_largest_float_keep_their_probabilities(dtype: torch.dtype) -> None:
    """Three equal logits near the largest float: p(others) = 1/3. Formed as
    logsumexp(classes) - others, the log 2 rounded away against 3.4e38 (p = 1/2)."""
    top = torch.finfo(dtype).max
    logits = torch.full((1, 3), top, dtype=dtype)
    np.testing.assert_allclose(MOS(groups=[2])(logits).numpy(), [-1 / 3], rtol=1e-6)
    np.testing.assert_allclose(
        MOS(groups=[2], log_scale=True)(logits).numpy(), [np.log(3.0)], rtol=1e-6
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_scale_beyond_the_dtype_saturates(dtype: torch.dtype) -> None:
    """-log p(others) = softplus(6e38) for float32 logits ±3e38: beyond float32, so it is
    the largest float32 (it was inf), with a finite gradient."""
    top = torch.finfo(dtype).max
    logits = torch.tensor([[-top, top, 0.0], [0.0, 1.0, -1.0]], dtype=dtype, requires_grad=True)
    scores = MOS(groups=[2], log_scale=True)(logits)
    (grad,) = torch.autograd.grad(scores.sum(), logits)
    assert scores[0].item() == top
    assert torch.isfinite(grad).all()
    np.testing.assert_allclose(
        scores[1:].detach().numpy(), ref.log_score(logits[1:].detach().double().numpy(), [[0, 1]])
    )
