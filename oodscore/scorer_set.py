"""A labelled set of scorers of any input kind: resolve them, fit those that need it, score."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from oodscore.scorers.base import ArrayLike, FittedScorer, Scorer, get_scorer
from oodscore.scorers.head import UsesHead
from oodscore.scorers.model_scorer import ModelScorer

ScorerSpec = str | Scorer
"""A registered scorer name or a scorer instance."""

Scorers = ScorerSpec | Sequence[ScorerSpec] | Mapping[str, ScorerSpec]
"""One scorer, a sequence of them, or ``{label: scorer}`` to name them in the report."""


def resolve_scorers(scorers: Scorers) -> dict[str, Scorer]:
    """Turn names, instances or a ``{label: name or instance}`` mapping into ``{label: Scorer}``.

    A name becomes `oodscore.get_scorer` of it with default parameters, labelled by
    the name; an instance is labelled by its registry name (or its class name when it has
    none). Two scorers with the same label are an error: pass a mapping to tell them apart.

    Raises:
        ValueError: On no scorers, an unknown name or a repeated label.
        TypeError: On something that is neither a name nor a `oodscore.Scorer`.

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


def require_fit_data(scorers: Mapping[str, Scorer], given: Mapping[str, tuple[str, bool]]) -> None:
    """Raise a ``ValueError`` if a scorer is not fitted and its kind of fit data is missing.

    Args:
        scorers: The labelled scorers.
        given: ``{input kind: (argument, given)}``: for ``"features"`` and ``"logits"``, the
            argument that holds that kind of fit data and whether it was passed.
    """
    for kind, (argument, present) in given.items():
        labels = [label for label, s in unfitted(scorers).items() if s.input_kind == kind]
        if labels and not present:
            raise ValueError(
                f"The scorers {labels} are not fitted and `{argument}` was not given: they fit "
                f"on in-distribution {kind}; pass `{argument}` (usually the training or a "
                f"validation set) to fit them, or fit them first (scorer.fit({kind}, targets), "
                "or load_state_dict)."
            )


def require_heads(
    scorers: Mapping[str, Scorer], head: nn.Linear | None, why: str
) -> list[UsesHead]:
    """Give ``head`` to the scorers that apply the classifier head and have none.

    Args:
        scorers: The labelled scorers; those with `needs_head` and no head get ``head``
            (`oodscore.scorers.head.UsesHead.set_head`).
        head: The model's head, or ``None`` when it cannot be used.
        why: Why there is no head, for the error message.

    Returns:
        The scorers that got ``head``: the caller takes it back (``set_head(None)``) after
        the call it was lent for.

    Raises:
        ValueError: If a scorer needs a head, has none, and ``head`` is ``None``.
    """
    missing = [
        label
        for label, scorer in scorers.items()
        if isinstance(scorer, UsesHead) and not scorer.has_head
    ]
    if missing and head is None:
        raise ValueError(
            f"The scorers {missing} apply the classifier head to the features and have none; "
            f"{why}. Build them with head=model.fc (an nn.Linear) or weight=/bias=."
        )
    lent: list[UsesHead] = []
    for label in missing:
        scorer = scorers[label]
        assert isinstance(scorer, UsesHead)
        assert head is not None
        scorer.set_head(head)
        lent.append(scorer)
    return lent


def fit_unfitted(
    scorers: Mapping[str, Scorer],
    *,
    logits: ArrayLike | None,
    features: ArrayLike | None,
    targets: ArrayLike | None,
) -> None:
    """Fit every scorer of `unfitted` in place on the ID data of its input kind and ``targets``."""
    for scorer in unfitted(scorers).values():
        data = features if scorer.input_kind == "features" else logits
        assert data is not None  # the callers check with require_fit_data
        scorer.fit(data, targets)


def score_all(
    scorers: Mapping[str, Scorer], logits: Tensor | None, features: Tensor | None
) -> dict[str, Tensor]:
    """``{label: scores}``: logit scorers score ``logits``, feature scorers ``features``.

    Model scorers are skipped (they run the model themselves, see `score_model_inputs`).
    The scores keep the dtype each scorer returns.
    """
    out: dict[str, Tensor] = {}
    for label, scorer in scorers.items():
        if scorer.input_kind == "model":
            continue
        inputs = features if scorer.input_kind == "features" else logits
        assert inputs is not None  # the callers check that each kind has its inputs
        out[label] = scorer(inputs)
    return out


def score_model_inputs(
    scorers: Mapping[str, Scorer], model: nn.Module, inputs: Tensor
) -> dict[str, Tensor]:
    """``{label: scores}`` of the model scorers (`oodscore.ModelScorer`) on one batch."""
    return {
        label: scorer(model, inputs)
        for label, scorer in scorers.items()
        if isinstance(scorer, ModelScorer)
    }
