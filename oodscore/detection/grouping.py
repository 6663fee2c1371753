r"""Group rules for Mondrian (class-conditional) calibration: which group an input belongs to.

A rule reads the group of each input from its logits, before any score is compared: the
predicted class (arg-max), a group of classes chosen by the user, or, for multi-label
models, the number of labels whose sigmoid exceeds a threshold. Each rule knows its groups
in advance from the number of classes C, so every group a test input can fall in is known
at calibration time (`oodscore.detection.mondrian` refuses or merges the small ones).

The rules are pure torch (`assign`), so the decision path that uses them exports with
``torch.export``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from numbers import Integral
from typing import Any, ClassVar

import torch
from torch import Tensor

from oodscore._params import HasParams
from oodscore._validation import UNIT_OPEN
from oodscore.groups.spec import GroupSpec

__all__ = [
    "ByClassGroups",
    "ByLabelCount",
    "ByPredictedClass",
    "Grouping",
    "GroupingSpec",
    "as_grouping",
]


class Grouping(HasParams, ABC):
    """A rule that puts each input, from its (N, C) logits, in one of a fixed set of groups.

    A rule of one's own implements `num_groups`, `group_names` and `assign` (pure torch,
    int64 ids in ``0 .. num_groups - 1``); its groups must not depend on the data.

    Attributes:
        code: The rule's number in a detector's `state_dict` (tensors only), so that a
            state calibrated with one rule is not loaded into a detector with another
            (0: no rule; 1-3: the built-in rules; -1: a rule of one's own).
    """

    code: ClassVar[int] = -1

    @abstractmethod
    def num_groups(self, num_classes: int) -> int:
        """How many groups inputs of ``num_classes`` logits can fall in."""

    @abstractmethod
    def group_names(self, num_classes: int) -> list[str]:
        """A readable name per group, in group order."""

    @abstractmethod
    def assign(self, logits: Tensor) -> Tensor:
        """The group of each row of checked (N, C) logits: (N,) int64 (pure torch)."""

    def check_classes(self, num_classes: int) -> None:
        """Refuse a number of classes the rule cannot group; any by default."""

    def rule_state(self, num_classes: int) -> dict[str, Tensor]:
        """Tensors that pin the rule down (saved in the detector's `state_dict`)."""
        return {"code": torch.tensor(self.code, dtype=torch.int64)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params_repr()})"


class ByPredictedClass(Grouping):
    r"""One group per predicted class, $g(x) = \arg\max_c f_c(x)$ (C groups).

    Examples:
        >>> import torch
        >>> from oodscore.detection import ByPredictedClass
        >>> ByPredictedClass().assign(torch.tensor([[0.1, 2.0, 0.3], [5.0, 1.0, 0.0]]))
        tensor([1, 0])
    """

    code: ClassVar[int] = 1

    def num_groups(self, num_classes: int) -> int:
        """C."""
        return num_classes

    def group_names(self, num_classes: int) -> list[str]:
        """``"class 0"``, ``"class 1"``, ..."""
        return [f"class {c}" for c in range(num_classes)]

    def assign(self, logits: Tensor) -> Tensor:
        """The arg-max class (N,) (the first one on ties, as ``torch.argmax``)."""
        return torch.argmax(logits, dim=1)


class ByClassGroups(Grouping):
    r"""Groups of classes chosen by the user: $g(x) = m(\arg\max_c f_c(x))$.

    Args:
        classes: The group of each class, as a sequence of C labels (``["animal",
            "animal", "vehicle"]``), a mapping ``{class id: label}`` that names every class,
            or a `oodscore.GroupSpec` (its groups, in order). Labels are any hashable
            values (strings, integers); groups are ordered by first appearance.

    Examples:
        >>> import torch
        >>> from oodscore.detection import ByClassGroups
        >>> rule = ByClassGroups(["animal", "animal", "vehicle"])
        >>> rule.assign(torch.tensor([[0.1, 2.0, 0.3], [0.0, 1.0, 5.0]]))
        tensor([0, 1])
        >>> rule.group_names(3)
        ["'animal'", "'vehicle'"]
    """

    code: ClassVar[int] = 2

    def __init__(self, classes: Sequence[Hashable] | Mapping[int, Hashable] | GroupSpec) -> None:
        self.classes = classes
        self._labels, self._table = _class_table(classes)

    @property
    def labels(self) -> list[Hashable]:
        """The group labels, in group order."""
        return list(self._labels)

    def num_groups(self, num_classes: int) -> int:
        """The number of distinct labels."""
        return len(self._labels)

    def group_names(self, num_classes: int) -> list[str]:
        """The labels' reprs: ``"'animal'"``, ``"3"``."""
        return [repr(label) for label in self._labels]

    def check_classes(self, num_classes: int) -> None:
        """The mapping must name exactly the C classes of the logits."""
        if len(self._table) != num_classes:
            raise ValueError(
                f"Expected the class groups to name each of the C = {num_classes} classes "
                f"of the logits, got a mapping of {len(self._table)} classes."
            )

    def assign(self, logits: Tensor) -> Tensor:
        """The group of the arg-max class (N,)."""
        table = self._table.to(logits.device)
        return table[torch.argmax(logits, dim=1)]

    def rule_state(self, num_classes: int) -> dict[str, Tensor]:
        """The code and the class -> group table (C,)."""
        return {**super().rule_state(num_classes), "class_groups": self._table.clone()}


class ByLabelCount(Grouping):
    r"""Multi-label models: the number of labels whose sigmoid exceeds ``threshold`` (C + 1 groups).

    $$ g(x) = \#\{c : \sigma(f_c(x)) > \tau\} \in \{0, \dots, C\} $$

    Args:
        threshold: $\tau$ in (0, 1) (default 0.5, a label predicted present).

    Examples:
        >>> import torch
        >>> from oodscore.detection import ByLabelCount
        >>> ByLabelCount().assign(torch.tensor([[3.0, -1.0, 0.5], [-2.0, -3.0, -1.0]]))
        tensor([2, 0])
    """

    code: ClassVar[int] = 3

    def __init__(self, *, threshold: float = 0.5) -> None:
        self.threshold = UNIT_OPEN.check(threshold, "threshold")

    def num_groups(self, num_classes: int) -> int:
        """C + 1 (0 to C labels)."""
        return num_classes + 1

    def group_names(self, num_classes: int) -> list[str]:
        """``"0 labels"``, ``"1 label"``, ``"2 labels"``, ..."""
        return [f"{n} label{'' if n == 1 else 's'}" for n in range(num_classes + 1)]

    def assign(self, logits: Tensor) -> Tensor:
        """The count of labels over the threshold (N,)."""
        return (torch.sigmoid(logits) > self.threshold).sum(dim=1)

    def rule_state(self, num_classes: int) -> dict[str, Tensor]:
        """The code and the threshold."""
        threshold = torch.tensor(self.threshold, dtype=torch.float64)
        return {**super().rule_state(num_classes), "label_threshold": threshold}


GroupingSpec = Grouping | str | Sequence[Hashable] | Mapping[int, Hashable] | GroupSpec | None
"""``None`` (one group: marginal), ``"predicted_class"``, ``"label_count"``, a `Grouping`,
or the class groups that `ByClassGroups` takes."""

_NAMED: dict[str, type[Grouping]] = {
    "predicted_class": ByPredictedClass,
    "label_count": ByLabelCount,
}


def as_grouping(spec: GroupingSpec) -> Grouping | None:
    """The `Grouping` of ``spec`` (``None`` stays ``None``: one group).

    Raises:
        ValueError: On an unknown name.
        TypeError: On anything else.

    Examples:
        >>> from oodscore.detection import as_grouping
        >>> as_grouping("label_count"), as_grouping([0, 0, 1])
        (ByLabelCount(threshold=0.5), ByClassGroups(classes=[0, 0, 1]))
    """
    if spec is None or isinstance(spec, Grouping):
        return spec
    if isinstance(spec, str):
        if spec not in _NAMED:
            raise ValueError(
                f"Expected `grouping` to be one of {sorted(_NAMED)}, a Grouping or the group "
                f"of each class, got {spec!r}."
            )
        return _NAMED[spec]()
    if isinstance(spec, (Sequence, Mapping, GroupSpec)):
        return ByClassGroups(spec)
    raise TypeError(
        "Expected `grouping` to be None, 'predicted_class', 'label_count', a Grouping, or the "
        f"group of each class (a sequence or mapping), got {type(spec).__name__}."
    )


def _class_table(
    classes: Sequence[Hashable] | Mapping[int, Hashable] | GroupSpec,
) -> tuple[list[Hashable], Tensor]:
    """Group labels in order of first appearance, and the (C,) int64 class -> group table."""
    labels_of: list[Any]
    if isinstance(classes, GroupSpec):
        labels_of = [0] * classes.num_classes
        for k, members in enumerate(classes.groups):
            for c in members:
                labels_of[c] = k
    elif isinstance(classes, Mapping):
        keys = list(classes)
        if any(isinstance(k, bool) or not isinstance(k, Integral) for k in keys):
            raise TypeError(f"Expected the class groups' keys to be class ids, got {keys!r}.")
        if sorted(int(k) for k in keys) != list(range(len(keys))):
            raise ValueError(
                "Expected the class groups to name every class 0 .. C-1 exactly once, got "
                f"the classes {sorted(keys)}."
            )
        labels_of = [classes[c] for c in range(len(keys))]
    elif isinstance(classes, Sequence) and not isinstance(classes, (str, bytes)):
        labels_of = list(classes)
    else:
        raise TypeError(
            "Expected the class groups as a sequence of C labels, a {class: label} mapping or "
            f"a GroupSpec, got {type(classes).__name__}."
        )
    if not labels_of:
        raise ValueError("Expected the class groups to name at least one class, got none.")
    order: dict[Any, int] = {}
    for label in labels_of:
        if isinstance(label, float) and not isinstance(label, bool) and label != label:
            raise ValueError("Expected the class groups' labels to be comparable, got NaN.")
        if not isinstance(label, Hashable) or isinstance(label, bool):
            raise TypeError(f"Expected hashable group labels (str, int), got {label!r}.")
        order.setdefault(label, len(order))
    table = torch.tensor([order[label] for label in labels_of], dtype=torch.int64)
    return list(order), table
