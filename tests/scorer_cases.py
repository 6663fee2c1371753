"""How the contract tests build each registered scorer and the data it is checked on.

One place for every scorer's test set-up, so each contract (`test_contract.py` for logit
scorers, `test_fitted_contract.py` for fitted ones, `test_head_contract.py` for scorers that
apply the classifier head) covers a new scorer without edits: a scorer whose defaults do
not suit the small test data gets its parameters in `SPECIAL`.

The data: three Gaussian classes in D = 5 (float64, centres 4 e_c), and a head
W = 2 I (3 x 5) + small noise, b small, so the logits of class c peak at c.
"""

from __future__ import annotations

from typing import Any

import torch

import oodscore  # noqa: F401  (registers the built-in scorers)
from oodscore import FittedScorer, Scorer, get_scorer, list_scorers
from oodscore.scorers.base import SCORERS

N, D, C = 300, 5, 3

SPECIAL: dict[str, dict[str, Any]] = {
    "dice": {"percentile": 70},  # 90 keeps 2 of the 3 x 5 test weights: a class is lost
    "knn": {"k": 5},
    "vim": {"dim": 3},
}
"""Scorer name -> constructor parameters for the small test data (head excluded)."""


def kind(name: str) -> str:
    """The registered class's `input_kind`."""
    return str(SCORERS.get_class(name).input_kind)


def names(*, input_kind: str, fitted: bool | None = None, head: bool | None = None) -> list[str]:
    """Registered names of one input kind, filtered by ``requires_fit`` and ``needs_head``."""
    out = []
    for name in list_scorers():
        cls = SCORERS.get_class(name)
        if cls.input_kind != input_kind:
            continue
        if fitted is not None and cls.requires_fit != fitted:
            continue
        if head is not None and cls.needs_head != head:
            continue
        out.append(name)
    return out


def head_tensors(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The test head's weight (C, D) and bias (C,)."""
    g = torch.Generator().manual_seed(7)
    weight = 2.0 * torch.eye(C, D, dtype=torch.float64)
    weight += 0.1 * torch.randn(C, D, generator=g, dtype=torch.float64)
    bias = 0.1 * torch.randn(C, generator=g, dtype=torch.float64)
    return weight.to(dtype), bias.to(dtype)


def build(name: str, **overrides: Any) -> Scorer:
    """``get_scorer(name)`` with its `SPECIAL` parameters and, if it needs one, the test head."""
    params = dict(SPECIAL.get(name, {}))
    if SCORERS.get_class(name).needs_head:
        weight, bias = head_tensors()
        params.update(weight=weight, bias=bias)
    params.update(overrides)
    return get_scorer(name, **params)


def features(seed: int = 0, rows: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well-separated Gaussian classes in D = 5, float64, and their class ids."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.arange(rows) % C
    centres = 4.0 * torch.eye(C, D, dtype=torch.float64)
    return centres[targets] + torch.randn(rows, D, generator=g, dtype=torch.float64), targets


def logits_of(x: torch.Tensor) -> torch.Tensor:
    """The test head's logits of features ``x``."""
    weight, bias = head_tensors(x.dtype)
    return x @ weight.T + bias


def inputs(name: str, seed: int = 0, rows: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``name`` scores and fits on (features, or the head's logits of them), and targets."""
    x, targets = features(seed, rows)
    return (logits_of(x) if kind(name) == "logits" else x), targets


def fitted(name: str, **overrides: Any) -> FittedScorer:
    """`build`, then fit on `inputs` (seed 0)."""
    scorer = build(name, **overrides)
    assert isinstance(scorer, FittedScorer)
    x, targets = inputs(name)
    assert scorer.fit(x, targets) is scorer
    return scorer


def id_and_far(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Points at the class centres, and points every scorer should find far from them.

    Distances (no head): the centres shifted by 30. Head scorers (energy after shaping,
    ViM, GradNorm): small uniform activations, whose logits are flat. Logit scorers: the
    logits of the centres, and flat logits.
    """
    at_class = 4.0 * torch.eye(C, D, dtype=torch.float64)
    if kind(name) == "logits":
        return logits_of(at_class), torch.zeros(C, C, dtype=torch.float64)
    if SCORERS.get_class(name).needs_head:
        return at_class, torch.full((C, D), 0.05, dtype=torch.float64)
    return at_class, at_class + 30.0
