"""``--head``: the classifier head of ViM, ReAct, ASH, DICE, SCALE and GradNorm, on the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from oodscore import ASH, DICE, OODDetector, ReAct, ViM, evaluate_logits
from tests.cli_runner import error_of, run

D, C = 8, 4


@pytest.fixture
def d(tmp_path: Path, rng: np.random.Generator) -> Path:
    """Features (fit, test, OOD), their logits under one head, and the head in four files."""
    weight = rng.normal(size=(C, D)).astype(np.float32)
    bias = rng.normal(size=C).astype(np.float32)
    for name, n, shift in (("fit", 200, 0.0), ("test", 60, 0.0), ("ood", 50, 1.5)):
        features = np.abs(rng.normal(loc=shift, size=(n, D))).astype(np.float32)
        np.save(tmp_path / f"{name}.npy", features)
        np.save(tmp_path / f"{name}_logits.npy", features @ weight.T + bias)
    linear = nn.Linear(D, C)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight))
        linear.bias.copy_(torch.from_numpy(bias))
    torch.save(linear.state_dict(), tmp_path / "head.pt")
    model = nn.Sequential(nn.Linear(3, D), nn.ReLU())
    model.add_module("fc", linear)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    np.savez(tmp_path / "head.npz", weight=weight, bias=bias)
    np.save(tmp_path / "weight.npy", weight)
    return tmp_path


def head_of(d: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(d / "head.npz")
    return data["weight"], data["bias"]


@pytest.mark.parametrize("head", ["head.pt", "head.npz", "model.pt::fc"])
def test_score_vim_with_a_head_equals_the_python_api(d: Path, head: str, capsys) -> None:
    head_arg = str(d / head.split("::")[0]) + ("::fc" if "::" in head else "")
    argv = ["score", "vim:dim=3", d / "test.npy", "-o", d / "s.npy", "--fit", d / "fit.npy"]
    assert run([*argv, "--head", head_arg], capsys) == (0, "", "")
    weight, bias = head_of(d)
    expected = ViM(dim=3, weight=weight, bias=bias).fit(np.load(d / "fit.npy"))
    np.testing.assert_array_equal(np.load(d / "s.npy"), expected(np.load(d / "test.npy")))


def test_a_weight_alone_is_a_head_without_bias(d: Path, capsys) -> None:
    argv = ["score", "ash", d / "test.npy", "-o", d / "s.npy", "--head", d / "weight.npy"]
    assert run(argv, capsys) == (0, "", "")
    weight, _ = head_of(d)
    np.testing.assert_array_equal(np.load(d / "s.npy"), ASH(weight=weight)(np.load(d / "test.npy")))


def test_the_state_file_carries_the_head(d: Path, capsys) -> None:
    fit = ["--fit", d / "fit.npy", "--head", d / "head.pt", "--save-state", d / "react.pt"]
    assert run(["score", "react", d / "test.npy", "-o", d / "a.npy", *fit], capsys)[0] == 0
    argv = ["score", "react", d / "test.npy", "-o", d / "b.npy", "--state", d / "react.pt"]
    assert run(argv, capsys) == (0, "", "")
    np.testing.assert_array_equal(np.load(d / "a.npy"), np.load(d / "b.npy"))
    weight, bias = head_of(d)
    expected = ReAct(weight=weight, bias=bias).fit(np.load(d / "fit.npy"))
    np.testing.assert_array_equal(np.load(d / "b.npy"), expected(np.load(d / "test.npy")))
    again = ["score", "react", d / "test.npy", "-o", d / "c.npy", "--state", d / "react.pt"]
    err = error_of([*again, "--head", d / "head.pt"], capsys)
    assert "--head would not be used: each scorer that applies a head has its own" in err


def test_eval_gives_the_head_to_every_scorer_that_applies_one(d: Path, capsys) -> None:
    argv = [
        "eval", "--id", d / "test_logits.npy", "--ood", f"far={d / 'ood_logits.npy'}",
        "--id-features", d / "test.npy", "--ood-features", f"far={d / 'ood.npy'}",
        "--fit-features", d / "fit.npy", "--head", d / "head.npz", "--format", "json",
        "--scorer", "energy", "--scorer", "vim:dim=3", "--scorer", "dice",
    ]  # fmt: skip
    code, out, err = run(argv, capsys)
    assert (code, err) == (0, "")
    weight, bias = head_of(d)
    features = {k: np.load(d / f"{k}.npy") for k in ("fit", "test", "ood")}
    expected = evaluate_logits(
        np.load(d / "test_logits.npy"),
        {"far": np.load(d / "ood_logits.npy")},
        {
            "energy": "energy",
            "vim:dim=3": ViM(dim=3, weight=weight, bias=bias),
            "dice": DICE(weight=weight, bias=bias),
        },
        id_features=features["test"],
        ood_features={"far": features["ood"]},
        fit_features=features["fit"],
    )
    assert json.loads(out) == json.loads(expected.to_json())


def test_calibrate_keeps_the_head_in_the_detector_file(d: Path, capsys) -> None:
    out = d / "gate.pt"
    argv = ["calibrate", "ash", d / "fit.npy", "-o", out, "--alpha", "0.1", "--head", d / "head.pt"]
    code, _, err = run(argv, capsys)
    assert (code, err) == (0, "")
    code, _, err = run(["detect", out, d / "ood.npy", "-o", d / "decisions.csv"], capsys)
    assert (code, err) == (0, "")
    weight, bias = head_of(d)
    api = OODDetector(ASH(weight=weight, bias=bias)).calibrate(
        features=np.load(d / "fit.npy"), alpha=0.1
    )
    rows = np.loadtxt(d / "decisions.csv", delimiter=",", skiprows=1)
    np.testing.assert_array_equal(rows[:, 2].astype(bool), api(np.load(d / "ood.npy")).reject)


def test_bad_heads_give_one_line(d: Path, tmp_path: Path, capsys) -> None:
    score = ["score", "vim:dim=3", d / "test.npy", "-o", d / "s.npy", "--fit", d / "fit.npy"]
    np.savez(tmp_path / "nameless.npz", bias=np.ones(C))
    np.savez(tmp_path / "nan.npz", weight=np.full((C, D), np.nan))
    np.savez(tmp_path / "narrow.npz", weight=np.ones((C, D - 2)), bias=np.zeros(C))
    np.savez(tmp_path / "bias.npz", weight=np.ones((C, D)), bias=np.zeros(C + 1))
    torch.save(torch.ones(C, D), tmp_path / "tensor.pt")
    (tmp_path / "head.csv").write_text("1,2\n3,4\n")
    for head, match in [
        (tmp_path / "nameless.npz", "has no array 'weight'"),
        (tmp_path / "nan.npz", r"does not fit 'vim': Expected `weight` to be finite"),
        (tmp_path / "narrow.npz", "D = 6 columns"),
        (tmp_path / "bias.npz", r"`bias` of shape \(C,\)"),
        (tmp_path / "tensor.pt", "holds a Tensor, expected a dict"),
        (tmp_path / "head.csv", "Expected a head in a .pt, .pth, .npz or .npy file"),
        (f"{d / 'model.pt'}::classifier", "has no array 'classifier.weight'"),
        (tmp_path / "missing.pt", "missing.pt"),
    ]:
        assert re.search(match, error_of([*score, "--head", head], capsys)), match
    err = error_of(
        ["score", "energy", d / "test_logits.npy", "-o", d / "e.npy", "--head", d / "head.pt"],
        capsys,
    )
    assert "--head would not be used: none of the scorers applies the classifier head" in err
    err = error_of(
        ["score", "vim", d / "test.npy", "-o", d / "v.npy", "--fit", d / "fit.npy"], capsys
    )
    assert "give it with --head HEAD" in err


def test_eval_labels_leave_the_head_out(d: Path, capsys) -> None:
    fit = ["--fit", d / "fit.npy", "--head", d / "head.pt", "--save-state", d / "vim.pt"]
    assert run(["score", "vim:dim=3", d / "test.npy", "-o", d / "a.npy", *fit], capsys)[0] == 0
    argv = [
        "eval", "--id", d / "test_logits.npy", "--ood", f"far={d / 'ood_logits.npy'}",
        "--id-features", d / "test.npy", "--ood-features", f"far={d / 'ood.npy'}",
        "--state", d / "vim.pt", "--format", "csv",
    ]  # fmt: skip
    code, out, err = run(argv, capsys)
    assert (code, err) == (0, "")
    assert "vim:dim=3," in out
    assert "tensor" not in out
    assert "weight" not in out


def test_head_files_with_other_entries_are_refused(d: Path, tmp_path: Path, capsys) -> None:
    weight, bias = head_of(d)
    np.savez(tmp_path / "renamed.npz", weight=weight, Bias=bias)
    torch.save({"weight": torch.from_numpy(weight), "bias": [1, 2, 3, 4]}, tmp_path / "list.pt")
    score = ["score", "ash", d / "test.npy", "-o", d / "s.npy", "--head"]
    assert "holds 'Bias' besides the head's 'weight'" in error_of(
        [*score, tmp_path / "renamed.npz"], capsys
    )
    assert "'bias' is a list, expected a tensor" in error_of([*score, tmp_path / "list.pt"], capsys)


def test_detect_gives_a_head_to_a_detector_saved_without_one(d: Path, capsys) -> None:
    """A detector calibrated in Python on a head that evaluate lent keeps no head."""
    from oodscore.detection import save_detector

    weight, bias = head_of(d)
    scorer = ASH(weight=weight, bias=bias)
    detector = OODDetector(scorer).calibrate(features=np.load(d / "fit.npy"), alpha=0.1)
    scorer.set_head()  # the head was lent
    save_detector(detector, d / "gate.pt")
    detect = ["detect", d / "gate.pt", d / "ood.npy", "-o", d / "out.csv"]
    assert "give it with --head HEAD" in error_of(detect, capsys)
    code, _, err = run([*detect, "--head", d / "head.npz"], capsys)
    assert (code, err) == (0, "")
    rows = np.loadtxt(d / "out.csv", delimiter=",", skiprows=1)
    scorer.set_head(weight=weight, bias=bias)
    np.testing.assert_array_equal(rows[:, 2].astype(bool), detector(np.load(d / "ood.npy")).reject)
