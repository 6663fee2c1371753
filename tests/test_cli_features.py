"""Feature scorers on the command line: `score` and `eval` on features, state files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from oodscore import Mahalanobis, RelativeMahalanobis, evaluate_logits
from oodscore.state_file import FORMAT, VERSION, load_state, save_state
from tests.cli_runner import error_of, run


@pytest.fixture
def files(tmp_path: Path, rng: np.random.Generator) -> dict[str, Path]:
    """ID fit features of 3 classes (D = 4), their targets, test features, logits."""
    centres = np.array([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    targets = np.arange(90) % 3
    fit = (rng.normal(size=(90, 4)) + centres[targets]).astype(np.float32)
    test = rng.normal(scale=2.0, size=(25, 4)).astype(np.float32)
    paths = {
        "fit": tmp_path / "fit.npy",
        "targets": tmp_path / "targets.csv",
        "multi_hot": tmp_path / "multi_hot.npy",
        "test": tmp_path / "test.pt",
        "logits": tmp_path / "logits.npy",
    }
    np.save(paths["fit"], fit)
    np.savetxt(paths["targets"], targets, fmt="%d", header="class", comments="")
    multi_hot = np.eye(3, dtype=np.int64)[targets]
    multi_hot[::5, (targets[::5] + 1) % 3] = 1
    np.save(paths["multi_hot"], multi_hot)
    torch.save(torch.from_numpy(test), paths["test"])
    np.save(paths["logits"], rng.normal(size=(25, 3)))
    return paths


def ok(argv: list[object], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(argv, capsys) == (0, "", "")


def test_fit_save_and_load_give_the_python_api_scores(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fitted, loaded, state = tmp_path / "fitted.npy", tmp_path / "loaded.npy", tmp_path / "m.pt"
    ok(
        [
            *("score", "mahalanobis", files["test"], "-o", fitted),
            *("--fit", files["fit"], "--fit-targets", files["targets"], "--save-state", state),
        ],
        capsys,
    )
    ok(["score", "mahalanobis", files["test"], "-o", loaded, "--state", state], capsys)
    test = torch.load(files["test"], weights_only=True).numpy()
    targets = np.loadtxt(files["targets"], dtype=np.int64, skiprows=1)
    expected = Mahalanobis().fit(np.load(files["fit"]), targets)(test)
    np.testing.assert_array_equal(np.load(fitted), expected)
    np.testing.assert_array_equal(np.load(loaded), expected)
    assert np.load(fitted).dtype == np.float32


def test_relative_mahalanobis_with_params_and_multi_hot_targets(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fitted, loaded, state = tmp_path / "f.csv", tmp_path / "l.csv", tmp_path / "r.pth"
    common = ["--param", "shrinkage=0.25"]
    ok(
        [
            *("score", "relative_mahalanobis", files["test"], "-o", fitted, *common),
            *("--fit", files["fit"], "--fit-targets", files["multi_hot"], "--save-state", state),
        ],
        capsys,
    )
    ok(["score", "relative_mahalanobis", files["test"], "-o", loaded, "--state", state], capsys)
    ok(
        [
            *("score", "relative_mahalanobis", files["test"], "-o", tmp_path / "p.csv"),
            *("--state", state, *common),
        ],
        capsys,
    )
    test = torch.load(files["test"], weights_only=True)
    scorer = RelativeMahalanobis(shrinkage=0.25).fit(
        np.load(files["fit"]), np.load(files["multi_hot"])
    )
    expected = scorer(test).numpy()
    for path in (fitted, loaded, tmp_path / "p.csv"):
        np.testing.assert_allclose(np.loadtxt(path, skiprows=1), expected, rtol=1e-6)
    assert repr(load_state(state)) == "RelativeMahalanobis(shrinkage=0.25)"


def test_no_targets_fits_one_gaussian(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.npy"
    ok(["score", "mahalanobis", files["test"], "-o", out, "--fit", files["fit"]], capsys)
    test = torch.load(files["test"], weights_only=True).numpy()
    np.testing.assert_array_equal(np.load(out), Mahalanobis().fit(np.load(files["fit"]))(test))


def test_state_file_layout(tmp_path: Path, rng: np.random.Generator) -> None:
    scorer = Mahalanobis(aggregation="sum", shrinkage=0.5).fit(rng.normal(size=(20, 3)))
    path = tmp_path / "state.pt"
    save_state(scorer, path)
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"format", "version", "scorer", "params", "state", "head"}
    assert payload["head"] == {}
    assert (payload["format"], payload["version"], payload["scorer"]) == (
        FORMAT,
        VERSION,
        "mahalanobis",
    )
    assert json.loads(payload["params"]) == {"aggregation": "sum", "shrinkage": 0.5}
    assert payload["state"].keys() == scorer.state_dict().keys()
    for key, tensor in scorer.state_dict().items():
        assert torch.equal(payload["state"][key], tensor)


@pytest.mark.parametrize("cls", [Mahalanobis, RelativeMahalanobis])
def test_loaded_scorers_score_bit_for_bit(
    cls: type[Mahalanobis | RelativeMahalanobis], tmp_path: Path, rng: np.random.Generator
) -> None:
    """Saved tensors keep their strides: a transposed whitening must stay transposed."""
    targets = np.arange(600) % 3
    features = rng.normal(size=(600, 8)) + 3 * np.eye(3, 8)[targets]
    test = rng.normal(size=(300, 8))
    scorer = cls().fit(features, targets)
    save_state(scorer, tmp_path / "state.pt")
    np.testing.assert_array_equal(load_state(tmp_path / "state.pt")(test), scorer(test))


def test_save_state_refuses_existing_files_and_inputs(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    scorer = Mahalanobis().fit(rng.normal(size=(20, 3)))
    path = tmp_path / "state.pt"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="pass force=True"):
        save_state(scorer, path)
    assert path.read_bytes() == b"keep"
    with pytest.raises(ValueError, match="Refusing to overwrite the input file"):
        save_state(scorer, path, force=True, inputs=[path])
    save_state(scorer, path, force=True)
    assert load_state(path).is_fitted
    with pytest.raises(ValueError, match=r"ending in \.pt or \.pth"):
        save_state(scorer, tmp_path / "state.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]  # no temporary left


class WritesAFile:
    """Unpickling this would create the file ``marker``: the attack a state file must not allow."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_a_pickle_that_runs_code_is_refused(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    how: str,
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    payload = {"format": FORMAT, "version": VERSION, "state": WritesAFile(marker)}
    if how == "pickle":
        evil.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, evil)
    pickle.loads(pickle.dumps(WritesAFile(tmp_path / "control"))).close()  # the attack works
    assert (tmp_path / "control").exists()
    out = tmp_path / "s.npy"
    err = error_of(["score", "mahalanobis", files["test"], "-o", out, "--state", evil], capsys)
    assert "Cannot read" in err
    assert "loading it could run code" in err
    assert not marker.exists()
    assert not out.exists()
    with pytest.raises(ValueError, match="could run code"):
        load_state(evil)
    assert not marker.exists()


