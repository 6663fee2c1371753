"""State and detector files of scorers that apply the classifier head (ViM, ReAct, ASH, ...).

The head cannot be JSON: it is saved as tensors beside the parameters, and a loaded scorer
applies the head the saved one applied when it was saved.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from oodscore import ASH, DICE, GEN, GradNorm, Mahalanobis, ReAct, ViM
from oodscore.detection import OODDetector, load_detector, save_detector
from oodscore.state_file import load_state, save_state

D, C = 12, 5


@pytest.fixture
def features(rng: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy(rng.normal(size=(400, D)).astype(np.float32)).abs()


@pytest.fixture
def head(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.from_numpy(rng.normal(size=(C, D)).astype(np.float32))
    return weight, torch.from_numpy(rng.normal(size=C).astype(np.float32))


FITTED = [lambda **h: ViM(dim=4, **h), lambda **h: ReAct(**h), lambda **h: DICE(**h)]


@pytest.mark.parametrize("build", FITTED, ids=["vim", "react", "dice"])
@pytest.mark.parametrize("given", ["tensors", "linear", "no bias"])
def test_state_files_keep_the_head(build, given, features, head, tmp_path: Path) -> None:
    weight, bias = head
    if given == "linear":
        linear = nn.Linear(D, C)
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        scorer = build(head=linear)
    else:
        scorer = build(weight=weight, bias=None if given == "no bias" else bias)
    scorer.fit(features)
    save_state(scorer, tmp_path / "s.pt")
    payload = torch.load(tmp_path / "s.pt", weights_only=True)
    params = json.loads(payload["params"])
    assert not {"head", "weight", "bias"} & set(params)
    assert torch.equal(payload["head"]["weight"], weight)
    if given == "no bias":
        assert "bias" not in payload["head"]
    else:
        assert torch.equal(payload["head"]["bias"], bias)
    loaded = load_state(tmp_path / "s.pt")
    assert type(loaded) is type(scorer)
    assert torch.equal(loaded(features), scorer(features))


def test_an_nn_linear_head_is_saved_as_its_weights_at_that_moment(features, head, tmp_path):
    linear = nn.Linear(D, C)
    scorer = ReAct(head=linear).fit(features)
    before = scorer(features)
    save_state(scorer, tmp_path / "s.pt")
    with torch.no_grad():
        linear.weight.mul_(3.0)  # the model trains on; the file keeps the head it was fitted with
    assert not torch.equal(scorer(features), before)
    assert torch.equal(load_state(tmp_path / "s.pt")(features), before)


@pytest.mark.parametrize(
    "build",
    [lambda **h: ASH(**h), lambda **h: GradNorm(**h), lambda **h: ViM(dim=4, **h)],
    ids=["ash", "gradnorm", "vim"],
)
def test_detector_files_keep_the_head(build, features, head, tmp_path: Path) -> None:
    weight, bias = head
    scorer = build(weight=weight, bias=bias)
    if scorer.requires_fit:
        scorer.fit(features)
    detector = OODDetector(scorer).calibrate(features=features, alpha=0.1)
    save_detector(detector, tmp_path / "d.pt")
    loaded = load_detector(tmp_path / "d.pt")
    test = features.flip(1)
    assert torch.equal(loaded.scorer(test), scorer(test))
    assert torch.equal(loaded(test).reject, detector(test).reject)


def test_a_damaged_head_entry_is_refused(features, head, tmp_path: Path) -> None:
    weight, bias = head
    save_state(ViM(dim=4, weight=weight, bias=bias).fit(features), tmp_path / "s.pt")
    payload = torch.load(tmp_path / "s.pt", weights_only=True)
    for damaged, match in [
        ({"weight": weight, "extra": bias}, r"'weight' and optionally 'bias', got \['extra'"),
        ({"bias": bias}, "a bias and no weight"),
        ({"weight": weight[:, :3], "bias": bias}, "D = 3 columns|shape"),
        ({"weight": weight, "bias": bias[:2]}, r"`bias` of shape \(C,\)"),
    ]:
        torch.save({**payload, "head": damaged}, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match=match):
            load_state(tmp_path / "bad.pt")(features)


def test_files_without_a_head_entry_still_load(features, rng, tmp_path: Path) -> None:
    """Files written before the entry existed: read as no head."""
    scorer = Mahalanobis().fit(features)
    save_state(scorer, tmp_path / "s.pt")
    payload = torch.load(tmp_path / "s.pt", weights_only=True)
    del payload["head"]
    torch.save(payload, tmp_path / "old.pt")
    assert torch.equal(load_state(tmp_path / "old.pt")(features), scorer(features))
    detector = OODDetector(GEN()).calibrate(logits=features, alpha=0.1)
    save_detector(detector, tmp_path / "d.pt")
    payload = torch.load(tmp_path / "d.pt", weights_only=True)
    del payload["head"]
    torch.save(payload, tmp_path / "old_d.pt")
    assert torch.equal(
        load_detector(tmp_path / "old_d.pt")(features).reject, detector(features).reject
    )


def test_a_head_given_to_a_scorer_without_one_is_refused(features, head, tmp_path):
    save_state(Mahalanobis().fit(features), tmp_path / "s.pt")
    payload = torch.load(tmp_path / "s.pt", weights_only=True)
    torch.save({**payload, "head": {"weight": head[0]}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not rebuild 'mahalanobis'"):
        load_state(tmp_path / "bad.pt")


def test_head_arguments_cannot_be_asked_of_a_state_file(features, head, tmp_path):
    weight, bias = head
    save_state(ViM(dim=4, weight=weight, bias=bias).fit(features), tmp_path / "s.pt")
    for key in ("head", "weight", "bias"):
        with pytest.raises(ValueError, match=f"classifier head; '{key}' cannot be given"):
            load_state(tmp_path / "s.pt", params={key: None})
    assert load_state(tmp_path / "s.pt", params={"dim": 4}).has_head
