"""ViM against the float64 reference in tests/reference/vim.py and against pytorch-ood.

Tests named ``test_reference_*`` check the reference alone (against the official ``eig`` call
and closed forms).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import oodscore.functional.vim as functional_vim
from oodscore.functional.vim import principal_dimension
from oodscore.scorers.base import get_scorer
from oodscore.scorers.vim import ViM
from tests.peers import pytorch_ood_module
from tests.reference import vim as ref

# float64 inputs: every step runs in float64 in both routes; differences are rounding only.
RTOL64 = 1e-9
# float32 inputs: the logits run in float32 (relative error ~1e-7 of the largest logit) and
# the residual in float64 on the float32 values; scores agree to 1e-5 of their scale.
RTOL32 = 1e-5


def spectrum_data(
    rng: np.random.Generator,
    *,
    rows: int = 400,
    dim: int = 16,
    classes: int = 5,
    principal: int = 8,
    offset: float = 2.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features with ``principal`` strong and D - ``principal`` weak, distinct directions.

    Returns fit features, queries (ID-like rows, then rows with a large residual), W, b.
    """
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    scales = np.concatenate(
        [np.linspace(6.0, 3.0, principal), np.linspace(0.6, 0.1, dim - principal)]
    )
    features = offset + (rng.normal(size=(rows, dim)) * scales) @ basis.T
    weight = rng.normal(size=(classes, dim))
    bias = rng.normal(size=classes)
    queries = np.concatenate(
        [
            offset + (rng.normal(size=(30, dim)) * scales) @ basis.T,
            offset + rng.normal(scale=3.0, size=(20, dim)),
        ]
    )
    return features, queries, weight, bias


def as_numpy(scores: Any) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        return scores.detach().cpu().double().numpy()
    return np.asarray(scores, dtype=np.float64)


def assert_close(actual: Any, wanted: np.ndarray, *, rtol: float) -> None:
    """Close relative to the scale of the scores (they cross zero)."""
    actual = as_numpy(actual)
    assert actual.shape == wanted.shape
    assert np.isfinite(actual).all()
    np.testing.assert_allclose(actual, wanted, rtol=rtol, atol=rtol * np.abs(wanted).max())


# ----------------------------------------------------------------------------------------------
# The reference alone


def test_reference_eigh_equals_the_official_eig(rng):
    features, queries, weight, bias = spectrum_data(rng)
    for dim in (1, 5, 8, 15):
        by_eigh = ref.vim_scores(features, queries, weight, bias, dim)
        by_eig = ref.vim_scores(features, queries, weight, bias, dim, solver="eig")
        np.testing.assert_allclose(by_eigh, by_eig, rtol=1e-8, atol=1e-8)


def test_reference_closed_form_in_two_dimensions():
    """W = I (2 x 2), b = 0: u = 0; Σ = diag(var_0, var_1); dim = 1 keeps axis 1 as residual."""
    features = np.array([[3.0, 1.0], [-3.0, -1.0], [3.0, -1.0], [-3.0, 1.0]])
    weight, bias = np.eye(2), np.zeros(2)
    fitted = ref.fit_vim(features, weight, bias, 1)
    np.testing.assert_allclose(fitted.origin, 0.0)
    np.testing.assert_allclose(fitted.eigenvalues, [9.0, 1.0])
    np.testing.assert_allclose(np.abs(fitted.null_space[:, 0]), [0.0, 1.0], atol=1e-15)
    # mean max logit = (3 - 1 + 3 + 1) / 4 = 1.5, mean residual = 1
    assert fitted.alpha == pytest.approx(1.5)
    queries = np.array([[2.0, 0.5], [0.0, 4.0]])
    want = np.log(np.exp(queries).sum(axis=1)) - 1.5 * np.abs(queries[:, 1])
    np.testing.assert_allclose(ref.vim_scores(features, queries, weight, bias, 1), want)


