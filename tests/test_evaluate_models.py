"""evaluate on models of any output form and batches of any form, logits and features together.

Reference values are computed by hand: logits from calling the model, features from a
forward hook written here (not FeatureCapture), Mahalanobis fitted directly, metrics from
`ood_metrics`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from oodscore import Energy, Mahalanobis, Report, Scorer, evaluate, evaluate_logits
from oodscore.metrics import ood_metrics
from tests.distributed import spawn_gloo

NUM_CLASSES = 4


class Net(nn.Module):
    """A small MLP whose head is ``head``; ``body`` gives the penultimate features."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(12, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.dropout(self.body(x)))
        return out


@dataclass
class FakeModelOutput:
    """What a Hugging Face model returns: an object with ``.logits``."""

    logits: Tensor
    hidden_states: Tensor | None = None


class Wrapped(nn.Module):
    """``Net`` returning its logits in one of the usual forms; counts its forward calls."""

    def __init__(self, net: Net, form: str) -> None:
        super().__init__()
        self.net = net
        self.form = form
        self.calls = 0

    def forward(self, x: Tensor) -> Any:
        self.calls += 1
        logits = self.net(x)
        if self.form == "tensor":
            return logits
        if self.form == "model_output":
            return FakeModelOutput(logits=logits, hidden_states=x)
        if self.form == "dict":
            return {"hidden": x, "logits": logits}
        if self.form == "tuple":
            return logits, x
        return {"scores": logits, "hidden": x}  # "unknown": no logits anywhere


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def make_data(seed: int = 1) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(NUM_CLASSES, 6, generator=g)
    y_fit = torch.arange(120) % NUM_CLASSES
    y_id = torch.arange(50) % NUM_CLASSES
    return {
        "x_fit": centres[y_fit] + torch.randn(120, 6, generator=g),
        "y_fit": y_fit,
        "x_id": centres[y_id] + torch.randn(50, 6, generator=g),
        "y_id": y_id,
        "near": torch.randn(30, 6, generator=g) * 2,
        "far": torch.randn(20, 6, generator=g) * 8 + 5,
    }


BATCH = 16


def batches(x: Tensor, y: Tensor | None, form: str) -> list[Any]:
    """The rows of ``x`` (and ``y``) as batches of ``BATCH`` in one of the batch forms."""
    out: list[Any] = []
    for start in range(0, len(x), BATCH):
        xb = x[start : start + BATCH]
        yb = None if y is None else y[start : start + BATCH]
        if form == "tensor" or (yb is None and form == "tuple"):
            out.append(xb if form == "tensor" else (xb,))
        elif form == "tuple":
            out.append((xb, yb))
        else:  # "dict", Hugging Face style: keyword inputs and "labels"
            out.append({"x": xb} if yb is None else {"x": xb, "labels": yb})
    return out


def loaders(data: dict[str, Tensor], form: str) -> dict[str, Any]:
    """ID (with targets unless tensor batches), OOD and fit loaders in one batch form."""
    id_targets = None if form == "tensor" else data["y_id"]
    fit_form = "tuple" if form == "tensor" else form  # the fit needs targets
    return {
        "id": batches(data["x_id"], id_targets, form),
        "ood": {name: batches(data[name], None, form) for name in ("near", "far")},
        "fit": batches(data["x_fit"], data["y_fit"], fit_form),
    }


