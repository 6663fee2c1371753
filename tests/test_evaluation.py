"""evaluate / evaluate_logits against float64 references, scikit-learn and their contracts."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from oodscore import Energy, JointEnergy, Report, Scorer, evaluate, evaluate_logits
from oodscore.evaluation import resolve_scorers
from oodscore.metrics.classification import id_task_metrics, mean_average_precision
from tests.reference import evaluation as ref

REFERENCE_SCORES = {"msp": ref.msp, "energy": ref.energy, "max_logit": ref.max_logit}


def _logit_sets(rng: np.random.Generator, scale: float = 1.0) -> tuple[np.ndarray, dict[str, Any]]:
    id_logits = rng.normal(size=(150, 6)) * scale
    id_logits[np.arange(150), np.arange(150) % 6] += 3.0 * scale
    return id_logits, {
        "near": rng.normal(size=(90, 6)) * scale + 0.5 * scale,
        "far": rng.normal(size=(60, 6)) * scale * 0.3,
    }


def _check_against_reference(report: Report, id_logits: np.ndarray, ood: dict[str, Any]) -> None:
    for name, fn in REFERENCE_SCORES.items():
        id_scores = fn(id_logits)
        for ood_set, logits in ood.items():
            expected = ref.ood_metrics(id_scores, fn(logits))
            got = report[ood_set, name]
            assert got.keys() == expected.keys()
            for key, value in expected.items():
                assert got[key] == pytest.approx(value, abs=1e-9), (ood_set, name, key)


@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_evaluate_logits_matches_reference(rng: np.random.Generator, scale: float) -> None:
    id_logits, ood = _logit_sets(rng, scale)
    report = evaluate_logits(id_logits, ood, list(REFERENCE_SCORES))
    _check_against_reference(report, id_logits, ood)
    assert report.ood_sets == ("near", "far")
    assert report.scorers == ("msp", "energy", "max_logit")
    assert report.num_samples == {"id": 150, "near": 90, "far": 60}


def test_evaluate_logits_matches_sklearn_auroc(rng: np.random.Generator) -> None:
    id_logits, ood = _logit_sets(rng)
    report = evaluate_logits(torch.from_numpy(id_logits), ood, "energy")
    for ood_set, logits in ood.items():
        scores = np.r_[ref.energy(id_logits), ref.energy(logits)]
        is_id = np.r_[np.ones(150), np.zeros(len(logits))]
        assert report[ood_set, "energy"]["auroc"] == pytest.approx(roc_auc_score(is_id, scores))
        assert report[ood_set, "energy"]["aupr_in"] == pytest.approx(
            average_precision_score(is_id, scores)
        )


def test_evaluate_logits_extreme_and_tied_logits() -> None:
    # Saturated softmax: MSP ties at exactly 1.0 in float32 for all confident rows, while
    # energy and max logit keep the ranking; the metrics must count the ties, not hide them.
    id_logits = np.array([[1e4, 0.0], [2e4, 0.0], [50.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    ood_logits = {"ood": np.array([[3e4, 0.0], [1.0, 0.0], [0.0, 0.0]], dtype=np.float32)}
    report = evaluate_logits(id_logits, ood_logits, list(REFERENCE_SCORES))
    _check_against_reference(report, id_logits, ood_logits)
    # By hand: MSP is 1.0 (float32) for ID rows 1e4, 2e4, 50 and OOD row 3e4, so those 3 ID
    # rows tie with it and beat the other two; the 0-row ties with the OOD 0-row.
    assert report["ood", "msp"]["auroc"] == pytest.approx((3 * 2.5 + 0.5) / 12)
    # Max logit keeps the order: 3e4 beats all ID rows; 1e4, 2e4, 50 beat 1 and 0.
    assert report["ood", "max_logit"]["auroc"] == pytest.approx((3 * 2 + 0.5) / 12)


def test_accuracy_and_map_against_references(rng: np.random.Generator) -> None:
    logits = rng.normal(size=(80, 5))
    classes = rng.integers(0, 5, size=80)
    assert id_task_metrics(logits, classes) == {"accuracy": ref.accuracy(logits, classes)}
    multi_hot = (rng.random((80, 5)) < 0.3).astype(np.float32)
    expected = average_precision_score(multi_hot, logits, average="macro")
    got = id_task_metrics(torch.from_numpy(logits), torch.from_numpy(multi_hot))["map"]
    assert got == pytest.approx(expected, abs=1e-12)
    assert got == pytest.approx(ref.macro_map(logits, multi_hot), abs=1e-12)


def test_map_with_ties_and_degenerate_labels_matches_sklearn() -> None:
    scores = np.array([[1.0, 0.0, 2.0], [1.0, 1.0, 2.0], [0.0, 1.0, 2.0], [1.0, 1.0, 2.0]])
    targets = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])  # label 1: no positive
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = average_precision_score(targets, scores, average="macro")
    with pytest.warns(UserWarning, match=r"Labels \[1\] have no positive sample"):
        got = mean_average_precision(scores, targets)
    assert got == pytest.approx(expected, abs=1e-12)
    assert got == pytest.approx(ref.macro_map(scores, targets), abs=1e-12)


class _CountingNet(nn.Module):
    """A linear classifier that records its calls and whether autograd was on."""

    def __init__(self, num_inputs: int = 4, num_classes: int = 3) -> None:
        super().__init__()
        self.linear = nn.Linear(num_inputs, num_classes)
        self.dropout = nn.Dropout(0.5)
        self.calls = 0
        self.grad_enabled: list[bool] = []
        self.training_flags: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        self.grad_enabled.append(torch.is_grad_enabled())
        self.training_flags.append(self.training)
        out: Tensor = self.linear(self.dropout(x))
        return out


def _loaders(
    x_id: Tensor, y_id: Tensor | None, oods: dict[str, Tensor], batch_size: int
) -> tuple[DataLoader[Any], dict[str, Any]]:
    id_data = TensorDataset(x_id) if y_id is None else TensorDataset(x_id, y_id)
    return DataLoader(id_data, batch_size=batch_size), {
        name: DataLoader(x, batch_size=batch_size) for name, x in oods.items()
    }


@pytest.mark.parametrize("batch_size", [7, 64])
def test_evaluate_equals_evaluate_logits_one_forward_per_batch(batch_size: int) -> None:
    model = _CountingNet()
    x_id, x_ood = torch.randn(50, 4) * 2, torch.randn(30, 4) * 0.5
    y_id = torch.randint(0, 3, (50,))
    id_loader, ood_loaders = _loaders(x_id, y_id, {"small": x_ood}, batch_size)
    six = ["msp", "energy", "max_logit", "entropy", "gen", "joint_energy"]
    report = evaluate(model, id_loader, ood_loaders, six, progress=False)
    expected_batches = len(id_loader) + len(ood_loaders["small"])
    assert model.calls == expected_batches  # one forward per batch, not one per scorer
    assert not any(model.grad_enabled)
    assert not any(model.training_flags)
    with torch.no_grad():
        id_logits, ood_logits = model.linear(x_id), model.linear(x_ood)
    direct = evaluate_logits(id_logits, {"small": ood_logits}, six, id_targets=y_id)
    for ood_set, scorer, values in direct.rows():
        assert report[ood_set, scorer] == pytest.approx(values, abs=1e-12)
    assert report.id_metrics["accuracy"] == pytest.approx(
        ref.accuracy(id_logits.numpy(), y_id.numpy())
    )
    np.testing.assert_allclose(report.id_scores["msp"], ref.msp(id_logits.numpy()), rtol=1e-6)


def test_evaluate_restores_every_module_mode_even_on_error() -> None:
    model = _CountingNet()
    model.train()
    model.dropout.eval()  # a mixed state must come back as it was
    x = torch.randn(10, 4)
    evaluate(
        model,
        DataLoader(x, batch_size=4),
        {"o": DataLoader(x, batch_size=4)},
        "msp",
        progress=False,
    )
    assert model.training
    assert model.linear.training
    assert not model.dropout.training
    bad = torch.full((3, 4), float("nan"))
    with pytest.raises(ValueError, match=r"`model output on batches 0-2 of 'o'` to be finite"):
        evaluate(model, DataLoader(x), {"o": DataLoader(bad)}, "msp", progress=False)
    assert model.training
    assert not model.dropout.training


def test_evaluate_multi_hot_targets_give_sklearn_map() -> None:
    torch.manual_seed(1)
    model = nn.Linear(6, 4)
    x = torch.randn(40, 6)
    y = (torch.rand(40, 4) < 0.4).float()
    report = evaluate(
        model,
        DataLoader(TensorDataset(x, y), batch_size=16),
        {"o": DataLoader(torch.randn(20, 6), batch_size=16)},
        {"joint_energy": JointEnergy(), "joint_energy_top1": JointEnergy(top_k=1)},
        progress=False,
    )
    with torch.no_grad():
        logits = model(x).numpy()
    expected = average_precision_score(y.numpy(), logits, average="macro")
    assert report.id_metrics == {"map": pytest.approx(expected, abs=1e-9)}
    assert report.scorers == ("joint_energy", "joint_energy_top1")


def test_evaluate_tensor_batches_and_list_batches_agree() -> None:
    model = nn.Linear(3, 2)
    x = torch.randn(12, 3)
    as_tensors = evaluate(
        model, DataLoader(x, batch_size=5), {"o": [x[:4], x[4:]]}, "energy", progress=False
    )
    as_lists = evaluate(
        model, [[x[:6]], [x[6:]]], {"o": [(x,)]}, "energy", device="cpu", progress=False
    )
    assert as_tensors.id_metrics == {} == as_lists.id_metrics
    assert as_tensors["o", "energy"] == as_lists["o", "energy"]
    assert as_tensors["o", "energy"]["auroc"] == pytest.approx(0.5)  # same data both sides


def test_progress_bar_with_and_without_tqdm(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tqdm")
    model = nn.Linear(3, 2)
    x = torch.randn(8, 3)
    evaluate(model, DataLoader(x, batch_size=4), {"o": DataLoader(x)}, "msp", progress=True)
    assert "oodscore ID" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # as if tqdm were not installed
    report = evaluate(model, DataLoader(x), {"o": DataLoader(x)}, "msp", progress=True)
    assert capsys.readouterr().err == ""
    assert report["o", "msp"]["auroc"] == pytest.approx(0.5)


def test_resolve_scorers_labels() -> None:
    resolved = resolve_scorers(["msp", Energy(temperature=2.0)])
    assert list(resolved) == ["msp", "energy"]
    assert resolved["energy"].temperature == 2.0  # type: ignore[attr-defined]
    assert list(resolve_scorers("gen")) == ["gen"]


class _FeatureScorer(Scorer):
    input_kind = "features"

    def score(self, logits: Tensor) -> Tensor:
        return logits.sum(1)


class _ModelScorer(Scorer):
    input_kind = "model"

    def score(self, logits: Tensor) -> Tensor:
        return logits.sum(1)


@pytest.mark.parametrize(
    ("scorers", "error", "match"),
    [
        ([], ValueError, "at least one scorer"),
        (["msp", "msp"], ValueError, "Two scorers are labelled 'msp'"),
        (["energyy"], ValueError, "Did you mean 'energy'"),
        ([3], TypeError, "registered name or a Scorer"),
        (3, TypeError, "Expected `scorers`"),
        (
            [_FeatureScorer()],
            ValueError,
            r"`id_features` for the feature scorers \['_FeatureScorer'\]",
        ),
        ([_ModelScorer()], TypeError, "run the model themselves.*use oodscore.evaluate"),
    ],
)
def test_bad_scorers(scorers: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        evaluate_logits(np.zeros((2, 2)), {"o": np.zeros((2, 2))}, scorers)


@pytest.mark.parametrize(
    ("id_logits", "ood", "targets", "error", "match"),
    [
        (np.full((2, 3), np.nan), {"o": np.zeros((2, 3))}, None, ValueError, "`id_logits`.*NaN"),
        (np.zeros((2, 3)), {"o": np.array([[0, np.inf, 0]])}, None, ValueError, "±inf"),
        (
            np.zeros((2, 3)),
            {"o": np.zeros((2, 4))},
            None,
            ValueError,
            r"as many classes as `id_logits` \(C = 3\)",
        ),
        (np.zeros((0, 3)), {"o": np.zeros((2, 3))}, None, ValueError, "at least one row"),
        (np.zeros(3), {"o": np.zeros((2, 3))}, None, ValueError, "2-D"),
        (np.zeros((2, 3)), {}, None, ValueError, "at least one OOD set"),
        (np.zeros((2, 3)), [np.zeros((2, 3))], None, TypeError, "mapping"),
        (np.zeros((2, 3)), {"mean": np.zeros((2, 3))}, None, ValueError, "'mean' is reserved"),
        (np.zeros((2, 3)), {"o": np.zeros((2, 3))}, np.array([0, 3]), ValueError, "0..2"),
        (np.zeros((2, 3)), {"o": np.zeros((2, 3))}, np.array([0.0, 1.0]), TypeError, "integer"),
        (np.zeros((2, 3)), {"o": np.zeros((2, 3))}, np.array([0]), ValueError, "N = 2"),
        (np.zeros((2, 3)), {"o": np.zeros((2, 3))}, np.ones((2, 2)), ValueError, r"\(2, 3\)"),
        (np.zeros((2, 3)), {"o": np.zeros((2, 3))}, np.full((2, 3), 2), ValueError, "0 and 1"),
        (np.zeros((2, 3)), {"o": np.zeros((2, 3))}, [0, 1], TypeError, "targets"),
        (np.array([["a"]]), {"o": np.zeros((2, 3))}, None, TypeError, "real numbers"),
    ],
)
def test_bad_logits_and_targets(
    id_logits: Any, ood: Any, targets: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        evaluate_logits(id_logits, ood, ["msp"], id_targets=targets)


class _ScalarNet(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.sum()


class _DictNet(nn.Module):
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"scores": x, "hidden": x}


def test_bad_batches_and_models() -> None:
    x = torch.randn(4, 3)
    model = nn.Linear(3, 2)
    with pytest.raises(TypeError, match="batch 0 of 'ID'"):
        evaluate(model, [{"x": x}], {"o": [x]}, "msp", progress=False)
    with pytest.raises(TypeError, match="targets of batch 0 of 'ID'"):
        evaluate(model, [(x, "label")], {"o": [x]}, "msp", progress=False)
    with pytest.raises(ValueError, match="carry targets or none"):
        evaluate(
            model, [(x, torch.zeros(4, dtype=torch.long)), x], {"o": [x]}, "msp", progress=False
        )
    with pytest.raises(ValueError, match="'o' loader yielded no samples"):
        evaluate(model, [x], {"o": []}, "msp", progress=False)
    with pytest.raises(
        TypeError,
        match=r"returned a dict with keys \['scores', 'hidden'\]; pass forward=\.\.\. .* or "
        r"return 'logits'",
    ):
        evaluate(_DictNet(), [x], {"o": [x]}, "msp", progress=False)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        evaluate(lambda t: t, [x], {"o": [x]}, "msp", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"3 columns like the batches before, got shape \(4, 5\)"):
        evaluate(nn.Identity(), [x, torch.randn(4, 5)], {"o": [x]}, "msp", progress=False)
    with pytest.raises(
        ValueError, match=r"batch 0 of 'ID' to be 2-D \(B, C\) logits, got shape \(\)"
    ):
        evaluate(_ScalarNet(), [x], {"o": [x]}, "msp", progress=False)
    with pytest.raises(ValueError, match=r"`model output on batch 0 of 'ID'` to be finite"):
        evaluate(nn.Identity(), [x / 0], {"o": [x]}, "msp", progress=False)


def test_chunked_scoring_equals_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Linear(4, 3)
    x = torch.randn(50, 4)
    loaders = (DataLoader(x, batch_size=6), {"o": DataLoader(x[:20] * 3, batch_size=6)})
    whole = evaluate(model, *loaders, ["msp", "gen"], progress=False)
    monkeypatch.setattr("oodscore._model_pass.SCORE_CHUNK_ELEMENTS", 7)  # every batch alone
    chunked = evaluate(model, *loaders, ["msp", "gen"], progress=False)
    for scorer in ("msp", "gen"):
        np.testing.assert_allclose(whole.id_scores[scorer], chunked.id_scores[scorer], rtol=1e-6)
        assert whole["o", scorer] == pytest.approx(chunked["o", scorer], abs=1e-9)


def test_targets_must_keep_their_form() -> None:
    x = torch.randn(4, 3)
    batches = [(x, torch.zeros(4, dtype=torch.long)), (x, torch.zeros(4, 3))]
    with pytest.raises(ValueError, match=r"batch 1 has shape \(4, 3\) and the first \(4,\)"):
        evaluate(nn.Linear(3, 3), batches, {"o": [x]}, "msp", progress=False)
    with pytest.raises(TypeError, match="`ID loader targets` of shape"):
        evaluate(nn.Linear(3, 3), [(x, torch.zeros(4))], {"o": [x]}, "msp", progress=False)


def test_big_endian_numpy_targets_are_accepted() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(40, 3))
    targets = logits.argmax(1)
    ood = {"noise": rng.normal(size=(20, 3))}
    native = evaluate_logits(logits, ood, ["msp"], id_targets=targets)
    swapped = evaluate_logits(logits, ood, ["msp"], id_targets=targets.astype(">i8"))
    assert swapped.to_dict() == native.to_dict()
    assert native.to_dict()["id_metrics"]["accuracy"] == 1.0
