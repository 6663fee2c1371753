"""Atomic, streamed writing of array files: the writing half of `oodscore.io`.

A write goes through a temporary file in the destination's folder and an atomic rename,
refuses an existing destination unless ``force=True``, never writes over one of the inputs,
and writes large arrays piece by piece.
"""

from __future__ import annotations

import io
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Mapping
from itertools import repeat
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from oodscore._wording import option

WRITABLE = (".npy", ".npz", ".pt", ".pth", ".csv")
"""File extensions `write_array` writes."""

WRITE_CHUNK = 1 << 16
"""Values formatted per write when a CSV file is written (about 1.5 MB of text)."""

Writer = Callable[[IO[bytes]], None]


def _name(path: Path) -> str:
    return repr(str(path))


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | str | Writer,
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename.

    ``data`` is bytes, text (written as UTF-8), or a function that writes to the binary
    stream it is given (so that large outputs are written piece by piece). The temporary
    file, ``.NAME.<random>.tmp`` next to ``path``, is removed on any error and on an
    interrupt (an exception such as ``KeyboardInterrupt``; the command line turns SIGTERM
    and SIGHUP into one). Only a process killed outright (SIGKILL, a power cut) leaves it.

    Raises:
        FileExistsError: If ``path`` exists and ``force`` is false.
        IsADirectoryError: If ``path`` is a directory.
        ValueError: If ``path`` is one of ``inputs`` (never overwritten, even with ``force``).
    """
    target = Path(path)
    _check_output(target, {Path(p).resolve() for p in inputs}, force=force)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"No such directory: {_name(target.parent)}.")
    temp = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
    # O_EXCL never reuses an existing path; mode 0o666 lets the umask decide, as open() does.
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            if callable(data):
                data(stream)
            else:
                stream.write(data.encode() if isinstance(data, str) else data)
            stream.flush()
            os.fsync(stream.fileno())
        if target.exists():  # an overwritten file keeps its mode
            os.chmod(temp, stat.S_IMODE(target.stat().st_mode))
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _check_output(path: Path, inputs: set[Path], *, force: bool) -> None:
    if path.resolve() in inputs:
        raise ValueError(f"Refusing to overwrite the input file {_name(path)}.")
    if path.is_dir():
        raise IsADirectoryError(f"{_name(path)} is a directory; name a file to write.")
    if path.exists() and not force:
        how = option("force=True", "--force")
        raise FileExistsError(f"{_name(path)} exists; pass {how} to overwrite it.")


def check_outputs(
    outputs: Iterable[str | os.PathLike[str]],
    inputs: Iterable[str | os.PathLike[str]],
    *,
    force: bool = False,
) -> None:
    """Check, before any work, that the ``outputs`` can be written.

    Raises:
        ValueError: If an output is one of ``inputs`` or two outputs are the same file.
        FileExistsError: If an output exists and ``force`` is false.
        IsADirectoryError: If an output is a directory.
        FileNotFoundError: If the folder of an output does not exist.
    """
    resolved_inputs = {Path(p).resolve() for p in inputs}
    seen = set()
    for output in outputs:
        path = Path(output)
        _check_output(path, resolved_inputs, force=force)
        resolved = path.resolve()
        if resolved in seen:
            raise ValueError(f"Two outputs are the same file {_name(path)}.")
        seen.add(resolved)
        if not path.parent.is_dir():
            raise FileNotFoundError(f"No such directory: {_name(path.parent)}.")


def write_array(
    path: str | os.PathLike[str],
    array: np.ndarray[Any, Any],
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> None:
    """Write ``array`` to ``path`` in the format of its extension, atomically (`write_atomic`).

    ``.npz`` files store it under the key ``scores``; ``.csv`` files write a ``scores``
    header and one value per line with enough digits to round-trip. Nothing is built whole
    in memory: NumPy and torch write from the array, CSV text is formatted and written
    `WRITE_CHUNK` values at a time.

    Raises:
        ValueError: On another extension, and as `write_atomic`.
    """
    writer = _writer(np.asarray(array), Path(path).suffix)
    write_atomic(path, writer, force=force, inputs=inputs)


def encode_array(array: np.ndarray[Any, Any], suffix: str) -> bytes:
    """Serialize ``array`` in the format of the extension ``suffix`` (see `write_array`)."""
    buffer = io.BytesIO()
    _writer(np.asarray(array), suffix)(buffer)
    return buffer.getvalue()


def _writer(array: np.ndarray[Any, Any], suffix: str) -> Writer:
    suffix = suffix.lower()
    if suffix == ".npy":
        return lambda stream: np.save(stream, array, allow_pickle=False)
    if suffix == ".npz":
        return lambda stream: np.savez(stream, scores=array)
    if suffix in (".pt", ".pth"):
        return lambda stream: torch.save(torch.from_numpy(np.ascontiguousarray(array)), stream)
    if suffix == ".csv":
        return lambda stream: write_csv(stream, array)
    raise ValueError(f"Cannot write {suffix!r} files: expected one of {', '.join(WRITABLE)}.")


def write_csv(stream: IO[bytes], array: np.ndarray[Any, Any]) -> None:
    """Write a ``scores`` header, then one value of ``array`` per line, to a binary stream.

    Values have enough digits to round-trip (9 for float32, 17 otherwise) and are formatted
    and written `WRITE_CHUNK` at a time, so the text never exists whole in memory.
    """
    write_csv_columns(stream, {"scores": array.reshape(-1)})


def write_csv_columns(stream: IO[bytes], columns: Mapping[str, np.ndarray[Any, Any]]) -> None:
    """Write a header of the column names, then one line per row, to a binary stream.

    The columns are 1-D and of one length. Floats have enough digits to round-trip (9 for
    float32, 17 otherwise), booleans are written 0/1, integers as they are; the rows are
    formatted and written `WRITE_CHUNK` at a time, so the text never exists whole in memory.
    """
    stream.write((",".join(columns) + "\n").encode())
    arrays = list(columns.values())
    specs = [_csv_spec(array.dtype) for array in arrays]
    count = len(arrays[0]) if arrays else 0
    for start in range(0, count, WRITE_CHUNK):
        cells = [
            list(map(format, array[start : start + WRITE_CHUNK].tolist(), repeat(spec)))
            for array, spec in zip(arrays, specs, strict=True)
        ]
        lines = cells[0] if len(cells) == 1 else [",".join(row) for row in zip(*cells, strict=True)]
        stream.write(("\n".join(lines) + "\n").encode())


def _csv_spec(dtype: np.dtype[Any]) -> str:
    """The `format` spec of a CSV column: integers (booleans: 0/1) as they are, floats exact."""
    if dtype.kind in "biu":
        return "d"
    return ".9g" if dtype == np.float32 else ".17g"
