"""ReAct, ASH, SCALE and DICE against the float64 reference in tests/reference/shaping.py.

Each method is checked composed with several logit scorers (by name and as an instance), on
random post-ReLU features and on extreme ones (ties at the kept/clipped boundary, all-zero rows,
D = 1, huge activations, factors beyond float32 and float64, percentiles near 0 and 100); the
percentile against ``np.percentile`` bit for bit, beyond ``torch.quantile``'s 2^24 limit; and
against pytorch-ood 0.4.0 where it imports (its scores are outlier scores: ours = -theirs).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from oodscore import Energy, JointEnergy, NotFittedError
from oodscore.functional.shaping import (
    ash_binarize,
    ash_prune,
    ash_sharpen,
    feature_mean,
    kept_count,
    linear_percentile,
    scale_exponent,
)
from oodscore.scorers.ash import ASH, SCALE
from oodscore.scorers.dice import DICE
from oodscore.scorers.react import ReAct
from tests.peers import pytorch_ood_module
from tests.reference import scorers as logit_ref
from tests.reference import shaping as ref

METHODS = ["react", "ash_p", "ash_b", "ash_s", "scale", "dice"]
LOGIT_SCORERS: dict[str, tuple[Any, Any]] = {
    "energy": ("energy", logit_ref.energy),
    "msp": ("msp", logit_ref.msp),
    "joint_energy": ("joint_energy", logit_ref.joint_energy),
    "energy_t2": (Energy(temperature=2.0), lambda z: logit_ref.energy(z, 2.0)),
    "joint_energy_top2": (JointEnergy(top_k=2), lambda z: logit_ref.joint_energy(z, 2)),
}
DEFAULT_PERCENTILE = {"react": 90, "ash_p": 90, "ash_b": 90, "ash_s": 90, "scale": 85, "dice": 90}


def make(method: str, *, percentile: float | None = None, **params: Any) -> Any:
    """Our scorer for ``method`` (``ash_p`` -> ``ASH(variant="p")``), not fitted."""
    if percentile is not None:
        params["percentile"] = percentile
    if method == "react":
        return ReAct(**params)
    if method.startswith("ash_"):
        return ASH(variant=method[-1], **params)
    if method == "scale":
        return SCALE(**params)
    return DICE(**params)


def ready(method: str, fit_features: Any, **params: Any) -> Any:
    scorer = make(method, **params)
    if method in ("react", "dice"):
        assert scorer.fit(fit_features) is scorer
    return scorer


def expected(method, features, weight, bias, score, *, p, fit_features=None, threshold=None):
    return ref.scores(
        method,
        as64(features),
        as64(weight),
        as64(bias),
        score,
        p=p,
        fit_features=as64(fit_features),
        threshold=threshold,
    )


def as64(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def to_numpy(scores: Any) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        return scores.detach().cpu().double().numpy()
    return np.asarray(scores, dtype=np.float64)


def problem(rng: np.random.Generator, *, rows=40, dim=64, classes=10, fit_rows=200):
    """Post-ReLU features (half exactly 0), a head, and ID features to fit on."""

    def relu_features(n: int) -> np.ndarray:
        return np.maximum(rng.normal(size=(n, dim)), 0.0) * rng.uniform(0.5, 2.0, size=(n, 1))

    weight = rng.normal(scale=0.5, size=(classes, dim))
    bias = rng.normal(scale=0.1, size=classes)
    return relu_features(rows), weight, bias, relu_features(fit_rows)


# ----------------------------------------------------------------------------------------------
# The percentile and the kept count


@pytest.mark.parametrize("size", [1, 2, 3, 7, 10, 101, 1000, 4099])
@pytest.mark.parametrize("ties", [False, True])
def test_percentile_equals_numpy_bit_for_bit(size: int, ties: bool, rng) -> None:
    values = rng.integers(-3, 4, size).astype(np.float64) if ties else rng.normal(size=size) * 5
    for q in [1e-9, 0.5, 10, 25, 33.3, 50, 65, 70, 90, 95, 99, 99.9, 100 - 1e-9, 100]:
        wanted = np.percentile(values, q)
        for dtype in (torch.float64, torch.float32):
            data = values.astype(np.float32) if dtype == torch.float32 else values
            ours = linear_percentile(torch.from_numpy(data), q)
            assert ours.dtype == torch.float64
            assert ours.ndim == 0
            # float64 interpolation: NumPy's on the float64 copy, bit for bit
            assert float(ours) == np.percentile(data.astype(np.float64), q), (size, q, dtype)
        assert float(linear_percentile(torch.from_numpy(values), q)) == wanted
        # NumPy 2 interpolates float32 data in float32: a few float32 steps of the data away
        data32 = values.astype(np.float32)
        step = float(np.spacing(np.abs(data32).max()))
        ours32 = float(linear_percentile(torch.from_numpy(data32), q))
        assert abs(ours32 - float(np.percentile(data32, q))) <= 2 * step


def test_percentile_of_a_matrix_uses_every_entry(rng) -> None:
    values = rng.normal(size=(37, 11))
    for q in (10.0, 90.0):
        assert float(linear_percentile(torch.from_numpy(values), q)) == np.percentile(values, q)
        assert float(linear_percentile(torch.from_numpy(values.T), q)) == np.percentile(values, q)


def test_percentile_beyond_torch_quantile_limit() -> None:
    """2^24 + 3 float32 values (torch.quantile refuses them): the result is NumPy's exactly."""
    generator = torch.Generator().manual_seed(0)
    values = torch.rand(2**24 + 3, generator=generator)
    ours = linear_percentile(values, 90)
    assert float(ours) == np.percentile(values.numpy().astype(np.float64), 90)


