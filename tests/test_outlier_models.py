"""LOF and IsolationForest: fitted logit scorers wrapping scikit-learn, as the JointEnergy code.

LOF is compared with an independent float64 implementation of Breunig et al. (2000) in
tests/reference/outlier_models.py and with scikit-learn directly; IsolationForest with
scikit-learn's ``IsolationForest(random_state=np.random.RandomState(seed))`` (the official
``lib.py``), plus determinism, the state round trip and batch invariance.
Tests named ``test_reference_*`` check the reference alone.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from sklearn.ensemble import IsolationForest as SkIsolationForest
from sklearn.neighbors import LocalOutlierFactor

from oodscore.scorers.base import NotFittedError
from oodscore.scorers.outlier_models import LOF, IsolationForest
from tests.reference import outlier_models as ref


def clusters(rng, *, rows=240, classes=5, scale=1.0):
    """Multi-label-like logits: a few clusters, plus queries near and far from them."""
    centres = rng.normal(scale=6.0, size=(4, classes))
    fit = centres[rng.integers(0, 4, rows)] + rng.normal(size=(rows, classes))
    queries = np.concatenate(
        [
            centres[rng.integers(0, 4, 40)] + rng.normal(size=(40, classes)),
            rng.normal(scale=15.0, size=(20, classes)),
            fit[:5],  # fit rows themselves, scored as new points
        ]
    )
    return fit * scale, queries * scale


def sklearn_lof(fit, queries, k=20):
    return LocalOutlierFactor(n_neighbors=k, novelty=True).fit(fit).score_samples(queries)


def sklearn_forest(fit, queries, **params):
    seed = params.pop("random_state", 42)
    model = SkIsolationForest(random_state=np.random.RandomState(seed), **params)
    return model.fit(fit).score_samples(queries)


def round_trip(scorer):
    buffer = io.BytesIO()
    torch.save(scorer.state_dict(), buffer)
    buffer.seek(0)
    return type(scorer)(**scorer.get_params()).load_state_dict(
        torch.load(buffer, weights_only=True)
    )


# --- the LOF reference alone -------------------------------------------------------------


@pytest.mark.parametrize(("classes", "k"), [(5, 20), (20, 20), (1, 7), (3, 1)])
def test_reference_lof_matches_sklearn(rng, classes, k) -> None:
    fit, queries = clusters(rng, classes=classes)
    np.testing.assert_allclose(
        ref.lof_novelty_scores(fit, queries, k, lrd_offset=1e-10),
        sklearn_lof(fit, queries, k),
        rtol=1e-9,
    )


def test_reference_lof_of_a_uniform_lattice_is_one() -> None:
    """Inside a regular grid every point has the same density: LOF = 1. A cell centre is
    nearer its neighbours (0.71) than they are to theirs (1), but the reachability distance
    max(k-distance(o), d) smooths that away: LOF = 1 too. Far outside, LOF > 1."""
    grid = np.stack(np.meshgrid(np.arange(12.0), np.arange(12.0)), axis=-1).reshape(-1, 2)
    inner = np.array([[5.0, 5.0], [6.0, 6.0], [5.5, 6.5]])
    for k in (3, 4):  # k = 3: four neighbours tie at distance 1, and all four belong to N_3
        np.testing.assert_allclose(ref.lof_novelty_scores(grid, inner, k=k), -1.0, rtol=1e-12)
    assert ref.lof_novelty_scores(grid, np.array([[30.0, 30.0]]), k=4)[0] < -1.5


# --- LOF against the reference and scikit-learn --------------------------------------------


@pytest.mark.parametrize(("classes", "k"), [(5, 20), (20, 20), (1, 7), (3, 1), (8, 50)])
def test_lof_matches_the_paper_definition(rng, classes, k) -> None:
    fit, queries = clusters(rng, classes=classes)
    scores = LOF(n_neighbors=k).fit(fit)(queries)
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, ref.lof_novelty_scores(fit, queries, k), rtol=1e-8)
    np.testing.assert_allclose(scores, sklearn_lof(fit, queries, k), rtol=1e-12)


def test_lof_defaults_are_the_official_ones(rng) -> None:
    """lib.py: LocalOutlierFactor(novelty=True), everything else default (k = 20)."""
    fit, queries = clusters(rng, classes=20)
    scorer = LOF().fit(torch.from_numpy(fit))
    official = LocalOutlierFactor(novelty=True).fit(fit).score_samples(queries)
    np.testing.assert_array_equal(scorer(torch.from_numpy(queries)).numpy(), official)
    assert scorer.n_neighbors == 20


def test_lof_is_scale_invariant_at_large_magnitudes(rng) -> None:
    fit, queries = clusters(rng)
    small = LOF().fit(fit)(queries)
    large = LOF().fit(fit * 1e4)(queries * 1e4)
    np.testing.assert_allclose(large, small, rtol=1e-7)
    np.testing.assert_allclose(
        large, ref.lof_novelty_scores(fit * 1e4, queries * 1e4, 20), rtol=1e-8
    )


def test_lof_duplicates_follow_sklearn_offset(rng) -> None:
    """More than k copies of a point: the paper's lrd is infinite there; scikit-learn adds
    1e-10 to the mean reachability distance, and so does this scorer (it is scikit-learn)."""
    fit = np.concatenate([np.zeros((30, 3)), rng.normal(size=(100, 3)) + 3.0])
    queries = np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [3.0, 3.0, 3.0]])
    scores = LOF().fit(fit)(queries)
    assert np.isfinite(scores).all()
    wanted = ref.lof_novelty_scores(fit, queries, 20, lrd_offset=1e-10)
    np.testing.assert_allclose(scores, wanted, rtol=1e-6)


def test_lof_separates_in_from_out(rng) -> None:
    fit, queries = clusters(rng)
    scores = LOF().fit(fit)(queries)
    assert scores[:40].min() > scores[40:60].max()
    np.testing.assert_allclose(np.median(scores[:40]), -1.0, atol=0.15)


# --- IsolationForest against scikit-learn ---------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"n_estimators": 7, "random_state": 0},
        {"max_samples": 50},
        {"max_samples": 0.5, "random_state": 123},
        {"max_samples": 1.0},
    ],
)
def test_forest_equals_sklearn_with_a_randomstate(rng, params) -> None:
    fit, queries = clusters(rng, classes=20)
    scores = IsolationForest(**params).fit(torch.from_numpy(fit))(torch.from_numpy(queries))
    np.testing.assert_array_equal(scores.numpy(), sklearn_forest(fit, queries, **params))


def test_forest_seed_is_a_randomstate_not_an_int(rng) -> None:
    """scikit-learn 1.9.1 draws from a RandomState instance twice while fitting, so
    ``random_state=RandomState(42)`` (lib.py) and ``random_state=42`` give other trees."""
    fit, queries = clusters(rng)
    ours = IsolationForest().fit(fit)(queries)
    with_int = SkIsolationForest(random_state=42).fit(fit).score_samples(queries)
    assert not np.array_equal(ours, with_int)
    np.testing.assert_array_equal(ours, sklearn_forest(fit, queries))


def test_forest_scores_in_range_and_separate(rng) -> None:
    fit, queries = clusters(rng)
    scores = IsolationForest().fit(fit)(queries)
    assert ((scores >= -1) & (scores <= 0)).all()
    assert np.median(scores[:40]) > np.median(scores[40:60])


def test_forest_is_deterministic(rng) -> None:
    fit, queries = clusters(rng)
    first = IsolationForest().fit(fit)(queries)
    np.testing.assert_array_equal(IsolationForest().fit(fit)(queries), first)
    np.testing.assert_array_equal(
        IsolationForest().fit(fit.astype(np.float32))(queries),
        IsolationForest().fit(fit.astype(np.float32))(queries),
    )


# --- shared behaviour -------------------------------------------------------------------------

SCORERS = [
    pytest.param(lambda: LOF(n_neighbors=10), id="lof"),
    pytest.param(lambda: IsolationForest(n_estimators=25), id="isolation_forest"),
]


@pytest.mark.parametrize("make", SCORERS)
def test_state_is_a_float64_copy_and_round_trips(make, rng) -> None:
    fit, queries = clusters(rng)
    data = torch.from_numpy(fit).float()
    scorer = make().fit(data)
    state = scorer.state_dict()
    assert list(state) == ["logits"]
    assert state["logits"].dtype == torch.float64
    torch.testing.assert_close(state["logits"], data.double(), rtol=0, atol=0)
    before = scorer(queries)
    data += 100.0  # the state is a copy
    np.testing.assert_array_equal(scorer(queries), before)
    loaded = round_trip(scorer)
    np.testing.assert_array_equal(loaded(queries), before)
    # a loaded scorer rebuilt its model from the state, not from anything left over
    assert loaded.outlier_model() is not scorer.outlier_model()


@pytest.mark.parametrize("make", SCORERS)
def test_refitting_rebuilds_the_model(make, rng) -> None:
    fit, queries = clusters(rng)
    other, _ = clusters(np.random.default_rng(5))
    scorer = make().fit(fit)
    first = scorer(queries)
    scorer.fit(other)
    np.testing.assert_array_equal(scorer(queries), make().fit(other)(queries))
    assert not np.array_equal(scorer(queries), first)


@pytest.mark.parametrize("make", SCORERS)
def test_batch_invariance_and_large_inputs(make, rng, monkeypatch) -> None:
    import oodscore._arrays

    fit, queries = clusters(rng)
    scorer = make().fit(fit)
    whole = scorer(queries)
    pieces = np.concatenate([scorer(queries[i : i + 1]) for i in range(len(queries))])
    np.testing.assert_allclose(pieces, whole, rtol=1e-13)
    permutation = rng.permutation(len(queries))
    np.testing.assert_allclose(scorer(queries[permutation]), whole[permutation], rtol=1e-13)
    monkeypatch.setattr(oodscore._arrays, "CHUNK_ELEMENTS", 20)  # row blocks of 4
    np.testing.assert_allclose(scorer(queries), whole, rtol=1e-13)


@pytest.mark.parametrize("make", SCORERS)
def test_no_gradient_and_no_error(make, rng) -> None:
    fit, queries = clusters(rng)
    scorer = make().fit(fit)
    x = torch.from_numpy(queries).requires_grad_(True)
    scores = scorer(x)
    assert not scores.requires_grad
    assert scores.grad_fn is None
    np.testing.assert_array_equal(scores.numpy(), scorer(queries))
    assert type(scorer).differentiable is False


@pytest.mark.parametrize("make", SCORERS)
@pytest.mark.parametrize(
    ("dtype", "out"),
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_dtypes_follow_the_input(make, dtype, out, rng) -> None:
    fit, queries = clusters(rng)
    scorer = make().fit(fit)
    x = torch.from_numpy(queries).to(dtype)
    scores = scorer(x)
    assert scores.dtype == out
    wanted = scorer(x.double()).to(out)
    torch.testing.assert_close(scores, wanted, rtol=0, atol=0)


@pytest.mark.parametrize("make", SCORERS)
def test_targets_are_ignored(make, rng) -> None:
    fit, queries = clusters(rng)
    labels = (rng.random(fit.shape) > 0.5).astype(np.float64)
    np.testing.assert_array_equal(make().fit(fit, labels)(queries), make().fit(fit)(queries))


def test_flags() -> None:
    for cls, name in ((LOF, "lof"), (IsolationForest, "isolation_forest")):
        assert cls.name == name
        assert cls.input_kind == "logits"
        assert cls.requires_fit is True
        assert cls.differentiable is False
        assert cls.multilabel is True
        assert cls.state_names == ("logits",)
    assert repr(LOF()) == "LOF(n_neighbors=20)"
    assert repr(IsolationForest()) == (
        "IsolationForest(n_estimators=100, max_samples='auto', random_state=42)"
    )


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "20", None])
def test_bad_n_neighbors(bad) -> None:
    with pytest.raises(ValueError, match=r"`n_neighbors` to be an integer >= 1, got"):
        LOF(n_neighbors=bad)


def test_too_few_fit_rows_is_an_error_naming_both_numbers(rng) -> None:
    """scikit-learn would warn and use N - 1 neighbours; this refuses."""
    with pytest.raises(ValueError, match=r"n_neighbors.*N = 20\), got n_neighbors=20"):
        LOF().fit(rng.normal(size=(20, 3)))
    LOF().fit(rng.normal(size=(21, 3)))  # N = k + 1 is enough
    state = LOF(n_neighbors=5).fit(rng.normal(size=(10, 3))).state_dict()
    with pytest.raises(ValueError, match=r"state\['logits'\].*N = 10\), got n_neighbors=20"):
        LOF().load_state_dict(state)
    with pytest.raises(ValueError, match=r"state\['logits'\]` of shape \(N, C\)"):
        LOF(n_neighbors=5).load_state_dict({"logits": torch.zeros(30)})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_estimators": 0}, r"`n_estimators` to be an integer >= 1, got 0"),
        ({"n_estimators": 10.0}, r"`n_estimators` to be an integer >= 1, got 10.0"),
        ({"max_samples": 0}, r"`max_samples` to be an integer >= 1, got 0"),
        ({"max_samples": 0.0}, r"`max_samples` to be 'auto'.*in \(0, 1\], got 0.0"),
        ({"max_samples": 1.5}, r"`max_samples` to be 'auto'.*got 1.5"),
        ({"max_samples": "all"}, r"`max_samples` to be 'auto'.*got 'all'"),
        ({"max_samples": True}, r"`max_samples` to be 'auto'.*got True"),
        ({"random_state": -1}, r"`random_state` to be an integer in \[0, 4294967295\], got -1"),
        ({"random_state": None}, r"`random_state` to be an integer.*got None"),
    ],
)
def test_bad_forest_parameters(params, message) -> None:
    with pytest.raises(ValueError, match=message):
        IsolationForest(**params)


def test_forest_max_samples_against_the_fit_rows(rng) -> None:
    data = rng.normal(size=(40, 3))
    with pytest.raises(ValueError, match=r"`max_samples`.*N = 40\), got max_samples=41"):
        IsolationForest(max_samples=41).fit(data)
    with pytest.raises(ValueError, match=r"max_samples=0.01 \(int\(0.01 \* N\) = 0 rows\)"):
        IsolationForest(max_samples=0.01).fit(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's "max_samples > n" warning never fires
        IsolationForest(max_samples=40).fit(data)
        IsolationForest().fit(data)  # "auto" = min(256, N)


def test_not_fitted_names_the_class() -> None:
    with pytest.raises(NotFittedError, match="This LOF instance is not fitted"):
        LOF()(torch.zeros(2, 3))
    with pytest.raises(NotFittedError, match="This IsolationForest instance is not fitted"):
        IsolationForest()(torch.zeros(2, 3))
