"""``.npy`` files read safely, whole or memory-mapped, and walked in blocks read from the file.

`load_npy` checks the header before any data is read: no Python objects (nothing is
unpickled), and a file long enough for the shape it announces (a truncated file is an error
naming both sizes, never a crash on a short memory map). `row_blocks` walks the rows of an
array in blocks; for a memory-mapped file it reads each block from the file rather than
through the map, so reading a file larger than the memory costs one block of it, and a file
cut short meanwhile is an error rather than a crash.
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ZIP_MAGIC = b"PK\x03\x04"
"""The first bytes of a zip file, which an ``.npz`` archive is."""

_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _name(path: Path) -> str:
    return repr(str(path))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__).rstrip(".")


def load_npy(path: Path, *, mmap_mode: bool = False) -> np.ndarray[Any, Any]:
    """The array of the ``.npy`` file ``path``; with ``mmap_mode``, a read-only memory map.

    A memory map reads nothing up front: rows are read from the file when used (see
    `row_blocks`). The file must not be changed while the map is in use.

    Raises:
        ValueError: If the file is an ``.npz`` archive, not a ``.npy`` file, holds Python
            objects, or is shorter than its header says.
    """
    where = _name(path)
    try:
        with path.open("rb") as stream:
            is_zip = stream.read(len(ZIP_MAGIC)) == ZIP_MAGIC
            stream.seek(0)
            version = None if is_zip else np.lib.format.read_magic(stream)
            header = _HEADER_READERS[version](stream) if version in _HEADER_READERS else None
            offset = stream.tell()
    except Exception as error:  # EOFError on an empty file, a bad magic string, OSError...
        raise ValueError(f"Cannot read {where} as a .npy file: {_first_line(error)}.") from None
    if is_zip:
        raise ValueError(f"{where} is an .npz archive; name it .npz.")
    if header is None:
        assert version is not None
        raise ValueError(
            f"Cannot read {where} as a .npy file: format version {version[0]}.{version[1]} is "
            "not read here (versions 1.0 and 2.0 hold arrays of numbers)."
        )
    shape, _, dtype = header
    if dtype.hasobject:
        raise ValueError(
            f"Cannot read {where} without unpickling: it holds Python objects (dtype {dtype})."
        )
    needed = math.prod(shape) * dtype.itemsize
    held = path.stat().st_size - offset
    if held < needed:
        raise ValueError(
            f"Cannot read {where} as a .npy file: it is truncated; its header announces a "
            f"{shape} array of {dtype} ({needed} bytes of data), the file holds {held}."
        )
    try:
        array: np.ndarray[Any, Any] = np.load(
            path, mmap_mode="r" if mmap_mode else None, allow_pickle=False
        )
    except Exception as error:  # OSError, MemoryError, a file changed since the check...
        raise ValueError(f"Cannot read {where} as a .npy file: {_first_line(error)}.") from None
    return array


def row_blocks(
    array: np.ndarray[Any, Any], rows: int, *, reuse: bool = False
) -> Iterator[tuple[int, np.ndarray[Any, Any]]]:
    """``(start, array[start:start + rows])`` for each block of rows, in order.

    For a memory-mapped ``.npy`` file (from `load_npy`) with rows laid out one after the
    other, each block is read from the file, never through the map: the process holds one
    block, not the pages of the whole file, and a file cut short while it is read is a
    ``ValueError`` naming it, where a memory map would crash the process with SIGBUS. Other
    arrays are sliced (the blocks are views).

    Args:
        array: The rows.
        rows: Rows per block.
        reuse: Read every block of a file into one buffer: a block is valid only until the
            next is asked for (for a caller that is done with each block by then).

    Raises:
        ValueError: If the file holds fewer bytes than the array's rows when a block is
            read.
    """
    where = _file_region(array)
    if where is None:
        for start in range(0, array.shape[0], rows):
            yield start, array[start : start + rows]
        return
    path, offset = where
    row_shape = array.shape[1:]
    row_values = math.prod(row_shape)
    buffer = np.empty(min(rows, array.shape[0]) * row_values, dtype=array.dtype) if reuse else None
    with open(path, "rb") as stream:
        stream.seek(offset)
        for start in range(0, array.shape[0], rows):
            count = min(rows, array.shape[0] - start)
            block: np.ndarray[Any, Any] = (
                np.empty(count * row_values, dtype=array.dtype)
                if buffer is None
                else buffer[: count * row_values]
            )
            read = stream.readinto(block.data.cast("B"))
            if read < block.nbytes:
                raise ValueError(
                    f"{_name(Path(path))} changed while it was read: it ends before row "
                    f"{start + read // max(array.itemsize * row_values, 1)} of the "
                    f"{array.shape[0]} its header announced."
                )
            yield start, block.reshape(count, *row_shape)


def _file_region(array: np.ndarray[Any, Any]) -> tuple[str, int] | None:
    """The file and byte offset of the rows of a C-ordered memory map; ``None`` for others.

    np.memmap maps its file from the allocation boundary at or below its ``offset`` (kept
    by its slices too); the array's own first byte lies where its data pointer lies in that
    mapping, so a slice of a map (rows ``100:``) is found as well as the whole array.
    """
    mapping = array.base
    while isinstance(mapping, np.ndarray):
        mapping = mapping.base
    if (
        not isinstance(array, np.memmap)
        or not isinstance(mapping, mmap.mmap)
        or not isinstance(array.filename, (str, os.PathLike))
        or not array.flags.c_contiguous
        or array.ndim == 0
    ):
        return None
    mapped_from = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY
    start = np.frombuffer(mapping, dtype=np.uint8).ctypes.data
    return os.fspath(array.filename), mapped_from + array.ctypes.data - start
