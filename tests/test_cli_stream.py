"""The command line reads .npy files in row blocks: same scores, whole-file errors, flat memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import oodscore.commands.streaming as streaming
from oodscore.evaluation import evaluate_logits
from oodscore.io import load_array, row_blocks
from tests.cli_runner import run
from tests.reference import evaluation as ref_eval
from tests.reference import scorers as ref


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Blocks of 16 rows for 4 columns (instead of 1M values), so small files take many blocks."""
    monkeypatch.setattr(streaming, "CHUNK_ELEMENTS", 32)
    monkeypatch.setattr(streaming, "BLOCK_CHUNKS", 2)
    return streaming.block_rows(4)


def test_blocks_give_the_scores_of_the_whole_file(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str], small_blocks: int
) -> None:
    assert small_blocks == 16
    logits = (rng.normal(size=(101, 4)) * 4).astype(np.float32)
    np.save(tmp_path / "l.npy", logits)
    for scorer, reference in (("energy", ref.energy), ("msp", ref.msp), ("gen", ref.gen)):
        out = tmp_path / f"{scorer}.npy"
        assert run(["score", scorer, tmp_path / "l.npy", "-o", out], capsys)[0] == 0
        scores = np.load(out)
        assert scores.dtype == np.float32
        assert scores.shape == (101,)
        np.testing.assert_allclose(scores, reference(logits.astype(np.float64)), rtol=2e-6)


@pytest.mark.parametrize("layout", ["fortran", "big-endian", "float16", "int64"])
def test_unusual_npy_layouts_read_in_blocks(
    tmp_path: Path,
    rng: np.random.Generator,
    capsys: pytest.CaptureFixture[str],
    small_blocks: int,
    layout: str,
) -> None:
    logits = rng.normal(size=(50, 4)) * 3
    array = {
        "fortran": np.asfortranarray(logits),
        "big-endian": logits.astype(">f8"),
        "float16": logits.astype(np.float16),
        "int64": np.round(logits).astype(np.int64),
    }[layout]
    np.save(tmp_path / "l.npy", array)
    out = tmp_path / "s.npy"
    assert run(["score", "energy", tmp_path / "l.npy", "-o", out], capsys)[0] == 0
    # NumPy in, NumPy out: float16 is computed in float32, integers in float64
    expected_dtype = np.float32 if layout == "float16" else np.float64
    assert np.load(out).dtype == expected_dtype
    np.testing.assert_allclose(np.load(out), ref.energy(array.astype(np.float64)), rtol=1e-6)


def test_an_error_in_a_later_block_counts_rows_of_the_whole_file(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str], small_blocks: int
) -> None:
    logits = rng.normal(size=(100, 4))
    logits[[37, 90], 1] = np.nan
    logits[95, 0] = np.inf
    np.save(tmp_path / "l.npy", logits)
    code, out, err = run(["score", "msp", tmp_path / "l.npy", "-o", tmp_path / "s.npy"], capsys)
    assert (code, out) == (2, "")
    assert "2 rows contain NaN (first: row 37)" in err
    assert "1 row contains ±inf (first: row 95)" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "s.npy").exists()
    argv = ["eval", "--id", tmp_path / "ok.npy", "--ood", f"bad={tmp_path / 'l.npy'}"]
    np.save(tmp_path / "ok.npy", rng.normal(size=(40, 4)))
    code, _, err = run([*argv, "--scorer", "energy"], capsys)
    assert code == 2
    assert "`ood_logits['bad']` to be finite, but 2 rows contain NaN (first: row 37)" in err


def test_eval_in_blocks_equals_evaluate_logits(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str], small_blocks: int
) -> None:
    id_logits = rng.normal(size=(90, 4)) + 3 * np.eye(4)[np.arange(90) % 4]
    near, far = rng.normal(size=(70, 4)), rng.normal(size=(33, 4)) * 0.3
    id_features, near_f, far_f = (rng.normal(size=(n, 4)) for n in (90, 70, 33))
    fit = rng.normal(size=(120, 4))
    targets = np.arange(90) % 4
    names = ["id", "near", "far", "id_f", "near_f", "far_f", "fit", "y"]
    arrays = [id_logits, near, far, id_features, near_f, far_f, fit, targets]
    for name, array in zip(names, arrays, strict=True):
        np.save(tmp_path / f"{name}.npy", array)
    p = {name: tmp_path / f"{name}.npy" for name in names}
    argv = [
        *("eval", "--id", p["id"], "--ood", f"near={p['near']}", "--ood", f"far={p['far']}"),
        *("--id-features", p["id_f"], "--ood-features", f"near={p['near_f']}"),
        *("--ood-features", f"far={p['far_f']}", "--fit-features", p["fit"]),
        *("--scorer", "energy", "--scorer", "msp", "--scorer", "mahalanobis"),
        *("--id-targets", p["y"], "--format", "json"),
    ]
    code, out, err = run(argv, capsys)
    assert (code, err) == (0, "")
    expected = evaluate_logits(
        id_logits,
        {"near": near, "far": far},
        ["energy", "msp", "mahalanobis"],
        id_targets=targets,
        id_features=id_features,
        ood_features={"near": near_f, "far": far_f},
        fit_features=fit,
    )
    assert json.loads(out) == json.loads(expected.to_json())
    got = json.loads(out)
    energy_far = next(r for r in got["rows"] if (r["ood_set"], r["scorer"]) == ("far", "energy"))
    assert energy_far["auroc"] == pytest.approx(
        ref_eval.auroc(ref.energy(id_logits), ref.energy(far)), abs=1e-12
    )