def test_kept_count_rounds_half_to_even_like_the_official_code() -> None:
    assert kept_count(10, 65) == 4  # 6.5 rounds to 6
    assert kept_count(10, 75) == 2  # 7.5 rounds to 8
    assert kept_count(2, 25) == 2  # 0.5 rounds to 0
    assert kept_count(5, 90) == 1  # 4.5 rounds to 4
    assert kept_count(2048, 90) == 205
    for dim in range(1, 260):
        for p in [0.1, 5, 12.5, 25, 33.3, 50, 62.5, 65, 75, 85, 87.5, 90, 95, 99, 99.9]:
            assert kept_count(dim, p) == ref.kept(dim, p), (dim, p)


# ----------------------------------------------------------------------------------------------
# Each method composed with several logit scorers, against the reference composition


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("logit_scorer", list(LOGIT_SCORERS))
def test_composition_equals_reference(method: str, logit_scorer: str, rng) -> None:
    features, weight, bias, fit_features = problem(rng)
    scorer_arg, score = LOGIT_SCORERS[logit_scorer]
    p = DEFAULT_PERCENTILE[method]
    scorer = ready(method, fit_features, scorer=scorer_arg, weight=weight, bias=bias)
    wanted = expected(method, features, weight, bias, score, p=p, fit_features=fit_features)
    np.testing.assert_allclose(to_numpy(scorer(features)), wanted, rtol=1e-10, atol=1e-10)
    # float32 features and head: float32 scores, close to the float64 reference
    scorer32 = ready(
        method,
        fit_features.astype(np.float32),
        scorer=scorer_arg,
        weight=torch.from_numpy(weight).float(),
        bias=torch.from_numpy(bias).float(),
    )
    scores32 = scorer32(torch.from_numpy(features).float())
    assert scores32.dtype == torch.float32
    np.testing.assert_allclose(to_numpy(scores32), wanted, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("p", [1e-6, 10, 50, 65, 99, 99.99])
def test_percentiles_near_0_and_100(method: str, p: float, rng) -> None:
    features, weight, bias, fit_features = problem(rng, dim=256, fit_rows=50)
    if method in ("ash_p", "ash_b", "ash_s", "scale") and kept_count(256, p) < 1:
        scorer = make(method, percentile=p, weight=weight, bias=bias)
        with pytest.raises(ValueError, match="keep at least one of the D = 256 features"):
            scorer(features)
        return
    if method == "ash_b":  # which tied zeros get the fill is torch.topk's choice: no ties
        features += rng.uniform(0.0, 1e-3, size=features.shape)
    scorer = ready(method, fit_features, percentile=p, weight=weight, bias=bias)
    wanted = expected(
        method, features, weight, bias, logit_ref.energy, p=p, fit_features=fit_features
    )
    np.testing.assert_allclose(to_numpy(scorer(features)), wanted, rtol=1e-10, atol=1e-10)


def test_nothing_pruned_is_plain_energy(rng) -> None:
    features, weight, bias, _ = problem(rng)
    assert kept_count(64, 0.1) == 64
    plain = logit_ref.energy(ref.head(features, weight, bias))
    sharpened = logit_ref.energy(ref.head(features * np.e, weight, bias))  # s1 = s2: factor e
    prune = ASH(variant="p", percentile=0.1, weight=weight, bias=bias)
    np.testing.assert_allclose(prune(features), plain, rtol=1e-12)
    for scorer in (
        ASH(percentile=0.1, weight=weight, bias=bias),
        SCALE(percentile=0.1, weight=weight, bias=bias),
    ):
        np.testing.assert_allclose(scorer(features), sharpened, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Extreme inputs


def tie_invariant_head(rng, dim: int, tied: np.ndarray, classes: int = 6):
    """A head whose columns at the ``tied`` positions are equal: which tied one is kept is moot."""
    weight = rng.normal(size=(classes, dim))
    weight[:, tied] = weight[:, tied[:1]]
    return weight, rng.normal(size=classes)


@pytest.mark.parametrize("method", ["ash_p", "ash_b", "ash_s", "scale"])
def test_ties_at_the_top_k_boundary(method: str, rng) -> None:
    dim = 20  # p = 50 keeps 10: five values above, then eight tied at 1.0 for five places
    row = np.concatenate([np.linspace(2.0, 3.0, 5), np.ones(8), np.linspace(0.0, 0.5, 7)])
    row = rng.permutation(row)
    tied = np.flatnonzero(row == 1.0)
    features = row * np.array([1.0, 2.0, 0.5, 3.0, 0.25, 1.5])[:, None]  # same tied positions
    weight, bias = tie_invariant_head(rng, dim, tied)
    scorer = make(method, percentile=50, weight=weight, bias=bias, scorer="msp")
    wanted = expected(method, features, weight, bias, logit_ref.msp, p=50)
    np.testing.assert_allclose(to_numpy(scorer(features)), wanted, rtol=1e-12)
    if method in ("ash_s", "scale"):  # the factor depends on the kept values only
        exponent = ref.factor_exponent(features, 50)
        np.testing.assert_allclose(exponent, row.sum() / (np.linspace(2, 3, 5).sum() + 5.0))
        torch_row = torch.from_numpy(features)
        ours = scale_exponent(torch_row, 10) if method == "scale" else ash_sharpen(torch_row, 10)[1]
        np.testing.assert_allclose(ours.numpy(), exponent, rtol=1e-15)


def test_react_ties_at_the_threshold(rng) -> None:
    fit = rng.integers(0, 4, size=(50, 8)).astype(np.float64)  # many ties: percentile exact
    threshold = np.percentile(fit, 90)
    features = np.full((3, 8), threshold)
    features[1] += 1.0
    features[2] -= 1.0
    weight, bias = rng.normal(size=(4, 8)), rng.normal(size=4)
    scorer = ReAct(weight=weight, bias=bias).fit(fit)
    assert float(scorer.state_dict()["threshold"]) == threshold
    wanted = expected("react", features, weight, bias, logit_ref.energy, p=90, fit_features=fit)
    np.testing.assert_allclose(scorer(features), wanted, rtol=1e-13)
    np.testing.assert_allclose(scorer(features)[:2], scorer(features)[0])  # clipped alike


def test_dice_ties_at_the_threshold_are_all_dropped(rng) -> None:
    weight = np.array([[1.0, 2.0, 2.0], [2.0, 2.0, 0.5]])
    fit = np.ones((4, 3))  # V = W: six entries, four tied at the 50th percentile (2.0)
    scorer = DICE(percentile=50, weight=weight, bias=None).fit(fit)
    masked, _ = scorer.masked_head(torch.zeros(1, 3, dtype=torch.float64))
    assert torch.equal(masked, torch.zeros(2, 3, dtype=torch.float64))  # V > 2 holds nowhere
    np.testing.assert_array_equal(ref.dice_weight(weight, fit, 50), np.zeros((2, 3)))
    scores = scorer(rng.uniform(size=(3, 3)))
    np.testing.assert_allclose(scores, np.log(2.0))  # flat logits b = 0: log C


@pytest.mark.parametrize("method", METHODS)
def test_all_zero_rows_give_the_bias_logits(method: str, rng) -> None:
    features, weight, bias, fit_features = problem(rng, rows=4)
    features[1:3] = 0.0
    scorer = ready(method, fit_features, weight=weight, bias=bias)
    scores = to_numpy(scorer(features))
    assert np.isfinite(scores).all()
    if method != "dice":  # every shaping maps the zero row to zero: logits = b
        np.testing.assert_allclose(scores[1:3], logit_ref.energy(np.stack([bias] * 2)))
    wanted = expected(
        method,
        features,
        weight,
        bias,
        logit_ref.energy,
        p=DEFAULT_PERCENTILE[method],
        fit_features=fit_features,
    )
    np.testing.assert_allclose(scores, wanted, rtol=1e-12)


def test_dice_fitted_on_zero_features_keeps_no_weight(rng) -> None:
    _, weight, bias, _ = problem(rng)
    scorer = DICE(weight=weight, bias=bias).fit(np.zeros((5, 64)))
    masked, _ = scorer.masked_head(torch.zeros(1, 64, dtype=torch.float64))
    assert not masked.any()
    np.testing.assert_allclose(
        scorer(rng.uniform(size=(3, 64))), logit_ref.energy(np.stack([bias] * 3))
    )


@pytest.mark.parametrize("method", METHODS)
def test_one_feature(method: str, rng) -> None:
    features = rng.uniform(0.0, 3.0, size=(7, 1))
    weight, bias = rng.normal(size=(3, 1)), rng.normal(size=3)
    fit = rng.uniform(0.0, 3.0, size=(20, 1))
    p = 50  # D = 1: round(0.5) = 0 keeps the one feature; above 50 keeps none
    scorer = ready(method, fit, percentile=p, weight=weight, bias=bias)
    wanted = expected(method, features, weight, bias, logit_ref.energy, p=p, fit_features=fit)
    np.testing.assert_allclose(to_numpy(scorer(features)), wanted, rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_huge_activations(method: str, rng) -> None:
    """float32 logits overflow: those rows are computed in float64, never NaN."""
    features, weight, bias, fit_features = problem(rng, rows=6, dim=32)
    weight = weight * 40.0
    features[:3] *= 1e37  # logits beyond float32 for these rows
    fit32 = fit_features.astype(np.float32) * 1e37
    threshold = None
    if method == "react":  # clip far above: the activations stay huge
        threshold = 1e38
    for logit_scorer in ("energy", "msp"):
        scorer_arg, score = LOGIT_SCORERS[logit_scorer]
        params: dict[str, Any] = {"scorer": scorer_arg, "weight": weight, "bias": bias}
        if threshold is not None:
            params["threshold"] = threshold
        scorer = ready(method, fit32, **params)
        features32 = torch.from_numpy(features.astype(np.float32))
        ours = scorer(features32)
        assert not torch.isnan(ours).any()
        wanted = expected(
            method,
            features32,
            weight,
            bias,
            score,
            p=DEFAULT_PERCENTILE[method],
            fit_features=fit32,
            threshold=threshold,
        )
        # the float32 result is the reference rounded to float32 (inf beyond its range)
        with np.errstate(over="ignore"):
            wanted32 = wanted.astype(np.float32)
        np.testing.assert_allclose(to_numpy(ours), wanted32, rtol=2e-5)


@pytest.mark.parametrize("method", ["ash_s", "scale"])
def test_factor_beyond_float32(method: str, rng) -> None:
    """p = 99 with D = 2048 keeps 20: s1 / s2 is about 100, e^100 overflows float32."""
    dim = 2048
    features = rng.uniform(0.9, 1.0, size=(5, dim))
    features[0] = 0.0
    weight, bias = rng.normal(scale=0.02, size=(10, dim)), rng.normal(size=10)
    exponent = ref.factor_exponent(features, 99)
    assert exponent[1:].min() > 88.8  # e^r is inf in float32
    for name, score in [("energy", logit_ref.energy), ("msp", logit_ref.msp)]:
        scorer = make(method, percentile=99, weight=weight, bias=bias, scorer=name)
        wanted = expected(method, features, weight, bias, score, p=99)
        assert np.isfinite(wanted).all()
        np.testing.assert_allclose(to_numpy(scorer(features)), wanted, rtol=1e-10)
        features32 = torch.from_numpy(features).float()
        wanted32 = expected(method, features32, weight.astype(np.float32), bias, score, p=99)
        ours32 = scorer(features32)
        assert ours32.dtype == torch.float32
        assert not torch.isnan(ours32).any()
        with np.errstate(over="ignore"):
            wanted32 = wanted32.astype(np.float32)
        np.testing.assert_allclose(to_numpy(ours32), wanted32, rtol=1e-4)
        if name == "energy":  # about 1e43: beyond float32, so +inf, as float32 rounds it
            assert torch.isinf(ours32[1:]).all()
            assert torch.isfinite(ours32[0])
        else:
            assert torch.isfinite(ours32).all()


@pytest.mark.parametrize("method", ["ash_s", "scale"])
def test_factor_beyond_float64_saturates_without_nan(method: str, rng) -> None:
    """k = 1 of D = 2048 equal activations: s1 / s2 = 2048, e^2048 overflows float64."""
    dim = 2048
    features = np.ones((3, dim))
    weight, bias = rng.normal(size=(4, dim)), rng.normal(size=4)
    weight[:, :] = weight[:, :1]  # which of the tied features is kept does not matter
    weight[0] = 0.0  # one class has logit exactly b_0, however large the factor
    for p in (99.97,):
        assert kept_count(dim, p) == 1
        for name in ("energy", "msp", "joint_energy", "entropy", "gen", "max_logit"):
            for dtype in (torch.float32, torch.float64):
                scorer = make(method, percentile=p, weight=weight, bias=bias, scorer=name)
                scores = scorer(torch.from_numpy(features).to(dtype))
                assert not torch.isnan(scores).any(), (name, dtype)
                if name == "msp":
                    assert ((scores > 0) & (scores <= 1)).all()


def test_overflowing_rows_do_not_change_the_others(rng) -> None:
    """Rows scored in float64 and the float32 rows in one call equal each row scored alone."""
    dim = 512
    features = rng.uniform(0.0, 1.0, size=(3000, dim)).astype(np.float32)
    features[::7, 100:] = 0.0  # s1 / s2 large for every seventh row
    weight = rng.normal(scale=0.05, size=(5, dim)).astype(np.float32)
    bias = rng.normal(size=5).astype(np.float32)
    scorer = ASH(variant="s", percentile=99, weight=weight, bias=bias, scorer="msp")
    x = torch.from_numpy(features)
    whole = scorer(x)  # in row blocks of 1024
    alone = torch.cat([scorer(x[i : i + 1]) for i in range(0, 3000, 97)])
    torch.testing.assert_close(whole[::97], alone, rtol=0, atol=0)


def test_gradients_flow_through_the_float64_rows(rng) -> None:
    features = torch.from_numpy(rng.uniform(0.5, 1.0, size=(4, 2048))).float()
    weight = torch.from_numpy(rng.normal(scale=0.02, size=(10, 2048))).float()
    x = features.requires_grad_(True)
    scores = ASH(variant="s", percentile=99, weight=weight, bias=None, scorer="msp")(x)
    scores.sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------------------------
# The functions alone, inputs untouched


def test_functions_against_the_reference(rng) -> None:
    features, *_ = problem(rng, rows=30, dim=50)
    x = torch.from_numpy(features)
    k = kept_count(50, 80)
    np.testing.assert_array_equal(ash_prune(x, k).numpy(), ref.ash(features, 80, "p"))
    np.testing.assert_allclose(ash_binarize(x, k).numpy(), ref.ash(features, 80, "b"), rtol=1e-15)
    pruned, exponent = ash_sharpen(x, k)
    np.testing.assert_allclose(
        (pruned * exponent.exp()[:, None]).numpy(), ref.ash(features, 80, "s"), rtol=1e-14
    )
    np.testing.assert_allclose(
        (x * scale_exponent(x, k).exp()[:, None]).numpy(), ref.scale(features, 80), rtol=1e-14
    )
    np.testing.assert_allclose(feature_mean(x).numpy(), features.mean(axis=0), rtol=1e-14)


@pytest.mark.parametrize("method", METHODS)
def test_inputs_are_not_modified(method: str, rng) -> None:
    features, _, _, fit_features = problem(rng)
    x, fit = torch.from_numpy(features), torch.from_numpy(fit_features)
    x_copy, fit_copy = x.clone(), fit.clone()
    head = nn.Linear(64, 10).double()
    head_copy = head.weight.detach().clone()
    scorer = ready(method, fit, head=head)
    scorer(x)
    scorer(features)
    assert torch.equal(x, x_copy)
    assert torch.equal(fit, fit_copy)
    assert torch.equal(head.weight, head_copy)
    np.testing.assert_array_equal(features, x_copy.numpy())


# ----------------------------------------------------------------------------------------------
# ReAct's fixed threshold, DICE's cache


def test_react_fixed_threshold_needs_no_fit(rng) -> None:
    features, weight, bias, fit_features = problem(rng)
    scorer = ReAct(threshold=1.0, weight=weight, bias=bias)
    assert scorer.is_fitted
    assert scorer.num_features is None
    wanted = expected("react", features, weight, bias, logit_ref.energy, p=90, threshold=1.0)
    np.testing.assert_allclose(scorer(features), wanted, rtol=1e-13)
    scorer.fit(fit_features)  # keeps the given threshold
    assert float(scorer.state_dict()["threshold"]) == 1.0
    np.testing.assert_allclose(scorer(features), wanted, rtol=1e-13)
    fitted = ReAct(weight=weight, bias=bias).fit(fit_features)
    c = float(fitted.state_dict()["threshold"])
    np.testing.assert_allclose(
        ReAct(threshold=c, weight=weight, bias=bias)(features), fitted(features)
    )
    assert "threshold=1.0" in repr(scorer)


def test_react_scores_any_width_of_its_head(rng) -> None:
    scorer = ReAct(threshold=2.0, weight=rng.normal(size=(3, 7)), bias=None)
    assert scorer(rng.uniform(size=(4, 7))).shape == (4,)
    fitted = ReAct(weight=rng.normal(size=(3, 5)), bias=None).fit(rng.uniform(size=(9, 11)))
    assert fitted(rng.uniform(size=(2, 5))).shape == (2,)  # the threshold fixes no width


def count_masks(monkeypatch) -> list[int]:
    import oodscore.scorers.dice as module

    calls = [0]
    original = module.dice_mask

    def counting(*args: Any) -> torch.Tensor:
        calls[0] += 1
        return original(*args)

    monkeypatch.setattr(module, "dice_mask", counting)
    return calls


def test_dice_masks_once_per_head_device_and_dtype(monkeypatch, rng) -> None:
    calls = count_masks(monkeypatch)
    features, _, _, fit_features = problem(rng, rows=5000, dim=128)
    head = nn.Linear(128, 10).double()
    scorer = DICE(head=head).fit(fit_features)
    x = torch.from_numpy(features)
    first = scorer(x)  # several row blocks, one mask
    scorer(x)
    assert calls[0] == 1
    scorer(x.float())
    assert calls[0] == 2  # another dtype
    scorer(x.float())
    assert calls[0] == 2

    def fresh() -> torch.Tensor:
        return DICE(weight=head.weight.detach().clone(), bias=head.bias.detach().clone()).fit(
            fit_features
        )(x)

    with torch.no_grad():
        head.weight.mul_(1.5)  # in place: the version counter moves
    changed = scorer(x)
    assert calls[0] == 3
    torch.testing.assert_close(changed, fresh(), rtol=0, atol=0)
    assert not torch.equal(changed, first)
    head.weight = nn.Parameter(torch.randn(10, 128, dtype=torch.float64))  # replaced
    torch.testing.assert_close(scorer(x), fresh(), rtol=0, atol=0)
    head.weight.data = torch.randn(10, 128, dtype=torch.float64)  # storage swapped
    torch.testing.assert_close(scorer(x), fresh(), rtol=0, atol=0)
    with torch.no_grad():
        head.bias.add_(1.0)
    torch.testing.assert_close(scorer(x), fresh(), rtol=0, atol=0)
    calls_before = calls[0]
    scorer.fit(fit_features[:50])  # a new mean
    refitted = DICE(weight=head.weight.detach().clone(), bias=head.bias.detach().clone())
    torch.testing.assert_close(scorer(x), refitted.fit(fit_features[:50])(x), rtol=0, atol=0)
    assert calls[0] > calls_before
    other = nn.Linear(128, 10).double()
    scorer.set_head(other)
    expected_other = DICE(weight=other.weight.detach().clone(), bias=other.bias.detach().clone())
    torch.testing.assert_close(scorer(x), expected_other.fit(fit_features[:50])(x), rtol=0, atol=0)


def test_dice_state_round_trip_and_bad_state(rng) -> None:
    features, weight, bias, fit_features = problem(rng)
    scorer = DICE(weight=weight, bias=bias).fit(fit_features)
    buffer = io.BytesIO()
    torch.save(scorer.state_dict(), buffer)
    buffer.seek(0)
    loaded = DICE(weight=weight, bias=bias).load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(loaded(features), scorer(features), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"`state\['mean'\]` to be a \(D,\) vector"):
        DICE(weight=weight, bias=bias).load_state_dict({"mean": torch.zeros(2, 64)})
    with pytest.raises(ValueError, match=r"`state\['threshold'\]` to be a 0-d tensor"):
        ReAct(weight=weight, bias=bias).load_state_dict({"threshold": torch.zeros(2)})
    with pytest.raises(NotFittedError):
        DICE(weight=weight, bias=bias)(features)
    with pytest.raises(NotFittedError):
        DICE(weight=weight, bias=bias).masked_head(torch.zeros(1, 64))


# ----------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("cls", [ReAct, ASH, SCALE, DICE])
@pytest.mark.parametrize("bad", [0, 100, -5, 150.0, math.nan, math.inf, True, "90", None])
def test_percentile_out_of_range(cls, bad) -> None:
    with pytest.raises(ValueError, match=r"`percentile` to be a finite number in \(0, 100\), got"):
        cls(percentile=bad)


def test_other_bad_arguments(rng) -> None:
    with pytest.raises(ValueError, match=r"`variant` to be 'p', 'b' or 's', got 'ash-s'"):
        ASH(variant="ash-s")
    with pytest.raises(ValueError, match=r"`threshold` to be a finite number, got nan"):
        ReAct(threshold=math.nan)
    with pytest.raises(ValueError, match="logit scorer that needs no fitting"):
        ASH(scorer="mahalanobis")
    with pytest.raises(ValueError, match="Unknown scorer 'no_such_scorer'"):
        DICE(scorer="no_such_scorer")


@pytest.mark.parametrize("cls", [ASH, SCALE])
def test_nothing_kept_is_a_clear_error(cls, rng) -> None:
    scorer = cls(percentile=95, weight=rng.normal(size=(3, 5)), bias=None)
    with pytest.raises(
        ValueError,
        match=r"`percentile` to keep at least one of the D = 5 features, got "
        r"percentile=95\.0, which keeps k = .* = 0",
    ):
        scorer(rng.uniform(size=(2, 5)))
    assert cls(percentile=90, weight=rng.normal(size=(3, 5)), bias=None)(np.ones((2, 5))).shape == (
        2,
    )


# ----------------------------------------------------------------------------------------------
# pytorch-ood 0.4.0


def theirs_head(weight: torch.Tensor, bias: torch.Tensor):
    return lambda z: nn.functional.linear(z.flatten(1), weight, bias)


def test_react_matches_pytorch_ood(rng) -> None:
    module = pytorch_ood_module("react")
    features, weight, bias, fit_features = problem(rng)
    w, b = torch.from_numpy(weight), torch.from_numpy(bias)
    theirs = module.ReAct(None, theirs_head(w, b), percentile=0.9)
    fit = torch.from_numpy(fit_features)
    theirs.fit_feature_maps(fit, torch.zeros(len(fit), dtype=torch.long))
    ours = ReAct(percentile=90, weight=w, bias=b).fit(fit)
    assert float(ours.state_dict()["threshold"]) == pytest.approx(theirs.threshold, rel=1e-12)
    x = torch.from_numpy(features)
    torch.testing.assert_close(ours(x), -theirs.predict_feature_maps(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("variant", ["p", "b", "s"])
def test_ash_matches_pytorch_ood(variant: str, rng) -> None:
    module = pytorch_ood_module("ash")
    features, weight, bias, _ = problem(rng)
    w, b = torch.from_numpy(weight), torch.from_numpy(bias)
    theirs = module.ASH(None, theirs_head(w, b), variant=f"ash-{variant}", percentile=0.9)
    x = torch.from_numpy(features)
    ours = ASH(variant=variant, percentile=90, weight=w, bias=b)(x)
    torch.testing.assert_close(
        ours, -theirs.predict_feature_maps(x[:, :, None, None]), rtol=1e-10, atol=1e-10
    )


def test_scale_matches_pytorch_ood(rng) -> None:
    module = pytorch_ood_module("scale")
    features, weight, bias, _ = problem(rng)
    w, b = torch.from_numpy(weight), torch.from_numpy(bias)
    theirs = module.SCALE(None, theirs_head(w, b), percentile=0.85)
    x = torch.from_numpy(features)
    ours = SCALE(percentile=85, weight=w, bias=b)(x)
    torch.testing.assert_close(
        ours,
        -theirs.predict_feature_maps(x[:, :, None, None].contiguous()),
        rtol=1e-10,
        atol=1e-10,
    )


def test_dice_matches_pytorch_ood(rng) -> None:
    module = pytorch_ood_module("dice")
    features, weight, bias, fit_features = problem(rng)
    w, b = torch.from_numpy(weight).float(), torch.from_numpy(bias).float()
    theirs = module.DICE(None, w, b, p=0.9)
    fit = torch.from_numpy(fit_features).float()
    theirs.fit_features(fit, torch.zeros(len(fit), dtype=torch.long))
    ours = DICE(percentile=90, weight=w, bias=b).fit(fit)
    x = torch.from_numpy(features).float()
    masked, _ = ours.masked_head(x)
    assert torch.equal(masked, theirs.masked_w)  # their float32 mean picks the same weights
    torch.testing.assert_close(ours(x), -theirs.predict_features(x), rtol=1e-5, atol=1e-5)