def test_reference_origin_zeroes_the_logits(rng):
    weight, bias = rng.normal(size=(4, 9)), rng.normal(size=4)
    origin = ref.fit_vim(rng.normal(size=(30, 9)), weight, bias, 3).origin
    np.testing.assert_allclose(weight @ origin + bias, 0.0, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# The principal dimension rule and the parameters


@pytest.mark.parametrize(
    ("size", "dim"),
    [
        (1, 0),
        (2, 1),
        (5, 2),
        (512, 256),
        (767, 383),
        (768, 512),
        (1024, 512),
        (2047, 512),
        (2048, 1000),
        (4096, 1000),
    ],
)
def test_principal_dimension_rule(size, dim):
    assert principal_dimension(size) == dim == ref.principal_dimension(size)


def test_registry_and_keyword_only_parameters():
    scorer = get_scorer("vim", dim=4)
    assert type(scorer) is ViM
    assert scorer.dim == 4
    assert ViM().dim is None
    assert scorer.get_params() == {"dim": 4, "head": None, "weight": None, "bias": None}
    with pytest.raises(TypeError):
        ViM(4)  # type: ignore[misc]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3", float("nan")])
def test_bad_dim(bad):
    with pytest.raises(ValueError, match=rf"Expected `dim` to be an integer >= 1, got {bad!r}\."):
        ViM(dim=bad)


def test_dim_not_below_the_feature_size(rng):
    weight = rng.normal(size=(3, 5))
    for dim in (5, 6):
        scorer = ViM(dim=dim, weight=weight, bias=np.zeros(3))
        with pytest.raises(
            ValueError,
            match=rf"^Expected `dim` to be less than the feature size D = 5, got dim={dim}\.$",
        ):
            scorer.fit(rng.normal(size=(40, 5)))


def test_fit_set_must_have_rows(rng):
    scorer = ViM(dim=2, weight=rng.normal(size=(3, 5)), bias=None)
    with pytest.raises(ValueError, match="at least 1 row"):
        scorer.fit(np.zeros((0, 5)))


@pytest.mark.parametrize(("rows", "dim"), [(1, 1), (1, 3), (3, 3), (2, 4)])
def test_fit_rows_inside_the_principal_subspace_are_refused(rows, dim, rng):
    """N <= dim: every fit row lies in the principal subspace, alpha would divide by ~0."""
    weight, bias = rng.normal(size=(3, 6)), rng.normal(size=3)
    with pytest.raises(ValueError, match=rf"residual.*dim={dim}.*N = {rows}"):
        ViM(dim=dim, weight=weight, bias=bias).fit(rng.normal(size=(rows, 6)))
    # all fit rows at the origin: no spread at all
    origin = ref.fit_vim(rng.normal(size=(5, 6)), weight, bias, 1).origin
    with pytest.raises(ValueError, match="residual"):
        ViM(dim=1, weight=weight, bias=bias).fit(np.tile(origin, (4, 1)))


# ----------------------------------------------------------------------------------------------
# Values against the reference


@pytest.mark.parametrize("dim", [1, 3, 8, 12, 15, None])
def test_float64_matches_reference(dim, rng):
    features, queries, weight, bias = spectrum_data(rng)
    scorer = ViM(dim=dim, weight=weight, bias=bias).fit(features)
    scores = scorer(queries)
    assert isinstance(scores, np.ndarray)
    assert scores.dtype == np.float64
    assert_close(scores, ref.vim_scores(features, queries, weight, bias, dim), rtol=RTOL64)
    fitted = ref.fit_vim(features, weight, bias, dim)
    state = scorer.state_dict()
    np.testing.assert_allclose(state["origin"].numpy(), fitted.origin, rtol=1e-12, atol=1e-12)
    assert float(state["alpha"]) == pytest.approx(fitted.alpha, rel=1e-10)
    # the null space as a subspace: the same projector (eigenvector signs are arbitrary)
    ours = state["null_space"].numpy()
    np.testing.assert_allclose(ours @ ours.T, fitted.null_space @ fitted.null_space.T, atol=1e-10)


def test_default_dim_uses_half_the_features(rng):
    features, queries, weight, bias = spectrum_data(rng, dim=10, principal=5)
    scorer = ViM(weight=weight, bias=bias).fit(features)
    assert scorer.state_dict()["null_space"].shape == (10, 5)
    assert_close(scorer(queries), ref.vim_scores(features, queries, weight, bias, 5), rtol=RTOL64)


def test_bias_none_puts_the_origin_at_zero(rng):
    features, queries, weight, _ = spectrum_data(rng)
    scorer = ViM(dim=6, weight=weight).fit(features)
    assert torch.equal(scorer.state_dict()["origin"], torch.zeros(16, dtype=torch.float64))
    assert_close(scorer(queries), ref.vim_scores(features, queries, weight, None, 6), rtol=RTOL64)
    linear = nn.Linear(16, 5, bias=False).double()
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight))
    by_module = ViM(dim=6, head=linear).fit(torch.from_numpy(features))
    assert_close(by_module(torch.from_numpy(queries)), as_numpy(scorer(queries)), rtol=1e-12)