def test_empty_npy_scores_to_an_empty_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "l.npy", np.zeros((0, 3), dtype=np.float32))
    assert run(["score", "energy", tmp_path / "l.npy", "-o", tmp_path / "s.npy"], capsys)[0] == 0
    assert np.load(tmp_path / "s.npy").shape == (0,)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda b: b[:-10], "is truncated; its header announces a (50, 4) array of float64 "),
        (lambda b: b[:60], "Cannot read"),
        (lambda b: b"", "Cannot read"),
        (lambda b: b"\x93NUMPY\x03\x00" + b[8:], "format version 3.0 is not read here"),
    ],
)
def test_broken_npy_files_are_one_line_errors_before_any_mapping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, message: str
) -> None:
    good = tmp_path / "good.npy"
    np.save(good, np.ones((50, 4)))
    bad = tmp_path / "bad.npy"
    bad.write_bytes(make(good.read_bytes()))
    with pytest.raises(ValueError, match="Cannot read"):
        load_array(bad, mmap=True)
    code, out, err = run(["score", "energy", bad, "-o", tmp_path / "s.npy"], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("oodscore: error: Cannot read")
    assert err.count("\n") == 1
    assert message in err


def test_memory_maps_never_unpickle(tmp_path: Path) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="without unpickling: it holds Python objects"):
        load_array(path, mmap=True)


def test_row_blocks_of_a_map_are_read_from_the_file(tmp_path: Path) -> None:
    """Fresh arrays equal to the rows, for the map, a slice of it and a big-endian file."""
    values = np.arange(40_000 * 8, dtype=np.float64).reshape(40_000, 8)
    np.save(tmp_path / "a.npy", values)
    np.save(tmp_path / "big.npy", values.astype(">f4"))
    mapped = load_array(tmp_path / "a.npy", mmap=True)
    assert isinstance(mapped, np.memmap)
    assert not mapped.flags.writeable
    kept = [block for _, block in row_blocks(mapped, 3_000)]
    assert [len(b) for b in kept] == [3_000] * 13 + [1_000]
    assert not any(isinstance(b, np.memmap) or np.shares_memory(b, mapped) for b in kept)
    np.testing.assert_array_equal(np.concatenate(kept), values)
    reused = [block.copy() for _, block in row_blocks(mapped, 3_000, reuse=True)]
    np.testing.assert_array_equal(np.concatenate(reused), values)
    tail = [block for _, block in row_blocks(mapped[12_345:], 5_000)]
    np.testing.assert_array_equal(np.concatenate(tail), values[12_345:])
    big = load_array(tmp_path / "big.npy", mmap=True)
    np.testing.assert_array_equal(
        np.concatenate([b for _, b in row_blocks(big, 7_000)]), values.astype(np.float32)
    )
    columns = mapped[:, 2:5]  # rows not contiguous: sliced as views
    np.testing.assert_array_equal(
        np.concatenate([b for _, b in row_blocks(columns, 9_000)]), values[:, 2:5]
    )


def test_a_file_cut_short_while_read_is_an_error_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through a memory map the next block would raise SIGBUS and kill the process."""
    path = tmp_path / "a.npy"
    np.save(path, np.ones((50_000, 8), dtype=np.float32))
    blocks = row_blocks(load_array(path, mmap=True), 16_384)
    assert next(blocks)[1].shape == (16_384, 8)
    with path.open("r+b") as stream:
        stream.truncate(path.stat().st_size // 2)
    with pytest.raises(
        ValueError, match=r"changed while it was read: it ends before row 24\d+ of the 50000"
    ):
        list(blocks)


PEAK = textwrap.dedent(
    """
    import sys
    import torch
    import oodscore.commands.score_run, oodscore.commands.eval_run
    from oodscore.cli import main

    def peak_mib():  # VmHWM: ru_maxrss would carry the parent's size over fork and exec
        with open("/proc/self/status") as status:
            return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) // 1024

    torch.set_num_threads(1)
    before = peak_mib()
    code = main(sys.argv[1:])
    print(code, peak_mib() - before)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_reading_a_large_npy_holds_a_block_not_the_file(tmp_path: Path) -> None:
    """96 MiB of logits per set: the peak memory grows by about a block (16 MiB), not a set.

    Without giving pages back, ``score`` grows by the file (measured: 113 MiB) and ``eval``
    by both sets (254 MiB); streamed, by 39 and 66 MiB: a block, the scores, and in ``eval``
    the exact metrics' working memory on 1.6M scores.
    """
    rng = np.random.default_rng(0)
    for name in ("id", "ood"):
        mapped = np.lib.format.open_memmap(
            tmp_path / f"{name}.npy", mode="w+", dtype=np.float32, shape=(786_432, 32)
        )
        for start in range(0, len(mapped), 131_072):
            mapped[start : start + 131_072] = rng.normal(size=(131_072, 32))
        mapped.flush()
        del mapped
    # MiB, less than one set (96 MiB): far from holding the file (113, 254), with room for
    # what a busy machine adds (score measured 39-50 MiB, eval 66)
    limits = {"score": 72, "eval": 96}
    commands = {
        "score": ["score", "energy", tmp_path / "id.npy", "-o", tmp_path / "s.npy"],
        "eval": [
            *("eval", "--id", tmp_path / "id.npy", "--ood", f"o={tmp_path / 'ood.npy'}"),
            *("--scorer", "energy", "--scorer", "msp", "-o", tmp_path / "r.json"),
        ],
    }
    for name, argv in commands.items():
        result = subprocess.run(
            [sys.executable, "-c", PEAK, *map(str, argv)],
            capture_output=True,
            text=True,
            check=False,
        )
        code, growth_mib = map(int, result.stdout.split())
        assert code == 0, result.stderr
        assert growth_mib < limits[name], f"{name}: peak memory grew by {growth_mib} MiB"
