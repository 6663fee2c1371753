"""Options and argument syntax shared by the subcommands, with no heavy import.

Registering a subcommand imports only this kind of code (argparse, text parsing), so that
``oodscore score --help`` starts in a blink; NumPy, torch and the scorers are imported when a
command runs. The syntax:

- an input file is ``PATH`` or ``PATH::KEY``: the array ``KEY`` of an ``.npz`` file or of a
  dict saved in a ``.pt`` file (`InputFile`); ``--key`` gives the key of the others;
- a scorer is ``NAME`` or ``NAME:KEY=VALUE,...`` with Python literals as values, read by
  Python's own parser, so that a list (``mos:groups=[6,6]``) or a quoted string with commas
  cannot be split wrongly (`split_scorer`); ``--param KEY=VALUE`` takes one parameter;
- ``-o -`` writes to standard output (`STDOUT`).
"""

from __future__ import annotations

import argparse
import ast
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oodscore._formats import DECOMPRESS_LIMIT, KEYED, POLICIES, READABLE, parse_size

STDOUT = "-"
"""The output name that means standard output (a file named ``-`` is ``./-``)."""


@dataclass(frozen=True)
class InputFile:
    """An input file and, for files that hold several arrays, the key of the one to read."""

    path: Path
    key: str | None = None

    def __str__(self) -> str:
        return str(self.path) if self.key is None else f"{self.path}::{self.key}"


def input_file(text: str) -> InputFile:
    """``PATH`` or ``PATH::KEY`` (the argparse type of input options).

    The text splits at its last ``::`` when what comes before ends in an extension of a
    readable file (``data.npz::logits``); otherwise it is all path. A key is refused for
    ``.npy`` and ``.csv`` files, which hold one array.

    Examples:
        >>> from oodscore.commands.options import input_file
        >>> input_file("all.npz::test")
        InputFile(path=PosixPath('all.npz'), key='test')
        >>> input_file("logits.npy")
        InputFile(path=PosixPath('logits.npy'), key=None)
    """
    path, sep, key = text.rpartition("::")
    if not sep or Path(path).suffix.lower() not in READABLE:
        return InputFile(Path(text))
    if not key:
        raise argparse.ArgumentTypeError(f"expected PATH::KEY with a key after '::', got {text!r}")
    if Path(path).suffix.lower() not in KEYED:
        raise argparse.ArgumentTypeError(
            f"{path!r} holds one array: ::KEY applies to .npz and .pt files, got {text!r}"
        )
    return InputFile(Path(path), key)


def path_of(item: InputFile | Path | None) -> Path | None:
    """The path of an input option's value, whatever its type."""
    return item.path if isinstance(item, InputFile) else item


def add_key_option(parser: argparse.ArgumentParser) -> None:
    """``--key``: the key of the inputs given without their own ``PATH::KEY``."""
    parser.add_argument(
        "--key",
        help="the array to read from .npz files and from dicts saved in .pt files, for every "
        "input without its own PATH::KEY (not --head, which reads 'weight' and 'bias')",
    )


