"""KNN (deep nearest neighbours) against the float64 reference in tests/reference/knn.py.

Tests named ``test_reference_*`` check the reference alone (against scikit-learn and closed forms).
Peers: scikit-learn ``NearestNeighbors`` and pytorch-ood 0.4.0 ``KNN`` (which returns the plain
distance, an outlier score: ours = -(theirs ** 2)); the faiss backend where faiss is installed.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import sys
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from oodscore import get_scorer
from oodscore.functional import knn as fknn
from oodscore.scorers.knn import KNN
from tests.peers import pytorch_ood_module
from tests.reference import knn as ref

HAS_FAISS = importlib.util.find_spec("faiss") is not None
needs_faiss = pytest.mark.skipif(not HAS_FAISS, reason="faiss is not installed (oodscore[faiss])")

U32 = 2.0**-24  # float32 unit roundoff
FLOAT32_RTOL = 2e-6
"""Measured: float32 scores are within a relative 4e-7 of the float64 reference (D = 1..2048)."""


def as64(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def blobs(rng, *, rows=300, dim=6, queries=80, dtype=np.float64):
    """Fit features around a few directions, queries near them and far from them."""
    centres = rng.normal(size=(4, dim)) * 3
    fit = centres[rng.integers(0, 4, rows)] + rng.normal(size=(rows, dim))
    near = centres[rng.integers(0, 4, queries // 2)] + rng.normal(size=(queries // 2, dim))
    far = rng.normal(scale=4.0, size=(queries - queries // 2, dim))
    return fit.astype(dtype), np.concatenate([near, far]).astype(dtype)


def separated(fit, queries, k, gap=1e-5):
    """Mask of the queries whose k-th and (k+1)-th (and (k-1)-th) reference distances differ by
    more than ``gap``, with a check that it keeps most of them.

    For these no rounding (about 1e-7 in float32) can change which neighbour is the k-th, so
    scores recomputed from the neighbour found must agree bitwise between routes.
    """
    d = np.sort(ref.pairwise_squared_distances(ref.normalise(queries), ref.normalise(fit)), 1)
    lower = d[:, k - 1] - d[:, k - 2] if k > 1 else np.full(len(d), np.inf)
    upper = d[:, k] - d[:, k - 1] if k < d.shape[1] else np.full(len(d), np.inf)
    mask = np.minimum(lower, upper) > gap
    assert mask.mean() > 0.9
    return mask


# ----------------------------------------------------------------------------------------------
# The reference alone


def test_reference_matches_sklearn_nearest_neighbors(rng):
    fit, queries = blobs(rng)
    for k in (1, 7, 300):
        model = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(ref.normalise(fit))
        distances, _ = model.kneighbors(ref.normalise(queries))
        np.testing.assert_allclose(
            ref.kth_squared_distance(fit, queries, k), distances[:, -1] ** 2, rtol=1e-9, atol=1e-12
        )


def test_reference_partition_equals_sort_and_closed_forms(rng):
    fit, queries = blobs(rng, rows=50, queries=20)
    for k in (1, 13, 50):
        np.testing.assert_array_equal(
            ref.kth_squared_distance(fit, queries, k),
            ref.kth_squared_distance(fit, queries, k, sort=True),
        )
    z = ref.normalise(np.array([[3.0, 4.0], [0.0, 0.0], [-1e300, 1e300], [1e-300, 0.0]]))
    np.testing.assert_allclose(z, [[0.6, 0.8], [0, 0], [-(0.5**0.5), 0.5**0.5], [1, 0]])
    # unit vectors: d^2 = 2 - 2 cos
    angle = np.array([[1.0, 0.0]]), np.array([[np.cos(1.0), np.sin(1.0)]])
    np.testing.assert_allclose(ref.kth_squared_distance(*angle, 1), [2 - 2 * np.cos(1.0)])


# ----------------------------------------------------------------------------------------------
# Against the reference


def test_registry_and_parameters():
    scorer = get_scorer("knn", k=3)
    assert isinstance(scorer, KNN)
    assert scorer.get_params() == {"k": 3, "backend": "torch", "chunk_size": fknn.CHUNK_SIZE}
    assert KNN().k == 50
    assert KNN.multilabel is True  # label-free, so it applies to multi-label models as is
    assert KNN.differentiable is True
    with pytest.raises(TypeError):
        KNN(3)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("rows", "dim", "k"), [(300, 6, 1), (300, 6, 5), (300, 6, 50), (40, 3, 40)]
)
def test_float64_matches_reference(rows, dim, k, rng):
    fit, queries = blobs(rng, rows=rows, dim=dim)
    scores = KNN(k=k).fit(fit)(queries)
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, ref.knn_scores(fit, queries, k), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dim", [1, 8, 64, 512])
def test_float32_within_documented_tolerance(dim, rng):
    fit, queries = blobs(rng, rows=400, dim=dim, queries=60, dtype=np.float32)
    queries[:10] = fit[:10]  # self matches: distance exactly 0 at k = 1
    for k in (1, 10):
        scores = KNN(k=k).fit(torch.from_numpy(fit))(torch.from_numpy(queries))
        assert scores.dtype == torch.float32
        wanted = ref.knn_scores(fit, queries, k)
        np.testing.assert_allclose(as64(scores), wanted, rtol=FLOAT32_RTOL, atol=0)
    # float64 route on the same (float32) values agrees far more tightly
    scores64 = KNN(k=10).fit(fit.astype(np.float64))(queries.astype(np.float64))
    np.testing.assert_allclose(scores64, ref.knn_scores(fit, queries, 10), rtol=1e-12, atol=1e-15)


def test_self_match_counts_as_a_neighbour(rng):
    """Scoring the fit set: each point is its own nearest neighbour (the official behaviour)."""
    fit, _ = blobs(rng, rows=100)
    np.testing.assert_array_equal(KNN(k=1).fit(fit)(fit), np.zeros(100))
    np.testing.assert_allclose(KNN(k=2).fit(fit)(fit), ref.knn_scores(fit, fit, 2), rtol=1e-12)
    # the k-th neighbour of a fit point is the (k-1)-th of the others
    others = [ref.knn_scores(np.delete(fit, i, 0), fit[i : i + 1], 1)[0] for i in range(5)]
    np.testing.assert_allclose(KNN(k=2).fit(fit)(fit[:5]), others, rtol=1e-12)


def test_duplicate_fit_rows_and_ties(rng):
    base, queries = blobs(rng, rows=30)
    fit = np.repeat(base, 3, axis=0)[rng.permutation(90)]
    for k in (1, 2, 3, 4, 6, 90):
        np.testing.assert_allclose(
            KNN(k=k).fit(fit)(queries), ref.knn_scores(fit, queries, k), rtol=1e-12, atol=1e-15
        )
    # three copies: the 3 nearest of a fit row are itself, exactly
    np.testing.assert_array_equal(KNN(k=3).fit(fit)(base), np.zeros(30))
    # equidistant fit rows: every tie gives the same value
    square = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    np.testing.assert_allclose(
        KNN(k=2).fit(square)(np.array([[1.0, 1.0], [1.0, -1.0]])), [-(2 - 2**0.5)] * 2, rtol=1e-15
    )


def test_k_equals_n_is_the_farthest_point(rng):
    fit, queries = blobs(rng, rows=25)
    farthest = -ref.pairwise_squared_distances(ref.normalise(queries), ref.normalise(fit)).max(1)
    np.testing.assert_allclose(KNN(k=25).fit(fit)(queries), farthest, rtol=1e-12)
    # a single fit row and a single query
    one = KNN(k=1).fit(fit[:1])
    np.testing.assert_allclose(
        one(queries[:1]), ref.knn_scores(fit[:1], queries[:1], 1), rtol=1e-12
    )
    np.testing.assert_array_equal(one(fit[:1]), [0.0])


def test_one_dimension(rng):
    """D = 1: normalised values are -1, 0 or +1, so distances are 0, 1 or 4, with many ties."""
    fit = rng.normal(size=(20, 1))
    fit[:3] = 0.0
    queries = np.array([[2.0], [-0.1], [0.0], [1e-300]])
    for k in (1, 3, 4, 20):
        scores = KNN(k=k).fit(fit)(queries)
        np.testing.assert_array_equal(scores, ref.knn_scores(fit, queries, k))
        assert set(np.unique(-scores)) <= {0.0, 1.0, 4.0}


def test_zero_vectors(rng):
    fit, queries = blobs(rng, rows=50)
    fit[[3, 17]] = 0.0
    queries[:3] = 0.0
    for k in (1, 2, 3, 10):
        scores = KNN(k=k).fit(fit)(queries)
        np.testing.assert_allclose(scores, ref.knn_scores(fit, queries, k), rtol=1e-12, atol=1e-15)
    # a zero query is at distance 0 from the zero fit rows, 1 from every unit row
    np.testing.assert_array_equal(KNN(k=2).fit(fit)(queries[:3]), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(KNN(k=3).fit(fit)(queries[:3]), [-1.0, -1.0, -1.0], rtol=1e-15)
    bank = KNN(k=1).fit(fit).state_dict()["bank"]
    assert torch.equal(bank[3], torch.zeros(6, dtype=torch.float64))


@pytest.mark.parametrize(
    ("dtype", "scales"), [(np.float32, (1e30, 1e-30, 1e-40)), (np.float64, (1e300, 1e-300))]
)
def test_scale_does_not_matter(dtype, scales, rng):
    """Normalisation removes the scale: huge and tiny features score as the plain ones."""
    fit, queries = blobs(rng, rows=80, dtype=dtype)
    plain = as64(KNN(k=5).fit(fit)(queries))
    rtol = FLOAT32_RTOL if dtype == np.float32 else 1e-12
    for scale in scales:
        big_fit, big_queries = (
            (fit * dtype(scale)).astype(dtype),
            (queries * dtype(scale)).astype(dtype),
        )
        scores = KNN(k=5).fit(big_fit)(big_queries)
        assert np.isfinite(scores).all()
        wanted = ref.knn_scores(big_fit, big_queries, 5)
        subnormal = dtype == np.float32 and scale < np.finfo(np.float32).tiny
        np.testing.assert_allclose(scores, wanted, rtol=1e-3 if subnormal else rtol)
        if not subnormal:
            np.testing.assert_allclose(scores, plain, rtol=10 * rtol)
    # rows of wildly different magnitudes in one matrix
    mixed = fit * np.logspace(-20, 20, len(fit)).astype(dtype)[:, None]
    np.testing.assert_allclose(
        as64(KNN(k=3).fit(mixed)(queries)), ref.knn_scores(mixed, queries, 3), rtol=rtol
    )


# ----------------------------------------------------------------------------------------------
# Chunks, blocks, dtypes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunk_size_does_not_change_scores(dtype, rng):
    """Bitwise: the score is recomputed from the neighbour found, so chunking could only matter
    by picking another neighbour where two tie within rounding; this data has no such tie."""
    fit, queries = blobs(rng, rows=103, dim=5, queries=50, dtype=dtype)
    for k in (1, 4, 103):
        clear = queries[separated(fit, queries, k)]
        whole = KNN(k=k, chunk_size=10_000).fit(fit)(clear)
        for chunk_size in (1, 2, 7, 50, 102, 103, 104):
            np.testing.assert_array_equal(KNN(k=k, chunk_size=chunk_size).fit(fit)(clear), whole)


def test_query_blocks_and_memory_bound(rng, monkeypatch):
    """The search never forms more than ``query_block x (chunk_size + k)`` values at once."""
    fit, queries = blobs(rng, rows=97, dim=4, queries=41)
    z, bank = fknn.unit_rows(torch.from_numpy(queries)), fknn.unit_rows(torch.from_numpy(fit))
    whole = fknn.kth_nearest(z, bank, 6, chunk_size=1000, query_block=1000)
    sizes: list[tuple[int, ...]] = []
    original = torch.Tensor.topk

    def spy(self, *args, **kwargs):
        sizes.append(tuple(self.shape))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "topk", spy)
    for query_block, chunk_size in ((1, 1), (5, 13), (41, 97), (40, 96)):
        sizes.clear()
        index = fknn.kth_nearest(z, bank, 6, chunk_size=chunk_size, query_block=query_block)
        assert torch.equal(index, whole)
        assert max(sizes) <= (query_block, chunk_size + 6)
        assert max(s[1] for s in sizes) <= chunk_size + 6


@pytest.mark.parametrize("k", [1, 3, 20])
def test_running_top_k_keeps_the_k_largest(k, rng):
    """Both merge paths (all of a chunk, or only the entries above the current k-th key)."""
    values = rng.normal(size=(30, 400))
    values[:, 100:120] = values[:, :20]  # ties across chunks
    values = np.round(values, 1)  # and many ties within them
    wanted = -np.sort(-values, axis=1)[:, :k]
    x = torch.from_numpy(values)
    for chunk in (1, 7, 64, 400):
        keys = x.new_full((30, k), -torch.inf)
        index = torch.zeros((30, k), dtype=torch.long)
        for start in range(0, 400, chunk):
            keys, index = fknn.merge_top_k(keys, index, x[:, start : start + chunk], start)
        np.testing.assert_array_equal(-np.sort(-keys.numpy(), axis=1), wanted)
        np.testing.assert_array_equal(x.gather(1, index).numpy(), keys.numpy())


def test_half_precision_and_mixed_dtypes(rng):
    fit, queries = blobs(rng, rows=120)
    fit32, q32 = torch.from_numpy(fit).float(), torch.from_numpy(queries).float()
    scorer = KNN(k=4).fit(fit32.half())
    assert scorer.state_dict()["bank"].dtype == torch.float32
    scores = scorer(q32.half())
    assert scores.dtype == torch.float32
    wanted = ref.knn_scores(fit32.half().double().numpy(), q32.half().double().numpy(), 4)
    np.testing.assert_allclose(as64(scores), wanted, rtol=FLOAT32_RTOL)
    # a float64 bank scores float32 queries in float64, returned as float32
    bank64 = KNN(k=4).fit(fit)
    assert bank64.state_dict()["bank"].dtype == torch.float64
    mixed = bank64(q32)
    assert mixed.dtype == torch.float32
    np.testing.assert_allclose(
        as64(mixed), ref.knn_scores(fit, q32.double().numpy(), 4), rtol=FLOAT32_RTOL
    )


# ----------------------------------------------------------------------------------------------
# Gradients


def test_gradient_flows_to_the_query(rng):
    fit, queries = blobs(rng, rows=60, dim=4, queries=12)
    scorer = KNN(k=3).fit(fit)
    x = torch.from_numpy(queries).requires_grad_(True)
    assert torch.autograd.gradcheck(scorer, (x,))
    # analytically: d/dx -|z - b|^2 with z = x / |x| is -2 (I - z z^T)(z - b) / |x|
    (grad,) = torch.autograd.grad(scorer(x).sum(), x)
    z = x.detach() / x.detach().norm(dim=1, keepdim=True)
    bank = scorer.state_dict()["bank"]
    index = fknn.kth_nearest(z, bank, 3)
    diff = z - bank[index]
    radial = (diff * z).sum(1, keepdim=True) * z
    wanted = -2 * (diff - radial) / x.detach().norm(dim=1, keepdim=True)
    torch.testing.assert_close(grad, wanted, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Peers


@pytest.mark.parametrize("algorithm", ["brute", "ball_tree"])
def test_agrees_with_sklearn_nearest_neighbors(algorithm, rng):
    fit, queries = blobs(rng, rows=500, dim=10, queries=100, dtype=np.float32)
    fit64, queries64 = fit.astype(np.float64), queries.astype(np.float64)
    z_fit = fit64 / np.linalg.norm(fit64, axis=1, keepdims=True)
    z_q = queries64 / np.linalg.norm(queries64, axis=1, keepdims=True)
    for k in (1, 50):
        model = NearestNeighbors(n_neighbors=k, algorithm=algorithm).fit(z_fit)
        distances, _ = model.kneighbors(z_q)
        ours = KNN(k=k).fit(fit64)(queries64)
        np.testing.assert_allclose(ours, -(distances[:, -1] ** 2), rtol=1e-9, atol=1e-12)
        ours32 = KNN(k=k).fit(fit)(queries)
        np.testing.assert_allclose(ours32, -(distances[:, -1] ** 2), rtol=1e-5, atol=1e-6)


def test_agrees_with_pytorch_ood(rng):
    their_knn = pytorch_ood_module("knn").KNN
    fit, queries = blobs(rng, rows=400, dim=12, queries=90)
    labels = torch.from_numpy(rng.integers(0, 3, len(fit)))
    for k in (1, 50):
        theirs = their_knn(None, k=k).fit_features(torch.from_numpy(fit), labels)
        distance = as64(theirs.predict_features(torch.from_numpy(queries)))
        ours = KNN(k=k).fit(fit)(queries)
        np.testing.assert_allclose(ours, -(distance**2), rtol=1e-9, atol=1e-12)


@needs_faiss
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_faiss_backend_equals_torch_backend(dtype, rng):
    fit, queries = blobs(rng, rows=300, dim=8, queries=80, dtype=dtype)
    fit[5] = 0.0
    queries[:5] = fit[:5]
    for k in (1, 5, 300):
        clear = np.concatenate([queries[:5], queries[5:][separated(fit, queries[5:], k)]])
        by_torch = KNN(k=k).fit(fit)(clear)
        by_faiss = KNN(k=k, backend="faiss").fit(fit)(clear)
        assert by_faiss.dtype == dtype
        # the same neighbour, the distance recomputed in the input's dtype: bitwise equal
        np.testing.assert_array_equal(by_faiss, by_torch)
        np.testing.assert_allclose(by_faiss, ref.knn_scores(fit, clear, k), rtol=FLOAT32_RTOL)


@needs_faiss
def test_faiss_index_is_rebuilt_after_refit_and_load(rng):
    fit, queries = blobs(rng, rows=100, dtype=np.float32)
    scorer = KNN(k=3, backend="faiss").fit(fit)
    first = scorer(queries)
    scorer.fit(fit[:50])
    np.testing.assert_allclose(scorer(queries), ref.knn_scores(fit[:50], queries, 3), rtol=2e-6)
    buffer = io.BytesIO()
    torch.save(KNN(k=3).fit(fit).state_dict(), buffer)
    buffer.seek(0)
    scorer.load_state_dict(torch.load(buffer, weights_only=True))
    np.testing.assert_array_equal(scorer(queries), first)
    clone = copy.deepcopy(scorer)  # the faiss index is not copied but rebuilt
    np.testing.assert_array_equal(clone(queries), first)
    # the faiss backend is differentiable too: the distance is recomputed by torch
    x = torch.from_numpy(queries[:4]).double().requires_grad_(True)
    a = torch.autograd.grad(scorer(x).sum(), x)[0]
    b = torch.autograd.grad(KNN(k=3).fit(fit)(x).sum(), x)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_missing_faiss_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(ImportError, match=r"pip install faiss-cpu.*oodscore\[faiss\]"):
        KNN(backend="faiss")


# ----------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3", None])
def test_bad_k(k):
    with pytest.raises(ValueError, match=rf"Expected `k` to be an integer >= 1, got {k!r}\."):
        KNN(k=k)


@pytest.mark.parametrize("chunk_size", [0, 2.0, False])
def test_bad_chunk_size(chunk_size):
    with pytest.raises(ValueError, match=rf"`chunk_size` to be an integer >= 1, got {chunk_size}"):
        KNN(chunk_size=chunk_size)


def test_bad_backend():
    with pytest.raises(ValueError, match=r"`backend` to be 'torch' or 'faiss', got 'sklearn'\."):
        KNN(backend="sklearn")  # type: ignore[arg-type]


def test_k_larger_than_the_fit_set():
    with pytest.raises(
        ValueError,
        match=r"^Expected `k` to be at most the number of fit rows N = 30, got k=50\.$",
    ):
        KNN().fit(torch.randn(30, 4))
    KNN(k=30).fit(torch.randn(30, 4))  # k = N is fine


def test_bad_loaded_state(rng):
    fit, _ = blobs(rng, rows=30)
    state = KNN(k=5).fit(fit).state_dict()
    with pytest.raises(
        ValueError,
        match=r"`k` to be at most the number of rows of `state\['bank'\]` N = 30, got k=50",
    ):
        KNN().load_state_dict(state)
    with pytest.raises(ValueError, match=r"L2-normalised.*norms from 0\.5 to 0\.5"):
        KNN(k=5).load_state_dict({"bank": state["bank"] * 0.5})
    with pytest.raises(ValueError, match=r"shape \(N, D\), got \(30,\)"):
        KNN(k=5).load_state_dict({"bank": state["bank"][:, 0]})
    KNN(k=30).load_state_dict(state)
