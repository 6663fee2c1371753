"""The work of ``oodscore eval`` (its options: `oodscore.commands.eval`).

Each set is read and scored in row blocks, one set at a time
(`oodscore.commands.streaming.score_rows`): ``.npy`` files are memory-mapped, so the run holds
a block of one set and the scores, never the ID and OOD arrays together. The checks and the
results are those of `oodscore.evaluate_logits` on the same arrays, and so are the messages.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodscore._eval_inputs import as_features, check_rows
from oodscore._validation import check_same_width
from oodscore.commands.eval import FEATURE_OPTIONS, parse_ood, scorer_label
from oodscore.commands.options import STDOUT, InputFile, parse_params, path_of, split_scorer
from oodscore.commands.score import check_kind, give_head, reads
from oodscore.commands.streaming import (
    as_checked,
    read_array,
    read_head,
    read_targets,
    resolve_device,
    score_rows,
)
from oodscore.io import check_file, check_outputs, check_suffix, write_atomic
from oodscore.metrics.classification import as_logits, id_task_metrics
from oodscore.plotting import check_plot_path
from oodscore.report import Report
from oodscore.scorer_set import fit_unfitted
from oodscore.scorers.base import SCORERS, FittedScorer, Scorer
from oodscore.state_file import load_state


def run_eval(args: argparse.Namespace) -> int:
    """Read and score each set, print or write the report (and the plot)."""
    if not args.scorers:
        raise ValueError("Give at least one --scorer NAME or --state STATE.")
    ood_paths = parse_ood(args.ood)
    feature_paths = parse_ood(args.ood_features, "--ood-features")
    _check_same_sets(ood_paths, feature_paths)
    scorers, states = _resolve(args.scorers, args.decompress_limit, head=args.head is not None)
    give_head(scorers, read_head(args))
    check_inputs(args, scorers)
    device = resolve_device(args.device)
    singles = (
        *(args.id_path, args.id_targets, args.id_features),
        *(args.fit_features, args.fit_logits, args.fit_targets, args.head),
        *ood_paths.values(),
        *feature_paths.values(),
    )
    inputs = [path for path in map(path_of, singles) if path is not None]
    inputs += states.values()
    output = None if args.output in (None, STDOUT) else Path(args.output)
    outputs = [p for p in (output, args.plot) if p is not None]
    for path in inputs:  # every set can be read before the first is scored
        if path not in states.values():  # a state file's name is checked when it is read
            check_suffix(path)
        check_file(path)
    check_outputs(outputs, inputs, force=args.force)
    if args.plot is not None:
        check_plot_path(args.plot)
    report = _evaluate(args, scorers, states, ood_paths, feature_paths, device)
    text = _render(report, args.format)
    # The report first: a plot that fails must not cost it.
    if output is None:
        print(text, end="" if text.endswith("\n") else "\n", flush=True)
    else:
        write_atomic(output, text, force=args.force, inputs=inputs)
    if args.plot is not None:
        report.plot(args.plot, force=args.force, inputs=inputs)
    return 0


def _build_scorer(item: str, *, head: bool) -> Scorer:
    name, pairs = split_scorer(item)
    cls = SCORERS.get_class(name)
    check_kind(name, cls, head=head)
    return cls(**parse_params(pairs, cls, context=f"--scorer {item!r}: "))


def _state_path(item: str) -> tuple[str | None, Path]:
    """``[LABEL=]PATH`` of ``--state``."""
    label, sep, path = item.partition("=")
    if not sep:
        return None, Path(item)
    if not label.strip() or not path:
        raise ValueError(f"Expected --state [LABEL=]PATH, got {item!r}.")
    return label.strip(), Path(path)


def _resolve(
    items: list[tuple[str, str]], decompress_limit: int, *, head: bool
) -> tuple[dict[str, Scorer], dict[str, Path]]:
    """Scorers of ``--scorer`` and ``--state`` in command-line order, and the state files."""
    scorers: dict[str, Scorer] = {}
    states: dict[str, Path] = {}
    for option, item in items:
        if option == "scorer":
            label, scorer = item, _build_scorer(item, head=head)
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
        check_kind(label, scorer, head=head)
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


def _check_same_sets(ood: dict[str, InputFile], ood_features: dict[str, InputFile]) -> None:
    if ood and ood_features and list(ood) != list(ood_features):
        missing = [n for n in ood if n not in ood_features]
        extra = [n for n in ood_features if n not in ood]
        if missing or extra:
            raise ValueError(
                "--ood-features must name the same OOD sets as --ood: "
                f"missing {missing}, unexpected {extra}."
            )


def _evaluate(
    args: argparse.Namespace,
    scorers: dict[str, Scorer],
    states: dict[str, Path],
    ood_paths: dict[str, InputFile],
    feature_paths: dict[str, InputFile],
    device: torch.device,
) -> Report:
    """Fit, then score the ID set and each OOD set in turn; the report of their scores."""

    def read(item: InputFile | None, *, whole: bool = False) -> Any:
        return None if item is None else read_array(item, args, mmap=not whole)

    # Fitting reads every row: the fit sets are read whole, the test sets in row blocks.
    fit_features = read(args.fit_features, whole=True)
    fit_logits = read(args.fit_logits, whole=True)
    fit_targets = None if args.fit_targets is None else read_targets(args.fit_targets, args)
    id_logits, id_features = read(args.id_path), read(args.id_features)
    _check_fit_data(args, "features", fit_features, fit_targets, id_features)
    _check_fit_data(args, "logits", fit_logits, fit_targets, id_logits)
    _check_states(args, scorers, states, {"features": id_features, "logits": id_logits})
    fit_unfitted(
        scorers,
        logits=None if fit_logits is None else as_logits(fit_logits, "fit_logits"),
        features=None if fit_features is None else as_features(fit_features, "fit_features"),
        targets=fit_targets,
    )
    del fit_features, fit_logits
    id_set = _Set("id", id_logits, id_features)
    id_scores = id_set.score(scorers, device, id_set)
    id_metrics = {}
    if args.id_targets is not None and id_logits is not None:
        whole = read(args.id_path, whole=True)  # once more, for the accuracy or the mAP
        id_metrics = id_task_metrics(whole, read_targets(args.id_targets, args))
        del whole
    names = list(ood_paths or feature_paths)
    ood_scores = {}
    for name in names:  # one set at a time: its arrays are dropped before the next is read
        ood_set = _Set(name, read(ood_paths.get(name)), read(feature_paths.get(name)))
        ood_scores[name] = ood_set.score(scorers, device, id_set)
    return Report.from_scores(id_scores, ood_scores, id_metrics=id_metrics)


class _Set:
    """The logits and features of one set (either may be ``None``), named as in Python."""

    def __init__(self, name: str, logits: Any, features: Any) -> None:
        self.name, self.logits, self.features = name, logits, features
        self.logits_name = "id_logits" if name == "id" else f"ood_logits[{name!r}]"
        self.features_name = "id_features" if name == "id" else f"ood_features[{name!r}]"

    def score(
        self, scorers: dict[str, Scorer], device: torch.device, id_set: _Set
    ) -> dict[str, np.ndarray[Any, Any]]:
        """``{label: scores}`` of every scorer, after the checks of `evaluate_logits`."""
        inputs = {}
        if self.logits is not None:
            inputs["logits"] = (self.logits, as_checked(self.logits_name, as_logits))
        if self.features is not None:
            inputs["features"] = (self.features, as_checked(self.features_name, as_features))
        if self is not id_set:
            self._check_widths(id_set)
        self._check_rows(id_set)
        return score_rows(scorers, inputs, device=device, label=f"eval {self.name}")

    def _check_widths(self, id_set: _Set) -> None:
        """OOD logits and features have the columns of the ID ones (shapes only)."""
        for kind, what, symbol in (("logits", "classes", "C"), ("features", "features", "D")):
            first, second = getattr(id_set, kind), getattr(self, kind)
            if _matrix(first) and _matrix(second):
                names = (getattr(id_set, f"{kind}_name"), getattr(self, f"{kind}_name"))
                check_same_width(_shape(first), _shape(second), names, what=what, symbol=symbol)

    def _check_rows(self, id_set: _Set) -> None:
        """One row of features per row of logits (shapes only)."""
        if not (_matrix(self.logits) and _matrix(self.features)):
            return
        if self is id_set:
            check_rows(_shape(self.logits), {}, _shape(self.features), {})
        else:
            ood, ood_features = {self.name: _shape(self.logits)}, {self.name: _shape(self.features)}
            check_rows(_shape(id_set.logits), ood, _shape(id_set.features), ood_features)


def _matrix(array: Any) -> bool:
    return array is not None and array.ndim == 2


def _shape(array: Any) -> torch.Tensor:
    """A tensor of ``array``'s shape that holds no data, for the checks that read shapes only."""
    return torch.empty(array.shape, device="meta")


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
