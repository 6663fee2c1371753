"""Mahalanobis and RelativeMahalanobis against the float64 reference in tests/reference.

Tests named ``test_reference_*`` check the reference alone (against scikit-learn and closed forms).
"""

from __future__ import annotations

import functools
import io
import re
import warnings

import numpy as np
import pytest
import torch
from sklearn.covariance import EmpiricalCovariance, ShrunkCovariance

import oodscore
from tests.reference import mahalanobis as ref

SINGULAR_WARNING = r"(?is)singular.*(1e-0?6|0\.000001)|(1e-0?6|0\.000001).*singular"
# (constructor kwargs, reference function, reference kwargs); built lazily by ``make``
CONFIGS = {
    "max": ("Mahalanobis", {}, ref.mahalanobis_scores, {"aggregation": "max"}),
    "sum": ("Mahalanobis", {"aggregation": "sum"}, ref.mahalanobis_scores, {"aggregation": "sum"}),
    "relative": ("RelativeMahalanobis", {}, ref.relative_mahalanobis_scores, {}),
}


def make(config: str, **params):
    name, kwargs, _, _ = CONFIGS[config]
    return getattr(oodscore, name)(**kwargs, **params)


def expected(config: str, fit_x, x, targets=None, shrinkage=None) -> np.ndarray:
    _, _, function, kwargs = CONFIGS[config]
    return function(as64(fit_x), as64(x), as64(targets), shrinkage=shrinkage, **kwargs)


def as64(value):
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.double().numpy() if value.is_floating_point() else value.numpy()
    value = np.asarray(value)
    return value.astype(np.float64) if value.dtype.kind == "f" else value


def to_numpy(scores) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        return scores.detach().cpu().double().numpy()
    return np.asarray(scores, dtype=np.float64)


def assert_close(actual, wanted: np.ndarray, *, rtol: float, atol: float = 0.0) -> None:
    actual = to_numpy(actual)
    assert actual.shape == wanted.shape
    assert np.isfinite(actual).all()
    np.testing.assert_allclose(actual, wanted, rtol=rtol, atol=atol)


def single_label(rng, *, num_classes=4, per_class=60, dim=6, separation=8.0):
    """Correlated Gaussian classes; ``separation`` is the scale of the class means."""
    means = rng.normal(scale=separation, size=(num_classes, dim))
    mixing = np.eye(dim) + rng.normal(scale=0.6, size=(dim, dim))
    targets = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    features = means[targets] + rng.normal(size=(len(targets), dim)) @ mixing
    queries = np.concatenate(
        [
            means[rng.integers(0, num_classes, 30)] + rng.normal(size=(30, dim)) @ mixing,
            rng.normal(scale=3 * separation + 3.0, size=(20, dim)),
        ]
    )
    return features, targets, queries


def multi_label(rng, *, num_labels=5, num_samples=200, dim=6, density=0.35):
    """Multi-hot targets (every row at least one label), features = sum of the labels' means."""
    labels = rng.random((num_samples, num_labels)) < density
    labels[np.arange(num_samples), rng.integers(0, num_labels, num_samples)] = True
    means = rng.normal(scale=4.0, size=(num_labels, dim))
    mixing = np.eye(dim) + rng.normal(scale=0.5, size=(dim, dim))
    features = labels @ means + rng.normal(size=(num_samples, dim)) @ mixing
    queries = np.concatenate([features[:25] + 0.1, rng.normal(scale=10.0, size=(15, dim))])
    return features, labels, queries


def stacked_centred(features, groups):
    """The official multi-label code's X: each class's rows minus its mean, concatenated."""
    return np.concatenate([features[g] - features[g].mean(axis=0) for g in groups])


def fit_quietly(scorer, features, targets=None):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a well-conditioned fit must not warn
        assert scorer.fit(features, targets) is scorer
    return scorer


# ----------------------------------------------------------------------------------------------
# The reference alone


