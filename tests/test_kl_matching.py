"""KL matching against the float64 reference in tests/reference/kl_matching.py and pytorch-ood.

Tests named ``test_reference_*`` check the reference alone (against ``scipy.stats.entropy`` and
closed forms).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from scipy.special import softmax
from scipy.stats import entropy

import oodscore.functional.kl_matching as functional_kl
from oodscore.scorers.base import get_scorer
from oodscore.scorers.kl_matching import KLMatching
from tests.peers import pytorch_ood_module
from tests.reference import kl_matching as ref

# float64 logits: both routes run in float64; differences are rounding only.
RTOL64 = 1e-10
# float32 logits: converted exactly to float64, computed there, the scores rounded to float32.
RTOL32 = 1e-6


def mixed_logits(
    rng: np.random.Generator, rows: int = 400, classes: int = 6, scale: float = 3.0
) -> np.ndarray:
    """Logits peaked at a random class with varying confidence."""
    peaks = rng.integers(0, classes, rows)
    confidence = rng.uniform(0.0, 2.0, rows)[:, None]
    return scale * (confidence * np.eye(classes)[peaks] + rng.normal(size=(rows, classes)))


def as_numpy(scores: Any) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        return scores.detach().cpu().double().numpy()
    return np.asarray(scores, dtype=np.float64)


def assert_close(actual: Any, wanted: np.ndarray, *, rtol: float) -> None:
    """Close relative to the scale of the scores (near-zero divergences sit next to big ones)."""
    actual = as_numpy(actual)
    assert actual.shape == wanted.shape
    assert np.isfinite(actual).all()
    scale = max(np.abs(wanted).max(), 1.0)
    np.testing.assert_allclose(actual, wanted, rtol=rtol, atol=rtol * scale)


# ----------------------------------------------------------------------------------------------
# The reference alone


def test_reference_plain_and_log_domain_agree(rng):
    fit, queries = mixed_logits(rng), mixed_logits(rng, rows=50, scale=5.0)
    np.testing.assert_allclose(
        ref.kl_matching_scores_log_domain(fit, queries),
        ref.kl_matching_scores(fit, queries),
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        np.exp(ref.log_templates(fit)), ref.templates(fit), rtol=1e-12, atol=1e-300
    )


def test_reference_is_kl_of_the_test_posterior_from_the_template(rng):
    """scipy.stats.entropy(p, d) = KL(p || d); the reverse direction gives other values."""
    fit = mixed_logits(rng, classes=4)
    queries = mixed_logits(rng, rows=20, classes=4)
    d = ref.templates(fit)
    p = softmax(queries, axis=1)
    forward = -np.array([min(entropy(row, t) for t in d) for row in p])
    backward = -np.array([min(entropy(t, row) for t in d) for row in p])
    np.testing.assert_allclose(ref.kl_matching_scores(fit, queries), forward, rtol=1e-12)
    assert not np.allclose(forward, backward, rtol=1e-2)


def test_reference_closed_form():
    """Two fit rows predicted as class 0 and one as class 1; a query equal to a template."""
    fit = np.log(np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.8, 0.1]]))
    d = ref.templates(fit)
    np.testing.assert_allclose(d, [[0.6, 0.25, 0.15], [0.1, 0.8, 0.1]])
    query = np.log(np.array([[0.6, 0.25, 0.15], [0.2, 0.2, 0.6]]))
    kl0 = np.sum([0.2, 0.2, 0.6] * np.log(np.array([0.2, 0.2, 0.6]) / d[0]))
    kl1 = np.sum([0.2, 0.2, 0.6] * np.log(np.array([0.2, 0.2, 0.6]) / d[1]))
    np.testing.assert_allclose(
        ref.kl_matching_scores(fit, query), [0.0, -min(kl0, kl1)], atol=1e-15
    )


# ----------------------------------------------------------------------------------------------
# Parameters and errors


def test_registry_and_keyword_only_parameters():
    scorer = get_scorer("kl_matching", labels="targets")
    assert type(scorer) is KLMatching
    assert scorer.labels == "targets"
    assert KLMatching().labels == "predicted"
    assert KLMatching.input_kind == "logits"
    assert scorer.get_params() == {"labels": "targets"}
    with pytest.raises(TypeError):
        KLMatching("targets")  # type: ignore[misc]


def test_bad_labels():
    with pytest.raises(ValueError, match=r"`labels` to be 'predicted' or 'targets', got 'gt'"):
        KLMatching(labels="gt")  # type: ignore[arg-type]


def test_bad_targets(rng):
    logits = mixed_logits(rng, rows=30, classes=3)
    scorer = KLMatching(labels="targets")
    with pytest.raises(ValueError, match=r"`targets`.*labels='targets', got None"):
        scorer.fit(logits)
    with pytest.raises(ValueError, match=r"shape \(N,\) = \(30,\).*got shape \(30, 3\)"):
        scorer.fit(logits, np.eye(3, dtype=np.int64)[np.arange(30) % 3])
    with pytest.raises(ValueError, match=r"shape \(N,\) = \(30,\).*got shape \(29,\)"):
        scorer.fit(logits, np.arange(29))
    with pytest.raises(TypeError, match="integer class ids"):
        scorer.fit(logits, np.arange(30) % 3 * 1.0)
    with pytest.raises(TypeError, match="integer class ids"):
        scorer.fit(logits, torch.ones(30, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"`targets` >= 0.*got -1"):
        scorer.fit(logits, np.arange(30) % 3 - 1)
    with pytest.raises(TypeError, match=r"torch\.Tensor or a numpy\.ndarray"):
        scorer.fit(logits, list(range(30)))


def test_predicted_ignores_targets(rng):
    fit, queries = mixed_logits(rng), mixed_logits(rng, rows=40)
    plain = KLMatching().fit(fit)(queries)
    with_targets = KLMatching().fit(fit, rng.integers(0, 6, len(fit)))(queries)
    np.testing.assert_array_equal(with_targets, plain)
    # even multi-hot targets are ignored with labels="predicted"
    KLMatching().fit(fit, np.ones((len(fit), 6)))


# ----------------------------------------------------------------------------------------------
# Values against the reference


def test_float64_matches_reference(rng):
    fit, queries = mixed_logits(rng), mixed_logits(rng, rows=80, scale=4.0)
    scorer = KLMatching().fit(fit)
    scores = scorer(queries)
    assert isinstance(scores, np.ndarray)
    assert scores.dtype == np.float64
    assert_close(scores, ref.kl_matching_scores(fit, queries), rtol=RTOL64)
    state = scorer.state_dict()
    assert list(state) == ["log_templates"]
    np.testing.assert_allclose(np.exp(state["log_templates"].numpy()), ref.templates(fit), 1e-12)
    assert scorer.num_features == 6


def test_templates_only_for_predicted_classes(rng):
    """Class 3 is never the argmax: 5 templates (the official code would make a NaN one)."""
    fit = mixed_logits(rng)
    fit[:, 3] -= 50.0
    queries = mixed_logits(rng, rows=60)
    scorer = KLMatching().fit(fit)
    assert scorer.state_dict()["log_templates"].shape == (5, 6)
    assert_close(scorer(queries), ref.kl_matching_scores(fit, queries), rtol=RTOL64)


def test_labels_targets_groups_by_class_ids(rng):
    fit, queries = mixed_logits(rng), mixed_logits(rng, rows=60)
    targets = rng.integers(0, 4, len(fit)) * 3  # ids 0, 3, 6, 9: gaps and ids >= C
    scorer = KLMatching(labels="targets").fit(fit, torch.from_numpy(targets))
    assert scorer.state_dict()["log_templates"].shape == (4, 6)
    want = ref.kl_matching_scores(fit, queries, targets)
    assert_close(scorer(queries), want, rtol=RTOL64)
    assert not np.allclose(want, ref.kl_matching_scores(fit, queries), rtol=1e-3)


def test_near_one_hot_softmax(rng):
    """Logit gaps of ~40: off-class probabilities ~1e-18, divergences from ~1e-17 to ~30.

    Float64 resolves a divergence to about 1e-16 in absolute terms (the top class's
    1 - p rounds away in both routes), which is what the near-template rows check.
    """
    fit = 40.0 * np.eye(6)[rng.integers(0, 6, 300)] + rng.normal(size=(300, 6))
    queries = np.concatenate([fit[:20], rng.normal(scale=3.0, size=(30, 6))])
    want = ref.kl_matching_scores(fit, queries)
    scores = KLMatching().fit(fit)(queries)
    assert np.abs(want[:20]).max() < 1e-14
    assert np.abs(scores[:20]).max() < 1e-14
    assert np.abs(want[20:]).min() > 1e-3
    assert_close(scores, want, rtol=RTOL64)


def test_large_logits_stay_finite(rng):
    """Logits of ~1e4: most probabilities underflow in float64; the scores stay exact."""
    fit = mixed_logits(rng, scale=5000.0)
    queries = mixed_logits(rng, rows=40, scale=5000.0)
    want = ref.kl_matching_scores_log_domain(fit, queries)
    assert np.abs(fit).max() > 1e4
    assert_close(KLMatching().fit(fit)(queries), want, rtol=RTOL64)


def test_template_entries_never_underflow_to_log_zero():
    """Every fit row puts 1e-350 on class 2 (0 in float64); the query puts 0.1 there."""
    fit = np.array([[0.0, -1.0, -806.0], [0.0, -2.0, -806.0], [-1.0, 0.0, -806.0]])
    queries = np.log(np.array([[0.6, 0.3, 0.1], [0.5, 0.5, 1e-9]]))
    with np.errstate(divide="ignore"):
        plain = ref.kl_matching_scores(fit, queries)
    assert np.isinf(plain[0])  # the plain route divides by a template entry of 0
    want = ref.kl_matching_scores_log_domain(fit, queries)
    assert np.isfinite(want).all()
    scorer = KLMatching().fit(fit)
    assert torch.isfinite(scorer.state_dict()["log_templates"]).all()
    assert scorer.state_dict()["log_templates"][:, 2].max() < -800
    assert_close(scorer(queries), want, rtol=RTOL64)


def test_one_fit_row(rng):
    fit = mixed_logits(rng, rows=1)
    queries = np.concatenate([fit, mixed_logits(rng, rows=10)])
    scorer = KLMatching().fit(fit)
    assert scorer.state_dict()["log_templates"].shape == (1, 6)
    scores = scorer(queries)
    assert abs(scores[0]) < 1e-14
    assert_close(scores, ref.kl_matching_scores(fit, queries), rtol=RTOL64)


def test_one_class_scores_zero(rng):
    """C = 1: every softmax is [1], so every divergence is 0."""
    scorer = KLMatching().fit(rng.normal(size=(10, 1)))
    np.testing.assert_array_equal(scorer(rng.normal(size=(5, 1)) * 100), np.zeros(5))


def test_float32_inputs(rng):
    fit = mixed_logits(rng).astype(np.float32)
    queries = mixed_logits(rng, rows=60).astype(np.float32)
    scorer = KLMatching().fit(torch.from_numpy(fit))
    scores = scorer(torch.from_numpy(queries))
    assert scores.dtype == torch.float32
    assert scorer.state_dict()["log_templates"].dtype == torch.float64
    assert_close(scores, ref.kl_matching_scores(fit, queries), rtol=RTOL32)


def test_chunked_fit_equals_one_chunk(rng, monkeypatch):
    fit, queries = mixed_logits(rng), mixed_logits(rng, rows=60)
    whole = KLMatching().fit(fit)
    monkeypatch.setattr(functional_kl, "FIT_CHUNK_ELEMENTS", 7 * 6)  # 7 rows a chunk
    chunked = KLMatching().fit(fit)
    torch.testing.assert_close(
        chunked.state_dict()["log_templates"],
        whole.state_dict()["log_templates"],
        rtol=1e-13,
        atol=1e-13,
    )
    assert_close(chunked(queries), ref.kl_matching_scores(fit, queries), rtol=RTOL64)


def test_state_round_trip_and_bad_state(rng):
    fit, queries = mixed_logits(rng), mixed_logits(rng, rows=30)
    scorer = KLMatching().fit(fit)
    buffer = io.BytesIO()
    torch.save(scorer.state_dict(), buffer)
    buffer.seek(0)
    fresh = KLMatching().load_state_dict(torch.load(buffer, weights_only=True))
    np.testing.assert_array_equal(fresh(queries), scorer(queries))
    for bad in (torch.zeros(6, dtype=torch.float64), torch.zeros(0, 6, dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"state\['log_templates'\].*\(K, C\)"):
            KLMatching().load_state_dict({"log_templates": bad})


def test_templates_score_highest_and_gradient_flows(rng):
    fit = mixed_logits(rng)
    scorer = KLMatching().fit(fit)
    log_templates = scorer.state_dict()["log_templates"]
    # a query whose softmax is a template scores 0, the maximum
    np.testing.assert_allclose(scorer(log_templates.numpy()), 0.0, atol=1e-14)
    x = torch.from_numpy(mixed_logits(rng, rows=20)).requires_grad_(True)
    scores = scorer(x)
    assert (scores <= 1e-14).all()
    scores.sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# pytorch-ood 0.4.0 (outlier scores: ours = -theirs)


@pytest.mark.parametrize("never_predicted", [False, True])
def test_agrees_with_pytorch_ood(never_predicted, rng):
    their_kl = pytorch_ood_module("klmatching").KLMatching
    fit, queries = mixed_logits(rng), mixed_logits(rng, rows=60, scale=4.0)
    if never_predicted:
        fit[:, 2] -= 50.0
    theirs = their_kl(None).fit_logits(torch.from_numpy(fit))
    their_scores = -theirs.predict_logits(torch.from_numpy(queries)).numpy()
    assert len(theirs.dists) == (5 if never_predicted else 6)
    assert_close(KLMatching().fit(fit)(queries), their_scores, rtol=RTOL64)
