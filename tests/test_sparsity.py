"""SparsityLoss (SR, and SROE's recipe) against the float64 reference."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

import oodscore
from oodscore import SparsityLoss, get_regularizer, list_regularizers
from tests.reference import multilabel_regularizers as ref


def features(rows: int, cols: int = 16, *, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=generator, dtype=torch.float64) * scale


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weight", [None, 1.0, 0.5])
def test_matches_reference(seed, weight):
    h = features(32, seed=seed)
    loss = SparsityLoss() if weight is None else SparsityLoss(weight=weight)
    expected = ref.sparsity(h.numpy(), 0.02 if weight is None else weight)
    assert loss(features_in=h).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_features(dtype):
    h = torch.tensor([[1e30, -1e30, 0.0], [1e-30, -1e-30, 5.0], [0.0, 0.0, 0.0]], dtype=dtype)
    got = SparsityLoss(weight=1.0)(features_in=h)
    assert got.dtype == dtype
    assert got.item() == pytest.approx(ref.sparsity(h.double().numpy(), 1.0), rel=1e-6)


def test_sroe_mean_runs_over_id_and_outlier_rows_together():
    """tune.py's train_oe: one forward of cat(in, out); the L1 mean covers all N + M rows."""
    h_in, h_out = features(6, seed=1), features(18, seed=2) * 3
    got = SparsityLoss(weight=1.0)(features_in=h_in, features_out=h_out)
    expected = ref.sparsity(torch.cat([h_in, h_out]).numpy(), 1.0)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    mean_of_means = (ref.sparsity(h_in.numpy(), 1.0) + ref.sparsity(h_out.numpy(), 1.0)) / 2
    assert got.item() != pytest.approx(mean_of_means, rel=1e-3)


def test_batch_of_one():
    h = features(1, seed=4)
    assert SparsityLoss()(features_in=h).item() == pytest.approx(
        ref.sparsity(h.numpy(), 0.02), rel=1e-12
    )


def test_gradcheck():
    h_in = features(4, 5, seed=5).requires_grad_(True)
    h_out = features(3, 5, seed=6).requires_grad_(True)
    loss = SparsityLoss(weight=0.3)
    assert torch.autograd.gradcheck(lambda a: loss(features_in=a), (h_in,))
    assert torch.autograd.gradcheck(lambda a, b: loss(features_in=a, features_out=b), (h_in, h_out))


def test_gradient_is_weighted_sign_over_rows():
    h = features(4, 3, seed=7).requires_grad_(True)
    SparsityLoss(weight=0.02)(features_in=h).backward()
    torch.testing.assert_close(h.grad, 0.02 * torch.sign(h.detach()) / 4)


def test_zero_weight_is_allowed_and_negative_is_not():
    assert SparsityLoss(weight=0.0)(features_in=features(3)).item() == 0.0
    for bad in (-0.02, math.nan, math.inf, True, "0.02"):
        with pytest.raises(ValueError, match=r"`weight` to be a finite number >= 0"):
            SparsityLoss(weight=bad)  # type: ignore[arg-type]


def test_bad_inputs():
    loss = SparsityLoss()
    h = features(4)
    with pytest.raises(ValueError, match=r"`features_in` to have at least 1 row"):
        loss(features_in=h[:0])
    with pytest.raises(ValueError, match=r"`features_out` to have at least 1 row"):
        loss(features_in=h, features_out=h[:0])
    with pytest.raises(ValueError, match=r"`features_in` to be 2-D of shape \(N, D\), got 4-D"):
        loss(features_in=h.reshape(4, 4, 2, 2))
    with pytest.raises(ValueError, match=r"as many features as `features_in` \(D = 16\)"):
        loss(features_in=h, features_out=features(4, 8))
    bad = h.clone()
    bad[3, 0] = math.inf
    with pytest.raises(ValueError, match=r"`features_in` to be finite.*inf.*row 3"):
        loss(features_in=bad)
    with pytest.raises(TypeError, match=r"`features_in` to be a floating-point tensor"):
        loss(features_in=h.long())
    with pytest.raises(TypeError, match=r"`features_in` to be a torch.Tensor"):
        loss(features_in=h.tolist())  # type: ignore[arg-type]


def test_registry_and_defaults():
    loss = get_regularizer("sparsity")
    assert isinstance(loss, SparsityLoss)
    assert loss.get_params() == {"weight": 0.02, "validate_args": True}  # tune.py --alpha
    assert "SparsityLoss(weight=0.02, validate_args=True)" in repr(loss)
    assert "SparsityLoss" in oodscore.__all__


@pytest.mark.skipif(
    "outlier_exposure" not in list_regularizers(), reason="outlier exposure not registered"
)
def test_sroe_recipe_matches_tune_py():
    """SROE = 0.02 * mean L1 over ID and outlier rows + 0.5 * OE of the outlier logits."""
    h_in, h_out = features(5, seed=8), features(7, seed=9)
    z_in, z_out = features(5, 4, seed=10), features(7, 4, seed=11)
    oe = get_regularizer("outlier_exposure", weight=0.5)
    available = {"logits_in": z_in, "logits_out": z_out}
    wanted = inspect.signature(oe.forward).parameters
    total = SparsityLoss()(features_in=h_in, features_out=h_out) + oe(
        **{k: v for k, v in available.items() if k in wanted}
    )
    z = z_out.numpy()
    top = z.max(1)
    logsumexp = top + np.log(np.exp(z - top[:, None]).sum(1))
    oe_ref = float(-(z.mean(1) - logsumexp).mean())
    expected = ref.sparsity(torch.cat([h_in, h_out]).numpy(), 0.02) + 0.5 * oe_ref
    assert total.item() == pytest.approx(expected, rel=1e-10)


def test_half_precision_is_summed_in_float32():
    h = (features(50, 64, seed=12) * 100).half()
    got = SparsityLoss(weight=1.0)(features_in=h, features_out=h[:3].bfloat16())
    assert got.dtype == torch.float32
    both = torch.cat([h.double(), h[:3].bfloat16().double()])
    assert got.item() == pytest.approx(ref.sparsity(both.numpy(), 1.0), rel=1e-5)