@pytest.mark.parametrize("kind", ["single", "multi", "none"])
def test_reference_covariance_and_distances_match_sklearn(kind, rng):
    if kind == "multi":
        features, targets, queries = multi_label(rng)
    else:
        features, targets, queries = single_label(rng, separation=2.0)
        targets = None if kind == "none" else targets
    groups = ref.memberships(targets, len(features))
    fitted = ref.fit_gaussians(features, targets)
    assert fitted.shrinkage == 0.0
    stacked = stacked_centred(features, groups)
    assert len(stacked) == sum(len(g) for g in groups)
    sk = EmpiricalCovariance(assume_centered=True).fit(stacked)
    np.testing.assert_allclose(fitted.covariance, sk.covariance_, rtol=1e-12, atol=1e-13)
    # the official multi-label code fits with assume_centered=False: the stacked rows sum to 0
    sk_official = EmpiricalCovariance().fit(stacked)
    np.testing.assert_allclose(fitted.covariance, sk_official.covariance_, rtol=1e-10, atol=1e-12)
    distances = fitted.distances(queries)
    for c, g in enumerate(groups):
        np.testing.assert_allclose(fitted.means[c], features[g].mean(axis=0), rtol=1e-13)
        np.testing.assert_allclose(
            distances[:, c], sk.mahalanobis(queries - fitted.means[c]), rtol=1e-9
        )


def test_reference_distances_match_explicit_inverse(rng):
    features, targets, queries = single_label(rng, separation=1.0)
    fitted = ref.fit_gaussians(features, targets)
    inverse = np.linalg.inv(fitted.covariance)
    np.testing.assert_allclose(fitted.precision, inverse, rtol=1e-9, atol=1e-12)
    diff = queries[:, None, :] - fitted.means[None]
    by_inverse = np.einsum("ncd,de,nce->nc", diff, inverse, diff)
    np.testing.assert_allclose(fitted.distances(queries), by_inverse, rtol=1e-10)
    scores = ref.mahalanobis_scores(features, queries, targets)
    np.testing.assert_allclose(scores, -by_inverse.min(axis=1), rtol=1e-10)
    np.testing.assert_allclose(
        ref.mahalanobis_scores(features, queries, targets, aggregation="sum"),
        -by_inverse.sum(axis=1),
        rtol=1e-10,
    )


@pytest.mark.parametrize("shrinkage", [0.3, 1.0])
def test_reference_shrinkage_matches_sklearn_shrunk_covariance(shrinkage, rng):
    features, targets, _ = single_label(rng)
    fitted = ref.fit_gaussians(features, targets, shrinkage)
    stacked = stacked_centred(features, ref.memberships(targets, len(features)))
    sk = ShrunkCovariance(shrinkage=shrinkage, assume_centered=True).fit(stacked)
    np.testing.assert_allclose(fitted.covariance, sk.covariance_, rtol=1e-12, atol=1e-13)


