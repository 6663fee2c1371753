"""Safe reading and writing of array files (logits, features, targets, scores).

Nothing is unpickled, nothing overwritten.

Readers accept ``.npy``, ``.npz``, ``.pt``/``.pth`` and ``.csv``. They never execute code from a
file: NumPy files load with ``allow_pickle=False`` and torch files with ``weights_only=True``.
Writers go through a temporary file in the destination's folder and an atomic rename, refuse
an existing destination unless ``force=True``, and never write over one of the inputs.
"""

from __future__ import annotations

import io
import os
import pickle
import secrets
import stat
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

READABLE = (".npy", ".npz", ".pt", ".pth", ".csv")
"""File extensions `load_array` reads."""


def load_array(path: str | os.PathLike[str], *, key: str | None = None) -> np.ndarray[Any, Any]:
    """Read one numeric array from ``path``.

    Args:
        path: A ``.npy``, ``.npz``, ``.pt``/``.pth`` (a tensor, or a dict of tensors) or ``.csv``
            (comma-separated numbers, one row per line, an optional header line) file.
        key: Which array of an ``.npz`` file or of a dict saved in a ``.pt`` file; may be
            omitted when the file holds exactly one.

    Raises:
        ValueError: On an unknown extension, a missing or ambiguous key, or contents that
            are not a numeric array.
        OSError: If the file cannot be read.
    """
    path = Path(path)
    suffix = check_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {str(path)!r}.")
    if suffix == ".npy":
        array = _load_npy(path)
    elif suffix == ".npz":
        array = _load_npz(path, key)
    elif suffix in (".pt", ".pth"):
        array = _load_torch(path, key)
    else:
        array = _load_csv(path)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{str(path)!r} holds {array.dtype} values, expected numbers.")
    return array


def _load_npy(path: Path) -> np.ndarray[Any, Any]:
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except ValueError as error:
        raise ValueError(f"Cannot read {str(path)!r} without unpickling: {error}") from None


def _load_npz(path: Path, key: str | None) -> np.ndarray[Any, Any]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return np.asarray(archive[_pick_key(path, list(archive.files), key)])
    except ValueError as error:
        raise ValueError(f"Cannot read {str(path)!r}: {error}") from None


