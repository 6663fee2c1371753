r"""Mondrian calibration groups: refuse the groups too small for alpha, or pool them into "rest".

A group with $n_g$ calibration scores can reject only when
$k_g = \lfloor \alpha (n_g + 1) \rfloor \ge 1$, i.e. $n_g \ge \lceil 1/\alpha \rceil - 1$
(`oodscore.functional.conformal.min_calibration_size`). Groups below that minimum, those
with no calibration input at all included, are refused, naming each one; with
``merge_small_groups=True`` they are pooled into one group, ``"rest"``, calibrated as one.
If the pooled group is itself below the minimum, the smallest remaining groups join it
until it is not. Every group a test input can fall in is thus calibrated: a test input is
never in a group that calibration did not see.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from oodscore.functional.conformal import min_calibration_size

REST = "rest"
"""The name of the pooled group of small groups."""

SHOWN_GROUPS = 8
"""Groups named one by one in an error message before the rest are counted."""


@dataclass(frozen=True)
class GroupPlan:
    """Which calibration group each group of the rule goes to.

    Attributes:
        group_of: (G,) int64: the calibration group of each of the rule's G groups.
        names: The name of each calibration group (a rule group's, or ``"rest"``).
        members: The rule groups each calibration group holds (one, or those pooled).
    """

    group_of: Tensor
    names: list[str]
    members: list[list[str]]

    @property
    def num_groups(self) -> int:
        """The number of calibration groups K."""
        return len(self.names)


def plan_groups(
    sizes: list[int], names: list[str], alpha: float, *, merge_small_groups: bool
) -> GroupPlan:
    """Keep the groups with enough calibration scores for ``alpha``; refuse or pool the others.

    Args:
        sizes: Calibration scores per rule group (G,).
        names: The rule groups' names (G,).
        alpha: The level.
        merge_small_groups: Pool the small groups into ``"rest"`` instead of refusing them.

    Raises:
        ValueError: If a group is too small and ``merge_small_groups`` is false (the message
            names each small group and its size, and the minimum), or if there are fewer
            calibration scores in all than the minimum.

    Examples:
        >>> from oodscore.detection.mondrian import plan_groups
        >>> plan = plan_groups([40, 3, 0, 25], ["a", "b", "c", "d"], 0.05,
        ...                    merge_small_groups=True)
        >>> plan.group_of.tolist(), plan.names, plan.members[-1]
        ([0, 1, 1, 1], ['a', 'rest'], ['b', 'c', 'd'])
    """
    minimum = min_calibration_size(alpha)
    total = sum(sizes)
    if total < minimum:
        raise ValueError(too_few_message(total, alpha))
    small = [g for g, size in enumerate(sizes) if size < minimum]
    if not small:
        return _plan(len(sizes), names, [])
    if not merge_small_groups:
        listed = ", ".join(f"{names[g]} ({sizes[g]})" for g in small[:SHOWN_GROUPS])
        more = f" and {len(small) - SHOWN_GROUPS} more" if len(small) > SHOWN_GROUPS else ""
        noun = "group has" if len(small) == 1 else "groups have"
        raise ValueError(
            f"{len(small)} calibration {noun} fewer than the {minimum} scores alpha={alpha!r} "
            f"needs (ceil(1/alpha) - 1): {listed}{more} (calibration scores in parentheses); "
            "add calibration data, raise alpha, group classes together, or pass "
            "merge_small_groups=True to pool them into one 'rest' group."
        )
    pooled = list(small)
    kept = sorted((g for g in range(len(sizes)) if g not in pooled), key=lambda g: (sizes[g], g))
    while sum(sizes[g] for g in pooled) < minimum:
        pooled.append(kept.pop(0))  # total >= minimum, so this ends before `kept` runs out
    return _plan(len(sizes), names, sorted(pooled))


def _plan(count: int, names: list[str], pooled: list[int]) -> GroupPlan:
    kept = [g for g in range(count) if g not in pooled]
    group_of = torch.empty(count, dtype=torch.int64)
    for index, g in enumerate(kept):
        group_of[g] = index
    if pooled:
        group_of[pooled] = len(kept)
    plan_names = [names[g] for g in kept] + ([REST] if pooled else [])
    members = [[names[g]] for g in kept] + ([[names[g] for g in pooled]] if pooled else [])
    return GroupPlan(group_of, plan_names, members)


def too_few_message(num_calibration: int, alpha: float) -> str:
    """The error for fewer calibration scores than ``alpha`` needs, with the minimum."""
    minimum = min_calibration_size(alpha)
    return (
        f"Expected at least {minimum} calibration scores for alpha={alpha!r} (ceil(1/alpha) - 1: "
        f"with fewer, floor(alpha (n + 1)) = 0 and no input is ever rejected), got "
        f"n = {num_calibration}."
    )
