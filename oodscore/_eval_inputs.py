"""The checks of `oodscore.evaluation`'s inputs: saved logits and features, OOD-set names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from oodscore._arrays import as_tensor
from oodscore._validation import check_matrix, check_same_width
from oodscore.metrics.classification import as_logits
from oodscore.report import MEAN


def check_no_logits(
    id_logits: Any, ood_logits: Any, logit_scorers: list[str], id_targets: Any
) -> None:
    """Without logits: only feature scorers, both logit arguments None, no targets."""
    if (id_logits is None) != (ood_logits is None):
        given, missing = ("id_logits", "ood_logits")[:: 1 if ood_logits is None else -1]
        raise ValueError(f"Expected `{missing}` with `{given}`: pass both or neither, got None.")
    if logit_scorers:
        raise ValueError(
            f"Expected `id_logits` and `ood_logits` for the logit scorers {logit_scorers}, "
            "got None."
        )
    if id_targets is not None:
        raise ValueError(
            "Expected `id_logits` with `id_targets`: the ID accuracy or mAP is read from them."
        )


def logit_sets(id_logits: Any, ood_logits: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
    check_ood_names(ood_logits, "ood_logits")
    id_tensor = as_logits(id_logits, "id_logits")
    ood_tensors = {}
    for name, logits in ood_logits.items():
        tensor = as_logits(logits, f"ood_logits[{name!r}]")
        check_same_width(id_tensor, tensor, ("id_logits", f"ood_logits[{name!r}]"))
        ood_tensors[name] = tensor
    return id_tensor, ood_tensors


def feature_sets(
    id_features: Any, ood_features: Mapping[str, Any] | None, labels: list[str]
) -> tuple[Tensor, dict[str, Tensor]]:
    for argument, value in (("id_features", id_features), ("ood_features", ood_features)):
        if value is None:
            raise ValueError(f"Expected `{argument}` for the feature scorers {labels}, got None.")
    assert ood_features is not None
    check_ood_names(ood_features, "ood_features")
    id_tensor = as_features(id_features, "id_features")
    ood_tensors = {}
    for name, features in ood_features.items():
        argument = f"ood_features[{name!r}]"
        tensor = as_features(features, argument)
        check_same_width(id_tensor, tensor, ("id_features", argument), what="features", symbol="D")
        ood_tensors[name] = tensor
    return id_tensor, ood_tensors


def as_features(x: Any, name: str) -> Tensor:
    """``x`` as a checked (N, D) floating tensor with N >= 1."""
    tensor, _ = as_tensor(x, name)
    check_matrix(tensor, name, columns="D")
    if tensor.shape[0] == 0:
        raise ValueError(f"Expected `{name}` to have at least one row, got shape (0, D).")
    return tensor


def check_rows(
    id_logits: Tensor,
    ood_logits: Mapping[str, Tensor],
    id_features: Tensor,
    ood_features: Mapping[str, Tensor],
) -> None:
    """The OOD sets of logits and features agree, and so do the rows of each set."""
    if set(ood_logits) != set(ood_features):
        raise ValueError(
            f"Expected `ood_features` to hold the OOD sets of `ood_logits`, "
            f"{list(ood_logits)}, got {list(ood_features)}."
        )
    pairs = [("id_logits", "id_features", id_logits, id_features)]
    pairs += [
        (f"ood_logits[{n!r}]", f"ood_features[{n!r}]", t, ood_features[n])
        for n, t in ood_logits.items()
    ]
    for logits_name, features_name, logits, features in pairs:
        if logits.shape[0] != features.shape[0]:
            raise ValueError(
                f"Expected `{features_name}` to have one row per row of `{logits_name}` "
                f"(N = {logits.shape[0]}), got shape {tuple(features.shape)}."
            )


def check_ood_names(sets: Mapping[str, Any], name: str) -> None:
    if not isinstance(sets, Mapping):
        raise TypeError(
            f"Expected `{name}` to be a {{name: ...}} mapping, got {type(sets).__name__}."
        )
    if not sets:
        raise ValueError(f"Expected `{name}` to hold at least one OOD set, got none.")
    for key in sets:
        if not isinstance(key, str) or not key:
            raise TypeError(f"Expected the OOD-set names in `{name}` to be strings, got {key!r}.")
        if key == MEAN:
            raise ValueError(
                f"The OOD-set name {MEAN!r} is reserved for the report's mean rows; rename it."
            )