def add_reading_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how input files are read (`reading` turns them into arguments).

    ``--key`` is not among them (`add_key_option`); `reading` reads it.
    """
    group = parser.add_argument_group("reading files")
    group.add_argument(
        "--csv-header",
        choices=POLICIES,
        default="auto",
        help="whether the first line of CSV inputs names the columns (default auto: a line "
        "of text is a header, a line of numbers is data; refuses a line that could be either)",
    )
    group.add_argument(
        "--csv-index",
        choices=POLICIES,
        default="auto",
        help="whether the first column of CSV inputs is a row index to drop (default auto: "
        "refuses an unnamed first column or one that holds 0..N-1, as pandas writes it)",
    )
    group.add_argument(
        "--decompress-limit",
        type=_size,
        default=DECOMPRESS_LIMIT,
        metavar="SIZE",
        help="the most a compressed .npz or .pt input may expand to (default 1G; e.g. 4G)",
    )


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def reading(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of `oodscore.io.load_array` from the options of `add_reading_options`.

    ``key`` is the ``--key`` default; an `InputFile`'s own key replaces it.
    """
    return {
        "key": args.key,
        "header": args.csv_header,
        "index": args.csv_index,
        "decompress_limit": args.decompress_limit,
    }


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device``: where the scorers run."""
    parser.add_argument(
        "--device",
        default="cpu",
        help="where to score: cpu (default), cuda, cuda:1, mps, ...; the files are read on "
        "the CPU and moved there block by block",
    )


def add_head_option(parser: argparse.ArgumentParser) -> None:
    """``--head``: the classifier head of the scorers that apply one."""
    parser.add_argument(
        "--head",
        type=input_file,
        metavar="HEAD[::PREFIX]",
        help="the classifier head, for scorers that apply it (ash, dice, gradnorm, react, "
        "scale, vim): a .pt of an nn.Linear's state_dict or an .npz with 'weight' (C, D) and "
        "'bias' (C,), or a .npy of the weight; ::PREFIX reads PREFIX.weight and PREFIX.bias "
        "of a model's state_dict (e.g. model.pt::fc)",
    )


def split_scorer(text: str, option: str = "--scorer") -> tuple[str, list[str]]:
    """The name and the ``KEY=VALUE`` texts of ``NAME[:KEY=VALUE,...]``.

    The parameters are read with Python's parser as the keyword arguments of a call, so
    a comma inside brackets or quotes never splits a value; each value is given back as
    its own text, for `parse_params`.

    Raises:
        ValueError: On a parameter list that is not ``KEY=VALUE`` pairs separated by
            commas, naming ``option`` and the text.

    Examples:
        >>> from oodscore.commands.options import split_scorer
        >>> split_scorer("mos:groups=[6, 6],log_scale=True")
        ('mos', ['groups=[6, 6]', 'log_scale=True'])
        >>> split_scorer("energy")
        ('energy', [])
    """
    name, _, params = text.partition(":")
    if not params.strip():
        return name.strip(), []
    call = f"f({params})"
    expected = (
        f"Expected {option} NAME:KEY=VALUE,... (values as Python literals, strings in "
        f"quotes), got {text!r}"
    )
    try:
        node = ast.parse(call, mode="eval").body
    except SyntaxError:
        raise ValueError(f"{expected}.") from None
    if (
        not isinstance(node, ast.Call)
        or not isinstance(node.func, ast.Name)
        or node.args
        or any(k.arg is None for k in node.keywords)
    ):
        raise ValueError(f"{expected}.")
    pairs = [f"{k.arg}={ast.get_source_segment(call, k.value)}" for k in node.keywords]
    return name.strip(), pairs


def parse_value(text: str) -> Any:
    """A parameter's value: a Python literal, or a bare word as a string.

    Literals are numbers, ``True``, ``None``, lists (``[6, 6]``), quoted strings (``'max'``);
    a bare word (``max``) is the string it spells.

    Raises:
        ValueError: On anything else (an expression, unbalanced brackets, an empty value).
    """
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if text.strip().isidentifier():
            return text.strip()
        raise ValueError(
            f"{text!r} is not a Python literal (a number, True, None, a list, a quoted string...)"
        ) from None


def parse_params(items: list[str], cls: type, context: str = "--param ") -> dict[str, Any]:
    """Turn ``["key=value", ...]`` into keyword arguments of ``cls`` (values: `parse_value`).

    Each key may be given once; ``context`` starts the messages (the option they came from).

    Raises:
        ValueError: On an item without ``=``, an unknown or repeated key, or a value that is
            not a literal.
    """
    accepted = [
        p.name for p in inspect.signature(cls).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    params: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"Expected {context.strip()} KEY=VALUE, got {item!r}.")
        if key not in accepted:
            options = ", ".join(accepted) if accepted else "none"
            raise ValueError(
                f"Unknown parameter {key!r} for {cls.__name__}; it accepts: {options}."
            )
        if key in texts:
            raise ValueError(
                f"{context}{key} is given twice ({texts[key]!r} and {text!r}); give each "
                "parameter once."
            )
        texts[key] = text
        try:
            params[key] = parse_value(text)
        except ValueError as error:
            raise ValueError(
                f"{context}{key}={text}: {error}; write strings in quotes ({key}='...')."
            ) from None
    return params