class HeadInput:
    """A forward hook written by hand: records the input of ``module`` on each call."""

    def __init__(self, module: nn.Module, *, output: bool = False) -> None:
        self.rows: list[Tensor] = []
        self.output = output
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        value = out if self.output else args[0]
        self.rows.append(value.detach().flatten(1))

    def run(self, model: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and features of ``x`` through ``model``, batch by batch as evaluate does."""
        self.rows = []
        with torch.no_grad():
            logits = torch.cat([model(x[s : s + BATCH]) for s in range(0, len(x), BATCH)])
        return logits, torch.cat(self.rows)


def by_hand(net: Net, data: dict[str, Tensor], fit_targets: Tensor | None) -> dict[str, Any]:
    """Energy and Mahalanobis metrics computed without evaluate or FeatureCapture."""
    net.eval()
    hook = HeadInput(net.head)
    _, fit_features = hook.run(net, data["x_fit"])
    scorer = Mahalanobis().fit(fit_features, fit_targets)
    id_logits, id_features = hook.run(net, data["x_id"])
    scores = {"energy": Energy()(id_logits), "mahalanobis": scorer(id_features)}
    out: dict[str, Any] = {}
    for name in ("near", "far"):
        logits, features = hook.run(net, data[name])
        ood = {"energy": Energy()(logits), "mahalanobis": scorer(features)}
        for label in scores:
            out[name, label] = ood_metrics(scores[label], ood[label])
    hook.handle.remove()
    net.train()
    return out


def assert_same_reports(first: Report, second: Report) -> None:
    """Every metric, ID metric, size, score and the feature layer identical."""
    assert first.rows() == second.rows()
    assert first.num_samples == second.num_samples
    assert first.feature_layer == second.feature_layer
    for label in first.scorers:
        np.testing.assert_array_equal(first.id_scores[label], second.id_scores[label])
        for name in first.ood_sets:
            np.testing.assert_array_equal(
                first.ood_scores[name][label], second.ood_scores[name][label]
            )


SCORERS = ["msp", "energy", "mahalanobis"]


@pytest.fixture(scope="module")
def reference() -> Report:
    """The report of the plain tensor-returning model on (inputs, targets) batches."""
    parts = loaders(make_data(), "tuple")
    model = Wrapped(make_net(), "tensor")
    return evaluate(
        model, parts["id"], parts["ood"], SCORERS, fit_loader=parts["fit"], progress=False
    )


@pytest.mark.parametrize("output", ["tensor", "model_output", "dict", "tuple"])
@pytest.mark.parametrize("form", ["tensor", "tuple", "dict"])
def test_every_output_and_batch_form_gives_the_same_report(
    reference: Report, output: str, form: str
) -> None:
    data = make_data()
    parts = loaders(data, form)
    model = Wrapped(make_net(), output)
    report = evaluate(
        model, parts["id"], parts["ood"], SCORERS, fit_loader=parts["fit"], progress=False
    )
    assert_same_reports(report, reference)
    assert report.feature_layer == "net.head (input)"
    if form == "tensor":
        assert report.id_metrics == {}
    else:
        assert report.id_metrics == reference.id_metrics
        assert set(report.id_metrics) == {"accuracy"}
    # One forward pass per batch over each set, K scorers of both kinds notwithstanding.
    assert model.calls == len(parts["fit"]) + len(parts["id"]) + 2 + 2


@pytest.mark.parametrize("targets", ["classes", "multi_hot", "none"])
def test_mahalanobis_row_equals_fitting_by_hand(targets: str) -> None:
    data = make_data()
    net = make_net()
    fit_targets = {
        "classes": data["y_fit"],
        "multi_hot": nn.functional.one_hot(data["y_fit"], NUM_CLASSES)
        | nn.functional.one_hot((data["y_fit"] + 1) % NUM_CLASSES, NUM_CLASSES),
        "none": None,
    }[targets]
    fit = DataLoader(
        TensorDataset(data["x_fit"])
        if fit_targets is None
        else TensorDataset(data["x_fit"], fit_targets),
        batch_size=BATCH,
    )
    parts = loaders(data, "tuple")
    report = evaluate(
        net, parts["id"], parts["ood"], ["energy", "mahalanobis"], fit_loader=fit, progress=False
    )
    expected = by_hand(make_net(), data, fit_targets)
    for (name, label), metrics in expected.items():
        assert report[name, label] == metrics, (name, label)
    assert report.id_metrics["accuracy"] == pytest.approx(
        float((net(data["x_id"]).argmax(1) == data["y_id"]).double().mean())
    )


def test_modes_grad_flags_and_hooks_are_restored() -> None:
    net = make_net()
    net.train()
    net.body.eval()  # a frozen block in eval mode inside a model in training mode
    for parameter in net.body.parameters():
        parameter.requires_grad_(False)
    modes = {name: m.training for name, m in net.named_modules()}
    flags = {name: p.requires_grad for name, p in net.named_parameters()}
    parts = loaders(make_data(), "dict")
    evaluate(net, parts["id"], parts["ood"], SCORERS, fit_loader=parts["fit"], progress=False)
    assert {name: m.training for name, m in net.named_modules()} == modes
    assert {name: p.requires_grad for name, p in net.named_parameters()} == flags
    assert all(p.grad is None for p in net.parameters())
    assert not net.head._forward_hooks
    # Also when the run stops with an error half-way.
    bad = {"o": [torch.full((3, 6), float("nan"))]}
    with pytest.raises(ValueError, match="finite"):
        evaluate(net, parts["id"], bad, SCORERS, fit_loader=parts["fit"], progress=False)
    assert {name: m.training for name, m in net.named_modules()} == modes
    assert not net.head._forward_hooks


def test_named_feature_layer_is_used_and_recorded() -> None:
    data = make_data()
    parts = loaders(data, "tuple")
    net = make_net()
    report = evaluate(
        net,
        parts["id"],
        parts["ood"],
        {"maha": Mahalanobis()},
        fit_loader=parts["fit"],
        feature_layer="body.2",  # the second Linear's output, before its ReLU
        progress=False,
    )
    assert report.feature_layer == "body.2 (output)"
    hook = HeadInput(net.body[2], output=True)
    net.eval()
    _, fit_features = hook.run(net, data["x_fit"])
    scorer = Mahalanobis().fit(fit_features, data["y_fit"])
    id_scores = scorer(hook.run(net, data["x_id"])[1])
    for name in ("near", "far"):
        expected = ood_metrics(id_scores, scorer(hook.run(net, data[name])[1]))
        assert report[name, "maha"] == expected
    assert "Features: body.2 (output)." in report.to_markdown().splitlines()[0]
    assert report.to_dict()["feature_layer"] == "body.2 (output)"
    assert json.loads(report.to_json())["feature_layer"] == "body.2 (output)"
    # Naming the head and its input is the default.
    default = evaluate(
        make_net(), parts["id"], parts["ood"], SCORERS, fit_loader=parts["fit"], progress=False
    )
    named = evaluate(
        make_net(),
        parts["id"],
        parts["ood"],
        SCORERS,
        fit_loader=parts["fit"],
        feature_layer="head",
        feature_capture="input",
        progress=False,
    )
    assert named.feature_layer == default.feature_layer == "head (input)"
    assert named.rows() == default.rows()


def test_logit_scorers_only_record_no_layer_and_need_no_fit_data() -> None:
    parts = loaders(make_data(), "tuple")
    report = evaluate(make_net(), parts["id"], parts["ood"], ["msp", "energy"], progress=False)
    assert report.feature_layer is None
    assert "Features" not in report.to_markdown()
    assert report.to_dict()["feature_layer"] is None


def test_fitted_scorers_are_used_as_they_are_and_unfitted_ones_fitted_in_place() -> None:
    data = make_data()
    parts = loaders(data, "tuple")
    net = make_net()
    fitted = Mahalanobis().fit(torch.randn(40, 12), torch.arange(40) % 2)
    state = fitted.state_dict()
    fresh = Mahalanobis()
    model = Wrapped(net, "tensor")
    evaluate(
        model,
        parts["id"],
        parts["ood"],
        {"fitted": fitted, "fresh": fresh},
        fit_loader=parts["fit"],
        progress=False,
    )
    assert all(fitted.state_dict()[k] is v for k, v in state.items())  # not refitted
    assert fresh.is_fitted
    # Without a scorer to fit, the fit loader is not run, and no fit loader is needed.
    model.calls = 0
    report = evaluate(model, parts["id"], parts["ood"], {"maha": fresh}, progress=False)
    assert model.calls == len(parts["id"]) + 4
    assert report.feature_layer == "net.head (input)"


def test_forward_hook_and_input_keys_cover_other_batches(reference: Report) -> None:
    data = make_data()
    parts = loaders(data, "tuple")

    def rename(batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        return {"image": batch[0]} if len(batch) == 1 else {"image": batch[0], "label": batch[1]}

    image_batches = {
        "id": [rename(b) for b in parts["id"]],
        "ood": {k: [rename(b) for b in v] for k, v in parts["ood"].items()},
        "fit": [rename(b) for b in parts["fit"]],
    }
    seen: list[str] = []

    def forward(model: nn.Module, batch: dict[str, Tensor]) -> Any:
        seen.append(str(batch["image"].device))
        return {"logits": model(batch["image"])}

    common: dict[str, Any] = {"target_key": "label", "progress": False}
    for extra in ({"forward": forward}, {"input_keys": "image"}):
        report = evaluate(
            Wrapped(make_net(), "tensor"),
            image_batches["id"],
            image_batches["ood"],
            SCORERS,
            fit_loader=image_batches["fit"],
            **common,
            **extra,
        )
        assert_same_reports(report, reference)
        assert report.id_metrics == reference.id_metrics
    assert set(seen) == {"cpu"}  # the forward function ran, on moved batches


def test_errors_name_what_was_found_and_the_fix() -> None:
    data = make_data()
    parts = loaders(data, "dict")
    net = make_net()
    with pytest.raises(
        TypeError,
        match=r"model returned a dict with keys \['scores', 'hidden'\]; pass forward=\.\.\. "
        r"\(a function \(model, batch\) -> logits\) or return 'logits'",
    ):
        evaluate(Wrapped(net, "unknown"), parts["id"], parts["ood"], "msp", progress=False)
    with pytest.raises(
        TypeError,
        match=r"batch 0 of 'ID' to hold the input keys \['pixel_values'\], but it has the keys "
        r"\['x', 'labels'\] \(missing \['pixel_values'\]\); pass input_keys",
    ):
        evaluate(net, parts["id"], parts["ood"], "msp", input_keys=["pixel_values"], progress=False)
    with pytest.raises(TypeError, match=r"batch 0 of 'ID' to hold inputs besides its targets"):
        evaluate(net, [{"labels": data["y_id"]}], parts["ood"], "msp", progress=False)
    with pytest.raises(TypeError, match=r"batch 0 of 'ID' to be a tensor, .* it is an object"):
        evaluate(net, [object()], parts["ood"], "msp", progress=False)
    model = Wrapped(net, "tensor")
    with pytest.raises(
        ValueError, match=r"\['mahalanobis'\] are not fitted and `fit_loader` was not given"
    ):
        evaluate(model, parts["id"], parts["ood"], SCORERS, progress=False)
    assert model.calls == 0  # refused before any forward pass
    with pytest.raises(ValueError, match=r"`feature_layer` to name a submodule of Net, got 'hed'"):
        evaluate(net, parts["id"], parts["ood"], SCORERS, fit_loader=[], feature_layer="hed")
    with pytest.raises(ValueError, match=r"`feature_capture` to be None, 'input' or 'output'"):
        evaluate(net, parts["id"], parts["ood"], SCORERS, fit_loader=[], feature_capture="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`model` \(Sequential\) to contain an nn.Linear"):
        evaluate(nn.Sequential(nn.Identity()), [], {"o": []}, SCORERS, fit_loader=[])
    # The last Linear of _Unused is a layer its forward never calls.
    with pytest.raises(ValueError, match=r"layer 'spare' did not run in the forward pass of batch"):
        evaluate(_Unused(), parts["id"], parts["ood"], SCORERS, fit_loader=parts["fit"])
    with pytest.raises(TypeError, match=r"one tensor for the model scorers.*keyword inputs"):
        evaluate(net, parts["id"], parts["ood"], [_ModelScorer()], progress=False)


class _Unused(nn.Module):
    """A model with a layer its forward pass never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 3)
        self.spare = nn.Linear(3, 3)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(x)
        return out


