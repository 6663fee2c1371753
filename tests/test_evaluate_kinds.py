"""evaluate with every kind of scorer in one call: model, head and fitted logit scorers.

The scorers here are written for the test (the real methods have their own tests): what is
checked is the wiring: each kind gets the right inputs, the model's head, the fit data of
its kind, and the same numbers as calling the scorer by hand on the same data.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from oodscore import Energy, FittedScorer, ModelScorer, Scorer, evaluate, evaluate_logits
from oodscore.functional import energy_score
from oodscore.scorers.base import ArrayLike, InputKind
from oodscore.scorers.head import UsesHead
from oodscore.scorers.model_scorer import LogitsFn, input_gradient
from tests.test_evaluate_models import batches, loaders, make_data, make_net


class GradientNorm(ModelScorer):
    """Minus the norm of the input gradient of logsumexp(f(x)) (a test scorer)."""

    def score_model(self, logits_fn: LogitsFn, inputs: Tensor) -> Tensor:
        gradient = input_gradient(logits_fn, inputs, lambda z: z.logsumexp(dim=1).sum())
        return -gradient.flatten(1).norm(dim=1)


class HeadEnergy(UsesHead, Scorer):
    """Energy of the head's logits of the features (a test scorer)."""

    input_kind: ClassVar[InputKind] = "features"

    def __init__(self, *, head: nn.Linear | None = None) -> None:
        self._init_head(head, None, None)

    def score(self, x: Tensor) -> Tensor:
        return energy_score(self.head_logits(x), 1.0)


class CentredLogits(FittedScorer):
    """Minus the squared distance of the logits to their ID mean (a test scorer)."""

    input_kind: ClassVar[InputKind] = "logits"
    state_names: ClassVar[tuple[str, ...]] = ("mean",)

    def fit_state(self, x: Tensor, targets: ArrayLike | None) -> dict[str, Tensor]:
        return {"mean": x.double().mean(0, keepdim=True)}

    def score(self, x: Tensor) -> Tensor:
        mean = self.state_on(x.device)["mean"].to(x.dtype)
        return -((x - mean) ** 2).sum(1)


def close(got: Any, want: Tensor) -> None:
    """Report scores (NumPy) equal ``want`` up to float32 rounding."""
    torch.testing.assert_close(torch.as_tensor(got).double(), want.double(), rtol=1e-6, atol=1e-6)


def all_kinds() -> dict[str, Scorer]:
    return {
        "gradient": GradientNorm(),
        "head_energy": HeadEnergy(),
        "centred": CentredLogits(),
        "energy": Energy(),
    }


@pytest.mark.parametrize("form", ["tuple", "dict"])
def test_every_kind_in_one_call_equals_calling_each_by_hand(form: str) -> None:
    net = make_net()
    data = make_data()
    parts = loaders(data, form)
    scorers = all_kinds()
    report = evaluate(
        net,
        parts["id"],
        parts["ood"],
        scorers,
        fit_loader=parts["fit"],
        input_keys="x" if form == "dict" else None,
        progress=False,
    )
    net.eval()
    with torch.no_grad():
        fit_logits = net(data["x_fit"])
    centred = CentredLogits().fit(fit_logits)
    head_energy = HeadEnergy(head=net.head)
    assert scorers["head_energy"].head is None  # type: ignore[attr-defined]  # lent for the call
    for name, x in [("ID", data["x_id"]), ("near", data["near"]), ("far", data["far"])]:
        scores = report.id_scores if name == "ID" else report.ood_scores[name]
        with torch.no_grad():
            logits = net(x)
            features = net.body(x)
        close(scores["centred"], centred(logits))
        close(scores["head_energy"], head_energy(features))
        close(scores["energy"], energy_score(logits, 1.0))
        close(scores["gradient"], GradientNorm()(net, x))


def test_head_energy_equals_energy_when_features_are_the_head_input() -> None:
    net = make_net()
    parts = loaders(make_data(), "tuple")
    report = evaluate(net, parts["id"], parts["ood"], [HeadEnergy(), "energy"], progress=False)
    close(report.id_scores["HeadEnergy"], torch.as_tensor(report.id_scores["energy"]))


def test_a_head_scorer_needs_a_head_for_other_layers() -> None:
    net = make_net()
    parts = loaders(make_data(), "tuple")
    with pytest.raises(ValueError, match=r"\['HeadEnergy'\] apply the classifier head.*output"):
        evaluate(net, parts["id"], parts["ood"], [HeadEnergy()], feature_layer="body")
    # Built with its head, it runs on any layer of the head's width.
    report = evaluate(
        net, parts["id"], parts["ood"], [HeadEnergy(head=net.head)], feature_layer="body"
    )
    assert report["far", "HeadEnergy"]["auroc"] >= 0.0