def load_torch(path: str | os.PathLike[str]) -> object:
    """What ``torch.save`` wrote to ``path``, read with ``weights_only=True`` onto the CPU.

    Only tensors, numbers, strings and containers of them come back: a file that would need
    other classes (pickled code) is refused before anything in it runs.

    Raises:
        ValueError: If the file is not a torch file or needs more than weights to load.
        OSError: If the file is missing or cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {str(path)!r}.")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError...
        reason = _torch_load_reason(error)
        raise ValueError(f"Cannot read {str(path)!r} as safe torch weights: {reason}") from None


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


def load_targets(path: str | os.PathLike[str], *, key: str | None = None) -> np.ndarray[Any, Any]:
    """Read targets with `load_array`: class ids (N,) as int64, or multi-hot labels (N, C).

    A one-column array (a CSV of one value per line) is read as class ids; whole numbers
    stored as floats become int64.

    Raises:
        ValueError: On class ids that are not whole numbers, and as `load_array`.
    """
    targets = load_array(path, key=key)
    if targets.ndim == 2 and targets.shape[1] == 1:  # a one-column CSV of classes
        targets = targets[:, 0]
    if targets.ndim == 1 and targets.dtype.kind == "f":
        if not (targets == targets.round()).all():
            raise ValueError(f"{str(path)!r} holds non-integer class indices.")
        targets = targets.astype("int64")
    return targets


def _load_torch(path: Path, key: str | None) -> np.ndarray[Any, Any]:
    obj = load_torch(path)
    if isinstance(obj, dict):
        keys = [str(k) for k in obj]
        obj = obj[_pick_key(path, keys, key)]
    elif key is not None:
        raise ValueError(f"{str(path)!r} holds a single tensor; --key {key!r} does not apply.")
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, expected a tensor.")
    if obj.dtype == torch.bfloat16:
        obj = obj.float()
    return obj.detach().numpy()


def _load_csv(path: Path) -> np.ndarray[Any, Any]:
    text = path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{str(path)!r} is empty.")
    try:
        float(lines[0].split(",")[0])
    except ValueError:
        lines = lines[1:]  # a header line
    try:
        return np.loadtxt(io.StringIO("\n".join(lines)), delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"Cannot read {str(path)!r} as comma-separated numbers: {error}") from None


def _pick_key(path: Path, keys: list[str], key: str | None) -> str:
    if key is None:
        if len(keys) == 1:
            return keys[0]
        raise ValueError(
            f"{str(path)!r} holds {len(keys)} arrays ({', '.join(keys) or 'none'}); "
            "choose one with --key."
        )
    if key not in keys:
        raise ValueError(f"{str(path)!r} has no array {key!r}; it has: {', '.join(keys)}.")
    return key


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    force: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename.

    Raises:
        FileExistsError: If ``path`` exists and ``force`` is false.
        ValueError: If ``path`` is one of ``inputs`` (never overwritten, even with ``force``).
    """
    target = Path(path)
    resolved = target.resolve()
    for source in inputs:
        if Path(source).resolve() == resolved:
            raise ValueError(f"Refusing to overwrite the input file {str(target)!r}.")
    if target.exists() and not force:
        raise FileExistsError(f"{str(target)!r} exists; pass --force to overwrite it.")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"No such directory: {str(target.parent)!r}.")
    payload = data.encode() if isinstance(data, str) else data
    temp = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
    # O_EXCL never reuses an existing path; mode 0o666 lets the umask decide, as open() does.
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        if target.exists():
            os.chmod(
                temp, stat.S_IMODE(target.stat().st_mode)
            )  # an overwritten file keeps its mode
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


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
    """
    resolved_inputs = {Path(p).resolve() for p in inputs}
    seen = set()
    for output in outputs:
        path = Path(output)
        resolved = path.resolve()
        if resolved in resolved_inputs:
            raise ValueError(f"Refusing to overwrite the input file {str(path)!r}.")
        if resolved in seen:
            raise ValueError(f"Two outputs are the same file {str(path)!r}.")
        seen.add(resolved)
        if path.exists() and not force:
            raise FileExistsError(f"{str(path)!r} exists; pass --force to overwrite it.")


def check_suffix(path: str | os.PathLike[str]) -> str:
    """The lower-case extension of ``path`` after checking it is one of `READABLE`."""
    suffix = Path(path).suffix.lower()
    if suffix not in READABLE:
        raise ValueError(
            f"Cannot handle {str(path)!r}: expected one of {', '.join(READABLE)}, got {suffix!r}."
        )
    return suffix


def encode_array(array: np.ndarray[Any, Any], suffix: str) -> bytes:
    """Serialize ``array`` in the format of the extension ``suffix``.

    ``.npz`` files store it under the key ``scores``; ``.csv`` files write a ``scores``
    header and one value per line with enough digits to round-trip.
    """
    suffix = suffix.lower()
    buffer = io.BytesIO()
    if suffix == ".npy":
        np.save(buffer, array, allow_pickle=False)
    elif suffix == ".npz":
        np.savez(buffer, scores=array)
    elif suffix in (".pt", ".pth"):
        torch.save(torch.from_numpy(np.ascontiguousarray(array)), buffer)
    elif suffix == ".csv":
        digits = 9 if array.dtype == np.float32 else 17
        lines = ["scores"] + [f"{value:.{digits}g}" for value in np.asarray(array).ravel()]
        return ("\n".join(lines) + "\n").encode()
    else:
        raise ValueError(f"Cannot write {suffix!r} files: expected one of {', '.join(READABLE)}.")
    return buffer.getvalue()