class _ModelScorer(Scorer):
    input_kind = "model"

    def score(self, x: Tensor) -> Tensor:
        return x.sum(1)


def test_scores_keep_the_scorers_dtype() -> None:
    # ID and OOD max logits differ by 1e-9: float64 scores separate them, float32 would tie
    # them all at 1.0 (AUROC 0.5).
    steps = torch.arange(100, dtype=torch.float64) * 1e-12
    id_logits = torch.stack([1.0 + 1e-9 + steps, torch.zeros(100, dtype=torch.float64)], 1)
    ood_logits = torch.stack([1.0 + steps, torch.zeros(100, dtype=torch.float64)], 1)
    report = evaluate(
        nn.Identity(), [id_logits], {"o": [ood_logits]}, ["max_logit", "energy"], progress=False
    )
    assert report["o", "max_logit"]["auroc"] == 1.0
    assert report["o", "energy"]["auroc"] == 1.0
    np.testing.assert_array_equal(report.id_scores["max_logit"], id_logits[:, 0].numpy())


# --------------------------------------------------------------------------- Hugging Face


def test_hugging_face_sequence_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    model = transformers.BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(2)

    def sentences(n: int, low: int, high: int, labelled: bool) -> list[dict[str, Tensor]]:
        out = []
        for start in range(0, n, 8):
            size = min(8, n - start)
            ids = torch.randint(low, high, (size, 7), generator=g)
            mask = torch.ones(size, 7, dtype=torch.long)
            mask[:, 5:] = torch.randint(0, 2, (size, 2), generator=g)
            batch = {"input_ids": ids, "attention_mask": mask}
            if labelled:
                batch["labels"] = ids[:, 0] % 3
            out.append(batch)
        return out

    fit = sentences(60, 1, 25, labelled=True)
    id_set = sentences(30, 1, 25, labelled=True)
    ood = {"other_tokens": sentences(20, 25, 50, labelled=False)}
    report = evaluate(model, id_set, ood, ["energy", "mahalanobis"], fit_loader=fit, progress=False)
    assert report.feature_layer == "classifier (input)"
    assert model.training  # transformers builds models in training mode; it is kept

    # By hand: the classifier's input through a hook, logits from the ModelOutput.
    features: list[Tensor] = []
    handle = model.classifier.register_forward_hook(lambda m, a, o: features.append(a[0]))
    model.eval()

    def run(batches: list[dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
        features.clear()
        with torch.no_grad():
            logits = [
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                for b in batches
            ]
        return torch.cat(logits), torch.cat(features)

    _, fit_features = run(fit)
    scorer = Mahalanobis().fit(fit_features, torch.cat([b["labels"] for b in fit]))
    id_logits, id_features = run(id_set)
    ood_logits, ood_features = run(ood["other_tokens"])
    handle.remove()
    assert report["other_tokens", "energy"] == ood_metrics(
        Energy()(id_logits), Energy()(ood_logits)
    )
    assert report["other_tokens", "mahalanobis"] == ood_metrics(
        scorer(id_features), scorer(ood_features)
    )
    labels = torch.cat([b["labels"] for b in id_set])
    assert report.id_metrics["accuracy"] == pytest.approx(
        float((id_logits.argmax(1) == labels).double().mean())
    )


# --------------------------------------------------------------------------- evaluate_logits


def saved(seed: int = 3) -> dict[str, Any]:
    """Logits and features of an ID set, two OOD sets and a fit set, as NumPy arrays."""
    rng = np.random.default_rng(seed)
    y_fit = np.arange(90) % 3
    means = rng.normal(size=(3, 5)) * 3
    return {
        "id_logits": rng.normal(size=(40, 3)),
        "ood_logits": {"a": rng.normal(size=(25, 3)), "b": rng.normal(size=(15, 3))},
        "id_features": means[np.arange(40) % 3] + rng.normal(size=(40, 5)),
        "ood_features": {"a": rng.normal(size=(25, 5)), "b": rng.normal(size=(15, 5)) * 4},
        "fit_features": means[y_fit] + rng.normal(size=(90, 5)),
        "fit_targets": y_fit,
    }


def test_evaluate_logits_with_features_equals_fitting_by_hand() -> None:
    arrays = saved()
    report = evaluate_logits(
        arrays.pop("id_logits"), arrays.pop("ood_logits"), ["energy", "mahalanobis"], **arrays
    )
    arrays = saved()
    scorer = Mahalanobis().fit(arrays["fit_features"], arrays["fit_targets"])
    id_scores = scorer(arrays["id_features"])
    for name in ("a", "b"):
        maha = ood_metrics(id_scores, scorer(arrays["ood_features"][name]))
        energy = ood_metrics(Energy()(arrays["id_logits"]), Energy()(arrays["ood_logits"][name]))
        assert report[name, "mahalanobis"] == maha
        assert report[name, "energy"] == energy
    assert report.feature_layer is None
    # Feature scorers only: no logits needed, the OOD sets come from ood_features.
    arrays = saved()
    only = evaluate_logits(
        None,
        None,
        "mahalanobis",
        id_features=arrays["id_features"],
        ood_features=arrays["ood_features"],
        fit_features=arrays["fit_features"],
        fit_targets=arrays["fit_targets"],
    )
    assert only.ood_sets == ("a", "b")
    assert only.rows() == [r for r in report.rows() if r[1] == "mahalanobis"]
    # A fitted scorer needs no fit data.
    fitted = evaluate_logits(
        None,
        None,
        {"mahalanobis": scorer},
        id_features=arrays["id_features"],
        ood_features=arrays["ood_features"],
    )
    assert fitted.rows() == only.rows()


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"id_features": None}, ValueError, r"`id_features` for the feature scorers \['mahal"),
        ({"ood_features": None}, ValueError, r"`ood_features` for the feature scorers"),
        ({"fit_features": None}, ValueError, r"not fitted and `fit_features` was not given"),
        (
            {"id_features": np.zeros((39, 5))},
            ValueError,
            r"`id_features` to have one row per row of `id_logits` \(N = 40\), got shape "
            r"\(39, 5\)",
        ),
        (
            {"ood_features": {"a": np.zeros((24, 5)), "b": np.zeros((15, 5))}},
            ValueError,
            r"`ood_features\['a'\]` to have one row per row of `ood_logits\['a'\]` \(N = 25\)",
        ),
        (
            {"ood_features": {"a": np.zeros((25, 5))}},
            ValueError,
            r"`ood_features` to hold the OOD sets of `ood_logits`, \['a', 'b'\], got \['a'\]",
        ),
        (
            {"ood_features": {"a": np.zeros((25, 4)), "b": np.zeros((15, 5))}},
            ValueError,
            r"`ood_features\['a'\]` to have as many features as `id_features` \(D = 5\)",
        ),
        ({"id_features": np.full((40, 5), np.nan)}, ValueError, "`id_features`.*NaN"),
        ({"ood_logits": None}, ValueError, r"`ood_logits` with `id_logits`: pass both"),
        ({"id_logits": None}, ValueError, r"`id_logits` with `ood_logits`: pass both"),
    ],
)
def test_evaluate_logits_feature_errors(
    change: dict[str, Any], error: type[Exception], match: str
) -> None:
    arrays = {**saved(), **change}
    with pytest.raises(error, match=match):
        evaluate_logits(
            arrays.pop("id_logits"), arrays.pop("ood_logits"), ["mahalanobis"], **arrays
        )