def test_a_head_that_is_not_linear_is_named() -> None:
    class ConvHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(6, 6)
            self.conv = nn.Conv1d(1, 4, 6)

        def forward(self, x: Tensor) -> Tensor:
            return self.conv(self.lin(x)[:, None]).flatten(1)

    data = make_data()
    parts = loaders(data, "tuple")
    with pytest.raises(ValueError, match=r"output of 'lin', not the input of the model's head"):
        evaluate(ConvHead(), parts["id"], parts["ood"], [HeadEnergy()], feature_layer="lin")


def test_model_scorers_refuse_forward_and_keyword_inputs() -> None:
    net = make_net()
    parts = loaders(make_data(), "dict")
    with pytest.raises(TypeError, match=r"\['gradient'\] call model\(inputs\).*input_keys"):
        evaluate(
            net,
            parts["id"],
            parts["ood"],
            {"gradient": GradientNorm()},
            forward=lambda m, b: m(b["x"]),
        )
    with pytest.raises(TypeError, match=r"one tensor for the model scorers.*\['x'\]"):
        evaluate(net, parts["id"], parts["ood"], {"gradient": GradientNorm()}, progress=False)


def test_unfitted_logit_scorers_need_fit_data() -> None:
    net = make_net()
    parts = loaders(make_data(), "tuple")
    with pytest.raises(ValueError, match=r"\['CentredLogits'\] are not fitted and `fit_loader`"):
        evaluate(net, parts["id"], parts["ood"], [CentredLogits()])
    logits = torch.randn(30, 4)
    with pytest.raises(ValueError, match=r"\['CentredLogits'\] are not fitted and `fit_logits`"):
        evaluate_logits(logits, {"o": logits}, [CentredLogits()])


def test_evaluate_logits_fits_logit_scorers_on_fit_logits() -> None:
    g = torch.Generator().manual_seed(0)
    fit, test, ood = (torch.randn(n, 4, generator=g) for n in (50, 30, 20))
    scorer = CentredLogits()
    report = evaluate_logits(test, {"o": ood + 3}, [scorer, "energy"], fit_logits=fit)
    close(report.id_scores["CentredLogits"], CentredLogits().fit(fit)(test))
    assert scorer.is_fitted
    with pytest.raises(ValueError, match=r"`fit_logits` to be finite"):
        evaluate_logits(test, {"o": ood}, [CentredLogits()], fit_logits=fit * float("nan"))
    with pytest.raises(ValueError, match=r"HeadEnergy'\] apply the classifier head.*no model"):
        evaluate_logits(None, None, [HeadEnergy()], id_features=test, ood_features={"o": ood})


def test_batches_of_one_tensor_feed_model_scorers() -> None:
    net = make_net()
    data = make_data()
    report = evaluate(
        net,
        batches(data["x_id"], None, "tensor"),
        {"far": batches(data["far"], None, "tensor")},
        [GradientNorm()],
        progress=False,
    )
    close(report.ood_scores["far"]["GradientNorm"], GradientNorm()(net, data["far"]))


def test_the_models_head_is_lent_for_the_call_only() -> None:
    """A scorer reused on a second model must not keep scoring with the first model's head."""
    data = make_data()
    parts = loaders(data, "tuple")
    first, second = make_net(0), make_net(1)
    scorer = HeadEnergy()
    evaluate(first, parts["id"], parts["ood"], {"h": scorer}, progress=False)
    assert scorer.head is None
    report = evaluate(second, parts["id"], parts["ood"], {"h": scorer, "e": "energy"})
    close(report.id_scores["h"], torch.as_tensor(report.id_scores["e"]))
    with pytest.raises(ValueError, match="boom"):
        evaluate(second, parts["id"], parts["ood"], {"h": scorer, "bad": Boom()})
    assert scorer.head is None  # taken back on an error too


def test_naming_the_head_as_the_feature_layer_lends_it() -> None:
    net = make_net()
    parts = loaders(make_data(), "tuple")
    report = evaluate(
        net,
        parts["id"],
        parts["ood"],
        {"h": HeadEnergy(), "e": "energy"},
        feature_layer="head",
        feature_capture="input",
        progress=False,
    )
    close(report.id_scores["h"], torch.as_tensor(report.id_scores["e"]))


class Boom(Scorer):
    """A logit scorer that raises (a test scorer)."""

    def score(self, x: Tensor) -> Tensor:
        raise ValueError("boom")