def test_more_classes_than_features(rng):
    """C > D: u is the least-squares solution of W u = -b (pinv), not an exact zero."""
    features, queries, _, _ = spectrum_data(rng, dim=8, principal=4)
    weight, bias = rng.normal(size=(20, 8)), rng.normal(size=20)
    scorer = ViM(dim=4, weight=weight, bias=bias).fit(features)
    assert_close(scorer(queries), ref.vim_scores(features, queries, weight, bias, 4), rtol=RTOL64)


def test_wide_features_few_rows(rng):
    """D = 64 from N = 30 rows: Σ has rank 30; dim < N keeps the null space well defined."""
    features = rng.normal(size=(30, 64)) * np.linspace(5.0, 0.5, 64) + 1.0
    queries = rng.normal(size=(25, 64)) * 2.0
    weight, bias = rng.normal(size=(6, 64)), rng.normal(size=6)
    for dim in (10, 29):
        scorer = ViM(dim=dim, weight=weight, bias=bias).fit(features)
        assert scorer.state_dict()["null_space"].shape == (64, 64 - dim)
        want = ref.vim_scores(features, queries, weight, bias, dim)
        assert_close(scorer(queries), want, rtol=1e-8)


def test_large_logits_and_far_features(rng):
    """Features offset by 1e3 and a head with logits of ~1e4: logsumexp and the centring."""
    features, queries, weight, bias = spectrum_data(rng, offset=1e3)
    weight = 10.0 * weight
    scorer = ViM(dim=8, weight=weight, bias=bias).fit(features)
    want = ref.vim_scores(features, queries, weight, bias, 8)
    assert np.abs(queries @ weight.T).max() > 1e4
    assert_close(scorer(queries), want, rtol=RTOL64)


def test_float32_inputs(rng):
    features, queries, weight, bias = spectrum_data(rng)
    features32, queries32 = features.astype(np.float32), queries.astype(np.float32)
    weight32, bias32 = weight.astype(np.float32), bias.astype(np.float32)
    scorer = ViM(dim=8, weight=weight32, bias=bias32).fit(features32)
    scores = scorer(queries32)
    assert scores.dtype == np.float32
    want = ref.vim_scores(features32, queries32, weight32, bias32, 8)
    assert_close(scores, want, rtol=RTOL32)
    # the state is float64 whatever the input dtype
    assert all(v.dtype == torch.float64 for v in scorer.state_dict().values())


def test_targets_are_ignored(rng):
    features, queries, weight, bias = spectrum_data(rng)
    plain = ViM(dim=8, weight=weight, bias=bias).fit(features)(queries)
    targets = rng.integers(0, 5, len(features))
    with_targets = ViM(dim=8, weight=weight, bias=bias).fit(features, targets)(queries)
    np.testing.assert_array_equal(with_targets, plain)


def test_chunked_fit_equals_one_chunk(rng, monkeypatch):
    """The covariance and alpha accumulate over row chunks; the chunking changes nothing."""
    features, queries, weight, bias = spectrum_data(rng, offset=50.0)
    whole = ViM(dim=8, weight=weight, bias=bias).fit(features)
    monkeypatch.setattr(functional_vim, "FIT_CHUNK_ELEMENTS", 7 * 16)  # 7 rows a chunk
    chunked = ViM(dim=8, weight=weight, bias=bias).fit(features)
    assert_close(chunked(queries), as_numpy(whole(queries)), rtol=1e-12)
    assert_close(chunked(queries), ref.vim_scores(features, queries, weight, bias, 8), rtol=RTOL64)


