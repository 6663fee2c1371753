"""Command-line syntax: scorer parameters, PATH::KEY, ``-o -``, ``--device``, progress, warnings
and messages worded for the command line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import oodscore.commands.streaming as streaming
from oodscore.cli import main
from oodscore.commands.options import input_file, split_scorer
from oodscore.evaluation import evaluate_logits
from oodscore.io import load_array, write_array
from oodscore.scorers.mos import MOS
from tests.cli_runner import error_of, run
from tests.reference import mos as ref_mos
from tests.reference import scorers as ref


@pytest.fixture
def mos_files(tmp_path: Path, rng: np.random.Generator) -> dict[str, Path]:
    """Logits of a 3-class head in 2 groups (sizes 2 and 1: 5 columns), ID and OOD."""
    id_logits = rng.normal(size=(40, 5)) * 2
    id_logits[np.arange(40), 1 + np.arange(40) % 2] += 4  # confident in group 0
    paths = {"id": tmp_path / "id.npy", "ood": tmp_path / "ood.npy"}
    np.save(paths["id"], id_logits)
    np.save(paths["ood"], rng.normal(size=(30, 5)))
    return paths


# ------------------------------------------------------------------ scorer parameters


def test_list_valued_parameters_in_eval_and_score(
    mos_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["eval", "--id", mos_files["id"], "--ood", f"o={mos_files['ood']}"]
    argv += ["--scorer", "mos:groups=[2,1]", "--scorer", "mos:groups=[2, 1],log_scale=True"]
    code, out, err = run([*argv, "--format", "json"], capsys)
    assert (code, err) == (0, "")
    id_logits, ood_logits = np.load(mos_files["id"]), np.load(mos_files["ood"])
    expected = evaluate_logits(
        id_logits,
        {"o": ood_logits},
        {
            "mos:groups=[2,1]": MOS(groups=[2, 1]),
            "mos:groups=[2, 1],log_scale=True": MOS(groups=[2, 1], log_scale=True),
        },
    )
    assert json.loads(out) == json.loads(expected.to_json())
    out_file = tmp_path / "s.npy"
    assert run(["score", "mos:groups=[2,1]", mos_files["id"], "-o", out_file], capsys)[0] == 0
    np.testing.assert_allclose(
        np.load(out_file), ref_mos.score(id_logits, [[0, 1], [2]]), rtol=1e-12
    )
    assert (
        run(
            ["score", "mos", mos_files["id"], "-o", out_file, "--force", "--param", "groups=[2,1]"],
            capsys,
        )[0]
        == 0
    )
    np.testing.assert_allclose(
        np.load(out_file), ref_mos.score(id_logits, [[0, 1], [2]]), rtol=1e-12
    )


def test_parameters_are_read_by_pythons_parser() -> None:
    assert split_scorer("mos:groups=[[0, 2], [1]]") == ("mos", ["groups=[[0, 2], [1]]"])
    assert split_scorer("x:a='1,2',b=(3, 4),") == ("x", ["a='1,2'", "b=(3, 4)"])
    assert split_scorer(" energy : ") == ("energy", [])
    for bad in ("mos:groups=[6,6", "mos:6", "mos:**kw", "mos:a=1)(b=2", "energy:temperature"):
        with pytest.raises(ValueError, match=r"Expected --scorer NAME:KEY=VALUE"):
            split_scorer(bad)


def test_bare_words_are_strings_and_expressions_are_refused(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    features = rng.normal(size=(60, 3))
    np.save(tmp_path / "f.npy", features)
    np.save(tmp_path / "y.npy", np.arange(60) % 2)
    base = ["score", "--fit", tmp_path / "f.npy", "--fit-targets", tmp_path / "y.npy"]
    outputs = {}
    for spelling in ("mahalanobis:aggregation=sum", "mahalanobis:aggregation='sum'"):
        out = tmp_path / f"{len(spelling)}.npy"
        code, _, err = run([*base, spelling, tmp_path / "f.npy", "-o", out], capsys)
        assert code == 0, err
        outputs[spelling] = np.load(out)
    first, second = outputs.values()
    np.testing.assert_array_equal(first, second)
    err = error_of(
        [
            *("score", "energy", tmp_path / "f.npy", "-o", tmp_path / "e.npy"),
            *("--param", "temperature=1+1"),
        ],
        capsys,
    )
    assert "--param temperature=1+1: '1+1' is not a Python literal" in err


def test_a_parameter_given_twice_in_either_syntax(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "l.npy", rng.normal(size=(5, 3)))
    argv = ["score", "energy:temperature=2", tmp_path / "l.npy", "-o", tmp_path / "s.npy"]
    err = error_of([*argv, "--param", "temperature=3"], capsys)
    assert "temperature is given twice ('2' and '3')" in err
    eval_argv = ["eval", "--id", tmp_path / "l.npy", "--ood", f"o={tmp_path / 'l.npy'}"]
    err = error_of([*eval_argv, "--scorer", "mos:groups=[6,6"], capsys)
    assert "Expected --scorer NAME:KEY=VALUE,... (values as Python literals" in err


# ------------------------------------------------------------------------- PATH::KEY


def test_dict_and_tensor_pt_files_mix_with_keys_per_file(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    id_logits = torch.from_numpy(rng.normal(size=(30, 4)) + 2 * np.eye(4)[np.arange(30) % 4])
    ood_logits = torch.from_numpy(rng.normal(size=(20, 4)))
    torch.save({"logits": id_logits, "labels": torch.arange(30) % 4}, tmp_path / "id.pt")
    torch.save(ood_logits, tmp_path / "ood.pt")
    argv = ["eval", "--id", f"{tmp_path / 'id.pt'}::logits", "--ood", f"o={tmp_path / 'ood.pt'}"]
    argv += ["--id-targets", f"{tmp_path / 'id.pt'}::labels", "--scorer", "energy"]
    code, out, err = run([*argv, "--format", "json"], capsys)
    assert (code, err) == (0, "")
    expected = evaluate_logits(id_logits, {"o": ood_logits}, ["energy"])
    got = json.loads(out)
    assert got["rows"] == json.loads(expected.to_json())["rows"]
    accuracy = float((id_logits.argmax(1) == torch.arange(30) % 4).double().mean())
    assert got["id_metrics"]["accuracy"] == pytest.approx(accuracy)
    # one --key for every file cannot read both: the tensor file has no key
    common = ["eval", "--id", tmp_path / "id.pt", "--ood", f"o={tmp_path / 'ood.pt'}"]
    err = error_of([*common, "--scorer", "energy", "--key", "logits"], capsys)
    assert "holds a single tensor; the key 'logits' does not apply" in err
    assert "PATH::KEY" in err


def test_path_key_in_score_and_its_errors(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    np.savez(tmp_path / "two.npz", a=a, b=b)
    out = tmp_path / "s.npy"
    assert run(["score", "max_logit", f"{tmp_path / 'two.npz'}::b", "-o", out], capsys)[0] == 0
    np.testing.assert_array_equal(np.load(out), b.max(1))
    # the file's own key wins over --key
    argv = ["score", "max_logit", f"{tmp_path / 'two.npz'}::a", "-o", out, "--force"]
    assert run([*argv, "--key", "b"], capsys)[0] == 0
    np.testing.assert_array_equal(np.load(out), a.max(1))
    err = error_of(["score", "max_logit", tmp_path / "two.npz", "-o", out, "--force"], capsys)
    assert "choose one with --key KEY, or" in err
    assert "two.npz::KEY' for this file alone" in err
    err = error_of(["score", "msp", f"{tmp_path / 'x.npy'}::a", "-o", out], capsys)
    assert "holds one array: ::KEY applies to .npz and .pt files" in err
    err = error_of(["score", "msp", f"{tmp_path / 'two.npz'}::", "-o", out], capsys)
    assert "expected PATH::KEY with a key after '::'" in err
    err = error_of(["score", "msp", f"{tmp_path / 'two.npz'}::c", "-o", out, "--force"], capsys)
    assert "has no array 'c'; it has: a, b" in err


def test_input_file_splits_only_after_a_readable_extension() -> None:
    assert input_file("d/x.pt::logits").key == "logits"
    assert input_file("odd::name.npy").path == Path("odd::name.npy")
    assert input_file("odd::name.npy").key is None


# ------------------------------------------------------------------------- -o - (stdout)


def test_dash_writes_csv_scores_to_stdout(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    logits = rng.normal(size=(9, 4)).astype(np.float32)
    np.save(tmp_path / "l.npy", logits)
    code, out, err = run(["score", "energy", tmp_path / "l.npy", "-o", "-"], capsys)
    assert (code, err) == (0, "")
    assert run(["score", "energy", tmp_path / "l.npy", "-o", tmp_path / "s.csv"], capsys)[0] == 0
    assert out == (tmp_path / "s.csv").read_text()
    lines = out.splitlines()
    assert lines[0] == "scores"
    np.testing.assert_allclose(
        np.array(lines[1:], dtype=np.float64), ref.energy(logits.astype(np.float64)), rtol=1e-6
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.npy", "s.csv"]
    code, out, err = run(
        [
            *("eval", "--id", tmp_path / "l.npy", "--ood", f"o={tmp_path / 'l.npy'}"),
            *("--scorer", "msp", "-o", "-", "--format", "csv"),
        ],
        capsys,
    )
    assert (code, err) == (0, "")
    assert out.startswith("ood_set,scorer,")


# --------------------------------------------------------------------------- --device


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("foo", "--device 'foo' is not a device: expected cpu, cuda"),
        ("cuda:x", "--device 'cuda:x' is not a device"),
        ("meta", "--device 'meta' holds no values"),
        pytest.param(
            "cuda",
            "--device 'cuda': ",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here"),
        ),
    ],
)
def test_a_device_that_cannot_be_used_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], device: str, message: str
) -> None:
    np.save(tmp_path / "l.npy", np.zeros((3, 2)))
    for command in (
        ["score", "msp", tmp_path / "l.npy", "-o", tmp_path / "s.npy"],
        ["eval", "--id", tmp_path / "l.npy", "--ood", f"o={tmp_path / 'l.npy'}", "--scorer", "msp"],
    ):
        err = error_of([*command, "--device", device], capsys)
        assert message in err
        assert "AssertionError" not in err
    assert not (tmp_path / "s.npy").exists()


def test_device_cpu_and_accelerators(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    logits = rng.normal(size=(20, 3))
    np.save(tmp_path / "l.npy", logits)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        out = tmp_path / f"{device}.npy"
        argv = ["score", "energy", tmp_path / "l.npy", "-o", out, "--device", device]
        assert run(argv, capsys)[0] == 0
        np.testing.assert_allclose(np.load(out), ref.energy(logits), rtol=1e-12)


# --------------------------------------------------------------------------- progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def scored_with_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stderr: io.StringIO) -> str:
    monkeypatch.setattr(streaming, "PROGRESS_DELAY", 0.0)
    monkeypatch.setattr(streaming, "CHUNK_ELEMENTS", 64)
    monkeypatch.setattr(sys, "stderr", stderr)
    np.save(tmp_path / "l.npy", np.random.default_rng(0).normal(size=(500, 4)))
    assert main(["score", "energy", str(tmp_path / "l.npy"), "-o", str(tmp_path / "s.npy")]) == 0
    np.testing.assert_allclose(
        np.load(tmp_path / "s.npy"), ref.energy(np.load(tmp_path / "l.npy")), rtol=1e-12
    )
    return stderr.getvalue()


def test_progress_shows_on_a_terminal_with_tqdm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tqdm")
    shown = scored_with_stderr(tmp_path, monkeypatch, FakeTerminal())
    assert "oodscore: score energy" in shown
    assert "/500 [" in shown
    assert "rows/s" in shown


def test_progress_is_quiet_without_a_terminal_or_without_tqdm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert scored_with_stderr(tmp_path, monkeypatch, io.StringIO()) == ""
    for module in ("tqdm", "tqdm.auto"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails: as if not installed
    (tmp_path / "s.npy").unlink()
    assert scored_with_stderr(tmp_path, monkeypatch, FakeTerminal()) == ""


# -------------------------------------------------------------- warnings and wording


def test_a_warning_is_one_line_without_its_source(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "flat.npy", np.c_[rng.normal(size=(30, 2)), np.zeros(30)])
    flat = str(tmp_path / "flat.npy")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "oodscore", "score", "mahalanobis", flat, "--fit", flat),
            *("-o", str(tmp_path / "s.npy")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("oodscore: warning: The tied covariance")
    assert result.stderr.count("\n") == 1, result.stderr
    assert ".py" not in result.stderr


def test_warnings_raised_while_parsing_are_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    script = textwrap.dedent(
        """
        import sys, warnings
        import oodscore.commands.options as options
        real = options.input_file
        def noisy(text):
            warnings.warn("a warning from the parser", UserWarning, stacklevel=1)
            return real(text)
        options.input_file = noisy
        import oodscore.commands.score as score
        score.input_file = noisy
        from oodscore.cli import main
        sys.exit(main(["score", "msp", "x.npy", "-o", "-", "--device", "foo"]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "oodscore: warning: a warning from the parser",
        "oodscore: error: --device 'foo' is not a device: expected cpu, cuda, cuda:INDEX, mps, "
        "xpu...",
    ]


def test_messages_name_python_keywords_in_python(tmp_path: Path) -> None:
    write_array(tmp_path / "s.npy", np.zeros(3))
    with pytest.raises(FileExistsError, match=r"exists; pass force=True to overwrite it\.$"):
        write_array(tmp_path / "s.npy", np.zeros(3))
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"choose one with key=\.$"):
        load_array(tmp_path / "two.npz")
    torch.save(torch.zeros(2, 2), tmp_path / "t.pt")
    with pytest.raises(ValueError, match=r"holds a single tensor; key='x' does not apply"):
        load_array(tmp_path / "t.pt", key="x")


def test_dash_with_save_state(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "f.npy", rng.normal(size=(40, 3)))
    argv = ["score", "mahalanobis", tmp_path / "f.npy", "--fit", tmp_path / "f.npy", "-o", "-"]
    code, out, err = run([*argv, "--save-state", tmp_path / "m.pt"], capsys)
    assert (code, err) == (0, "")
    assert out.startswith("scores\n")
    assert out.count("\n") == 41
    code, again, _ = run(
        ["score", "mahalanobis", tmp_path / "f.npy", "--state", tmp_path / "m.pt", "-o", "-"],
        capsys,
    )
    assert code == 0
    assert again == out
