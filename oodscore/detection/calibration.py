"""Calibration: fit the scorer on its own data, then turn ID scores into the decision's tensors.

`fit_scorer` fits an unfitted fitted scorer on fit data that is not the calibration data;
`calibration_buffers` plans the groups (`oodscore.detection.mondrian`) and computes, per
group, the sorted scores, ranks and thresholds (`oodscore.functional.conformal`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from oodscore.detection.grouping import Grouping
from oodscore.detection.inputs import ModelRunner, Source
from oodscore.detection.mondrian import plan_groups
from oodscore.functional.conformal import group_ranks, group_thresholds, grouped_calibration
from oodscore.scorer_set import require_fit_data, unfitted
from oodscore.scorers.base import FittedScorer, Scorer

ALL = "all"
"""The name of the one calibration group without a group rule."""


def calibration_buffers(
    scores: Tensor, rule_groups: Tensor, names: list[str], alpha: float, *, merge_small_groups: bool
) -> dict[str, Tensor]:
    """The tensors of `oodscore.detection.decision.BUFFERS` for calibration scores (n,).

    Args:
        scores: Checked calibration scores (n,), n >= 1.
        rule_groups: Their groups under the rule (n,), int64 on the CPU (zeros: one group).
        names: The rule's group names (one per group the rule can give).
        alpha: The level.
        merge_small_groups: Pool the groups too small for alpha into ``"rest"``.

    Raises:
        ValueError: On too few scores for alpha, or small groups without merging (see
            `oodscore.detection.mondrian.plan_groups`).
    """
    sizes = torch.bincount(rule_groups, minlength=len(names)).tolist()
    plan = plan_groups(sizes, names, alpha, merge_small_groups=merge_small_groups)
    ordered, keys, offsets, group_sizes = grouped_calibration(
        scores.detach().cpu(), plan.group_of[rule_groups], plan.num_groups
    )
    ranks = group_ranks(group_sizes, alpha)
    return {
        "calibration_scores": ordered,
        "keys": keys,
        "offsets": offsets,
        "sizes": group_sizes,
        "ranks": ranks,
        "thresholds": group_thresholds(ordered, keys, offsets, ranks),
        "group_of": plan.group_of,
    }


def fit_scorer(
    scorer: Scorer,
    source: Source,
    runner: ModelRunner | None,
    given: Mapping[str, Any],
    fit_targets: Any,
) -> None:
    """Fit ``scorer`` in place when it is an unfitted fitted scorer; check the fit arguments.

    Args:
        scorer: The detector's scorer.
        source: The calibration data (fit data may not be any of it).
        runner: The detector's model, for ``fit_loader``.
        given: ``{"fit_loader": ..., "fit_logits": ..., "fit_features": ...}``.
        fit_targets: Targets of the fit rows, or ``None``.

    Raises:
        ValueError: On fit data that is the calibration data, fit data for a scorer that
            needs none, fit data of the wrong kind or from two sources, or none for a
            scorer that needs it.
        TypeError: On a ``fit_loader`` without a model.
    """
    passed = [name for name, value in given.items() if value is not None]
    for name, value in given.items():
        if value is not None and any(value is v for v in vars(source).values()):
            raise ValueError(
                f"`{name}` is the calibration data: the guarantee needs calibration inputs "
                "that the scorer was not fitted on; hold out a separate ID set."
            )
    if not unfitted({"scorer": scorer}):
        if passed or fit_targets is not None:
            raise ValueError(
                f"{scorer!r} needs no fitting (it is fitted, or needs no fit), but "
                f"{passed or ['fit_targets']} was given."
            )
        return
    assert isinstance(scorer, FittedScorer)
    kind = scorer.input_kind
    argument = "fit_features" if kind == "features" else "fit_logits"
    wrong = [name for name in passed if name not in (argument, "fit_loader")]
    if wrong or len(passed) > 1:
        raise ValueError(
            f"Expected one source of fit data for {type(scorer).__name__}, which fits on "
            f"{kind}: `{argument}` or `fit_loader`; got {passed}."
        )
    if given.get("fit_loader") is not None:
        if runner is None:
            raise TypeError("Expected a model to run `fit_loader`: build with model=....")
        runner.fit(scorer, given["fit_loader"])
        return
    data = given.get(argument)
    require_fit_data({"scorer": scorer}, {kind: (argument, data is not None)})
    assert data is not None  # require_fit_data raised otherwise
    scorer.fit(data, fit_targets)


def rule_groups(
    grouping: Grouping | None, logits: Tensor | None, count: int, num_classes: int
) -> tuple[Tensor, list[str]]:
    """The rule's group of each of ``count`` calibration inputs (CPU), and the rule's names.

    Without a rule: zeros and the one name ``"all"``.
    """
    if grouping is None:
        return torch.zeros(count, dtype=torch.int64), [ALL]
    assert logits is not None  # read_source asks for them
    grouping.check_classes(num_classes)
    groups = grouping.assign(logits).cpu()
    check_group_ids(groups, grouping.num_groups(num_classes), grouping)
    return groups, grouping.group_names(num_classes)


def check_group_ids(groups: Tensor, count: int, grouping: Grouping | None) -> None:
    """Refuse group ids outside ``0 .. count - 1`` (a rule of one's own that misbehaves)."""
    if groups.numel() and (int(groups.min()) < 0 or int(groups.max()) >= count):
        raise ValueError(
            f"Expected {grouping!r} to assign group ids in 0..{count - 1}, got ids from "
            f"{int(groups.min())} to {int(groups.max())}."
        )
