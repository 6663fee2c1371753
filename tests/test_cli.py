"""`oodscore list` and `oodscore score`: formats, safety rules, one-line errors."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli_runner import error_of, run
from tests.reference import scorers as ref


@pytest.fixture
def logits(rng) -> np.ndarray:
    return rng.normal(scale=3.0, size=(7, 4)).astype(np.float32)


def read_scores(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix == ".npz":
        with np.load(path) as archive:
            return archive["scores"]
    if path.suffix == ".pt":
        return torch.load(path, weights_only=True).numpy()
    return np.loadtxt(path, skiprows=1, ndmin=1)


def test_list_shows_names_descriptions_and_defaults(capsys):
    code, out, _ = run(["list"], capsys)
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert {"msp", "max_logit", "energy", "entropy", "gen", "joint_energy"} <= set(lines)
    assert "[temperature=1.0]" in lines["energy"]
    assert "[gamma=0.1, top_m=100]" in lines["gen"]
    assert "[top_k=None]" in lines["joint_energy"]
    assert "NeurIPS 2021" in lines["joint_energy"]
    assert "[groups (required), log_scale=False]" in lines["mos"]


def test_list_pattern(capsys):
    _, out, _ = run(["list", "*energy"], capsys)
    assert [line.split()[0] for line in out.splitlines()] == ["energy", "joint_energy"]


@pytest.mark.parametrize("in_suffix", [".npy", ".npz", ".pt", ".csv"])
@pytest.mark.parametrize("out_suffix", [".npy", ".npz", ".pt", ".csv"])
def test_score_round_trip(tmp_path, capsys, logits, in_suffix, out_suffix):
    source = tmp_path / f"logits{in_suffix}"
    if in_suffix == ".npy":
        np.save(source, logits)
    elif in_suffix == ".npz":
        np.savez(source, logits=logits)
    elif in_suffix == ".pt":
        torch.save(torch.from_numpy(logits), source)
    else:
        np.savetxt(source, logits, delimiter=",", header="a,b,c,d", comments="")
    target = tmp_path / f"scores{out_suffix}"
    code, out, err = run(["score", "energy", str(source), "-o", str(target)], capsys)
    assert (code, out, err) == (0, "", "")
    expected = ref.energy(logits.astype(np.float64))
    np.testing.assert_allclose(read_scores(target), expected, rtol=1e-6)


def test_params_are_passed_to_the_scorer(tmp_path, capsys, logits):
    source = tmp_path / "logits.npy"
    np.save(source, logits)
    target = tmp_path / "scores.npy"
    code, _, _ = run(
        ["score", "joint_energy", str(source), "-o", str(target), "--param", "top_k=2"], capsys
    )
    assert code == 0
    np.testing.assert_allclose(
        np.load(target), ref.joint_energy(logits.astype(float), 2), rtol=1e-6
    )
    code, _, _ = run(
        ["score", "msp", str(source), "-o", str(target), "--force", "--param", "temperature=2.5"],
        capsys,
    )
    assert code == 0
    np.testing.assert_allclose(np.load(target), ref.msp(logits.astype(float), 2.5), rtol=1e-6)


def test_npz_and_pt_dicts_choose_the_array_by_key(tmp_path, capsys, logits):
    npz = tmp_path / "many.npz"
    np.savez(npz, a=logits, b=logits * 2)
    target = tmp_path / "s.npy"
    code, _, err = run(["score", "max_logit", str(npz), "-o", str(target)], capsys)
    assert code == 2
    assert "holds 2 arrays (a, b); choose one with --key" in err
    code, _, _ = run(["score", "max_logit", str(npz), "-o", str(target), "--key", "b"], capsys)
    assert code == 0
    np.testing.assert_allclose(np.load(target), (logits * 2).max(1))
    pt = tmp_path / "many.pt"
    torch.save({"x": torch.from_numpy(logits)}, pt)
    other = str(tmp_path / "t.npy")
    code, _, err = run(["score", "max_logit", str(pt), "-o", other, "--key", "y"], capsys)
    assert code == 2
    assert "has no array 'y'; it has: x" in err


def test_refuses_to_overwrite_without_force(tmp_path, capsys, logits):
    source = tmp_path / "logits.npy"
    np.save(source, logits)
    target = tmp_path / "scores.npy"
    target.write_bytes(b"keep me")
    err = error_of(["score", "energy", str(source), "-o", str(target)], capsys)
    assert "exists; pass --force" in err
    assert target.read_bytes() == b"keep me"
    assert run(["score", "energy", str(source), "-o", str(target), "--force"], capsys)[0] == 0
    assert np.load(target).shape == (7,)


def test_never_overwrites_the_input_even_with_force(tmp_path, capsys, logits):
    source = tmp_path / "logits.npy"
    np.save(source, logits)
    before = source.read_bytes()
    err = error_of(["score", "energy", str(source), "-o", str(source), "--force"], capsys)
    assert "Refusing to overwrite the input file" in err
    assert source.read_bytes() == before


def test_no_partial_file_is_left_on_error(tmp_path, capsys):
    source = tmp_path / "logits.npy"
    np.save(source, np.array([[1.0, np.nan]]))
    target = tmp_path / "scores.npy"
    err = error_of(["score", "energy", str(source), "-o", str(target)], capsys)
    assert "1 row contains NaN (first: row 0)" in err
    assert list(tmp_path.iterdir()) == [source]


class Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_never_unpickles(tmp_path, capsys):
    npy = tmp_path / "evil.npy"
    np.save(npy, np.array([Payload()], dtype=object), allow_pickle=True)
    err = error_of(["score", "energy", str(npy), "-o", str(tmp_path / "s.npy")], capsys)
    assert "without unpickling" in err
    pt = tmp_path / "evil.pt"
    with pt.open("wb") as stream:
        pickle.dump(Payload(), stream)
    err = error_of(["score", "energy", str(pt), "-o", str(tmp_path / "s.npy")], capsys)
    assert "as safe torch weights" in err
    assert "unpickled!" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv_tail", "message"),
    [
        (["--param", "temperature=0"], "`temperature` to be a finite number"),
        (["--param", "tau=2"], "Unknown parameter 'tau' for Energy; it accepts: temperature."),
        (["--param", "temperature"], "Expected --param KEY=VALUE, got 'temperature'."),
    ],
)
def test_bad_params(tmp_path, capsys, logits, argv_tail, message):
    source = tmp_path / "logits.npy"
    np.save(source, logits)
    err = error_of(
        ["score", "energy", str(source), "-o", str(tmp_path / "s.npy"), *argv_tail], capsys
    )
    assert message in err


def test_bad_inputs(tmp_path, capsys):
    target = str(tmp_path / "s.npy")
    assert "No such file" in error_of(
        ["score", "energy", str(tmp_path / "no.npy"), "-o", target], capsys
    )
    text = tmp_path / "logits.txt"
    text.write_text("1,2\n")
    assert "expected one of .npy" in error_of(["score", "energy", str(text), "-o", target], capsys)
    one_d = tmp_path / "one_d.npy"
    np.save(one_d, np.zeros(3))
    assert "2-D of shape (N, C)" in error_of(["score", "energy", str(one_d), "-o", target], capsys)
    words = tmp_path / "words.csv"
    words.write_text("a,b\nx,y\n")
    assert "comma-separated numbers" in error_of(
        ["score", "energy", str(words), "-o", target], capsys
    )
    assert "Unknown scorer 'energi'" in error_of(
        ["score", "energi", str(one_d), "-o", target], capsys
    )
    bad_out = str(tmp_path / "s.txt")
    assert "expected one of .npy" in error_of(
        ["score", "energy", str(one_d), "-o", bad_out], capsys
    )


def test_python_dash_m_entry_point(tmp_path, logits):
    source = tmp_path / "logits.npy"
    np.save(source, logits)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "oodscore",
            "score",
            "gen",
            str(source),
            "-o",
            str(tmp_path / "s.npy"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(
        np.load(tmp_path / "s.npy"), ref.gen(logits.astype(float)), rtol=1e-5
    )
    result = subprocess.run(
        [sys.executable, "-m", "oodscore", "score", "gen", str(source), "-o", str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("oodscore: error:")
    assert "Traceback" not in result.stderr


def test_written_files_get_the_usual_permissions(tmp_path, capsys, logits):
    """The temporary file behind an atomic write is 0o600; the result must not stay so."""
    import os
    import stat

    source = tmp_path / "logits.npy"
    np.save(source, logits)
    target = tmp_path / "scores.npy"
    old = os.umask(0o022)
    try:
        assert run(["score", "energy", str(source), "-o", str(target)], capsys)[0] == 0
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        target.chmod(0o640)
        assert run(["score", "msp", str(source), "-o", str(target), "--force"], capsys)[0] == 0
        assert stat.S_IMODE(target.stat().st_mode) == 0o640  # an overwritten file keeps its mode
    finally:
        os.umask(old)


def test_closed_stdout_ends_quietly(tmp_path):
    """`oodscore list | head -1` must not print an error when head closes the pipe."""
    script = (
        "import sys, oodscore.cli;"
        "sys.stdout = open(sys.stdout.fileno(), 'w', buffering=1, closefd=False);"
        "sys.exit(oodscore.cli.main(['list']))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    process.stdout.close()  # the reader goes away before anything is written
    _, err = process.communicate(timeout=60)
    assert process.returncode == 141
    assert b"error" not in err


def test_csv_reading_options(tmp_path, capsys):
    """What `auto` refuses, the options read: pandas' index and header, class ids from 0."""
    pd = pytest.importorskip("pandas")
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]])
    frame = tmp_path / "frame.csv"
    pd.DataFrame(logits).to_csv(frame)  # ",0,1,2" then "0,1.0,2.0,0.5", ...
    out = tmp_path / "s.npy"
    err = error_of(["score", "max_logit", str(frame), "-o", str(out)], capsys)
    assert "--csv-index yes" in err
    assert (
        run(["score", "max_logit", str(frame), "-o", str(out), "--csv-index", "yes"], capsys)[0]
        == 0
    )
    np.testing.assert_array_equal(np.load(out), logits.max(1))
    targets = tmp_path / "targets.csv"
    np.savetxt(targets, [0, 2, 1], fmt="%d")
    fit = tmp_path / "fit.npy"
    np.save(fit, logits)
    argv = ["score", "kl_matching", str(fit), "-o", str(tmp_path / "k.npy"), "--fit", str(fit)]
    argv += ["--fit-targets", str(targets)]
    assert "--csv-header no" in error_of(argv, capsys)
    assert run([*argv, "--csv-header", "no"], capsys)[0] == 0


def test_decompress_limit_option(tmp_path, capsys):
    archive = tmp_path / "zeros.npz"
    np.savez_compressed(archive, logits=np.zeros((1 << 16, 4)))  # 2 MiB expanded
    out = str(tmp_path / "s.npy")
    err = error_of(["score", "msp", str(archive), "-o", out, "--decompress-limit", "1M"], capsys)
    assert "expands to 2.0 MiB" in err
    assert "--decompress-limit 3M" in err
    assert (
        run(["score", "msp", str(archive), "-o", out, "--decompress-limit", "3M"], capsys)[0] == 0
    )
