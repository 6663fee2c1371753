"""`largest_values`: the k largest values of each row, on the NumPy and the torch path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.autograd import forward_ad

from oodscore._selection import largest_values
from oodscore.functional.energy import joint_energy_score
from oodscore.functional.softmax import gen_score


def expected(x: torch.Tensor, k: int) -> torch.Tensor:
    """Independent reference: a full descending sort of each row, first k, ascending."""
    return torch.from_numpy(np.sort(x.detach().double().numpy(), axis=1)[:, ::-1][:, :k].copy())


def ascending(values: torch.Tensor) -> torch.Tensor:
    return values.detach().double().sort(dim=1).values


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 37, 100, 999])
def test_matches_a_full_sort(dtype, k, rng):
    x = torch.from_numpy(rng.normal(scale=5.0, size=(50, 1000))).to(dtype)
    kept = largest_values(x, k)
    assert kept.shape == (50, k)
    assert kept.dtype == dtype
    torch.testing.assert_close(ascending(kept), expected(x, k).flip(1), rtol=0, atol=0)


def test_ties_extremes_and_a_strided_view(rng):
    x = torch.from_numpy(rng.integers(0, 3, size=(40, 300)).astype(np.float32))
    x[0, :5] = torch.inf
    x[1] = -torch.inf
    x[2, 7] = torch.finfo(torch.float32).max
    view = x[:, ::2]  # not contiguous
    for k in (1, 10, 149):
        torch.testing.assert_close(
            ascending(largest_values(view, k)), expected(view, k).flip(1), rtol=0, atol=0
        )


def test_nan_counts_as_the_largest_value_on_both_paths():
    x = torch.tensor([[1.0, float("nan"), 3.0, 2.0]])
    numpy_path = largest_values(x, 2)
    torch_path = largest_values(x.clone().requires_grad_(True), 2)
    for kept in (numpy_path, torch_path):
        assert kept.isnan().sum() == 1
        assert 3.0 in kept.detach()


def test_the_numpy_path_gives_the_same_values_as_topk(rng):
    x = torch.from_numpy(rng.normal(size=(64, 500)).astype(np.float32))
    with torch.no_grad():
        numpy_path = largest_values(x, 50)
    topk = torch.topk(x, 50, dim=1).values
    torch.testing.assert_close(ascending(numpy_path), ascending(topk), rtol=0, atol=0)


def test_gradient_flows_to_the_selected_entries(rng):
    x = torch.from_numpy(rng.normal(size=(6, 20))).requires_grad_(True)
    largest_values(x, 3).sum().backward()
    assert x.grad is not None
    top3 = torch.topk(x, 3, dim=1).indices
    chosen = torch.zeros_like(x, dtype=torch.bool).scatter_(1, top3, True)
    torch.testing.assert_close(x.grad, chosen.double())


def test_k_equal_to_the_columns_returns_the_input_and_bad_k_is_named():
    x = torch.randn(3, 4)
    assert largest_values(x, 4) is x
    for k in (0, 5):
        with pytest.raises(ValueError, match=f"k must be in \\[1, 4\\] for 4 columns, got {k}"):
            largest_values(x, k)


def test_other_dtypes_use_topk():
    x = torch.tensor([[1.0, 5.0, 3.0]], dtype=torch.bfloat16)
    assert ascending(largest_values(x, 2)).tolist() == [[3.0, 5.0]]


class _GEN(torch.nn.Module):
    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return gen_score(logits, 0.1, 10)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the class count, a constant
def test_traces_compute_the_selection_instead_of_keeping_its_values(rng):
    """torch.export, the JIT and torch.compile see torch.topk: a trace holds no NumPy values."""
    first = torch.from_numpy(rng.normal(scale=3.0, size=(8, 50)).astype(np.float32))
    second = torch.from_numpy(rng.normal(scale=3.0, size=(8, 50)).astype(np.float32))
    exported = torch.export.export(_GEN(), (first,)).module()
    traced = torch.jit.trace(_GEN(), (first,))
    compiled = torch.compile(_GEN(), backend="eager")
    with torch.no_grad():
        for run in (exported, traced, compiled):
            torch.testing.assert_close(run(second), gen_score(second, 0.1, 10))


def test_vmap_uses_the_torch_path(rng):
    x = torch.from_numpy(rng.normal(size=(3, 4, 30)).astype(np.float32))
    batched = torch.func.vmap(lambda rows: largest_values(rows, 5))(x)
    for i in range(3):
        torch.testing.assert_close(ascending(batched[i]), expected(x[i], 5).flip(1))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # inside forward_ad
def test_forward_mode_tangents_take_the_torch_path(rng):
    """A dual tensor has no requires_grad: NumPy would drop its tangent."""
    x = torch.from_numpy(rng.normal(size=(4, 30)))
    t = torch.from_numpy(rng.normal(size=(4, 30)))
    eps = 1e-6
    for fn in (lambda a: gen_score(a, 0.1, 5), lambda a: joint_energy_score(a, 5)):
        with forward_ad.dual_level():
            tangent = forward_ad.unpack_dual(fn(forward_ad.make_dual(x, t))).tangent
        central = (fn(x + eps * t) - fn(x - eps * t)) / (2 * eps)
        torch.testing.assert_close(tangent, central, rtol=1e-6, atol=1e-8)
