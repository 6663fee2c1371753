"""``.npy`` files read safely, whole or memory-mapped, and row blocks that give their memory back.

`load_npy` checks the header before any data is read: no Python objects (nothing is
unpickled), and a file long enough for the shape it announces (a truncated file is an error
naming both sizes, never a crash on a short memory map). `row_blocks` walks the rows of an
array in blocks; for a memory-mapped file it hands the pages of each finished block back to
the operating system, so reading a file larger than the memory costs one block of it.
"""

from __future__ import annotations

import contextlib
import math
import mmap
from collections.abc import Callable, Iterator
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
    array: np.ndarray[Any, Any], rows: int
) -> Iterator[tuple[int, np.ndarray[Any, Any]]]:
    """``(start, array[start:start + rows])`` for each block of rows, in order.

    The blocks are views. Once the caller asks for the next block, the pages of a
    memory-mapped file (from `load_npy`) that the previous block used are given back
    (``madvise(MADV_DONTNEED)``): they stay in the system's file cache, but no longer count
    in this process's memory. A view kept by the caller stays valid (it is read from the
    file again if used). Other arrays are only sliced.
    """
    release = _page_release(array)
    for start in range(0, array.shape[0], rows):
        stop = min(start + rows, array.shape[0])
        yield start, array[start:stop]
        release(start, stop)


def release_pages(array: np.ndarray[Any, Any]) -> None:
    """Give back the pages of a memory-mapped file that ``array`` (from `load_npy`) has read.

    For an array used whole (the ID logits of an accuracy); a no-op for other arrays.
    """
    if array.ndim:
        _page_release(array)(0, array.shape[0])


def _page_release(array: np.ndarray[Any, Any]) -> Callable[[int, int], None]:
    """A function that gives back the pages of rows ``[start, stop)`` of a C-ordered memory map.

    A no-op for other arrays, for Fortran-ordered files (whose rows are spread over the
    whole file) and where the system has no ``madvise``.
    """
    mapping = array.base
    if (
        not isinstance(array, np.memmap)
        or not isinstance(mapping, mmap.mmap)
        or not array.flags.c_contiguous
        or not hasattr(mmap, "MADV_DONTNEED")
        or array.ndim == 0
    ):
        return lambda start, stop: None
    # np.memmap maps from a page boundary up to the array's last byte.
    lead = len(mapping) - array.nbytes
    row_bytes = array.itemsize * math.prod(array.shape[1:])

    def release(start: int, stop: int) -> None:
        first = (lead + start * row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        end = (lead + stop * row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > first:
            with contextlib.suppress(OSError, ValueError):  # only memory use is at stake
                mapping.madvise(mmap.MADV_DONTNEED, first, end - first)

    return release
