"""A labelled set of scorers of any input kind: resolve them, fit those that need it, score."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor

from oodscore.scorers.base import ArrayLike, FittedScorer, Scorer, get_scorer

ScorerSpec = str | Scorer
"""A registered scorer name or a scorer instance."""

Scorers = ScorerSpec | Sequence[ScorerSpec] | Mapping[str, ScorerSpec]
"""One scorer, a sequence of them, or ``{label: scorer}`` to name them in the report."""


def resolve_scorers(scorers: Scorers) -> dict[str, Scorer]:
    """Turn names, instances or a ``{label: name or instance}`` mapping into ``{label: Scorer}``.

    A name becomes `oodscore.get_scorer` of it with default parameters, labelled by
    the name; an instance is labelled by its registry name (or its class name when it has
    none). Two scorers with the same label are an error: pass a mapping to tell them apart.
    Logit and feature scorers are accepted; model scorers (``input_kind == "model"``) are
    not supported yet.

    Raises:
        ValueError: On no scorers, an unknown name or a repeated label.
        TypeError: On something that is neither a name nor a `oodscore.Scorer`, or on a
            model scorer.

    Examples:
        >>> from oodscore import Energy
        >>> from oodscore.evaluation import resolve_scorers
        >>> resolve_scorers(["msp", Energy()])
        {'msp': MSP(temperature=1.0), 'energy': Energy(temperature=1.0)}
        >>> resolve_scorers({"energy_t2": Energy(temperature=2.0)})
        {'energy_t2': Energy(temperature=2.0)}
        >>> resolve_scorers({"maha": "mahalanobis"})["maha"].input_kind
        'features'
    """
    pairs: list[tuple[str | None, Any]]
    if isinstance(scorers, (str, Scorer)):
        pairs = [(None, scorers)]
    elif isinstance(scorers, Mapping):
        pairs = list(scorers.items())
    elif isinstance(scorers, Iterable):
        pairs = [(None, s) for s in scorers]
    else:
        raise TypeError(
            "Expected `scorers` to be a scorer name, a Scorer, a sequence of them or a "
            f"{{label: scorer}} mapping, got {type(scorers).__name__}."
        )
    if not pairs:
        raise ValueError("Expected `scorers` to name at least one scorer, got none.")
    resolved: dict[str, Scorer] = {}
    for label, spec in pairs:
        if isinstance(spec, str):
            scorer = get_scorer(spec)
            default_label = spec
        elif isinstance(spec, Scorer):
            scorer = spec
            default_label = type(spec).name or type(spec).__name__
        else:
            raise TypeError(
                f"Expected each scorer to be a registered name or a Scorer, got {spec!r}."
            )
        if scorer.input_kind == "model":
            raise TypeError(
                f"Scorer {scorer!r} runs the model itself (input_kind 'model'); evaluate and "
                "evaluate_logits do not support model scorers yet (not implemented)."
            )
        name = default_label if label is None else label
        if not isinstance(name, str) or not name:
            raise TypeError(f"Expected scorer labels to be non-empty strings, got {name!r}.")
        if name in resolved:
            raise ValueError(
                f"Two scorers are labelled {name!r}; pass a {{label: scorer}} mapping to "
                "tell them apart."
            )
        resolved[name] = scorer
    return resolved


def of_kind(scorers: Mapping[str, Scorer], kind: str) -> list[str]:
    """The labels of the scorers whose `input_kind` is ``kind``, in order."""
    return [label for label, scorer in scorers.items() if scorer.input_kind == kind]


def unfitted(scorers: Mapping[str, Scorer]) -> dict[str, FittedScorer]:
    """The fitted scorers (`oodscore.FittedScorer`) of ``scorers`` that have no state yet."""
    return {
        label: scorer
        for label, scorer in scorers.items()
        if isinstance(scorer, FittedScorer) and not scorer.is_fitted
    }


def require_fit_data(scorers: Mapping[str, Scorer], given: bool, argument: str) -> None:
    """Raise a ``ValueError`` if a scorer needs fitting and ``argument`` was not ``given``."""
    labels = list(unfitted(scorers))
    if labels and not given:
        raise ValueError(
            f"The feature scorers {labels} are not fitted and `{argument}` was not given: pass "
            f"`{argument}` (in-distribution training data) to fit them, or fit them first "
            "(scorer.fit(features, targets), or load_state_dict)."
        )


def fit_unfitted(
    scorers: Mapping[str, Scorer], features: ArrayLike, targets: ArrayLike | None
) -> None:
    """Fit every scorer of `unfitted` in place on ID ``features`` and ``targets``."""
    for scorer in unfitted(scorers).values():
        scorer.fit(features, targets)


def score_all(
    scorers: Mapping[str, Scorer], logits: Tensor | None, features: Tensor | None
) -> dict[str, Tensor]:
    """``{label: scores}``: logit scorers score ``logits``, feature scorers ``features``.

    The scores keep the dtype each scorer returns.
    """
    out: dict[str, Tensor] = {}
    for label, scorer in scorers.items():
        inputs = features if scorer.input_kind == "features" else logits
        assert inputs is not None  # the callers check that each kind has its inputs
        out[label] = scorer(inputs)
    return out