def test_evaluate_logits_without_logits_refuses_logit_scorers_and_targets() -> None:
    arrays = saved()
    features = {k: arrays[k] for k in ("id_features", "ood_features", "fit_features")}
    with pytest.raises(ValueError, match=r"`id_logits` and `ood_logits` for the logit scorers"):
        evaluate_logits(None, None, ["energy", "mahalanobis"], **features)
    with pytest.raises(ValueError, match=r"`id_logits` with `id_targets`"):
        evaluate_logits(None, None, "mahalanobis", id_targets=np.zeros(40, int), **features)


# --------------------------------------------------------------------------- distributed


def _distributed_report(distributed: bool) -> dict[str, Any]:
    from torch.utils.data import DistributedSampler

    data = make_data()

    def loader(dataset: Any, shuffle: bool) -> DataLoader[Any]:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=1) if distributed else None
        return DataLoader(dataset, batch_size=8, sampler=sampler)

    report = evaluate(
        make_net(),
        loader(TensorDataset(data["x_id"], data["y_id"]), shuffle=False),
        {name: loader(TensorDataset(data[name]), shuffle=False) for name in ("near", "far")},
        ["energy", "mahalanobis"],
        fit_loader=loader(TensorDataset(data["x_fit"], data["y_fit"]), shuffle=True),
        progress=False,
    )
    return report.to_dict()


