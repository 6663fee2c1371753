"""``oodscore calibrate``: held-out ID logits (or scores) -> a detector file for ``detect``.

The detector file holds the scorer's name and parameters, the group rule and the
calibration as tensors (`oodscore.detection.save_detector`); it is read back with
``torch.load(weights_only=True)``, never unpickled. The calibration report (and, with
``--ood``, the OOD detection rate at the calibrated thresholds) is printed on stdout.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oodscore.commands.options import (
    InputFile,
    add_head_option,
    add_key_option,
    input_file,
    path_of,
    split_scorer,
)
from oodscore.commands.score import (
    add_reading_options,
    check_fit_options,
    check_kind,
    give_head,
    parse_params,
    reads,
)

if TYPE_CHECKING:
    from oodscore.detection.grouping import Grouping
    from oodscore.scorers.base import Scorer

GROUP_RULES = ("predicted_class", "label_count")


def register(subparsers: Any) -> None:
    """Add the ``calibrate`` subcommand."""
    parser = subparsers.add_parser(
        "calibrate",
        help="calibrate an OOD detector on held-out ID logits or scores (-> detector file)",
        description=(
            "Calibrate a split-conformal OOD detector at level ALPHA on the held-out ID "
            "logits in INPUT (features for a feature scorer; scores with --scores), scored "
            "with the scorer NAME, and write it to DETECTOR (.pt). A new ID input "
            "exchangeable with INPUT is then rejected with probability at most ALPHA."
        ),
    )
    parser.add_argument(
        "name",
        metavar="NAME",
        help="a scorer name from `oodscore list`, with parameters as NAME:KEY=VALUE,...",
    )
    parser.add_argument(
        "input",
        metavar="INPUT",
        type=input_file,
        help="held-out ID logits (N, C) (features for a feature scorer; scores with --scores)",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="DETECTOR",
        help="detector file to write (.pt)",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        required=True,
        help="level in (0, 1): the bound on the rate of ID inputs rejected",
    )
    parser.add_argument(
        "--scores",
        action="store_true",
        help="INPUT (and --ood) hold (N,) scores of NAME, higher = more ID (no grouping)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="scorer parameter, repeatable (e.g. --param temperature=2)",
    )
    add_key_option(parser)
    parser.add_argument("--force", action="store_true", help="overwrite DETECTOR if it exists")
    parser.add_argument(
        "--ood",
        type=input_file,
        metavar="DATA",
        help="OOD validation logits: report the detection rate",
    )
    groups = parser.add_argument_group("Mondrian calibration", "one threshold per group")
    groups.add_argument(
        "--group-by", choices=GROUP_RULES, help="predicted class, or labels over the threshold"
    )
    groups.add_argument(
        "--label-threshold",
        type=float,
        default=None,
        metavar="T",
        help="sigmoid threshold of --group-by label_count (default 0.5)",
    )
    groups.add_argument(
        "--class-groups",
        type=input_file,
        metavar="FILE",
        help="group id of each class: C integers (groups of predicted classes)",
    )
    groups.add_argument(
        "--merge-small-groups",
        action="store_true",
        help="pool the groups too small for ALPHA into one 'rest' group instead of refusing",
    )
    fitted = parser.add_argument_group("fitted scorers", "--fit or --state, exactly one")
    fitted.add_argument(
        "--fit", type=input_file, metavar="DATA", help="fit on these ID logits/features"
    )
    fitted.add_argument(
        "--fit-targets", type=input_file, metavar="TARGETS", help="targets of --fit"
    )
    fitted.add_argument("--state", type=Path, metavar="STATE", help="a fitted scorer's state file")
    add_head_option(parser)
    add_reading_options(parser)
    parser.set_defaults(run=run, save_state=None)


def run(args: argparse.Namespace) -> int:
    """Check the options, build and calibrate the detector, write it, print the report."""
    # NumPy, torch and the detector load here, when the command runs, not when it registers.
    from oodscore._validation import UNIT_OPEN
    from oodscore.detection.detector import OODDetector
    from oodscore.detection.detector_file import check_detector_suffix, save_detector
    from oodscore.io import check_outputs
    from oodscore.scorers.base import SCORERS

    alpha = UNIT_OPEN.check(args.alpha, "--alpha")
    args.name, items = split_scorer(args.name, option="NAME")
    cls = SCORERS.get_class(args.name)
    check_kind(args.name, cls, head=args.head is not None or args.state is not None)
    params = parse_params([*items, *args.param], cls)
    check_fit_options(args, cls)
    check_detector_suffix(args.output)
    given = (
        *(args.input, args.ood, args.fit, args.fit_targets, args.state, args.class_groups),
        args.head,
    )
    inputs = [p for p in map(path_of, given) if p is not None]
    check_outputs([args.output], inputs, force=args.force)
    if args.fit is not None and _same_input(args.fit, args.input, args.key):
        raise ValueError(
            "--fit is INPUT: the guarantee needs calibration data the scorer was not fitted "
            "on; hold out a separate ID set."
        )
    grouping = _grouping(args, cls)
    scorer = _scorer(args, cls, params)
    detector = OODDetector(scorer, grouping=grouping, merge_small_groups=args.merge_small_groups)
    data = _data(args, scorer, args.input)
    try:
        detector.calibrate(alpha=alpha, **data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"Cannot calibrate on {str(args.input)!r}: {error}") from None
    ood_rate = None
    if args.ood is not None:
        try:
            ood_rate = detector.ood_detection_rate(**_data(args, scorer, args.ood))
        except (TypeError, ValueError) as error:
            raise ValueError(f"Cannot score --ood {str(args.ood)!r}: {error}") from None
    save_detector(detector, args.output, force=args.force, inputs=inputs)
    print(detector.report)
    if ood_rate is not None:
        print(f"{ood_rate} on {str(args.ood)!r}")
    return 0


def _same_input(first: InputFile, second: InputFile, default_key: str | None) -> bool:
    """Whether two input options name the same array (the same file and key)."""
    keys = [item.key if item.key is not None else default_key for item in (first, second)]
    return first.path.resolve() == second.path.resolve() and keys[0] == keys[1]


def _grouping(args: argparse.Namespace, cls: type[Scorer]) -> Grouping | None:
    """The group rule of ``--group-by``/``--class-groups``, refused where nothing reads logits."""
    from oodscore.commands.streaming import read_targets
    from oodscore.detection.grouping import ByClassGroups, ByLabelCount, ByPredictedClass

    if args.group_by is not None and args.class_groups is not None:
        raise ValueError("Give --group-by or --class-groups, not both.")
    if args.label_threshold is not None and args.group_by != "label_count":
        raise ValueError("--label-threshold applies only to --group-by label_count.")
    if args.merge_small_groups and args.group_by is None and args.class_groups is None:
        raise ValueError("--merge-small-groups needs --group-by or --class-groups.")
    if args.group_by is None and args.class_groups is None:
        return None
    if args.scores or cls.input_kind != "logits":
        what = "scores (--scores)" if args.scores else reads(cls)
        raise ValueError(
            f"Groups are read from the logits, and INPUT holds {what}; group with logits input."
        )
    if args.group_by == "predicted_class":
        return ByPredictedClass()
    if args.group_by == "label_count":
        threshold = 0.5 if args.label_threshold is None else args.label_threshold
        return ByLabelCount(threshold=threshold)
    table = read_targets(args.class_groups, args)
    if table.ndim != 1 or table.dtype.kind not in "iu":
        raise ValueError(
            f"Expected {str(args.class_groups)!r} to hold one integer group id per class, got "
            f"{table.dtype} values of shape {table.shape}."
        )
    return ByClassGroups([int(v) for v in table])


def _scorer(args: argparse.Namespace, cls: type[Scorer], params: dict[str, Any]) -> Scorer:
    """The scorer, fitted on ``--fit`` or read from ``--state`` when it is a fitted scorer."""
    from oodscore.commands.streaming import read_array, read_head, read_targets
    from oodscore.scorers.base import FittedScorer
    from oodscore.state_file import load_state

    if args.state is not None:
        loaded = load_state(
            args.state, name=args.name, params=params, decompress_limit=args.decompress_limit
        )
        give_head({args.name: loaded}, read_head(args))
        check_kind(args.name, loaded)
        return loaded
    scorer = cls(**params)
    give_head({args.name: scorer}, read_head(args))
    if isinstance(scorer, FittedScorer):
        fit_data = read_array(args.fit, args)
        targets = None if args.fit_targets is None else read_targets(args.fit_targets, args)
        try:
            scorer.fit(fit_data, targets)
        except (TypeError, ValueError) as error:
            raise ValueError(f"Cannot fit {args.name!r} on {str(args.fit)!r}: {error}") from None
    return scorer


def _data(args: argparse.Namespace, scorer: Scorer, item: InputFile) -> dict[str, Any]:
    """``{"logits"|"features"|"scores": array}`` of one input option (``PATH[::KEY]``)."""
    from oodscore.commands.streaming import read_scorer_input

    return read_scorer_input(item, args, scorer, scores=args.scores)
