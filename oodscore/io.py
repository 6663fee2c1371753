"""Safe reading and writing of array files (logits, features, targets, scores).

Nothing is unpickled, nothing overwritten, nothing guessed.

Readers accept ``.npy``, ``.npz``, ``.pt``/``.pth`` and ``.csv``. They never execute code from a
file: NumPy files load with ``allow_pickle=False`` and torch files with ``weights_only=True``.
Compressed members of ``.npz`` and ``.pt`` files may expand to at most `DECOMPRESS_LIMIT`
bytes (``decompress_limit=``). A CSV file's header line and row-index column are read as the
``header`` and ``index`` policies say; where a file could be read two ways, ``"auto"`` refuses
it and names the option that settles it.

``.npy`` files can be memory-mapped (``load_array(path, mmap=True)``) and walked in row blocks
(`row_blocks`) read from the file one at a time: the command line reads a file larger than
the memory one block at a time.

Writers go through a temporary file in the destination's folder and an atomic rename, refuse
an existing destination unless ``force=True``, and never write over one of the inputs. Arrays
are written in chunks (`write_array`): a large CSV never exists as one string in memory.

Messages that name a setting use the Python keyword (``key=``, ``force=True``); under the
command line they name its option (``--key``, ``--force``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodscore._csv import check_policy, read_csv
from oodscore._formats import DECOMPRESS_LIMIT, POLICIES, READABLE, CsvPolicy, parse_size
from oodscore._npy import load_npy, row_blocks
from oodscore._wording import option
from oodscore._writing import (
    WRITE_CHUNK,
    check_outputs,
    encode_array,
    write_array,
    write_atomic,
    write_csv,
)

__all__ = [
    "DECOMPRESS_LIMIT",
    "POLICIES",
    "READABLE",
    "WRITE_CHUNK",
    "CsvPolicy",
    "check_file",
    "check_outputs",
    "check_suffix",
    "encode_array",
    "load_array",
    "load_head",
    "load_targets",
    "load_torch",
    "parse_size",
    "row_blocks",
    "write_array",
    "write_atomic",
    "write_csv",
]


def load_array(
    path: str | os.PathLike[str],
    *,
    key: str | None = None,
    header: CsvPolicy = "auto",
    index: CsvPolicy = "auto",
    decompress_limit: int = DECOMPRESS_LIMIT,
    mmap: bool = False,
) -> np.ndarray[Any, Any]:
    """Read one numeric array from ``path``.

    Args:
        path: A ``.npy``, ``.npz``, ``.pt``/``.pth`` (a tensor, or a dict of tensors) or ``.csv``
            (comma-separated numbers, one row per line; UTF-8, with or without a byte-order
            mark; blank lines and ``#`` comments skipped) file.
        key: Which array of an ``.npz`` file or of a dict saved in a ``.pt`` file; may be
            omitted when the file holds exactly one. Keys of a dict are compared as text
            (``"0"`` picks the key ``0``).
        header: Whether the first line of a CSV file names the columns. ``"auto"`` takes a
            line of text for a header and a line of numbers for data, and refuses a line
            that mixes both or that is exactly ``0,1,...,C-1`` (pandas' default column
            names, or a row of data).
        index: Whether the first column of a CSV file is a row index (dropped) or data.
            ``"auto"`` refuses a first column with no name in the header or that holds
            exactly ``0, 1, ..., N-1``, as pandas writes its index.
        decompress_limit: Bytes that a compressed member of an ``.npz`` or ``.pt`` file
            may expand to (default `DECOMPRESS_LIMIT`).
        mmap: Return a ``.npy`` file's array as a read-only memory map: nothing is read
            until rows are used. Walk them with `row_blocks`, which reads each block from
            the file (a file cut short meanwhile is a ``ValueError``; a map read directly
            would crash the process with SIGBUS). Other formats are read whole either way.

    Raises:
        ValueError: On an unknown extension, a missing or ambiguous key, a CSV file that
            ``"auto"`` could read two ways, contents that are not a numeric array (a 0-d
            array, complex, meta, sparse or quantized tensors), a truncated ``.npy`` file,
            or a member over ``decompress_limit``.
        OSError: If the file cannot be read.
    """
    path = Path(path)
    suffix = check_suffix(path)
    check_policy(header, "header")
    check_policy(index, "index")
    check_file(path)
    if suffix == ".npy":
        array = load_npy(path, mmap_mode=mmap)
    elif suffix == ".npz":
        array = _load_npz(path, key, decompress_limit)
    elif suffix in (".pt", ".pth"):
        array = _load_torch(path, key, decompress_limit)
    else:
        array = read_csv(path, header=header, index=index)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{_name(path)} holds {array.dtype} values, expected real numbers.")
    if array.ndim == 0:
        raise ValueError(
            f"{_name(path)} holds a single number (a 0-d array), expected an array of rows."
        )
    return array


def _name(path: Path) -> str:
    return repr(str(path))


def check_file(path: str | os.PathLike[str]) -> None:
    """Raise an ``OSError`` naming ``path`` if it is not a file (missing, or a directory).

    The command line checks its inputs with it before any work.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{_name(path)} is a directory, not a file.")
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {_name(path)}.")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__).rstrip(".")


def _load_npz(path: Path, key: str | None, limit: int) -> np.ndarray[Any, Any]:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:  # BadZipFile, EOFError on an empty file, ...
        raise ValueError(
            f"Cannot read {_name(path)} as a .npz archive: {_first_line(error)}."
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{_name(path)} is a .npy file, not an .npz archive; name it .npy.")
    with archive:
        name = _pick_key(path, list(archive.files), key)
        zipped = archive.zip
        assert zipped is not None  # open until the end of the `with`
        member = f"{name}.npy" if f"{name}.npy" in zipped.namelist() else name
        _check_expansion(path, [zipped.getinfo(member)], limit, f"array {name!r}")
        try:
            return np.asarray(archive[name])
        except ValueError as error:
            raise ValueError(f"Cannot read {_name(path)}: {error}") from None
        except Exception as error:  # a bad checksum, a truncated member, ...
            raise ValueError(f"Cannot read {_name(path)}: {_first_line(error)}.") from None


def _check_expansion(path: Path, members: Iterable[zipfile.ZipInfo], limit: int, what: str) -> None:
    """Refuse compressed zip members that expand past ``limit`` bytes.

    The sizes are the zip directory's; `zipfile` stops at them (a member that claims less
    than it holds fails its checksum), so they bound what is decompressed.
    """
    size = sum(m.file_size for m in members if m.compress_type != zipfile.ZIP_STORED)
    if size > limit:
        raise ValueError(
            f"{_name(path)}: {what} expands to {_size(size)} when decompressed, over the "
            f"limit of {_size(limit)} for compressed files; if you trust the file, raise it "
            f"with {_raise_limit(size)}."
        )


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def _raise_limit(n: int) -> str:
    """How to set a limit of the whole MiB (or GiB) at least ``n`` bytes, as the reader sets it."""
    shift, unit = (30, "G") if n >= 1 << 30 else (20, "M")
    count = -(-n // (1 << shift))
    return option(f"decompress_limit={count} << {shift}", f"--decompress-limit {count}{unit}")


def load_torch(path: str | os.PathLike[str], *, decompress_limit: int = DECOMPRESS_LIMIT) -> object:
    """What ``torch.save`` wrote to ``path``, read with ``weights_only=True`` onto the CPU.

    Only tensors, numbers, strings and containers of them come back: a file that would need
    other classes (pickled code) is refused before anything in it runs. torch writes its
    files uncompressed; a zip file whose compressed members expand past
    ``decompress_limit`` bytes is refused before it is read.

    Raises:
        ValueError: If the file is not a torch file, needs more than weights to load, or
            expands past ``decompress_limit``.
        OSError: If the file is missing or cannot be read.
    """
    path = Path(path)
    check_file(path)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                members = archive.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as error:
            raise ValueError(
                f"Cannot read {_name(path)} as safe torch weights: {_first_line(error)}."
            ) from None
        _check_expansion(path, members, decompress_limit, "its contents")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError...
        reason = _torch_load_reason(error)
        raise ValueError(f"Cannot read {_name(path)} as safe torch weights: {reason}") from None


def _torch_load_reason(error: Exception) -> str:
    """One sentence of why ``torch.load`` failed, without torch's advice to load unsafely."""
    text = str(error).strip()
    if isinstance(error, pickle.UnpicklingError):
        detail = text.partition("WeightsUnpickler error:")[2]
        detail = " ".join(detail.partition("Check the documentation")[0].split()).split(". ")[0]
        reason = "it holds more than tensors, numbers and strings, and loading it could run code"
        return f"{reason} ({detail.rstrip('.')})." if detail else f"{reason}."
    first_line = text.splitlines()[0] if text else type(error).__name__
    return first_line.split(". ")[0].rstrip(".") + "."


def load_targets(
    path: str | os.PathLike[str],
    *,
    key: str | None = None,
    header: CsvPolicy = "auto",
    index: CsvPolicy = "auto",
    decompress_limit: int = DECOMPRESS_LIMIT,
) -> np.ndarray[Any, Any]:
    """Read targets with `load_array`: class ids (N,) as int64, or multi-hot labels (N, C).

    A one-column array (a CSV of one value per line) is read as class ids; whole numbers
    stored as floats become int64. The keyword arguments are `load_array`'s.

    Raises:
        ValueError: On class ids that are not whole numbers, and as `load_array`.
    """
    targets = load_array(
        path, key=key, header=header, index=index, decompress_limit=decompress_limit
    )
    if targets.ndim == 2 and targets.shape[1] == 1:  # a one-column CSV of classes
        targets = targets[:, 0]
    if targets.ndim == 1 and targets.dtype.kind == "f":
        if not (targets == targets.round()).all():
            raise ValueError(f"{str(path)!r} holds non-integer class indices.")
        targets = targets.astype("int64")
    return targets


def load_head(
    path: str | os.PathLike[str],
    *,
    prefix: str | None = None,
    decompress_limit: int = DECOMPRESS_LIMIT,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any] | None]:
    """Read a classifier head: its weight (C, D) and its bias (C,), or ``None`` for none.

    Args:
        path: A ``.pt``/``.pth`` file of a dict of tensors (what
            ``torch.save(model.fc.state_dict(), path)`` writes) or an ``.npz`` archive, with
            the arrays ``"weight"`` and, optionally, ``"bias"``; or a ``.npy`` file of the
            weight alone (a head without a bias).
        prefix: The head's name in a whole model's state dict: ``"fc"`` reads
            ``"fc.weight"`` and ``"fc.bias"``.
        decompress_limit: As in `load_array`.

    Raises:
        ValueError: On another format, a missing weight, arrays of other names or numbers
            of dimensions, and as `load_array`.
        OSError: If the file cannot be read.

    Examples:
        >>> import pathlib, tempfile, torch
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "head.pt"
        >>> torch.save(torch.nn.Linear(4, 3).state_dict(), path)
        >>> weight, bias = load_head(path)
        >>> weight.shape, bias.shape
        ((3, 4), (3,))
    """
    path = Path(path)
    suffix = check_suffix(path)
    check_file(path)
    names = ("weight", "bias") if not prefix else (f"{prefix}.weight", f"{prefix}.bias")
    if suffix == ".npy":
        if prefix:
            raise ValueError(f"{_name(path)} holds one array, the weight: it has no {prefix!r}.")
        arrays: dict[str, np.ndarray[Any, Any]] = {names[0]: load_npy(path)}
    elif suffix == ".npz":
        present = _npz_names(path)
        _check_head_entries(path, present, prefix)
        arrays = {
            name: _load_npz(path, name, decompress_limit) for name in names if name in present
        }
    elif suffix in (".pt", ".pth"):
        saved = load_torch(path, decompress_limit=decompress_limit)
        if not isinstance(saved, dict):
            raise ValueError(
                f"{_name(path)} holds a {type(saved).__name__}, expected a dict of the head's "
                "'weight' and 'bias' (save layer.state_dict())."
            )
        _check_head_entries(path, [str(k) for k in saved], prefix)
        arrays = {}
        for name in names:
            if name in saved:
                if not isinstance(saved[name], torch.Tensor):
                    kind = type(saved[name]).__name__
                    raise ValueError(f"{_name(path)}: {name!r} is a {kind}, expected a tensor.")
                arrays[name] = _tensor_to_numpy(saved[name], path)
    else:
        raise ValueError(f"Expected a head in a .pt, .pth, .npz or .npy file, got {_name(path)}.")
    if names[0] not in arrays:
        raise ValueError(
            f"{_name(path)} has no array {names[0]!r}: a head file holds {names[0]!r} (C, D) "
            f"and optionally {names[1]!r} (C,)."
        )
    weight, bias = arrays[names[0]], arrays.get(names[1])
    if weight.ndim != 2 or (bias is not None and bias.ndim != 1):
        got = f"{weight.shape}" + ("" if bias is None else f" and {bias.shape}")
        raise ValueError(
            f"{_name(path)}: expected a weight (C, D) and a bias (C,), got shapes {got}."
        )
    return weight, bias


def _check_head_entries(path: Path, present: list[str], prefix: str | None) -> None:
    """Refuse a head file (without ``prefix``) that holds more than ``weight`` and ``bias``.

    A bias saved under another name would otherwise be left out without a word. With a
    prefix the file is a whole model's state dict, whose other entries are not the head's.
    """
    if prefix:
        return
    others = sorted(set(present) - {"weight", "bias"})
    if others:
        raise ValueError(
            f"{_name(path)} holds {', '.join(map(repr, others))} besides the head's 'weight' "
            "and 'bias'; save the head alone, or name it in a model's state dict with "
            f"{option('prefix=', 'PATH::PREFIX')}."
        )


def _npz_names(path: Path) -> list[str]:
    """The names of the arrays of an ``.npz`` archive (its directory only is read)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return list(archive.files)
    except Exception as error:  # BadZipFile, EOFError on an empty file, ...
        raise ValueError(
            f"Cannot read {_name(path)} as a .npz archive: {_first_line(error)}."
        ) from None


def _load_torch(path: Path, key: str | None, limit: int) -> np.ndarray[Any, Any]:
    obj = load_torch(path, decompress_limit=limit)
    if isinstance(obj, dict):
        by_text = {str(k): k for k in obj}
        if len(by_text) < len(obj):
            raise ValueError(
                f"{_name(path)} holds a dict with keys that read the same as text "
                f"({', '.join(repr(k) for k in obj)}); save it with distinct string keys."
            )
        obj = obj[by_text[_pick_key(path, list(by_text), key)]]
    elif key is not None:
        given = option(
            f"key={key!r} does not apply",
            f"the key {key!r} does not apply (give a file its own key with PATH::KEY, and "
            "--key only to files that hold several arrays)",
        )
        raise ValueError(f"{_name(path)} holds a single tensor; {given}.")
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{_name(path)} holds a {type(obj).__name__}, expected a tensor.")
    return _tensor_to_numpy(obj, path)


def _tensor_to_numpy(tensor: torch.Tensor, path: Path) -> np.ndarray[Any, Any]:
    """The values of a dense CPU tensor; others are refused with a message of our own."""
    where = _name(path)
    if tensor.is_meta:
        raise ValueError(
            f"{where} holds a tensor on the meta device: a shape without values; save the "
            "tensor with its values."
        )
    if tensor.is_quantized:
        raise ValueError(
            f"{where} holds a quantized tensor ({tensor.dtype}); save tensor.dequantize()."
        )
    if tensor.layout != torch.strided or tensor.is_nested:
        layout = "nested" if tensor.is_nested else str(tensor.layout).removeprefix("torch.")
        raise ValueError(f"{where} holds a {layout} tensor; save tensor.to_dense().")
    if tensor.is_complex() or tensor.dtype == torch.bool:
        name = str(tensor.dtype).removeprefix("torch.")
        raise ValueError(f"{where} holds {name} values, expected real numbers.")
    tensor = tensor.detach()
    if tensor.is_floating_point() and tensor.dtype not in (
        torch.float16,
        torch.float32,
        torch.float64,
    ):
        # bfloat16 and the float8 formats: exact in float32, which NumPy has
        with contextlib.suppress(RuntimeError, TypeError):
            tensor = tensor.float()
    try:
        return tensor.numpy()
    except (RuntimeError, TypeError):
        name = str(tensor.dtype).removeprefix("torch.")
        raise ValueError(
            f"{where} holds {name} values, which NumPy cannot hold; save them as float32."
        ) from None


def _pick_key(path: Path, keys: list[str], key: str | None) -> str:
    if key is None:
        if len(keys) == 1:
            return keys[0]
        how = option("key=", f"--key KEY, or {str(path) + '::KEY'!r} for this file alone")
        raise ValueError(
            f"{str(path)!r} holds {len(keys)} arrays ({', '.join(keys) or 'none'}); "
            f"choose one with {how}."
        )
    if key not in keys:
        raise ValueError(f"{str(path)!r} has no array {key!r}; it has: {', '.join(keys)}.")
    return key


def check_suffix(path: str | os.PathLike[str]) -> str:
    """The lower-case extension of ``path`` after checking it is one of `READABLE`."""
    suffix = Path(path).suffix.lower()
    if suffix not in READABLE:
        raise ValueError(
            f"Cannot handle {str(path)!r}: expected one of {', '.join(READABLE)}, got {suffix!r}."
        )
    return suffix
