"""`oodscore.io`: the CSV header and index policy, bounded `.npz` reads, torch files that are
not plain arrays, streamed writes that leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from oodscore import _writing as writing
from oodscore import io as oio
from oodscore.io import load_array, load_targets, write_array

# ---------------------------------------------------------------------------- CSV input


def csv_file(tmp_path: Path, text: str, *, name: str = "x.csv", bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_pandas_numeric_header_is_not_read_as_a_row(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    values = np.arange(12.0).reshape(3, 4) + 0.5
    path = tmp_path / "frame.csv"
    pd.DataFrame(values).to_csv(path, index=False)  # header line "0,1,2,3"
    with pytest.raises(ValueError, match=r'header="yes" or header="no"'):
        load_array(path)
    np.testing.assert_array_equal(load_array(path, header="yes"), values)
    with pytest.raises(ValueError, match="comma-separated numbers"):
        load_array(csv_file(tmp_path, "0,1\nx,y\n"), header="no")


def test_utf8_bom_keeps_the_first_row(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "1.5,2\n3,4\n", bom=True)
    np.testing.assert_array_equal(load_array(path), [[1.5, 2.0], [3.0, 4.0]])
    named = csv_file(tmp_path, "a,b\n1,2\n", name="named.csv", bom=True)
    np.testing.assert_array_equal(load_array(named), [[1.0, 2.0]])


def test_a_bad_first_row_is_not_taken_for_a_header(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "0x10,2\n3,4\n")
    with pytest.raises(ValueError, match=r"Line 1 .*'0x10'.*pass header=\"yes\""):
        load_array(path)
    with pytest.raises(ValueError, match=r"'0x10'"):
        load_array(path, header="no")


def test_pandas_index_column_is_never_scored(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    values = np.array([[0.25, -1.0], [2.0, 3.5], [1.0, 1.0]])
    path = tmp_path / "indexed.csv"
    pd.DataFrame(values, columns=["a", "b"]).to_csv(path)  # ",a,b" then "0,0.25,-1.0"...
    with pytest.raises(ValueError, match=r'index="yes" to drop it, or index="no"'):
        load_array(path)
    np.testing.assert_array_equal(load_array(path, index="yes"), values)
    with_index = load_array(path, index="no")
    np.testing.assert_array_equal(with_index, np.c_[np.arange(3.0), values])
    plain = csv_file(tmp_path, "0,5\n1,6\n", name="plain.csv")
    np.testing.assert_array_equal(load_array(plain, index="yes"), [[5.0], [6.0]])


def test_header_only_and_empty_csv_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no rows of numbers"):
        load_array(csv_file(tmp_path, "a,b\n"))
    with pytest.raises(ValueError, match="is empty"):
        load_array(csv_file(tmp_path, "\n\n", name="blank.csv"))


def test_header_policy_values_are_checked(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "1,2\n")
    with pytest.raises(ValueError, match=r"`header` to be 'auto', 'yes' or 'no', got 'maybe'"):
        load_array(path, header="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`index` to be 'auto', 'yes' or 'no', got True"):
        load_array(path, index=True)  # type: ignore[arg-type]


def test_header_width_must_match_the_rows(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"header line of .* names 3 columns, but its rows have 2"):
        load_array(csv_file(tmp_path, "a,b,c\n1,2\n"))


def test_text_header_and_comments(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "# written by np.savetxt\nlogit_a,logit_b\n\n1,2\n3,4\n")
    np.testing.assert_array_equal(load_array(path), [[1.0, 2.0], [3.0, 4.0]])


def test_targets_starting_at_class_zero_are_ambiguous(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "0\n1\n2\n")
    with pytest.raises(ValueError, match='header="no"'):
        load_targets(path)
    np.testing.assert_array_equal(load_targets(path, header="no"), [0, 1, 2])
    np.testing.assert_array_equal(load_targets(csv_file(tmp_path, "2\n0\n", name="b.csv")), [2, 0])


@given(
    values=st.lists(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=4),
        min_size=1,
        max_size=6,
    ).filter(lambda rows: len({len(r) for r in rows}) == 1),
    header=st.sampled_from(["none", "pandas", "text"]),
    bom=st.booleans(),
    index=st.booleans(),
)
def test_every_csv_reads_back_or_refuses(
    tmp_path_factory: pytest.TempPathFactory,
    values: list[list[float]],
    header: str,
    bom: bool,
    index: bool,
) -> None:
    """A file as NumPy or pandas write them either reads back exactly or is refused with the
    option that settles it: never a row or a column more or less."""
    array = np.array(values)
    lines = [",".join(repr(v) for v in row) for row in values]
    if index:
        lines = [f"{i},{line}" for i, line in enumerate(lines)]
    if header != "none":
        names = [str(c) if header == "pandas" else f"c{c}" for c in range(array.shape[1])]
        lines.insert(0, ",".join([""] * index + names))
    path = csv_file(tmp_path_factory.mktemp("csv"), "\n".join(lines) + "\n", bom=bom)
    try:
        got = load_array(path)
    except ValueError as error:
        message = str(error)
        got = None
    if got is None:
        assert 'header="' in message or 'index="' in message
    else:
        np.testing.assert_array_equal(got, array)
    policy = {"header": "no" if header == "none" else "yes", "index": "yes" if index else "no"}
    np.testing.assert_array_equal(load_array(path, **policy), array)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- npz bound


def deflated_npz(path: Path, array: np.ndarray) -> Path:
    np.savez_compressed(path, big=array)
    return path


def test_npz_expansion_is_bounded(tmp_path: Path) -> None:
    path = deflated_npz(tmp_path / "bomb.npz", np.zeros(4 << 20, dtype=np.uint8))  # 4 MiB
    assert path.stat().st_size < 64 << 10
    with pytest.raises(
        ValueError, match=r"expands to 4\.0 MiB.*limit of 1\.0 MiB.*decompress_limit=5 << 20\."
    ):
        load_array(path, decompress_limit=1 << 20)
    assert load_array(path, decompress_limit=5 << 20).shape == (4 << 20,)  # the advice works
    assert oio.DECOMPRESS_LIMIT == 1 << 30  # the documented default


def test_decompress_limit_does_not_apply_to_stored_members(tmp_path: Path) -> None:
    path = tmp_path / "stored.npz"
    np.savez(path, a=np.zeros(1 << 18))  # 2 MiB stored: the file is as large as the array
    assert load_array(path, decompress_limit=1 << 10).shape == (1 << 18,)


def test_npz_with_a_lying_size_is_refused(tmp_path: Path) -> None:
    """The zip directory's size bounds what is decompressed: a member that claims less
    than it holds fails its checksum instead of expanding."""
    path = deflated_npz(tmp_path / "liar.npz", np.zeros(1 << 20))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("big.npy")
    # Patch the uncompressed size in the central directory and the local header to 1 KiB.
    for offset in [i for i in range(len(data) - 4) if data[i : i + 4] == b"PK\x01\x02"]:
        data[offset + 24 : offset + 28] = (1024).to_bytes(4, "little")
    data[info.header_offset + 22 : info.header_offset + 26] = (1024).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="Cannot read"):
        load_array(path, decompress_limit=1 << 20)


# ---------------------------------------------------------------------------- torch files


def test_pt_dict_with_non_string_keys(tmp_path: Path) -> None:
    path = tmp_path / "k.pt"
    torch.save({0: torch.ones(2, 3), "b": torch.zeros(1, 3)}, path)
    np.testing.assert_array_equal(load_array(path, key="0"), np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"has no array '1'; it has: 0, b"):
        load_array(path, key="1")


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (torch.empty(2, 3, device="meta"), "meta device"),
        (torch.ones(2, 3, dtype=torch.complex64), "complex64 values, expected real numbers"),
        (torch.ones(2, 3).to_sparse(), "sparse"),
        ("quantized", "quantized"),
    ],
)
def test_pt_tensors_that_are_not_plain_arrays(
    tmp_path: Path, tensor: torch.Tensor | str, message: str
) -> None:
    if tensor == "quantized":
        with warnings.catch_warnings():  # torch deprecates making them, not reading them
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.quantize_per_tensor(torch.ones(2, 2), 0.1, 0, torch.qint8)
    path = tmp_path / "t.pt"
    torch.save(tensor, path)
    with pytest.raises(ValueError, match=message) as info:
        load_array(path)
    assert "'t.pt'" in str(info.value) or str(path) in str(info.value)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.bfloat16])
def test_pt_low_precision_floats_are_read_exactly(tmp_path: Path, dtype: torch.dtype) -> None:
    tensor = torch.tensor([[0.5, -2.0], [1.5, 8.0]]).to(dtype)
    path = tmp_path / "low.pt"
    torch.save(tensor, path)
    array = load_array(path)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, tensor.float().numpy())


def test_zero_d_array_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "scalar.npy"
    np.save(path, np.float64(3.0))
    with pytest.raises(ValueError, match=r"a single number \(a 0-d array\)"):
        load_array(path)


# ---------------------------------------------------------------------------- writing


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".csv"])
def test_write_array_matches_encode_array(tmp_path: Path, suffix: str) -> None:
    scores = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    path = tmp_path / f"s{suffix}"
    write_array(path, scores)
    if suffix == ".csv":
        assert path.read_bytes() == oio.encode_array(scores, suffix)
    np.testing.assert_array_equal(load_array(path, header="yes").ravel().astype(np.float32), scores)


def test_csv_is_written_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writing, "WRITE_CHUNK", 7)
    writes: list[int] = []

    class Spy:
        def __init__(self, stream: object) -> None:
            self.stream = stream

        def write(self, data: bytes) -> int:
            writes.append(len(data))
            return self.stream.write(data)  # type: ignore[attr-defined]

    real = writing.write_csv
    monkeypatch.setattr(writing, "write_csv", lambda stream, array: real(Spy(stream), array))
    scores = np.arange(50, dtype=np.float64)
    write_array(tmp_path / "s.csv", scores)
    assert len(writes) >= 50 // 7
    np.testing.assert_array_equal(load_array(tmp_path / "s.csv", header="yes").ravel(), scores)


PEAK_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from oodscore.io import write_array
    scores = np.random.default_rng(0).normal(size=2_000_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    write_array(sys.argv[1], scores)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """
)


