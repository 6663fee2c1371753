"""`oodscore eval`: the report of saved logits, formats, safety rules, one-line errors."""

from __future__ import annotations

import csv
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from oodscore import Energy, evaluate_logits
from tests.cli_runner import run
from tests.reference import evaluation as ref


@pytest.fixture
def files(tmp_path: Path, rng: np.random.Generator) -> dict[str, Path]:
    id_logits = rng.normal(size=(40, 4)).astype(np.float32)
    id_logits[np.arange(40), np.arange(40) % 4] += 3.0
    near = rng.normal(size=(30, 4)).astype(np.float32)
    far = (rng.normal(size=(20, 4)) * 0.2).astype(np.float32)
    paths = {
        "id": tmp_path / "id.npy",
        "near": tmp_path / "near.pt",
        "far": tmp_path / "far.csv",
        "targets": tmp_path / "targets.npy",
    }
    np.save(paths["id"], id_logits)
    torch.save(torch.from_numpy(near), paths["near"])
    np.savetxt(paths["far"], far, delimiter=",")
    np.save(paths["targets"], np.arange(40) % 4)
    return paths


def base(files: dict[str, Path]) -> list[str]:
    return [
        "eval",
        "--id",
        str(files["id"]),
        "--ood",
        f"near={files['near']}",
        "--ood",
        f"far={files['far']}",
        "--scorer",
        "msp",
        "--scorer",
        "energy:temperature=2",
    ]


def expected_report(files: dict[str, Path]) -> object:
    id_logits = np.load(files["id"])
    ood = {
        "near": torch.load(files["near"], weights_only=True).numpy(),
        "far": np.loadtxt(files["far"], delimiter=",", ndmin=2),
    }
    return evaluate_logits(
        id_logits,
        ood,
        {"msp": "msp", "energy:temperature=2": Energy(temperature=2.0)},
        id_targets=np.load(files["targets"]),
    )


