"""``oodscore calibrate`` and ``oodscore detect``: files in, the Python API's decisions out,
one-line errors (exit 2) on every bad input, nothing unpickled or overwritten."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import oodscore.commands
from oodscore.cli import main
from oodscore.detection import OODDetector, load_detector
from oodscore.scorers import Mahalanobis, get_scorer


def test_both_commands_are_registered() -> None:
    assert {"calibrate", "detect"} <= set(oodscore.commands.COMMANDS)


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("detect")
    rng = np.random.default_rng(0)
    classes = np.arange(600) % 3
    np.save(root / "cal.npy", 4 * np.eye(3)[classes] + rng.normal(size=(600, 3)))
    np.save(
        root / "test.npy", np.concatenate([4 * np.eye(3)[classes[:60]], rng.normal(size=(40, 3))])
    )
    np.save(root / "fit.npy", rng.normal(size=(300, 3)) + 4 * np.eye(3)[classes[:300]])
    np.save(root / "scores.npy", rng.normal(size=200))
    np.save(root / "few.npy", rng.normal(size=(10, 3)))
    np.save(root / "wide.npy", rng.normal(size=(5, 4)))
    np.save(root / "nan.npy", np.full((30, 3), np.nan))
    np.save(root / "groups.npy", np.array([0, 0, 1]))
    torch.save({"a": torch.ones(3)}, root / "dict.pt")
    (root / "garbage.pt").write_bytes(b"not a torch file")
    Mahalanobis().fit(np.load(root / "fit.npy"))
    return root


def p(d: Path, name: str) -> str:
    return str(d / name)


def test_calibrate_then_detect_equals_the_python_api(d: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "det.pt"
    args = ["calibrate", "energy", p(d, "cal.npy"), "-o", str(out), "--alpha", "0.05"]
    assert main([*args, "--group-by", "predicted_class", "--ood", p(d, "test.npy")]) == 0
    printed = capsys.readouterr().out
    assert "| class 0 | 200 | 10 |" in printed
    assert "OOD detection rate:" in printed
    api = OODDetector("energy", grouping="predicted_class").calibrate(
        logits=np.load(d / "cal.npy"), alpha=0.05
    )
    assert load_detector(out).state_dict().keys() == api.state_dict().keys()
    expected = api(np.load(d / "test.npy"))
    for suffix in (".npz", ".pt", ".csv"):
        table = tmp_path / f"t{suffix}"
        assert main(["detect", str(out), p(d, "test.npy"), "-o", str(table), "--fdr", "0.1"]) == 0
        if suffix == ".npz":
            with np.load(table) as columns:
                got = {k: columns[k] for k in columns.files}
        elif suffix == ".pt":
            got = {k: v.numpy() for k, v in torch.load(table, weights_only=True).items()}
        else:
            got = dict(
                zip(
                    ("score", "p_value", "reject", "group", "selected"),
                    np.loadtxt(table, delimiter=",", skiprows=1).T,
                    strict=False,
                )
            )
            assert table.read_text().splitlines()[0] == "score,p_value,reject,group,selected"
        np.testing.assert_array_equal(got["p_value"], expected.p_values.numpy())
        np.testing.assert_array_equal(got["reject"].astype(bool), expected.reject.numpy())
        np.testing.assert_array_equal(got["group"], expected.groups.numpy())
        np.testing.assert_array_equal(got["score"], expected.scores.numpy())
        np.testing.assert_array_equal(
            got["selected"].astype(bool), expected.select_ood(fdr=0.1).numpy()
        )


def test_scores_class_groups_merging_and_fitted_scorers(d: Path, tmp_path: Path) -> None:
    det = tmp_path / "s.pt"
    assert (
        main(["calibrate", "msp", p(d, "scores.npy"), "-o", str(det), "--alpha", "0.1", "--scores"])
        == 0
    )
    assert (
        main(["detect", str(det), p(d, "scores.npy"), "-o", str(tmp_path / "s.npz"), "--scores"])
        == 0
    )
    with np.load(tmp_path / "s.npz") as table:
        expected = OODDetector("msp").calibrate(scores=np.load(d / "scores.npy"), alpha=0.1)
        np.testing.assert_array_equal(
            table["reject"], expected(scores=np.load(d / "scores.npy")).reject
        )
    grouped = tmp_path / "g.pt"
    args = ["calibrate", "energy", p(d, "cal.npy"), "-o", str(grouped), "--alpha", "0.01"]
    assert main([*args, "--class-groups", p(d, "groups.npy"), "--merge-small-groups"]) == 0
    assert [g.size for g in load_detector(grouped).report.groups] == [400, 200]
    fitted = tmp_path / "m.pt"
    args = ["calibrate", "kl_matching", p(d, "cal.npy"), "-o", str(fitted), "--alpha", "0.1"]
    assert main([*args, "--fit", p(d, "fit.npy")]) == 0
    assert load_detector(fitted).scorer.is_fitted


def _error(capsys, argv: list[str]) -> str:  # type: ignore[no-untyped-def]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("oodscore: error: ")
    assert "Traceback" not in err
    return err


def test_every_bad_input_is_one_line_and_exit_2(d: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    det = tmp_path / "det.pt"
    assert main(["calibrate", "energy", p(d, "cal.npy"), "-o", str(det), "--alpha", "0.1"]) == 0
    capsys.readouterr()
    out = str(tmp_path / "o.npz")

    def cal(*tail: str, data: str = "cal.npy", alpha: str = "0.1") -> list[str]:
        return [
            "calibrate",
            "energy",
            p(d, data),
            "-o",
            str(tmp_path / "new.pt"),
            "--alpha",
            alpha,
            *tail,
        ]

    cases = [
        (cal(data="missing.npy"), "No such file: "),
        (["detect", str(det), p(d, "missing.npy"), "-o", out], "No such file: "),
        (["detect", p(d, "missing.pt"), p(d, "test.npy"), "-o", out], "No such file: "),
        (cal(alpha="0"), "Expected `--alpha` to be a finite number in (0, 1), got 0.0."),
        (cal(alpha="1.5"), "Expected `--alpha` to be a finite number in (0, 1), got 1.5."),
        (cal(alpha="nan"), "Expected `--alpha` to be a finite number in (0, 1), got nan."),
        (cal(alpha="x"), "argument --alpha: invalid float value: 'x'"),
        (cal(data="few.npy", alpha="0.05"), "at least 19 calibration scores for alpha=0.05"),
        (cal(data="nan.npy"), "Expected `logits` to be finite, but 30 rows contain NaN"),
        (cal("--group-by", "predicted_class", alpha="0.004"), "class 0 (200), class 1 (200)"),
        (cal("--scores", "--group-by", "predicted_class"), "Groups are read from the logits"),
        (cal("--merge-small-groups"), "--merge-small-groups needs --group-by"),
        (cal("--fit", p(d, "fit.npy")), "--fit applies only to fitted scorers"),
        (
            [
                "calibrate",
                "kl_matching",
                p(d, "cal.npy"),
                "-o",
                str(tmp_path / "k.pt"),
                "--alpha",
                "0.1",
                "--fit",
                p(d, "cal.npy"),
            ],
            "--fit is INPUT",
        ),
        (["calibrate", "energy", p(d, "cal.npy"), "-o", str(det), "--alpha", "0.1"], "exists"),
        (
            [
                "calibrate",
                "energy",
                p(d, "cal.npy"),
                "-o",
                p(d, "cal.npy"),
                "--alpha",
                "0.1",
                "--force",
            ],
            "Expected a detector file ending in .pt or .pth",
        ),
        (["detect", str(det), p(d, "wide.npy"), "-o", out], "with C = 3 columns, the width"),
        (["detect", str(det), p(d, "nan.npy"), "-o", out], "`logits` to be finite"),
        (
            ["detect", p(d, "dict.pt"), p(d, "test.npy"), "-o", out],
            "is not an oodscore detector file",
        ),
        (["detect", p(d, "garbage.pt"), p(d, "test.npy"), "-o", out], "as safe torch weights"),
        (["detect", p(d, "cal.npy"), p(d, "test.npy"), "-o", out], "detector file ending in .pt"),
        (["detect", str(det), p(d, "test.npy"), "-o", str(tmp_path / "o.npy")], "several columns"),
        (["detect", str(det), p(d, "test.npy"), "-o", out, "--fdr", "1"], "`--fdr` to be a finite"),
        (
            ["detect", str(det), p(d, "test.npy"), "-o", str(det), "--force"],
            "Refusing to overwrite the input",
        ),
    ]
    for argv, message in cases:
        assert message in _error(capsys, argv), argv
    assert not (tmp_path / "new.pt").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_pickle_that_would_run_code_is_never_loaded(d: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"format": "oodscore-detector", "evil": Evil()}, tmp_path / "evil.pt")
    err = _error(
        capsys,
        ["detect", str(tmp_path / "evil.pt"), p(d, "test.npy"), "-o", str(tmp_path / "o.npz")],
    )
    assert "could run code" in err
    assert not (tmp_path / "pwned").exists()


def test_keys_parameters_and_stdout_as_in_score(d: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    both = tmp_path / "both.npz"
    np.savez(both, cal=np.load(d / "cal.npy"), test=np.load(d / "test.npy"))
    gate = tmp_path / "gate.pt"
    args = ["calibrate", "energy:temperature=2", f"{both}::cal", "-o", str(gate), "--alpha", "0.1"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["detect", str(gate), f"{both}::test", "-o", "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "score,p_value,reject,group"
    detector = OODDetector(get_scorer("energy", temperature=2.0)).calibrate(
        logits=np.load(d / "cal.npy"), alpha=0.1
    )
    result = detector(torch.from_numpy(np.load(d / "test.npy")))
    written = np.array([[float(c) for c in line.split(",")] for line in lines[1:]])
    np.testing.assert_allclose(written[:, 0], result.scores.numpy(), rtol=1e-15)
    np.testing.assert_array_equal(written[:, 1], result.p_values.numpy())
    np.testing.assert_array_equal(written[:, 2].astype(bool), result.reject.numpy())
    # --fit naming the calibration array itself (same file, same key) is refused
    fit = ["calibrate", "mahalanobis", f"{both}::cal", "-o", str(tmp_path / "m.pt")]
    assert main([*fit, "--alpha", "0.1", "--fit", f"{both}::cal"]) == 2
    assert "--fit is INPUT" in capsys.readouterr().err