def _worker(rank: int, out_dir: str) -> None:
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(_distributed_report(True)))


def test_distributed_fit_uses_every_rank(tmp_path: Path) -> None:
    spawn_gloo(_worker, str(tmp_path), world_size=2)
    single = _distributed_report(False)
    for rank in range(2):
        got = json.loads(Path(tmp_path, f"rank{rank}.json").read_text())
        assert got["num_samples"] == single["num_samples"]
        assert got["feature_layer"] == "head (input)"
        for got_row, row in zip(got["rows"], single["rows"], strict=True):
            assert got_row == pytest.approx(row, abs=1e-9)


def test_every_loader_must_give_the_classes_of_the_first() -> None:
    """ID logits of 5 classes and OOD logits of 3 once gave a report (AUROC 0.0375)."""
    g = torch.Generator().manual_seed(0)
    five, three = torch.randn(10, 5, generator=g), torch.randn(10, 3, generator=g)
    with pytest.raises(ValueError, match=r"batch 0 of 'o' to have C = 5 columns like the 'ID'"):
        evaluate(nn.Identity(), [five], {"o": [three]}, ["msp"], progress=False)
    with pytest.raises(ValueError, match=r"ood_logits\['o'\]"):
        evaluate_logits(five, {"o": three}, ["msp"])
    # The fit loader comes first when a scorer is fitted: its width is the one to match.
    with pytest.raises(ValueError, match=r"batch 0 of 'ID' to have C = 3 columns like the 'fit'"):
        evaluate(nn.Identity(), [five], {"o": [five]}, ["kl_matching"], fit_loader=[three])