def test_null_space_is_orthonormal_and_state_round_trips(rng):
    features, queries, weight, bias = spectrum_data(rng)
    scorer = ViM(dim=5, weight=weight, bias=bias).fit(torch.from_numpy(features))
    state = scorer.state_dict()
    assert list(state) == ["origin", "null_space", "alpha"]
    assert state["origin"].shape == (16,)
    assert state["null_space"].shape == (16, 11)
    assert state["alpha"].shape == ()
    assert scorer.num_features == 16
    space = state["null_space"]
    torch.testing.assert_close(space.T @ space, torch.eye(11, dtype=torch.float64))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = ViM(dim=5, weight=weight, bias=bias).load_state_dict(
        torch.load(buffer, weights_only=True)
    )
    np.testing.assert_array_equal(fresh(queries), scorer(queries))


def test_bad_state_shapes_are_refused(rng):
    features, _, weight, bias = spectrum_data(rng)
    state = ViM(dim=5, weight=weight, bias=bias).fit(features).state_dict()
    fresh = ViM(dim=5, weight=weight, bias=bias)
    for key, value in (
        ("null_space", state["null_space"][:5]),
        ("null_space", torch.zeros(16, 0, dtype=torch.float64)),
        ("alpha", state["alpha"].reshape(1)),
        ("origin", state["origin"][None]),
    ):
        with pytest.raises(ValueError, match=r"state\['null_space'\]"):
            fresh.load_state_dict({**state, key: value})


def test_residual_direction_lowers_the_score(rng):
    """Moving along the null space lowers the score by alpha times the distance moved."""
    features, _, weight, bias = spectrum_data(rng)
    scorer = ViM(dim=8, weight=weight, bias=bias).fit(features)
    state = scorer.state_dict()
    origin, space, alpha = (state[k].numpy() for k in ("origin", "null_space", "alpha"))
    point = origin + 3.0 * (np.eye(16) - space @ space.T)[0]  # in the principal subspace
    moved = point + 2.5 * space[:, 0]
    logits = np.stack([point, moved]) @ weight.T + bias
    energy = np.log(np.exp(logits).sum(axis=1))
    np.testing.assert_allclose(
        scorer(np.stack([point, moved])), energy - alpha * np.array([0.0, 2.5]), atol=1e-9
    )


def test_gradient_flows(rng):
    features, queries, weight, bias = spectrum_data(rng)
    scorer = ViM(dim=8, weight=weight, bias=bias).fit(features)
    x = torch.from_numpy(queries).requires_grad_(True)
    scorer(x).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# pytorch-ood 0.4.0 (outlier scores: ours = -theirs)


@pytest.mark.parametrize("dim", [1, 8, 15])
def test_agrees_with_pytorch_ood(dim, rng):
    their_vim = pytorch_ood_module("vim").ViM
    features, queries, weight, bias = spectrum_data(rng)
    w, b = torch.from_numpy(weight), torch.from_numpy(bias)
    theirs = their_vim(None, d=dim, w=w, b=b).fit_features(
        torch.from_numpy(features), torch.zeros(len(features), dtype=torch.long)
    )
    their_scores = -theirs.predict_features(torch.from_numpy(queries)).double().numpy()
    ours = ViM(dim=dim, weight=weight, bias=bias).fit(features)(queries)
    # pytorch-ood computes in float32 (covariance, eigh, scores)
    assert_close(ours, their_scores, rtol=1e-4)


def test_pytorch_ood_silently_lowers_a_dim_above_the_feature_size(rng):
    """pytorch-ood replaces d > D by D // 2 with a log message; ViM refuses such a dim."""
    their_vim = pytorch_ood_module("vim").ViM
    features, queries, weight, bias = spectrum_data(rng)
    theirs = their_vim(None, d=32, w=torch.from_numpy(weight), b=torch.from_numpy(bias))
    theirs.fit_features(torch.from_numpy(features), torch.zeros(len(features)))
    assert theirs.d == 8
    their_scores = -theirs.predict_features(torch.from_numpy(queries)).double().numpy()
    assert_close(ViM(weight=weight, bias=bias).fit(features)(queries), their_scores, rtol=1e-4)
    with pytest.raises(ValueError, match="got dim=32"):
        ViM(dim=32, weight=weight, bias=bias).fit(features)
