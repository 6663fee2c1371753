"""A detector's state: calibrated tensors only, checked for consistency when loaded.

Keys: the buffers of `oodscore.detection.decision.BUFFERS`; ``"alpha"`` (float64) and
``"num_classes"`` (int64, -1 when calibrated on scores without logits); ``"grouping.*"``,
the tensors that pin the group rule down (`oodscore.detection.grouping.Grouping.rule_state`);
``"scorer.*"``, the fitted state of a fitted scorer. Everything is a tensor, so that
``torch.load(path, weights_only=True)`` reads a saved state.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from oodscore._validation import UNIT_OPEN, check_finite
from oodscore.detection.decision import BUFFERS
from oodscore.detection.grouping import Grouping
from oodscore.functional.conformal import group_ranks, group_thresholds
from oodscore.scorers.base import FittedScorer, Scorer

GROUPING = "grouping."
SCORER = "scorer."


def rule_state(grouping: Grouping | None, num_classes: int) -> dict[str, Tensor]:
    """The ``"grouping.*"`` tensors of a rule (code 0 without one)."""
    state = (
        {"code": torch.tensor(0, dtype=torch.int64)}
        if grouping is None
        else grouping.rule_state(num_classes)
    )
    return {GROUPING + key: value for key, value in state.items()}


def split_state(
    state: Mapping[str, object], scorer: Scorer, grouping: Grouping | None
) -> tuple[dict[str, Tensor], float, int, dict[str, Tensor]]:
    """Check a detector state and split it into buffers, alpha, C and the scorer's state.

    Raises:
        TypeError: If ``state`` is not a mapping of tensors.
        ValueError: On missing or unexpected keys, another group rule or scorer kind than
            the detector's, or tensors that do not describe one calibration (unsorted
            scores, sizes that do not add up, ranks or thresholds that do not follow from
            them and alpha).
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"Expected `state` to be a mapping, got {type(state).__name__}.")
    tensors: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise TypeError(f"Expected a detector state of tensors, got {key!r}: {value!r}.")
        tensors[key] = value.detach().cpu()
    expected = {*BUFFERS, "alpha", "num_classes"}
    missing = sorted(expected - set(tensors))
    extra = sorted(k for k in tensors if k not in expected and not k.startswith((GROUPING, SCORER)))
    if missing or extra:
        raise ValueError(
            f"Expected a detector state with the keys {sorted(expected)} (and 'grouping.*', "
            f"'scorer.*'), got missing {missing} and unexpected {extra}."
        )
    alpha_tensor = tensors["alpha"]
    if alpha_tensor.numel() != 1 or not alpha_tensor.dtype.is_floating_point:
        raise ValueError(f"Expected state['alpha'] to hold one number, got {alpha_tensor!r}.")
    alpha = UNIT_OPEN.check(float(alpha_tensor), "state['alpha']")
    num_classes = int(tensors["num_classes"])
    _check_rule(tensors, grouping, num_classes)
    scorer_state = {k[len(SCORER) :]: v for k, v in tensors.items() if k.startswith(SCORER)}
    if scorer_state and not isinstance(scorer, FittedScorer):
        raise ValueError(
            f"The state holds a fitted scorer's tensors {sorted(scorer_state)}, but "
            f"{type(scorer).__name__} is not fitted; build the detector with the scorer it "
            "was calibrated with."
        )
    buffers = {name: tensors[name] for name in BUFFERS}
    _check_buffers(buffers, alpha)
    return buffers, alpha, num_classes, scorer_state


def _check_rule(tensors: dict[str, Tensor], grouping: Grouping | None, num_classes: int) -> None:
    have = {k: v for k, v in tensors.items() if k.startswith(GROUPING)}
    if grouping is not None and num_classes < 0:
        raise ValueError("The state was calibrated without logits; it has no group rule.")
    want = rule_state(grouping, max(num_classes, 0))
    same = set(have) == set(want) and all(
        have[k].shape == want[k].shape and bool((have[k] == want[k].to(have[k].dtype)).all())
        for k in want
    )
    if not same:
        raise ValueError(
            f"The state was calibrated with another group rule than this detector's "
            f"({grouping!r}): build the detector with the grouping it was calibrated with."
        )


def _check_buffers(buffers: dict[str, Tensor], alpha: float) -> None:
    scores, keys = buffers["calibration_scores"], buffers["keys"]
    sizes, offsets = buffers["sizes"], buffers["offsets"]
    kinds = {
        "calibration_scores": torch.float64,
        "thresholds": torch.float64,
        **{k: torch.int64 for k in ("keys", "offsets", "sizes", "ranks", "group_of")},
    }
    for name, dtype in kinds.items():
        value = buffers[name]
        if value.dtype != dtype or value.ndim != 1:
            raise ValueError(
                f"Expected state[{name!r}] to be a 1-D {dtype} tensor, got {value.dtype} of "
                f"shape {tuple(value.shape)}."
            )
    check_finite(scores, "state['calibration_scores']")
    count = sizes.shape[0]
    consistent = (
        keys.shape == scores.shape
        and all(buffers[k].shape[0] == count for k in ("offsets", "ranks", "thresholds"))
        and count >= 1
        and bool((scores[1:] >= scores[:-1]).all())
        and bool((keys[1:] >= keys[:-1]).all())
        and bool((sizes >= 0).all())
        and int(sizes.sum()) == scores.shape[0]
        and torch.equal(offsets, torch.cumsum(sizes, 0) - sizes)
        and bool(((buffers["group_of"] >= 0) & (buffers["group_of"] < count)).all())
    )
    if not consistent:
        raise ValueError("The state's calibration tensors do not describe one calibration.")
    ranks = group_ranks(sizes, alpha)
    if not torch.equal(ranks, buffers["ranks"]) or bool((ranks < 1).any()):
        raise ValueError(
            "The state's ranks do not follow from its group sizes and alpha "
            "(k = floor(alpha (n + 1)) >= 1 per group)."
        )
    thresholds = group_thresholds(scores, keys, offsets, ranks)
    if not torch.equal(thresholds, buffers["thresholds"]):
        raise ValueError("The state's thresholds are not the k-th smallest calibration scores.")