def test_markdown_to_stdout(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([*base(files), "--id-targets", str(files["targets"])], capsys)
    assert (code, err) == (0, "")
    assert out == expected_report(files).to_markdown() + "\n"  # type: ignore[attr-defined]
    accuracy = ref.accuracy(np.load(files["id"]), np.load(files["targets"]))
    assert f"accuracy {accuracy:.4f}" in out.splitlines()[0]
    assert "| mean | energy:temperature=2 |" in out


def test_csv_values_match_the_reference(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run([*base(files), "--format", "csv"], capsys)
    assert code == 0
    rows = {(r["ood_set"], r["scorer"]): r for r in csv.DictReader(io.StringIO(out))}
    id_scores = ref.msp(np.load(files["id"]))
    near_scores = ref.msp(torch.load(files["near"], weights_only=True).numpy())
    expected = ref.ood_metrics(id_scores, near_scores)
    got = {k: float(v) for k, v in rows["near", "msp"].items() if k in expected}
    assert got == pytest.approx(expected, abs=1e-6)  # float32 logits in the file
    energy_id = 2 * ref.energy(np.load(files["id"]) / 2)
    energy_far = 2 * ref.energy(np.loadtxt(files["far"], delimiter=",", ndmin=2) / 2)
    assert float(rows["far", "energy:temperature=2"]["auroc"]) == pytest.approx(
        ref.auroc(energy_id, energy_far), abs=1e-9
    )


def test_json_output_file_and_force(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "report.json"
    argv = [*base(files), "--format", "json", "-o", str(output)]
    code, out, _ = run(argv, capsys)
    assert (code, out) == (0, "")
    data = json.loads(output.read_text())
    assert data["num_samples"] == {"id": 40, "near": 30, "far": 20}
    assert [m["scorer"] for m in data["mean"]] == ["msp", "energy:temperature=2"]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert err == f"oodscore: error: '{output}' exists; pass --force to overwrite it.\n"
    output.write_text("stale")
    assert run([*argv, "--force"], capsys)[0] == 0
    assert json.loads(output.read_text()) == data


def test_plot(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "roc.png"
    code, out, _ = run([*base(files), "--plot", str(plot)], capsys)
    assert code == 0
    assert out.startswith("ID: 40 samples")
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_never_writes_over_an_input(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    before = files["id"].read_bytes()
    for option in ("-o", "--plot"):
        code, out, err = run([*base(files), option, str(files["id"]), "--force"], capsys)
        assert (code, out) == (2, "")
        assert "Refusing to overwrite the input file" in err
    assert files["id"].read_bytes() == before


def test_never_unpickles(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = tmp_path / "evil.npy"
    np.save(evil, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    code, _, err = run(
        ["eval", "--id", str(evil), "--ood", f"o={files['near']}", "--scorer", "msp"], capsys
    )
    assert code == 2
    assert err.startswith("oodscore: error: Cannot read")
    assert err.count("\n") == 1
    pickled = tmp_path / "evil.pt"
    pickled.write_bytes(pickle.dumps({"x": object()}))
    code, _, err = run(
        ["eval", "--id", str(files["id"]), "--ood", f"o={pickled}", "--scorer", "msp"], capsys
    )
    assert code == 2
    assert "safe torch weights" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--ood", "near"], "Expected --ood NAME=PATH, got 'near'."),
        (["--ood", "near=x.npy"], "The OOD set 'near' is given twice."),
        (["--ood", "mean=x.npy"], "The OOD-set name 'mean' is reserved"),
        (["--scorer", "msp"], "The scorer 'msp' is given twice."),
        (["--scorer", "energyy"], "Unknown scorer 'energyy'. Did you mean 'energy'"),
        (["--scorer", "energy:t=2"], "Unknown parameter 't' for Energy"),
        (["--scorer", "energy:temperature=-1"], "`temperature` to be a finite number"),
        (["--ood", "missing=nowhere.npy"], "No such file: 'nowhere.npy'."),
        (["--ood", "bad=data.txt"], "expected one of .npy, .npz, .pt, .pth, .csv"),
    ],
)
def test_bad_arguments_give_one_line(
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    change: list[str],
    message: str,
) -> None:
    code, out, err = run([*base(files), *change], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("oodscore: error: ")
    assert message in err
    assert err.count("\n") == 1


def test_bad_contents_give_one_line(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((3, 4), np.nan, dtype=np.float32))
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 5), dtype=np.float32))
    targets = tmp_path / "t.csv"
    targets.write_text("0.5\n1\n")
    cases = [
        (["--ood", f"nan={nan}"], "`ood_logits['nan']` to be finite, but 3 rows contain NaN"),
        (["--ood", f"w={wrong}"], "as many classes as `id_logits` (C = 4)"),
        (["--id-targets", str(targets)], "holds non-integer class indices"),
        (["--id-targets", str(files["near"])], "multi-hot `id_targets` of shape (40, 4)"),
    ]
    for change, message in cases:
        code, _, err = run([*base(files), *change], capsys)
        assert code == 2, change
        assert message in err, err
        assert err.count("\n") == 1


def test_npz_key_and_multi_hot_targets(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    from sklearn.metrics import average_precision_score

    logits = rng.normal(size=(30, 3))
    labels = (rng.random((30, 3)) < 0.5).astype(np.int64)
    archive = tmp_path / "all.npz"
    np.savez(archive, logits=logits, other=np.zeros(2))
    ood = tmp_path / "ood.npz"
    np.savez(ood, logits=rng.normal(size=(10, 3)) - 1)
    targets = tmp_path / "labels.npz"
    np.savez(targets, logits=labels)  # the same --key applies to every input
    argv = [
        "eval",
        "--id",
        str(archive),
        "--ood",
        f"o={ood}",
        "--scorer",
        "joint_energy",
        "--key",
        "logits",
        "--id-targets",
        str(targets),
        "--format",
        "json",
    ]
    code, out, _ = run(argv, capsys)
    assert code == 0
    expected = average_precision_score(labels, logits, average="macro")
    assert json.loads(out)["id_metrics"]["map"] == pytest.approx(expected, abs=1e-12)
    code, _, err = run([a for a in argv if a not in ("--key", "logits")], capsys)
    assert code == 2
    assert "holds 2 arrays (logits, other); choose one with --key" in err


def test_output_and_plot_must_differ(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    same = tmp_path / "report.png"
    code, out, err = run([*base(files), "-o", str(same), "--plot", str(same)], capsys)
    assert (code, out) == (2, "")
    assert err == f"oodscore: error: Two outputs are the same file '{same}'.\n"
    assert not same.exists()
