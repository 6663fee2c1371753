"""Every subcommand keeps the command line's promise on bad input: one line on stderr, exit
code 2, no traceback; an interrupt is one line and exit code 130."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from oodscore.cli import main


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of good and malformed input files."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    np.save(root / "l.npy", rng.normal(size=(20, 3)))
    np.save(root / "f.npy", rng.normal(size=(20, 4)))
    np.save(root / "y.npy", np.arange(20) % 3)
    (root / "dir.npy").mkdir()
    for suffix in (".npy", ".npz", ".pt", ".csv"):
        (root / f"empty{suffix}").write_bytes(b"")
    torch.save({0: torch.randn(5, 3)}, root / "k.pt")
    np.savez(root / "two.npz", a=np.ones((2, 3)), b=np.ones((2, 3)))
    np.save(root / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    (root / "words.csv").write_text("a,b\nx,y\n")
    (root / "header_only.csv").write_text("a,b,c\n")
    (root / "pandas.csv").write_text("0,1,2\n0.5,1.5,2.5\n")
    (root / "indexed.csv").write_text(",a,b,c\n0,0.5,1,2\n1,1,2,3\n")
    (root / "hex.csv").write_text("0x10,2,3\n1,2,3\n")
    np.save(root / "3d.npy", np.zeros((2, 3, 4)))
    np.save(root / "1d.npy", np.zeros(3))
    np.save(root / "0d.npy", np.float64(1.0))
    np.save(root / "nan.npy", np.full((4, 3), np.nan))
    np.save(root / "inf.npy", np.full((4, 3), np.inf))
    np.save(root / "huge_f.npy", np.full((20, 4), 1e308) * rng.choice([-1, 1], size=(20, 4)))
    np.save(root / "cols.npy", rng.normal(size=(20, 5)))
    np.save(root / "bool.npy", np.ones((3, 3), dtype=bool))
    np.save(root / "y_float.npy", np.full(20, 0.5))
    torch.save(torch.empty(2, 3, device="meta"), root / "meta.pt")
    torch.save(torch.ones(2, 3, dtype=torch.complex64), root / "complex.pt")
    (root / "garbage.pt").write_bytes(b"not a torch file at all")
    (root / "garbage.npz").write_bytes(b"PK\x03\x04 garbage")
    (root / "exists.npy").write_bytes(b"keep")
    return root


def p(d: Path, name: str) -> str:
    return str(d / name)


def score(d: Path, name: str, *tail: str, scorer: str = "msp") -> list[str]:
    return ["score", scorer, p(d, name), "-o", str(d / "out" / "s.npy"), *tail]


def eval_(d: Path, *tail: str, id_: str = "l.npy", ood: str = "l.npy") -> list[str]:
    return ["eval", "--id", p(d, id_), "--ood", f"o={p(d, ood)}", "--scorer", "msp", *tail]


def cases(d: Path) -> list[tuple[str, list[str], str]]:
    """(id, argv, a part of the message) for every subcommand."""
    feats = ["--fit", p(d, "f.npy")]
    efeats = ["--id-features", p(d, "f.npy"), "--ood-features", f"o={p(d, 'f.npy')}"]
    return [
        # argparse: unknown options, missing and bad values
        ("no-command", [], "the following arguments are required: COMMAND"),
        ("unknown-command", ["frobnicate"], "invalid choice: 'frobnicate'"),
        ("list-extra", ["list", "a", "b"], "unrecognized arguments: b"),
        ("list-option", ["list", "--bad"], "unrecognized arguments: --bad"),
        ("score-no-output", ["score", "msp", p(d, "l.npy")], "-o/--output"),
        ("score-option", [*score(d, "l.npy"), "--bogus"], "unrecognized arguments: --bogus"),
        ("score-header", [*score(d, "l.npy"), "--csv-header", "maybe"], "invalid choice"),
        ("score-size", [*score(d, "l.npy"), "--decompress-limit", "lots"], "a size such as"),
        ("eval-size", eval_(d, "--decompress-limit", "0"), "a size such as"),
        ("eval-format", eval_(d, "--format", "xml"), "invalid choice: 'xml'"),
        ("demo-task", ["demo", "--task", "none"], "invalid choice: 'none'"),
        ("demo-seed", ["demo", "--seed", "x"], "invalid int value: 'x'"),
        ("demo-plot-format", ["demo", "--plot", p(d, "x.xyz")], "expected an extension"),
        ("demo-plot-exists", ["demo", "--plot", p(d, "exists.npy")], "exists"),
        ("demo-plot-dir", ["demo", "--plot", p(d, "no/where.png")], "No such directory"),
        # files that are missing, folders, empty
        ("missing", score(d, "nowhere.npy"), "No such file: "),
        ("directory", score(d, "dir.npy"), "is a directory"),
        ("empty-npy", score(d, "empty.npy"), "empty.npy"),
        ("empty-npz", score(d, "empty.npz"), "empty.npz"),
        ("empty-pt", score(d, "empty.pt"), "empty.pt"),
        ("empty-csv", score(d, "empty.csv"), "is empty"),
        ("garbage-pt", score(d, "garbage.pt"), "safe torch weights"),
        ("garbage-npz", score(d, "garbage.npz"), "garbage.npz"),
        ("out-dir-missing", ["score", "msp", p(d, "l.npy"), "-o", p(d, "no/s.npy")], "directory"),
        ("out-is-dir", ["score", "msp", p(d, "l.npy"), "-o", p(d, "dir.npy"), "--force"], "dir"),
        ("eval-missing", eval_(d, ood="nowhere.npy"), "No such file: "),
        ("eval-directory", eval_(d, id_="dir.npy"), "is a directory"),
        # keys
        ("int-key-missing", score(d, "k.pt", "--key", "1"), "has no array '1'; it has: 0"),
        ("npz-key", score(d, "two.npz", "--key", "z"), "has no array 'z'"),
        ("npz-no-key", score(d, "two.npz"), "choose one with --key"),
        # contents
        ("strings", score(d, "strings.npy"), "expected real numbers"),
        ("bool", score(d, "bool.npy"), "bool"),
        ("words", score(d, "words.csv"), "comma-separated numbers"),
        ("header-only", score(d, "header_only.csv"), "no rows of numbers"),
        ("pandas-header", score(d, "pandas.csv"), "--csv-header"),
        ("pandas-index", score(d, "indexed.csv"), "--csv-index"),
        ("hex", score(d, "hex.csv"), "'0x10'"),
        ("3d", score(d, "3d.npy"), "3-D"),
        ("1d", score(d, "1d.npy"), "1-D"),
        ("0d", score(d, "0d.npy"), "0-d"),
        ("nan", score(d, "nan.npy"), "NaN"),
        ("inf", score(d, "inf.npy"), "inf"),
        ("meta", score(d, "meta.pt"), "meta device"),
        ("complex", score(d, "complex.pt"), "complex64"),
        ("eval-nan", eval_(d, ood="nan.npy"), "NaN"),
        ("eval-cols", eval_(d, ood="cols.npy"), "C = 3"),
        ("eval-targets", eval_(d, "--id-targets", p(d, "y_float.npy")), "non-integer"),
        ("eval-0d", eval_(d, id_="0d.npy"), "0-d"),
        ("eval-header-only", eval_(d, ood="header_only.csv"), "no rows of numbers"),
        # huge values: overflow must not come out as a traceback or a silent number
        ("huge-fit", score(d, "f.npy", "--fit", p(d, "huge_f.npy"), scorer="mahalanobis"), ""),
        # --param
        (
            "param-repeat",
            score(d, "l.npy", "--param", "temperature=1", "--param", "temperature=2"),
            "--param temperature is given twice",
        ),
        ("param-unknown", score(d, "l.npy", "--param", "tau=1"), "Unknown parameter 'tau'"),
        ("param-form", score(d, "l.npy", "--param", "temperature"), "KEY=VALUE"),
        ("param-type", score(d, "l.npy", "--param", "temperature=abc"), "temperature"),
        ("param-list", score(d, "l.npy", "--param", "temperature=[1]"), "temperature"),
        ("param-inf", score(d, "l.npy", "--param", "temperature=1e999"), "temperature"),
        ("param-syntax", score(d, "l.npy", "--param", "temperature=(1,"), "temperature"),
        (
            "eval-param-repeat",
            eval_(d, "--scorer", "energy:temperature=1,temperature=2"),
            "temperature is given twice",
        ),
        ("eval-scorer", eval_(d, "--scorer", "nope"), "Unknown scorer 'nope'"),
        (
            "eval-no-scorer",
            ["eval", "--id", p(d, "l.npy"), "--ood", f"o={p(d, 'l.npy')}"],
            "at least one --scorer",
        ),
        # what the command line cannot run
        ("odin", score(d, "l.npy", scorer="odin"), "runs a model"),
        ("eval-odin", eval_(d, "--scorer", "odin"), "runs a model"),
        *[
            (f"head-{name}", score(d, "f.npy", *feats, scorer=name), "classifier head")
            for name in ("react", "ash", "scale", "dice", "vim", "gradnorm")
        ],
        *[
            (f"eval-head-{name}", eval_(d, "--scorer", name, *efeats), "classifier head")
            for name in ("react", "ash", "vim")
        ],
        # fitted scorers: the options they need, named for what they read
        ("fit-logits-missing", score(d, "l.npy", scorer="lof"), "fit it on ID logits with --fit"),
        (
            "fit-features-missing",
            score(d, "f.npy", scorer="knn"),
            "fit it on ID features with --fit",
        ),
        (
            "logit-fit-width",
            score(d, "l.npy", "--fit", p(d, "f.npy"), scorer="kl_matching"),
            "C = 3 logit columns",
        ),
        ("eval-fit-logits-missing", eval_(d, "--scorer", "lof"), "--fit-logits"),
        (
            "fit-options-on-msp",
            score(d, "l.npy", "--fit", p(d, "l.npy")),
            "only to fitted scorers; 'msp' is not fitted",
        ),
    ]


CASE_IDS = [c[0] for c in cases(Path("."))]


@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_input_is_one_line_and_exit_2(
    d: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = d / "out"
    out_dir.mkdir(exist_ok=True)
    for left in out_dir.iterdir():  # what a case that wrongly succeeded wrote
        left.unlink()
    _, argv, message = next(c for c in cases(d) if c[0] == case)
    code = main(argv)
    out, err = capsys.readouterr()
    assert (code, out) == (2, ""), err
    assert err.startswith("oodscore: error: "), err
    assert err.count("\n") == 1, err
    assert message in err
    assert list(out_dir.iterdir()) == []


def test_help_and_version_still_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("oodscore ")
    assert main(["score", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--csv-header" in out
    assert "fit on these ID logits or features, what the scorer reads" in out
    assert main(["eval", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--fit-logits" in out
    assert "a fitted scorer from a state file" in out


def test_unexpected_errors_are_one_line_too(
    d: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import oodscore.commands.streaming as streaming

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something\nwent wrong")

    monkeypatch.setattr(streaming, "load_array", broken)
    code = main(score(d, "l.npy"))
    _, err = capsys.readouterr()
    assert code == 2
    assert err == "oodscore: error: RuntimeError: something went wrong\n"


def test_sigint_is_one_line_and_exit_130(tmp_path: Path) -> None:
    script = (
        "import sys, oodscore.cli\n"
        "print('ready', flush=True)\n"
        "sys.exit(oodscore.cli.main(['demo', '--task', 'single']))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    time.sleep(1.0)  # inside main: parsing, then training for seconds
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err == "oodscore: interrupted\n"
    assert out == ""


def test_eval_writes_the_report_when_scores_are_infinite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Features far out give a Mahalanobis score of -inf; the plot clips it, the report and
    the plot are both written."""
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(2)
    ood = rng.normal(size=(6, 3))
    ood[0, 0] = 1e200  # squared distance 1e400: score -inf
    for name, array in (("fit", rng.normal(size=(30, 3))), ("id", rng.normal(size=(8, 3)))):
        np.save(tmp_path / f"{name}.npy", array)
    np.save(tmp_path / "ood.npy", ood)
    report, plot = tmp_path / "r.json", tmp_path / "r.png"
    argv = [
        *("eval", "--id-features", tmp_path / "id.npy", "--ood-features"),
        *(f"o={tmp_path / 'ood.npy'}", "--fit-features", tmp_path / "fit.npy"),
        *("--scorer", "mahalanobis", "--format", "json", "-o", report, "--plot", plot),
    ]
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert 0 <= json.loads(report.read_text())["rows"][0]["auroc"] <= 1
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_fitted_logit_scorers_in_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from oodscore import LOF, evaluate_logits

    rng = np.random.default_rng(1)
    fit, test, ood = rng.normal(size=(40, 3)), rng.normal(size=(15, 3)), rng.normal(size=(9, 3)) + 3
    for name, array in (("fit", fit), ("test", test), ("ood", ood)):
        np.save(tmp_path / f"{name}.npy", array)
    argv = [
        *("eval", "--id", tmp_path / "test.npy", "--ood", f"o={tmp_path / 'ood.npy'}"),
        *("--scorer", "lof", "--fit-logits", tmp_path / "fit.npy", "--format", "csv"),
    ]
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    expected = evaluate_logits(test, {"o": ood}, {"lof": LOF()}, fit_logits=fit)
    assert out == expected.to_csv()
