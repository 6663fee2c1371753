"""`OODDetector`: every input route, Mondrian groups, reports, export, state and input checks."""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader, TensorDataset

from oodscore.detection import (
    ByClassGroups,
    ByLabelCount,
    ByPredictedClass,
    OODDetector,
    RejectionRate,
    load_detector,
    save_detector,
    select_ood,
)
from oodscore.scorers import ODIN, KLMatching, Mahalanobis, ReAct
from tests.reference import conformal as ref

DOCS = Path(__file__).resolve().parents[1] / "docs" / "decisions.md"


def _logits(n: int, seed: int = 0, classes: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 4 * torch.eye(classes)[torch.arange(n) % classes] + torch.randn(n, classes, generator=g)


# ----------------------------------------------------------------------------- decisions


def test_decisions_match_the_reference_marginal() -> None:
    cal, test = _logits(250), torch.cat([_logits(100, 1), torch.randn(50, 3)])
    detector = OODDetector("energy").calibrate(logits=cal, alpha=0.07)
    result = detector(test)
    cal_scores = torch.logsumexp(cal, 1).double().numpy()
    expected = ref.p_values(cal_scores, torch.logsumexp(test, 1).double().numpy())
    np.testing.assert_array_equal(result.p_values.numpy(), expected)
    assert torch.equal(result.reject, result.p_values <= 0.07)
    threshold = ref.threshold(cal_scores, 0.07)
    assert torch.equal(result.reject, result.scores.double() < threshold)
    assert detector.report.groups[0].threshold == threshold
    assert result.group_names == ("all",)
    assert bool((result.groups == 0).all())


@pytest.mark.parametrize("source", ["logits", "scores", "numpy"])
def test_every_input_route_gives_the_same_decisions(source: str) -> None:
    cal, test = _logits(300), _logits(60, 2) - 2
    base = OODDetector("msp").calibrate(logits=cal, alpha=0.1)(test)
    detector = OODDetector("msp")
    if source == "logits":
        got = detector.calibrate(logits=cal, alpha=0.1)(logits=test)
    elif source == "scores":
        msp = torch.softmax(cal, 1).amax(1)
        detector.calibrate(scores=msp, alpha=0.1)
        got = detector(scores=torch.softmax(test, 1).amax(1))
    else:
        got = detector.calibrate(logits=cal.numpy(), alpha=0.1)(test.numpy())
    assert torch.equal(got.reject, base.reject)
    np.testing.assert_allclose(got.p_values.numpy(), base.p_values.numpy(), rtol=0, atol=0)


def test_a_model_and_loaders_give_the_decisions_of_their_logits() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x_cal, x_test = torch.randn(200, 4), torch.randn(30, 4) * 3
    cal_set = TensorDataset(x_cal, torch.zeros(200, dtype=torch.int64))
    with torch.no_grad():
        cal_logits, test_logits = model(x_cal), model(x_test)
    for grouping in (None, "predicted_class"):
        on_model = OODDetector("energy", model=model, grouping=grouping, merge_small_groups=True)
        on_model.calibrate(DataLoader(cal_set, batch_size=32), alpha=0.1)
        on_logits = OODDetector("energy", grouping=grouping, merge_small_groups=True)
        on_logits.calibrate(logits=cal_logits, alpha=0.1)
        assert torch.equal(on_model(x_test).reject, on_logits(test_logits).reject)
        assert torch.equal(on_model(x_test).p_values, on_logits(test_logits).p_values)
    rate = on_model.ood_detection_rate(DataLoader(x_test, batch_size=8))
    assert rate.total == 30
    assert rate.rejected == int(on_logits(test_logits).reject.sum())


def test_a_feature_scorer_fits_on_the_fit_set_and_calibrates_on_another() -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    fit_x, cal_x, test_x = torch.randn(300, 4), torch.randn(200, 4), 5 * torch.randn(20, 4)
    fit_y = torch.arange(300) % 3
    detector = OODDetector(Mahalanobis(), model=model).calibrate(
        DataLoader(cal_x, batch_size=50),
        fit_loader=DataLoader(TensorDataset(fit_x, fit_y), batch_size=50),
        alpha=0.05,
    )
    hidden = torch.nn.Sequential(*model[:2])
    with torch.no_grad():
        expected_scorer = Mahalanobis().fit(hidden(fit_x), fit_y)
        manual = OODDetector(expected_scorer).calibrate(features=hidden(cal_x), alpha=0.05)
        assert torch.equal(detector(test_x).reject, manual(hidden(test_x)).reject)
    state = detector.state_dict()
    assert {k for k in state if k.startswith("scorer.")} == {"scorer.means", "scorer.whitening"}


def test_model_scorers_and_head_scorers_run_through_the_model() -> None:
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    cal_x, fit_x, test_x = torch.randn(100, 4), torch.randn(100, 4), 3 * torch.randn(10, 4)
    odin = OODDetector(ODIN(), model=model).calibrate(DataLoader(cal_x, batch_size=25), alpha=0.1)
    by_scores = OODDetector("msp").calibrate(scores=ODIN()(model, cal_x), alpha=0.1)
    assert torch.equal(odin(test_x).p_values, by_scores(scores=ODIN()(model, test_x)).p_values)
    react = OODDetector(ReAct(), model=model).calibrate(
        DataLoader(cal_x, batch_size=25), fit_loader=DataLoader(fit_x, batch_size=25), alpha=0.1
    )
    assert not react.scorer.has_head  # the model's head was lent for each pass only
    hidden = torch.nn.Sequential(*model[:2])
    with torch.no_grad():
        manual = OODDetector(ReAct(head=model[2]).fit(hidden(fit_x)))
        manual.calibrate(features=hidden(cal_x), alpha=0.1)
        assert torch.equal(react(test_x).p_values, manual(hidden(test_x)).p_values)


def test_an_unfitted_scorer_needs_fit_data_that_is_not_the_calibration_data() -> None:
    cal = _logits(200)
    with pytest.raises(ValueError, match="`fit_logits` was not given"):
        OODDetector(KLMatching()).calibrate(logits=cal, alpha=0.1)
    with pytest.raises(ValueError, match="`fit_logits` is the calibration data"):
        OODDetector(KLMatching()).calibrate(logits=cal, fit_logits=cal, alpha=0.1)
    with pytest.raises(ValueError, match="needs no fitting"):
        OODDetector("energy").calibrate(logits=cal, fit_logits=_logits(10), alpha=0.1)
    detector = OODDetector(KLMatching()).calibrate(
        logits=cal, fit_logits=_logits(300, 5), alpha=0.1
    )
    assert detector.scorer.is_fitted


# ----------------------------------------------------------------------------- Mondrian


def test_mondrian_thresholds_and_report_match_the_reference_per_group() -> None:
    cal = _logits(240, 3)
    detector = OODDetector("max_logit", grouping="predicted_class").calibrate(logits=cal, alpha=0.1)
    scores = cal.amax(1).double().numpy()
    groups = cal.argmax(1).numpy()
    test = _logits(90, 4) - 1.5
    got = detector(test)
    expected = ref.group_p_values(scores, groups, test.amax(1).double().numpy(), test.argmax(1))
    np.testing.assert_array_equal(got.p_values.numpy(), expected)
    for g, line in enumerate(detector.report.groups):
        own = scores[groups == g]
        assert (line.name, line.size) == (f"class {g}", own.size)
        assert line.threshold == ref.threshold(own, 0.1)
        assert line.rank == ref.rank(own.size, 0.1)
        assert line.calibration_rate == np.mean(own < line.threshold)
        assert line.expected_rate == line.rank / (own.size + 1) <= 0.1
    assert "| class 0 | 80 |" in str(detector.report)


def test_groups_too_small_are_named_or_merged_into_rest() -> None:
    predicted = torch.tensor([0] * 40 + [1] * 30 + [2] * 5)  # class 3 is never predicted
    noise = torch.rand(75, 4, generator=torch.Generator().manual_seed(5))
    logits = 10 * torch.eye(4)[predicted] + noise
    message = (
        "2 calibration groups have fewer than the 19 scores alpha=0.05 needs (ceil(1/alpha) - 1): "
        "class 2 (5), class 3 (0)"
    )
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        OODDetector("energy", grouping="predicted_class").calibrate(logits=logits, alpha=0.05)
    assert "merge_small_groups=True" in str(error.value)
    merged = OODDetector("energy", grouping="predicted_class", merge_small_groups=True)
    merged.calibrate(logits=logits, alpha=0.05)
    names = [g.name for g in merged.report.groups]
    rest = merged.report.groups[-1]
    # classes 2 and 3 hold 5 < 19 scores: the smallest kept group, class 1, joins them
    assert names == ["class 0", "rest"]
    assert (rest.size, rest.members) == (35, ("class 1", "class 2", "class 3"))
    assert len(names) == len(set(names))
    never_seen = torch.tensor([[0.0, 0.0, 0.0, 9.0]])  # predicted class 3: the rest group
    assert merged(never_seen).groups.tolist() == [len(names) - 1]
    assert "rest (" in str(merged.report)


def test_class_groups_and_label_counts() -> None:
    logits = _logits(300, 6, classes=4)
    by_map = OODDetector("energy", grouping={0: "a", 1: "a", 2: "b", 3: "b"})
    by_map.calibrate(logits=logits, alpha=0.1)
    assert [g.name for g in by_map.report.groups] == ["'a'", "'b'"]
    pairs = (logits.argmax(1) >= 2).long()
    assert [g.size for g in by_map.report.groups] == torch.bincount(pairs).tolist()
    with pytest.raises(ValueError, match="each of the C = 4 classes"):
        OODDetector("energy", grouping=[0, 1, 1]).calibrate(logits=logits, alpha=0.1)
    multi = torch.randn(400, 5, generator=torch.Generator().manual_seed(7)) * 3
    counts = (torch.sigmoid(multi) > 0.5).sum(1)
    detector = OODDetector("joint_energy", grouping=ByLabelCount(), merge_small_groups=True)
    detector.calibrate(logits=multi, alpha=0.1)
    for line in detector.report.groups:
        if line.name != "rest":
            assert line.size == int((counts == int(line.name.split()[0])).sum())
    assert ByLabelCount(threshold=0.9).assign(torch.tensor([[2.0, 2.5]])).tolist() == [1]


# ----------------------------------------------------------------------------- rates, BH


def test_rejection_rate_interval_is_clopper_pearson() -> None:
    detector = OODDetector("energy").calibrate(logits=_logits(300), alpha=0.05)
    ood = torch.randn(77, 3)
    rate = detector.ood_detection_rate(logits=ood, confidence=0.9)
    x, n = rate.rejected, rate.total
    assert x == int(detector(ood).reject.sum())
    assert n == 77
    low = stats.beta.ppf(0.05, x, n - x + 1) if x > 0 else 0.0
    high = stats.beta.ppf(0.95, x + 1, n - x) if x < n else 1.0
    assert math.isclose(rate.low, low, rel_tol=1e-9)
    assert math.isclose(rate.high, high, rel_tol=1e-9)
    assert repr(rate).startswith(f"OOD detection rate: {x} of 77 = ")
    assert "90% Clopper-Pearson interval" in repr(rate)
    fresh = detector.id_rejection_rate(logits=_logits(3000, 9))
    assert fresh.low <= 0.05
    assert fresh.label == "ID rejection rate"
    with pytest.raises(ValueError, match="at least one input"):
        RejectionRate.of(torch.zeros(0, dtype=torch.bool))


def test_select_ood_on_a_detection_is_bh_on_its_p_values() -> None:
    detector = OODDetector("energy").calibrate(logits=_logits(500), alpha=0.05)
    result = detector(torch.cat([_logits(50, 3), torch.randn(30, 3) - 2]))
    expected = ref.benjamini_hochberg(result.p_values.numpy(), 0.2)
    np.testing.assert_array_equal(result.select_ood(fdr=0.2).numpy(), expected)
    for bad in (0.0, 1.0, float("nan"), True):
        with pytest.raises(ValueError, match=r"`fdr` to be a finite number in \(0, 1\)"):
            select_ood(result.p_values, fdr=bad)
    with pytest.raises(ValueError, match=r"`p_values` in \[0, 1\], got 1.5 at index 1"):
        select_ood(torch.tensor([0.1, 1.5]), fdr=0.1)


# ----------------------------------------------------------------------------- export, state


@pytest.mark.parametrize("grouping", [None, "predicted_class", [0, 1, 1]])
@pytest.mark.parametrize("scorer", ["energy", "msp", "max_logit"])
def test_the_exported_decision_path_decides_identically(scorer: str, grouping: object) -> None:
    detector = OODDetector(scorer, grouping=grouping).calibrate(logits=_logits(300), alpha=0.1)
    module = detector.decision_module()
    test = torch.cat([_logits(40, 8), torch.randn(40, 3)])
    batch = torch.export.Dim("batch", min=2)
    exported = torch.export.export(module, (test,), dynamic_shapes=({0: batch},)).module()
    result = detector(test)
    for inputs, expected in ((test, result), (test[:7], detector(test[:7]))):
        scores, p_values, reject = exported(inputs)
        assert torch.equal(reject, expected.reject)
        assert torch.equal(p_values, expected.p_values)
        assert torch.equal(scores, expected.scores)


def test_state_dict_round_trips_through_weights_only_load() -> None:
    detector = OODDetector(KLMatching(), grouping="predicted_class", merge_small_groups=True)
    detector.calibrate(logits=_logits(200), fit_logits=_logits(300, 1), alpha=0.05)
    buffer = io.BytesIO()
    torch.save(detector.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    loaded = OODDetector(KLMatching(), grouping="predicted_class").load_state_dict(state)
    test = torch.randn(50, 3) * 3
    assert torch.equal(loaded(test).reject, detector(test).reject)
    assert torch.equal(loaded(test).p_values, detector(test).p_values)
    assert loaded.report == detector.report
    with pytest.raises(ValueError, match="another group rule"):
        OODDetector(KLMatching()).load_state_dict(state)
    with pytest.raises(ValueError, match="not fitted"):
        OODDetector("energy", grouping="predicted_class").load_state_dict(state)
    broken = {**state, "ranks": state["ranks"] + 1}
    with pytest.raises(ValueError, match="ranks do not follow"):
        OODDetector(KLMatching(), grouping="predicted_class").load_state_dict(broken)
    with pytest.raises(ValueError, match="missing \\['alpha'\\]"):
        OODDetector(KLMatching()).load_state_dict({k: v for k, v in state.items() if k != "alpha"})


def test_detector_files_round_trip_and_refuse_what_is_not_one(tmp_path: Path) -> None:
    detector = OODDetector("energy", grouping=ByClassGroups(["x", "y", "x"]))
    detector.calibrate(logits=_logits(300), alpha=0.1)
    save_detector(detector, tmp_path / "d.pt")
    loaded = load_detector(tmp_path / "d.pt")
    assert isinstance(loaded.grouping, ByClassGroups)
    assert loaded.grouping.labels == ["x", "y"]
    test = torch.randn(20, 3)
    assert torch.equal(loaded(test).reject, detector(test).reject)
    torch.save({"a": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an oodscore detector file"):
        load_detector(tmp_path / "other.pt")
    with pytest.raises(FileExistsError):
        save_detector(detector, tmp_path / "d.pt")


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, float("nan"), float("inf"), True])
def test_alpha_outside_the_open_unit_interval_is_refused(alpha: float) -> None:
    with pytest.raises(
        ValueError, match=rf"`alpha` to be a finite number in \(0, 1\), got {alpha!r}"
    ):
        OODDetector("energy").calibrate(logits=_logits(100), alpha=alpha)


def test_too_few_calibration_points_says_how_many_are_needed() -> None:
    with pytest.raises(
        ValueError, match=r"at least 19 calibration scores for alpha=0.05 .* n = 18"
    ):
        OODDetector("energy").calibrate(logits=_logits(18), alpha=0.05)
    assert (
        OODDetector("energy").calibrate(logits=_logits(19), alpha=0.05).report.groups[0].rank == 1
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"logits": torch.full((30, 3), float("nan"))}, r"`logits` to be finite, but 30 rows"),
        ({"scores": torch.tensor([0.0, float("nan")] * 20)}, r"`scores` to be finite"),
        ({"logits": torch.zeros(0, 3)}, r"`logits` to have at least 1 row"),
        ({"scores": torch.zeros(0)}, r"`scores` to have at least 1 score"),
        ({"logits": torch.zeros(30)}, r"`logits` to be 2-D of shape \(N, C\), got 1-D"),
        (
            {"scores": torch.zeros(30, 2)},
            r"`scores` to be 1-D of shape \(N,\), got shape \(30, 2\)",
        ),
        ({"logits": [[1.0, 2.0]] * 30}, r"`logits` to be a torch.Tensor or a numpy.ndarray"),
        ({}, r"Expected `logits` \(or `scores`\) for the calibration set"),
        ({"features": torch.zeros(30, 2)}, r"Expected no `features`: Energy reads logits"),
    ],
)
def test_bad_calibration_inputs_name_the_argument(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        OODDetector("energy").calibrate(alpha=0.1, **kwargs)


def test_bad_test_inputs_and_uncalibrated_use_are_refused() -> None:
    with pytest.raises(RuntimeError, match="not calibrated yet"):
        OODDetector("energy")(torch.zeros(2, 3))
    detector = OODDetector("energy").calibrate(logits=_logits(100), alpha=0.1)
    with pytest.raises(ValueError, match=r"C = 3 columns, the width .* got shape \(2, 4\)"):
        detector(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="`logits` to be finite"):
        detector(torch.tensor([[0.0, float("inf"), 1.0]]))
    empty = detector(torch.zeros(0, 3))
    assert empty.reject.shape == (0,)
    assert empty.p_values.dtype == torch.float64
    grouped = OODDetector("energy", grouping="predicted_class")
    with pytest.raises(ValueError, match="`logits` for the calibration set: the group rule"):
        grouped.calibrate(scores=torch.zeros(100), alpha=0.1)
    with pytest.raises(ValueError, match="Expected `grouping` to be one of"):
        OODDetector("energy", grouping="by_class")
    with pytest.raises(ValueError, match=r"`threshold` to be a finite number in \(0, 1\)"):
        ByLabelCount(threshold=1.0)
    assert ByPredictedClass().group_names(2) == ["class 0", "class 1"]


# ----------------------------------------------------------------------------- docs


def test_the_docs_page_examples_run() -> None:
    """The page's ```python blocks run as written (```py blocks are fragments)."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, str(DOCS), "exec"), {})