@pytest.mark.parametrize("suffix", [".csv", ".npy"])
def test_writing_scores_takes_bounded_memory(tmp_path: Path, suffix: str) -> None:
    """2M float64 scores (16 MB): writing them must not hold their text, nor copies."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / f"s{suffix}")],
        capture_output=True,
        text=True,
        check=True,
    )
    growth_mib = int(result.stdout) / 1024  # ru_maxrss is in KiB on Linux
    assert growth_mib < 24, f"peak RSS grew by {growth_mib:.0f} MiB"


def test_a_signal_mid_write_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def interrupted(stream: object, array: np.ndarray) -> None:
        stream.write(b"partial")  # type: ignore[attr-defined]
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(writing, "write_csv", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_array(tmp_path / "s.csv", np.ones(3))
    assert calls == [1]
    assert list(tmp_path.iterdir()) == []


def test_sigterm_mid_write_removes_the_temporary_file(tmp_path: Path) -> None:
    """A real SIGTERM, delivered while a chunked CSV write is under way."""
    script = textwrap.dedent(
        """
        import os, signal, sys
        import numpy as np
        from oodscore import _writing as writing
        from oodscore.cli import main
        np.save(sys.argv[1] + "/logits.npy", np.zeros((50, 3)))
        real = writing.write_csv
        def slow(stream, array):
            stream.write(b"scores\\n")
            os.kill(os.getpid(), signal.SIGTERM)
            real(stream, array)
        writing.write_csv = slow
        sys.exit(main(["score", "msp", sys.argv[1] + "/logits.npy", "-o", sys.argv[1] + "/s.csv"]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logits.npy"]
    assert os.name == "posix"


@pytest.mark.parametrize(("text", "name"), [("1;2\n3;4\n", "semicolons"), ("1\t2\n3\t4\n", "tabs")])
def test_other_separators_are_named(tmp_path, text: str, name: str) -> None:
    """A semicolon file once read its first line as a header and blamed line 2."""
    path = tmp_path / "other.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"Line 1 of .*separated by {name}: expected comma"):
        load_array(path)