def state_of(scorer: Mahalanobis | RelativeMahalanobis, path: Path) -> Path:
    save_state(scorer, path)
    return path


def test_state_files_of_another_scorer_or_params_are_refused(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    features = np.load(files["fit"])
    state = state_of(Mahalanobis(shrinkage=0.1).fit(features), tmp_path / "m.pt")
    out = tmp_path / "s.npy"
    err = error_of(
        ["score", "relative_mahalanobis", files["test"], "-o", out, "--state", state], capsys
    )
    assert "holds the state of 'mahalanobis', not of 'relative_mahalanobis'" in err
    with_state = ["score", "mahalanobis", files["test"], "-o", out, "--state", state]
    err = error_of([*with_state, "--param", "shrinkage=0.2"], capsys)
    assert "was fitted with shrinkage=0.1, not shrinkage=0.2" in err
    # parameters equal to the file's are accepted, the others come from the file
    ok([*with_state, "--param", "aggregation='max'", "--param", "shrinkage=0.1"], capsys)
    with pytest.raises(ValueError, match="aggregation='max', not aggregation='sum'"):
        load_state(state, params={"aggregation": "sum"})


def broken_states(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    payload = torch.load(good, weights_only=True)
    cases: dict[str, tuple[object, str]] = {
        "tensor": (torch.zeros(3), "is not an oodscore state file"),
        "version": ({**payload, "version": 2}, "of version 2; this oodscore reads version 1"),
        "params": ({**payload, "params": "{"}, "'params' is not a JSON object"),
        "unknown_param": (
            {**payload, "params": json.dumps({"radius": 1})},
            "does not rebuild 'mahalanobis'",
        ),
        "keys": ({**payload, "state": {"means": payload["state"]["means"]}}, "missing"),
        "nan": (
            {**payload, "state": {**payload["state"], "means": payload["state"]["means"] * np.nan}},
            "NaN",
        ),
        "scorer": ({**payload, "scorer": "energy"}, "holds the state of 'energy', not of"),
    }
    paths = {}
    for name, (obj, message) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(obj, path)
        paths[name] = (path, message)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    paths["truncated"] = (truncated, "Cannot read")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    paths["garbage"] = (garbage, "Cannot read")
    return paths


def test_broken_state_files_give_one_line(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = state_of(Mahalanobis().fit(np.load(files["fit"])), tmp_path / "good.pt")
    out = tmp_path / "s.npy"
    for name, (path, message) in broken_states(tmp_path, good).items():
        err = error_of(["score", "mahalanobis", files["test"], "-o", out, "--state", path], capsys)
        assert message in err, (name, err)
    assert not out.exists()
    with pytest.raises(ValueError, match="'energy', which is not a fitted scorer"):
        load_state(tmp_path / "scorer.pt")


def test_bad_feature_inputs_give_one_line(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.npy"
    state = state_of(Mahalanobis().fit(np.load(files["fit"])), tmp_path / "m.pt")
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((5, 6)))
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((5, 4), np.nan))
    short = tmp_path / "short.npy"
    np.save(short, np.arange(10) % 3)
    fractional = tmp_path / "fractional.csv"
    fractional.write_text("0.5\n1\n")
    one_d = tmp_path / "one_d.npy"
    np.save(one_d, np.zeros(4))
    fit = ["--fit", files["fit"]]
    score = ["score", "mahalanobis", files["test"], "-o", out]
    cases = [
        (score, "'mahalanobis' is a fitted scorer: fit it on ID features with --fit FEATURES"),
        ([*score, *fit, "--state", state], "Give either --fit or --state, not both."),
        ([*score, "--fit-targets", short, "--state", state], "--fit-targets needs --fit"),
        ([*score, "--state", state, "--save-state", tmp_path / "x.pt"], "--save-state writes"),
        ([*score, "--fit", tmp_path / "missing.npy"], "No such file: "),
        ([*score, "--state", tmp_path / "missing.pt"], "No such file: "),
        ([*score, "--state", files["fit"]], "Expected a state file ending in .pt or .pth"),
        ([*score, *fit, "--save-state", tmp_path / "s.npz"], "ending in .pt or .pth"),
        (
            [*score[:-1], tmp_path / "s.pt", *fit, "--save-state", tmp_path / "s.pt"],
            "Two outputs are the same file",
        ),
        ([*score, *fit, "--save-state", files["test"]], "Refusing to overwrite the input file"),
        ([*score, *fit, "--fit-targets", short], "with N = 90 (the rows of `features`)"),
        ([*score, *fit, "--fit-targets", fractional], "holds non-integer class indices"),
        ([*score, "--fit", nan], "Cannot fit 'mahalanobis' on"),
        ([*score, "--fit", one_d], "to be 2-D of shape (N, D)"),
        (
            ["score", "mahalanobis", wide, "-o", out, *fit],
            "wide.npy' has D = 6 feature columns; the scorer was fitted on D = 4 (--fit ",
        ),
        (
            ["score", "mahalanobis", wide, "-o", out, "--state", state],
            "has D = 6 feature columns; the scorer was fitted on D = 4 (--state ",
        ),
        (["score", "mahalanobis", nan, "-o", out, *fit], "to be finite, but 5 rows contain NaN"),
        (["score", "mahalanobis", one_d, "-o", out, *fit], "to be 2-D of shape (N, D)"),
    ]
    for argv, message in cases:
        err = error_of(argv, capsys)
        assert message in err, (argv, err)
    assert not out.exists()
    assert not (tmp_path / "x.pt").exists()


def test_state_options_are_refused_for_logit_scorers(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    score = ["score", "energy", files["logits"], "-o", tmp_path / "s.npy"]
    err = error_of([*score, "--fit", files["fit"]], capsys)
    assert err == "oodscore: error: --fit applies only to fitted scorers; 'energy' is not fitted.\n"
    err = error_of(
        [*score, "--state", tmp_path / "m.pt", "--save-state", tmp_path / "n.pt"], capsys
    )
    assert "--state, --save-state apply only to fitted scorers" in err


def test_existing_outputs_are_kept_without_force(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, state = tmp_path / "s.npy", tmp_path / "m.pt"
    state.write_bytes(b"keep")
    argv = ["score", "mahalanobis", files["test"], "-o", out, "--fit", files["fit"]]
    err = error_of([*argv, "--save-state", state], capsys)
    assert "'m.pt' exists; pass --force" in err.replace(str(tmp_path) + "/", "")
    assert not out.exists(), "nothing is written when one output cannot be"
    assert state.read_bytes() == b"keep"
    ok([*argv, "--save-state", state, "--force"], capsys)
    assert load_state(state, name="mahalanobis").num_features == 4


def test_singular_covariance_warns_in_one_line(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    flat = tmp_path / "flat.npy"
    np.save(flat, np.c_[rng.normal(size=(30, 2)), np.zeros(30)])
    code, out, err = run(
        ["score", "mahalanobis", flat, "-o", tmp_path / "s.npy", "--fit", flat], capsys
    )
    assert (code, out) == (0, "")
    assert err.startswith("oodscore: warning: The tied covariance of the features is singular")
    assert "Give the parameter (NAME:shrinkage=VALUE) to choose the value" in err
    assert err.count("\n") == 1


def test_list_marks_feature_scorers(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["list"], capsys)
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    for name in ("mahalanobis", "relative_mahalanobis"):
        assert "[features: fit on ID features]" in lines[name]
    assert "[features" not in lines["energy"]
    assert lines["relative_mahalanobis"].endswith(
        "[features: fit on ID features]  [shrinkage=None]"
    )


@pytest.fixture
def sets(files: dict[str, Path], tmp_path: Path, rng: np.random.Generator) -> dict[str, Path]:
    """ID and OOD test logits and features (two OOD sets), besides `files`' fit data."""
    paths = dict(files)
    id_targets = np.arange(30) % 3
    arrays = {
        "id_logits": rng.normal(size=(30, 3)) + 3 * np.eye(3)[id_targets],
        "near_logits": rng.normal(size=(20, 3)),
        "far_logits": rng.normal(size=(10, 3)) * 0.1,
        "id_features": rng.normal(size=(30, 4)) + 3 * np.eye(4)[id_targets],
        "near_features": rng.normal(size=(20, 4)) + 1.5,
        "far_features": rng.normal(scale=4.0, size=(10, 4)),
        "id_targets": id_targets,
    }
    for name, array in arrays.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], array)
    return paths


def eval_args(sets: dict[str, Path], *scorers: str) -> list[object]:
    return [
        *("eval", "--id", sets["id_logits"], "--id-features", sets["id_features"]),
        *("--ood", f"near={sets['near_logits']}", "--ood", f"far={sets['far_logits']}"),
        *("--ood-features", f"near={sets['near_features']}"),
        *("--ood-features", f"far={sets['far_features']}"),
        *scorers,
    ]


def test_eval_fits_feature_scorers_like_the_python_api(
    sets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fit = ["--fit-features", sets["fit"], "--fit-targets", sets["targets"]]
    argv = eval_args(
        sets, "--scorer", "msp", "--scorer", "mahalanobis", "--scorer", "relative_mahalanobis"
    )
    code, out, err = run(
        [*argv, *fit, "--id-targets", sets["id_targets"], "--format", "json"], capsys
    )
    assert (code, err) == (0, "")
    load = {k: np.load(v) for k, v in sets.items() if v.suffix == ".npy"}
    expected = evaluate_logits(
        load["id_logits"],
        {"near": load["near_logits"], "far": load["far_logits"]},
        ["msp", "mahalanobis", "relative_mahalanobis"],
        id_targets=load["id_targets"],
        id_features=load["id_features"],
        ood_features={"near": load["near_features"], "far": load["far_features"]},
        fit_features=load["fit"],
        fit_targets=np.loadtxt(sets["targets"], dtype=np.int64, skiprows=1),
    )
    assert json.loads(out) == json.loads(expected.to_json())
    assert json.loads(out)["id_metrics"]["accuracy"] == pytest.approx(
        float((load["id_logits"].argmax(1) == load["id_targets"]).mean())
    )


def test_eval_state_files_equal_fitting(
    sets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "m.pt"
    ok(
        [
            *("score", "mahalanobis", sets["id_features"], "-o", tmp_path / "s.npy"),
            *("--fit", sets["fit"], "--fit-targets", sets["targets"], "--save-state", state),
        ],
        capsys,
    )
    features_only = [a for a in eval_args(sets) if "logits" not in str(a)]
    features_only = [a for a in features_only if a not in ("--id", "--ood")]
    fit = ["--fit-features", sets["fit"], "--fit-targets", sets["targets"]]
    code, fitted, err = run(
        [*features_only, "--scorer", "mahalanobis", *fit, "--format", "csv"], capsys
    )
    assert (code, err) == (0, "")
    code, loaded, err = run([*features_only, "--state", state, "--format", "csv"], capsys)
    assert (code, err) == (0, "")
    assert loaded == fitted
    assert "near,mahalanobis," in loaded
    code, labelled, _ = run(
        [*features_only, "--state", f"saved={state}", "--format", "csv"], capsys
    )
    assert labelled == fitted.replace(",mahalanobis,", ",saved,")


def test_eval_state_labels_show_their_parameters(
    sets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = state_of(Mahalanobis(aggregation="sum").fit(np.load(sets["fit"])), tmp_path / "sum.pt")
    code, out, err = run([*eval_args(sets, "--scorer", "energy"), "--state", state], capsys)
    assert (code, err) == (0, "")
    assert "| near | mahalanobis:aggregation='sum' |" in out
    assert "| mean | energy |" in out


def test_eval_feature_errors_give_one_line(
    sets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = state_of(Mahalanobis().fit(np.load(sets["fit"])), tmp_path / "m.pt")
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((30, 6)))
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((20, 4), np.nan))
    fit = ["--fit-features", sets["fit"]]
    logits_only = ["eval", "--id", sets["id_logits"], "--ood", f"near={sets['near_logits']}"]
    features_only = [
        *("eval", "--id-features", sets["id_features"]),
        *("--ood-features", f"near={sets['near_features']}"),
    ]
    cases = [
        (features_only, "Give at least one --scorer NAME or --state STATE."),
        (
            [*features_only, "--scorer", "mahalanobis"],
            "'mahalanobis' is a fitted scorer that reads features: give --fit-features PATH",
        ),
        (
            [*logits_only, "--scorer", "mahalanobis", *fit],
            "'mahalanobis' reads features: give --id-features PATH and --ood-features",
        ),
        (
            [*features_only, "--scorer", "energy"],
            "'energy' reads logits: give --id ID_LOGITS and --ood NAME=PATH",
        ),
        ([*logits_only, "--scorer", "msp", *fit], "--fit-features applies only to feature"),
        (
            [*logits_only, "--scorer", "msp", "--id-features", wide],
            "--id-features applies only to feature scorers",
        ),
        ([*features_only, "--state", state, *fit], "those of --state are fitted"),
        (
            [*features_only, "--state", state, "--fit-targets", sets["targets"]],
            "--fit-targets needs --fit-features",
        ),
        (
            [*features_only, "--state", state, "--scorer", "mahalanobis", *fit],
            "Two scorers are labelled 'mahalanobis'; name the one of a state file with --state",
        ),
        ([*features_only, "--state", "=x.pt"], "Expected --state [LABEL=]PATH, got '=x.pt'."),
        (
            [*features_only, "--state", state, "--id", sets["id_logits"]],
            "--id and --ood go together",
        ),
        (
            [*features_only, "--state", state, "--id-targets", sets["id_targets"]],
            "--id-targets needs --id",
        ),
        (
            [
                *(*logits_only, "--id-features", sets["id_features"], "--scorer", "msp"),
                *("--ood-features", f"far={sets['far_features']}", "--state", state),
            ],
            "--ood-features must name the same OOD sets as --ood: missing ['near'], "
            "unexpected ['far']",
        ),
        (
            [*features_only, "--ood-features", "far", "--state", state],
            "Expected --ood-features NAME=PATH",
        ),
        (
            [*features_only, "--scorer", "mahalanobis", "--fit-features", wide],
            "has D = 6 columns, --id-features",
        ),
        (
            [*features_only, "--scorer", "mahalanobis", *fit, "--fit-targets", sets["id_targets"]],
            "has 30 rows, --fit-features",
        ),
        (
            ["eval", "--id-features", wide, "--ood-features", f"near={wide}", "--state", state],
            "has D = 6 columns; 'mahalanobis' (--state ",
        ),
        (
            [*features_only, "--ood-features", f"far={wide}", "--state", state],
            "`ood_features['far']` to have as many features as `id_features` (D = 4)",
        ),
        (
            [*features_only, "--ood-features", f"bad={nan}", "--state", state],
            "to be finite, but 20 rows contain NaN",
        ),
        ([*features_only, "--state", tmp_path / "missing.pt"], "No such file"),
        (
            [*features_only, "--state", sets["fit"]],
            "Expected a state file ending in .pt or .pth",
        ),
    ]
    for argv, message in cases:
        err = error_of(argv, capsys)
        assert message in err, (argv, err)


def test_eval_refuses_a_pickled_state(
    sets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "state": WritesAFile(marker)}, evil)
    argv = [a for a in eval_args(sets) if "logits" not in str(a) and a not in ("--id", "--ood")]
    err = error_of([*argv, "--state", evil], capsys)
    assert "loading it could run code" in err
    assert not marker.exists()