def test_reference_background_matches_sklearn(rng):
    features, _, queries = single_label(rng)
    background = ref.fit_background(features)
    sk = EmpiricalCovariance().fit(features)  # biased, centred by the overall mean
    np.testing.assert_allclose(background.means[0], sk.location_, rtol=1e-12)
    np.testing.assert_allclose(background.covariance, sk.covariance_, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(background.distances(queries)[:, 0], sk.mahalanobis(queries), 1e-9)


def test_reference_one_dimensional_closed_form():
    features = np.array([[1.0], [3.0], [10.0], [14.0]])
    targets = np.array([0, 0, 1, 1])
    queries = np.array([[2.0], [12.0], [6.0], [-4.0]])
    # μ = 2, 12; Σ = (1 + 1 + 4 + 4) / 4 = 2.5; background: μ0 = 7, Σ0 = (36+16+9+49)/4 = 27.5
    d = np.stack([(queries[:, 0] - 2.0) ** 2, (queries[:, 0] - 12.0) ** 2], axis=1) / 2.5
    d0 = (queries[:, 0] - 7.0) ** 2 / 27.5
    np.testing.assert_allclose(ref.mahalanobis_scores(features, queries, targets), -d.min(1))
    np.testing.assert_allclose(
        ref.mahalanobis_scores(features, queries, targets, aggregation="sum"), -d.sum(1)
    )
    np.testing.assert_allclose(
        ref.relative_mahalanobis_scores(features, queries, targets), -(d - d0[:, None]).min(1)
    )


def test_reference_singular_rule(rng):
    features, targets, _ = single_label(rng)
    assert ref.fit_gaussians(features, targets).shrinkage == 0.0
    wide = rng.normal(size=(20, 64))
    assert ref.fit_gaussians(wide).shrinkage == ref.SINGULAR_SHRINKAGE
    dead = features.copy()
    dead[:, 2] = 3.0
    assert ref.fit_gaussians(dead, targets).shrinkage == ref.SINGULAR_SHRINKAGE
    # a feature constant within each class but not across: Σ singular, Σ_0 not
    by_class = features.copy()
    by_class[:, 2] = targets.astype(np.float64)
    assert ref.fit_gaussians(by_class, targets).shrinkage == ref.SINGULAR_SHRINKAGE
    assert ref.fit_background(by_class).shrinkage == 0.0
    assert ref.fit_gaussians(wide, None, 0.3).shrinkage == 0.3
    with pytest.raises(ValueError, match="no variance"):
        ref.fit_gaussians(np.ones((5, 3)))


def test_reference_affine_invariance(rng):
    """Without shrinkage the distances do not change under x -> x A + b."""
    features, targets, queries = single_label(rng, separation=1.5)
    a = rng.normal(size=(6, 6)) + 3 * np.eye(6)
    b = rng.normal(scale=50.0, size=6)
    for function in (ref.mahalanobis_scores, ref.relative_mahalanobis_scores):
        np.testing.assert_allclose(
            function(features @ a + b, queries @ a + b, targets),
            function(features, queries, targets),
            rtol=1e-8,
        )


def test_reference_one_hot_multilabel_is_single_label(rng):
    features, targets, queries = single_label(rng)
    one_hot = np.eye(4, dtype=bool)[targets]
    for aggregation in ("max", "sum"):
        np.testing.assert_allclose(
            ref.mahalanobis_scores(features, queries, one_hot, aggregation=aggregation),
            ref.mahalanobis_scores(features, queries, targets, aggregation=aggregation),
            rtol=1e-12,
        )


# ----------------------------------------------------------------------------------------------
# Construction and registry


def test_registry_and_keyword_only_parameters():
    scorer = oodscore.get_scorer("mahalanobis")
    assert type(scorer) is oodscore.Mahalanobis
    assert (scorer.aggregation, scorer.shrinkage) == ("max", None)
    scorer = oodscore.get_scorer("mahalanobis", aggregation="sum", shrinkage=0.3)
    assert (scorer.aggregation, scorer.shrinkage) == ("sum", 0.3)
    relative = oodscore.get_scorer("relative_mahalanobis", shrinkage=0.25)
    assert type(relative) is oodscore.RelativeMahalanobis
    assert relative.shrinkage == 0.25
    assert oodscore.RelativeMahalanobis().shrinkage is None
    with pytest.raises(TypeError):
        oodscore.Mahalanobis("sum")
    with pytest.raises(TypeError):
        oodscore.RelativeMahalanobis(0.3)


# ----------------------------------------------------------------------------------------------
# Values against the reference


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("separation", [8.0, 0.3], ids=["separated", "overlapping"])
def test_single_label_float64(config, separation, rng):
    features, targets, queries = single_label(rng, separation=separation)
    scorer = fit_quietly(make(config), features, targets)
    scores = scorer(queries)
    assert isinstance(scores, np.ndarray)
    assert scores.dtype == np.float64
    assert scores.shape == (len(queries),)
    assert_close(scores, expected(config, features, queries, targets), rtol=1e-9)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_targets_none_float64(config, rng):
    features, _, queries = single_label(rng, num_classes=3, separation=2.0)
    scorer = fit_quietly(make(config), features)
    assert_close(scorer(queries), expected(config, features, queries), rtol=1e-9, atol=1e-9)
    # one class holding every sample: the same as class id 0 for every row
    zeros = np.zeros(len(features), dtype=np.int64)
    same = fit_quietly(make(config), features, zeros)(queries)
    np.testing.assert_allclose(scorer(queries), same, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("label_dtype", [bool, np.int64, np.float32], ids=["bool", "int", "float"])
def test_multilabel_float64(config, label_dtype, rng):
    features, labels, queries = multi_label(rng)
    labels = labels.astype(label_dtype)
    scorer = fit_quietly(make(config), features, labels)
    assert_close(scorer(queries), expected(config, features, queries, labels), rtol=1e-9)


@pytest.mark.parametrize("config", ["max", "sum"])
def test_multilabel_counts_each_sample_once_per_label(config, rng):
    """R = Σ_c N_c, not N: heavy label overlap makes the two covariances differ."""
    features, labels, queries = multi_label(rng, density=0.8)
    scores = to_numpy(fit_quietly(make(config), features, labels)(queries))
    assert_close(scores, expected(config, features, queries, labels), rtol=1e-9)
    groups = ref.memberships(labels, len(features))
    means, scatter_over_r = ref.biased_covariance(features, groups)
    rows = sum(len(g) for g in groups)
    assert rows > 2 * len(features)
    over_n = scatter_over_r * rows / len(features)
    diff = queries[:, None, :] - means[None]
    wrong = np.einsum("ncd,de,nce->nc", diff, np.linalg.inv(over_n), diff)
    wrong = -wrong.min(1) if config == "max" else -wrong.sum(1)
    assert not np.allclose(scores, wrong, rtol=1e-3)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_multilabel_one_hot_equals_single_label(config, rng):
    features, targets, queries = single_label(rng, separation=1.0)
    one_hot = np.eye(4, dtype=np.float32)[targets]
    by_ids = fit_quietly(make(config), features, targets)(queries)
    by_labels = fit_quietly(make(config), features, one_hot)(queries)
    np.testing.assert_allclose(by_labels, by_ids, rtol=1e-10)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_multilabel_rows_without_labels(config, rng):
    """A row with no positive label is in no class mean, but in the background Gaussian."""
    features, labels, queries = multi_label(rng)
    labels[::7] = False
    scorer = fit_quietly(make(config), features, labels)
    assert_close(scorer(queries), expected(config, features, queries, labels), rtol=1e-9)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_torch_targets_and_mixed_containers(config, rng):
    features, targets, queries = single_label(rng)
    scorer = fit_quietly(make(config), torch.from_numpy(features), torch.from_numpy(targets))
    scores = scorer(torch.from_numpy(queries))
    assert isinstance(scores, torch.Tensor)
    assert scores.dtype == torch.float64
    assert scores.device == torch.device("cpu")
    assert scores.shape == (len(queries),)
    numpy_scores = scorer(queries)
    assert isinstance(numpy_scores, np.ndarray)
    np.testing.assert_array_equal(numpy_scores, scores.numpy())
    assert_close(scores, expected(config, features, queries, targets), rtol=1e-9)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_float32_inputs(config, rng):
    features, targets, queries = single_label(rng, separation=2.0)
    features, queries = features.astype(np.float32), queries.astype(np.float32)
    scorer = fit_quietly(make(config), features, targets)
    scores = scorer(queries)
    assert isinstance(scores, np.ndarray)
    assert scores.dtype == np.float32
    scale = np.abs(expected("max", features, queries, targets)).max()
    assert_close(scores, expected(config, features, queries, targets), rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_computed_in_float32(config, dtype, rng):
    features, targets, queries = single_label(rng, separation=2.0)
    features = torch.from_numpy(features).to(dtype)
    queries = torch.from_numpy(queries).to(dtype)
    scorer = fit_quietly(make(config), features, targets)
    scores = scorer(queries)
    assert scores.dtype == torch.float32
    scale = np.abs(expected("max", features, queries, targets)).max()
    assert_close(scores, expected(config, features, queries, targets), rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("scale", [1e4, 1e-4])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_extreme_feature_scale(config, scale, dtype, rng):
    """Distances do not depend on the unit of the features (no shrinkage is used)."""
    features, targets, queries = single_label(rng, separation=2.0)
    scaled_fit, scaled_queries = (features * scale).astype(dtype), (queries * scale).astype(dtype)
    scores = fit_quietly(make(config), scaled_fit, targets)(scaled_queries)
    want = expected(config, scaled_fit, scaled_queries, targets)
    rtol, atol = (1e-9, 0.0) if dtype == np.float64 else (1e-4, 1e-5 * np.abs(want).max())
    assert_close(scores, want, rtol=rtol, atol=atol)
    unscaled = expected(config, features, queries, targets)
    assert_close(scores, unscaled, rtol=max(rtol, 1e-9), atol=atol)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_large_offset(config, dtype, rng):
    """Features far from the origin: covariances must not be formed as E[xxᵀ] − μμᵀ, and the
    float32 product of the fit must see centred rows."""
    features, targets, queries = single_label(rng, separation=2.0)
    offset = rng.normal(scale=1e4, size=features.shape[1])
    fit, test = (features + offset).astype(dtype), (queries + offset).astype(dtype)
    scorer = fit_quietly(make(config), fit, targets)
    want = expected(config, fit, test, targets)
    rtol = 1e-6 if dtype == np.float64 else 1e-4
    assert_close(scorer(test), want, rtol=rtol, atol=rtol * np.abs(want).max())


def wide_data(rng):
    features = rng.normal(size=(40, 64)) @ (np.eye(64) + rng.normal(scale=0.3, size=(64, 64)))
    targets = np.arange(40) % 3
    queries = np.concatenate([features[:10] + 0.01, rng.normal(scale=2.0, size=(10, 64))])
    return features, targets, queries


def dead_feature_data(rng):
    features, targets, queries = single_label(rng)
    features[:, 2] = 3.0
    queries[:10, 2] = 3.0
    return features, targets, queries


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("data", [wide_data, dead_feature_data], ids=["D>N", "dead-feature"])
def test_singular_covariance_warns_and_shrinks(config, data, rng):
    features, targets, queries = data(rng)
    assert ref.fit_gaussians(features, targets).shrinkage == ref.SINGULAR_SHRINKAGE
    with pytest.warns(UserWarning, match=SINGULAR_WARNING):
        make(config).fit(features, targets)
    scorer = make(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scorer.fit(features, targets)
    want = expected(config, features, queries, targets)
    assert_close(scorer(queries), want, rtol=1e-6, atol=1e-9 * np.abs(want).max())
    # not the same as a much larger shrinkage, nor as no shrinkage at all
    assert not np.allclose(
        to_numpy(scorer(queries)), expected(config, features, queries, targets, 1e-3), rtol=1e-3
    )


@pytest.mark.parametrize("config", ["max", "relative"])
def test_background_shrinkage_is_decided_separately(config, rng):
    """A feature constant within each class: Σ is singular (1e-6), Σ_0 is not (no shrinkage)."""
    features, targets, queries = single_label(rng)
    features[:, 2] = targets
    queries[:, 2] = rng.integers(0, 4, len(queries))
    assert ref.fit_background(features).shrinkage == 0.0
    with pytest.warns(UserWarning, match=SINGULAR_WARNING):
        scorer = make(config).fit(features, targets)
    want = expected(config, features, queries, targets)
    assert_close(scorer(queries), want, rtol=1e-6, atol=1e-9 * np.abs(want).max())
    if config == "relative":
        classes = ref.fit_gaussians(features, targets).distances(queries)
        both_shrunk = ref.fit_background(features, ref.SINGULAR_SHRINKAGE).distances(queries)
        same_rule = -(classes - both_shrunk).min(axis=1)
        assert not np.allclose(want, same_rule, rtol=1e-9, atol=0)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("shrinkage", [0.3, 1.0, 0.0])
def test_explicit_shrinkage(config, shrinkage, rng):
    features, targets, queries = single_label(rng, separation=1.0)
    scorer = fit_quietly(make(config, shrinkage=shrinkage), features, targets)
    want = expected(config, features, queries, targets, shrinkage)
    assert_close(scorer(queries), want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


@pytest.mark.parametrize("config", list(CONFIGS))
def test_explicit_shrinkage_on_singular_covariance_does_not_warn(config, rng):
    features, targets, queries = wide_data(rng)
    scorer = fit_quietly(make(config, shrinkage=0.3), features, targets)
    want = expected(config, features, queries, targets, 0.3)
    assert_close(scorer(queries), want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_full_shrinkage_is_a_scaled_euclidean_distance(rng):
    """s = 1: Σ_s = trace(Σ)/D · I, so d_c(x) = D ‖x − μ_c‖² / trace(Σ)."""
    features, targets, queries = single_label(rng)
    means = np.stack([features[targets == c].mean(0) for c in range(4)])
    trace = ((features - means[targets]) ** 2).sum() / len(features)
    d = 6 * ((queries[:, None, :] - means[None]) ** 2).sum(-1) / trace
    for aggregation, want in (("max", -d.min(1)), ("sum", -d.sum(1))):
        scorer = oodscore.Mahalanobis(aggregation=aggregation, shrinkage=1.0)
        np.testing.assert_allclose(scorer.fit(features, targets)(queries), want, rtol=1e-10)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_batch_invariance(config, rng):
    features, targets, _ = single_label(rng)
    queries = rng.normal(scale=5.0, size=(301, 6))
    scorer = fit_quietly(make(config), torch.from_numpy(features), targets)
    whole = scorer(torch.from_numpy(queries))
    pieces = torch.cat([scorer(torch.from_numpy(p)) for p in np.split(queries, [1, 8, 150])])
    torch.testing.assert_close(pieces, whole, rtol=1e-12, atol=1e-12 * whole.abs().max().item())


@functools.cache
def large_case(kind: str):
    """20,000 x 64 rows far from the origin, their queries and the reference distances."""
    rng = np.random.default_rng(1)
    num, dim = 20_000, 64
    means = rng.normal(scale=2.0, size=(8, dim))
    mixing = np.eye(dim) + rng.normal(scale=0.2, size=(dim, dim))
    if kind == "single":
        targets = rng.integers(0, 8, num)
        features = means[targets] + rng.normal(size=(num, dim)) @ mixing
    else:
        targets = rng.random((num, 8)) < 0.3
        targets[np.arange(num), rng.integers(0, 8, num)] = True
        features = targets @ means + rng.normal(size=(num, dim)) @ mixing
    features += 50.0
    queries = features[::40] + rng.normal(scale=0.5, size=(500, dim))
    classes = ref.fit_gaussians(features, targets).distances(queries)
    background = ref.fit_background(features).distances(queries)
    return features, targets, queries, classes, background


@pytest.mark.parametrize(
    ("kind", "config"), [("single", "max"), ("multi", "sum"), ("multi", "relative")]
)
def test_large_fit_set(kind, config):
    features, targets, queries, classes, background = large_case(kind)
    want = {
        "max": -classes.min(axis=1),
        "sum": -classes.sum(axis=1),
        "relative": -(classes - background).min(axis=1),
    }[config]
    scorer = fit_quietly(make(config), torch.from_numpy(features), torch.from_numpy(targets))
    assert_close(scorer(queries), want, rtol=1e-9, atol=1e-10 * np.abs(want).max())


# ----------------------------------------------------------------------------------------------
# State


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("shrinkage", [None, 0.3])
def test_state_dict_round_trip(config, shrinkage, rng):
    features, labels, queries = multi_label(rng)
    scorer = fit_quietly(make(config, shrinkage=shrinkage), features, labels)
    state = scorer.state_dict()
    assert isinstance(state, dict)
    assert state
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = make(config, shrinkage=shrinkage)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    np.testing.assert_array_equal(fresh(queries), scorer(queries))
    torch_queries = torch.from_numpy(queries)
    assert torch.equal(fresh(torch_queries), scorer(torch_queries))


@pytest.mark.parametrize("config", list(CONFIGS))
def test_scoring_before_fit_raises(config):
    scorer = make(config)
    with pytest.raises(oodscore.NotFittedError) as info:
        scorer(np.zeros((3, 4)))
    assert CONFIGS[config][0] in str(info.value)
    assert "fit" in str(info.value)


# ----------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("config", list(CONFIGS))
def test_wrong_feature_size(config, rng):
    scorer = fit_quietly(make(config), rng.normal(size=(50, 13)))
    with pytest.raises(ValueError, match="features") as info:
        scorer(rng.normal(size=(4, 17)))
    assert re.search(r"\b13\b", str(info.value))
    assert re.search(r"\b17\b", str(info.value))


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("stage", ["fit", "score"])
def test_non_finite_features(config, bad, stage, rng):
    features, targets, queries = single_label(rng)
    scorer = make(config)
    if stage == "fit":
        features[17, 3] = bad
        with pytest.raises(ValueError, match="features"):
            scorer.fit(features, targets)
    else:
        fit_quietly(scorer, features, targets)
        queries[5, 1] = bad
        with pytest.raises(ValueError, match="features"):
            scorer(torch.from_numpy(queries))


@pytest.mark.parametrize("config", list(CONFIGS))
def test_bad_targets(config, rng):
    features, targets, _ = single_label(rng, num_classes=10, per_class=5, dim=3)
    scorer = make(config)
    with pytest.raises(ValueError, match="targets"):
        scorer.fit(features, targets[:-1])
    with pytest.raises(ValueError, match="targets"):
        scorer.fit(features, np.eye(10)[targets][:-3])
    missing = np.where(targets == 7, 8, targets)
    with pytest.raises(ValueError, match=r"\b7\b"):
        scorer.fit(features, missing)
    negative = targets.copy()
    negative[3] = -1
    with pytest.raises(ValueError, match="targets"):
        scorer.fit(features, negative)
    for bad_value in (2.0, 0.5, -1.0):
        multi_hot = np.eye(10)[targets]
        multi_hot[4, 0] = bad_value
        with pytest.raises(ValueError, match="targets"):
            scorer.fit(features, multi_hot)
    empty_label = np.eye(10, dtype=bool)[targets]
    empty_label[:, 6] = False
    with pytest.raises(ValueError, match="targets"):
        scorer.fit(features, empty_label)


def test_bad_hyperparameters(rng):
    features = rng.normal(size=(30, 3))
    for make_bad in (
        lambda: oodscore.Mahalanobis(shrinkage=1.5),
        lambda: oodscore.Mahalanobis(shrinkage=-0.1),
        lambda: oodscore.RelativeMahalanobis(shrinkage=1.5),
        lambda: oodscore.get_scorer("relative_mahalanobis", shrinkage=-1e-3),
    ):
        with pytest.raises(ValueError, match="shrinkage"):
            make_bad().fit(features)
    with pytest.raises(ValueError, match="aggregation"):
        oodscore.Mahalanobis(aggregation="mean").fit(features)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("shrinkage", [None, 0.3])
def test_no_variance_raises(config, shrinkage):
    centres = np.array([[0.0, 1.0, 2.0], [5.0, -1.0, 0.5]])
    targets = np.array([0, 1] * 10)
    with pytest.raises(ValueError, match=r"(?i)variance|trace"):
        make(config, shrinkage=shrinkage).fit(centres[targets], targets)


# ----------------------------------------------------------------------------------------------
# Properties


@pytest.mark.parametrize("config", list(CONFIGS))
def test_class_mean_scores_higher_than_a_far_point(config, rng):
    features, targets, _ = single_label(rng)
    means = np.stack([features[targets == c].mean(0) for c in range(4)])
    far = means + 40.0 * np.abs(features).max()
    scorer = fit_quietly(make(config), features, targets)
    at_mean, at_far = to_numpy(scorer(means)), to_numpy(scorer(far))
    assert (at_mean > at_far).all()
    if config == "max":
        np.testing.assert_allclose(at_mean, 0.0, atol=1e-9)
        assert (to_numpy(scorer(features)) <= 1e-12).all()


def test_relative_is_zero_for_one_class(rng):
    """targets=None: the class Gaussian is the background one, so d_1 − d_0 = 0."""
    features, _, queries = single_label(rng)
    scores = fit_quietly(oodscore.RelativeMahalanobis(), features)(queries)
    scale = np.abs(expected("max", features, queries)).max()
    np.testing.assert_allclose(scores, 0.0, atol=1e-9 * scale)


def test_relative_differs_from_mahalanobis(rng):
    features, targets, queries = single_label(rng, separation=2.0)
    relative = to_numpy(fit_quietly(oodscore.RelativeMahalanobis(), features, targets)(queries))
    plain = to_numpy(fit_quietly(oodscore.Mahalanobis(), features, targets)(queries))
    summed = to_numpy(
        fit_quietly(oodscore.Mahalanobis(aggregation="sum"), features, targets)(queries)
    )
    assert not np.allclose(relative, plain, rtol=1e-3)
    assert not np.allclose(summed, plain, rtol=1e-3)
    np.testing.assert_allclose(relative, expected("relative", features, queries, targets), 1e-9)
