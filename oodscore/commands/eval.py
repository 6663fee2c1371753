"""``oodscore eval``: OOD metrics of several scorers on saved logits and features.

Logit scorers read ``--id``/``--ood`` logits; feature scorers read ``--id-features``/
``--ood-features``. Fitted scorers are fitted on ID data of the kind they read
(``--fit-logits`` or ``--fit-features``, with ``--fit-targets``) or read from ``--state``.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

from oodscore.commands.score import (
    add_reading_options,
    check_kind,
    parse_params,
    reading,
    reads,
)
from oodscore.evaluation import evaluate_logits
from oodscore.io import check_outputs, load_array, load_targets, write_atomic
from oodscore.plotting import check_plot_path
from oodscore.report import MEAN, Report
from oodscore.scorers.base import SCORERS, FittedScorer, Scorer
from oodscore.state_file import load_state

FORMATS = ("markdown", "csv", "json")

FEATURE_OPTIONS = ("id_features", "ood_features", "fit_features")
"""The options (``args`` attributes) that only feature scorers read."""


def register(subparsers: Any) -> None:
    """Add the ``eval`` subcommand."""
    parser = subparsers.add_parser(
        "eval",
        help="OOD metrics of scorers on saved ID and OOD logits or features",
        description=(
            "Score the ID set and each OOD set with every scorer (logit scorers on --id/--ood "
            "logits, feature scorers on --id-features/--ood-features) and report AUROC, "
            "AUPR-In, AUPR-Out and FPR at 95% TPR (ID positive) per OOD set and scorer, with "
            "the mean over OOD sets. Files are read without unpickling; outputs are written "
            "atomically and never over an input or an existing file without --force."
        ),
    )
    parser.add_argument(
        "--id",
        dest="id_path",
        type=Path,
        metavar="ID_LOGITS",
        help="(N, C) logits of the ID test set (.npy, .npz, .pt, .csv)",
    )
    parser.add_argument(
        "--ood",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an OOD set's (M, C) logits, repeatable",
    )
    parser.add_argument(
        "--scorer",
        action="append",
        dest="scorers",
        default=[],
        type=lambda text: ("scorer", text),
        metavar="NAME[:KEY=VALUE,...]",
        help="a scorer from `oodscore list`, repeatable; parameters after a colon "
        "(e.g. --scorer energy:temperature=2)",
    )
    parser.add_argument(
        "--id-targets",
        type=Path,
        metavar="PATH",
        help="ID targets: (N,) class indices (adds accuracy) or (N, C) multi-hot labels (mAP)",
    )
    parser.add_argument(
        "--key", help="array to read from .npz files or dicts in .pt files (all inputs)"
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="markdown", help="report format (default markdown)"
    )
    parser.add_argument("-o", "--output", type=Path, help="write the report here, not to stdout")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="IMAGE",
        help="also save score histograms and ROC curves (.png, .pdf, .svg; needs matplotlib)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    add_reading_options(parser)
    group = parser.add_argument_group(
        "feature and fitted scorers",
        "features for scorers that read them (`oodscore list` marks them [features]); ID "
        "data to fit the fitted scorers of --scorer on; fitted scorers from state files",
    )
    group.add_argument(
        "--id-features", type=Path, metavar="PATH", help="(N, D) features of the ID test set"
    )
    group.add_argument(
        "--ood-features",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="an OOD set's (M, D) features, repeatable; the same names as --ood",
    )
    group.add_argument(
        "--fit-features",
        type=Path,
        metavar="PATH",
        help="(N, D) ID features to fit the fitted feature scorers of --scorer on",
    )
    group.add_argument(
        "--fit-logits",
        type=Path,
        metavar="PATH",
        help="(N, C) ID logits to fit the fitted logit scorers of --scorer on (lof, ...)",
    )
    group.add_argument(
        "--fit-targets",
        type=Path,
        metavar="PATH",
        help="targets of the fit rows (--fit-features, --fit-logits, or both: the same rows): "
        "(N,) class ids or (N, C) multi-hot labels",
    )
    group.add_argument(
        "--state",
        action="append",
        dest="scorers",
        type=lambda text: ("state", text),
        metavar="[LABEL=]STATE",
        help="a fitted scorer from a state file (`oodscore score --save-state`), "
        "repeatable; labelled LABEL, or by its name and parameters",
    )
    parser.set_defaults(run=run)


def parse_ood(items: list[str], option: str = "--ood") -> dict[str, Path]:
    """``["name=path", ...]`` as ``{name: path}``; names are unique and not ``mean``."""
    sets: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name = name.strip()
        if not sep or not name or not path:
            raise ValueError(f"Expected {option} NAME=PATH, got {item!r}.")
        if name in sets:
            raise ValueError(f"The OOD set {name!r} is given twice.")
        if name == MEAN:
            raise ValueError(f"The OOD-set name {MEAN!r} is reserved for the mean rows.")
        sets[name] = Path(path)
    return sets


def _build_scorer(item: str) -> Scorer:
    name, _, params = item.partition(":")
    cls = SCORERS.get_class(name.strip())
    check_kind(name.strip(), cls)
    pairs = [p.strip() for p in params.split(",") if p.strip()] if params else []
    return cls(**parse_params(pairs, cls, context=f"--scorer {item!r}: "))


def scorer_label(scorer: Scorer) -> str:
    """``name[:key=value,...]`` with the parameters that differ from their defaults.

    It is the `--scorer` text that builds the same scorer.
    """
    signature = inspect.signature(type(scorer))
    changed = [
        f"{key}={value!r}"
        for key, value in scorer.get_params().items()
        if value != signature.parameters[key].default
    ]
    name = type(scorer).name
    return f"{name}:{','.join(changed)}" if changed else name


def _state_path(item: str) -> tuple[str | None, Path]:
    """``[LABEL=]PATH`` of ``--state``."""
    label, sep, path = item.partition("=")
    if not sep:
        return None, Path(item)
    if not label.strip() or not path:
        raise ValueError(f"Expected --state [LABEL=]PATH, got {item!r}.")
    return label.strip(), Path(path)


def _resolve(
    items: list[tuple[str, str]], decompress_limit: int
) -> tuple[dict[str, Scorer], dict[str, Path]]:
    """Scorers of ``--scorer`` and ``--state`` in command-line order, and the state files."""
    scorers: dict[str, Scorer] = {}
    states: dict[str, Path] = {}
    for option, item in items:
        if option == "scorer":
            label, scorer = item, _build_scorer(item)
        else:
            given, path = _state_path(item)
            scorer = load_state(path, decompress_limit=decompress_limit)
            label = given if given is not None else scorer_label(scorer)
        if label in scorers:
            if option == "scorer" and label not in states:
                raise ValueError(f"The scorer {label!r} is given twice.")
            raise ValueError(
                f"Two scorers are labelled {label!r}; name the one of a state file with "
                "--state LABEL=PATH."
            )
        check_kind(label, scorer)
        scorers[label] = scorer
        if option == "state":
            states[label] = path
    return scorers, states


def check_inputs(args: argparse.Namespace, scorers: dict[str, Scorer]) -> None:
    """Each kind of scorer has its inputs, and no option is given that nothing would read."""
    logit = [label for label, s in scorers.items() if s.input_kind == "logits"]
    feature = [label for label, s in scorers.items() if s.input_kind == "features"]
    to_fit = {
        label: reads(s)
        for label, s in scorers.items()
        if isinstance(s, FittedScorer) and not s.is_fitted
    }
    if logit and (args.id_path is None or not args.ood):
        raise ValueError(
            f"{logit[0]!r} reads logits: give --id ID_LOGITS and --ood NAME=PATH for each OOD set."
        )
    if (args.id_path is None) != (not args.ood):
        raise ValueError("--id and --ood go together: give both or neither.")
    if args.id_targets is not None and args.id_path is None:
        raise ValueError("--id-targets needs --id: the ID accuracy or mAP is read from the logits.")
    if feature and (args.id_features is None or not args.ood_features):
        raise ValueError(
            f"{feature[0]!r} reads features: give --id-features PATH and --ood-features "
            "NAME=PATH for each OOD set."
        )
    if not feature:
        given = [f"--{o.replace('_', '-')}" for o in FEATURE_OPTIONS if getattr(args, o)]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise ValueError(f"{', '.join(given)} {verb} only to feature scorers; none is given.")
    for data in ("features", "logits"):
        option = f"--fit-{data}"
        fitting = [label for label, kind in to_fit.items() if kind == data]
        has_fit = getattr(args, f"fit_{data}") is not None
        if fitting and not has_fit:
            raise ValueError(
                f"{fitting[0]!r} is a fitted scorer that reads {data}: give {option} PATH "
                f"(ID {data}, with --fit-targets PATH for class-based scorers), or a fitted "
                "one with --state."
            )
        if has_fit and not fitting:
            loaded = any(isinstance(s, FittedScorer) and reads(s) == data for s in scorers.values())
            why = "those of --state are fitted" if loaded else f"no fitted scorer reads {data}"
            raise ValueError(f"{option} fits the fitted scorers of --scorer; {why}.")
    if args.fit_targets is not None and not to_fit:
        raise ValueError(
            "--fit-targets needs --fit-features or --fit-logits (the rows they label)."
        )


def _check_same_sets(ood: dict[str, Path], ood_features: dict[str, Path]) -> None:
    if ood and ood_features and list(ood) != list(ood_features):
        missing = [n for n in ood if n not in ood_features]
        extra = [n for n in ood_features if n not in ood]
        if missing or extra:
            raise ValueError(
                "--ood-features must name the same OOD sets as --ood: "
                f"missing {missing}, unexpected {extra}."
            )


def run(args: argparse.Namespace) -> int:
    """Load the logits and features, evaluate, print or write the report (and the plot)."""
    if not args.scorers:
        raise ValueError("Give at least one --scorer NAME or --state STATE.")
    ood_paths = parse_ood(args.ood)
    feature_paths = parse_ood(args.ood_features, "--ood-features")
    _check_same_sets(ood_paths, feature_paths)
    scorers, states = _resolve(args.scorers, args.decompress_limit)
    check_inputs(args, scorers)
    singles = (
        *(args.id_path, args.id_targets, args.id_features),
        *(args.fit_features, args.fit_logits, args.fit_targets),
    )
    inputs = [p for p in singles if p is not None]
    inputs += [*ood_paths.values(), *feature_paths.values(), *states.values()]
    outputs = [p for p in (args.output, args.plot) if p is not None]
    check_outputs(outputs, inputs, force=args.force)
    if args.plot is not None:
        check_plot_path(args.plot)
    report = _evaluate(args, scorers, states, ood_paths, feature_paths)
    text = _render(report, args.format)
    # The report first: a plot that fails must not cost it.
    if args.output is None:
        print(text, end="" if text.endswith("\n") else "\n", flush=True)
    else:
        write_atomic(args.output, text, force=args.force, inputs=inputs)
    if args.plot is not None:
        report.plot(args.plot, force=args.force, inputs=inputs)
    return 0


def _evaluate(
    args: argparse.Namespace,
    scorers: dict[str, Scorer],
    states: dict[str, Path],
    ood_paths: dict[str, Path],
    feature_paths: dict[str, Path],
) -> Report:
    options = reading(args)

    def read(path: Path | None) -> Any:
        return None if path is None else load_array(path, **options)

    def read_targets(path: Path | None) -> Any:
        return None if path is None else load_targets(path, **options)

    fit_features, fit_targets = read(args.fit_features), read_targets(args.fit_targets)
    fit_logits = read(args.fit_logits)
    id_logits, id_features = read(args.id_path), read(args.id_features)
    _check_fit_data(args, "features", fit_features, fit_targets, id_features)
    _check_fit_data(args, "logits", fit_logits, fit_targets, id_logits)
    _check_states(args, scorers, states, {"features": id_features, "logits": id_logits})
    return evaluate_logits(
        id_logits,
        {name: read(path) for name, path in ood_paths.items()} if ood_paths else None,
        scorers,
        id_targets=read_targets(args.id_targets),
        id_features=id_features,
        ood_features={name: read(path) for name, path in feature_paths.items()} or None,
        fit_features=fit_features,
        fit_logits=fit_logits,
        fit_targets=fit_targets,
    )


_TEST_OPTION = {
    "features": ("--id-features", "id_features", "D"),
    "logits": ("--id", "id_path", "C"),
}


def _check_fit_data(args: argparse.Namespace, data: str, fit: Any, targets: Any, test: Any) -> None:
    """Name the files when the fit rows do not match their targets or the test data."""
    if fit is None or fit.ndim != 2:
        return  # evaluate_logits explains what is wrong with the array itself
    where = f"--fit-{data} {str(getattr(args, f'fit_{data}'))!r}"
    if targets is not None and len(targets) != len(fit):
        raise ValueError(
            f"--fit-targets {str(args.fit_targets)!r} has {len(targets)} rows, {where} "
            f"{len(fit)}: one target per fit row."
        )
    option, attribute, letter = _TEST_OPTION[data]
    if test is not None and test.ndim == 2 and fit.shape[1] != test.shape[1]:
        same = (
            "the features must come from the same layer"
            if data == "features"
            else ("the logits must come from the same classifier")
        )
        raise ValueError(
            f"{where} has {letter} = {fit.shape[1]} columns, {option} "
            f"{str(getattr(args, attribute))!r} {letter} = {test.shape[1]}: {same}."
        )


def _check_states(
    args: argparse.Namespace,
    scorers: dict[str, Scorer],
    states: dict[str, Path],
    tests: dict[str, Any],
) -> None:
    """Name the state file whose width differs from that of the data its scorer reads."""
    for label, path in states.items():
        scorer = scorers[label]
        data = reads(scorer)
        test = tests[data]
        width = scorer.num_features if isinstance(scorer, FittedScorer) else None
        if test is None or test.ndim != 2 or width is None or width == test.shape[1]:
            continue
        option, attribute, letter = _TEST_OPTION[data]
        raise ValueError(
            f"{option} {str(getattr(args, attribute))!r} has {letter} = {test.shape[1]} "
            f"columns; {label!r} (--state {str(path)!r}) was fitted on {letter} = {width}."
        )


def _render(report: Report, fmt: str) -> str:
    if fmt == "csv":
        return report.to_csv()
    if fmt == "json":
        return report.to_json()
    return report.to_markdown() + "\n"
