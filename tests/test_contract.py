"""The Scorer contract, checked for every registered scorer: new entries get it for free."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import torch

import oodscore
from oodscore import Scorer, get_scorer, list_scorers

# Scorers whose construction or input needs more than defaults: name -> (params, width factory).
SPECIAL: dict[str, tuple[dict[str, Any], int]] = {
    "mos": ({"groups": [2, 2, 2]}, 6 + 3),  # 6 classes in 3 groups: C + K logits
}
NUM_CLASSES = 6


def build(name: str) -> tuple[Scorer, int]:
    params, width = SPECIAL.get(name, ({}, NUM_CLASSES))
    return get_scorer(name, **params), width


def logits_for(width: int, rows: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, width, generator=generator, dtype=torch.float64) * 3


LOGIT_SCORERS = [
    n
    for n in list_scorers()
    if oodscore.scorers.base.SCORERS.get_class(n).input_kind == "logits"
    and not oodscore.scorers.base.SCORERS.get_class(n).requires_fit
]


@pytest.fixture(params=LOGIT_SCORERS)
def scorer_and_width(request) -> tuple[Scorer, int]:
    return build(request.param)


def test_registry_is_not_empty():
    assert {"msp", "max_logit", "energy", "entropy", "gen", "joint_energy"} <= set(list_scorers())


def test_shape_and_class_flags(scorer_and_width):
    scorer, width = scorer_and_width
    scores = scorer(logits_for(width))
    assert scores.shape == (16,)
    assert scorer.higher_is_id is True
    assert isinstance(scorer.requires_fit, bool)


def test_higher_is_in_distribution(scorer_and_width):
    """A confident prediction scores above a flat one, for every scorer."""
    scorer, width = scorer_and_width
    peaked = torch.zeros(1, width, dtype=torch.float64)
    peaked[0, 1] = 10.0
    flat = torch.zeros(1, width, dtype=torch.float64)
    assert scorer(peaked).item() > scorer(flat).item()


def test_batch_invariance(scorer_and_width):
    scorer, width = scorer_and_width
    logits = logits_for(width, rows=12)
    whole = scorer(logits)
    one_by_one = torch.cat([scorer(logits[i : i + 1]) for i in range(len(logits))])
    torch.testing.assert_close(whole, one_by_one, rtol=1e-12, atol=1e-12)
    permutation = torch.randperm(len(logits))
    torch.testing.assert_close(scorer(logits[permutation]), whole[permutation])


def test_numpy_and_torch_agree(scorer_and_width):
    scorer, width = scorer_and_width
    logits = logits_for(width)
    from_numpy = scorer(logits.numpy())
    assert isinstance(from_numpy, np.ndarray)
    np.testing.assert_array_equal(from_numpy, scorer(logits).numpy())


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float64, torch.float64),
        (torch.float32, torch.float32),
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.int64, torch.float32),
    ],
)
def test_dtype_and_device_kept(scorer_and_width, dtype, expected):
    scorer, width = scorer_and_width
    logits = (logits_for(width) * 2).to(dtype)
    scores = scorer(logits)
    assert isinstance(scores, torch.Tensor)
    assert scores.dtype == expected
    assert scores.device == logits.device


@pytest.mark.parametrize(("dtype", "expected"), [(np.float32, np.float32), (np.int32, np.float64)])
def test_numpy_dtype(scorer_and_width, dtype, expected):
    scorer, width = scorer_and_width
    scores = scorer((logits_for(width).numpy() * 2).astype(dtype))
    assert scores.dtype == expected


def test_gradient_flows(scorer_and_width):
    scorer, width = scorer_and_width
    logits = logits_for(width).requires_grad_(True)
    scorer(logits).sum().backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_gradcheck(scorer_and_width):
    scorer, width = scorer_and_width
    logits = logits_for(width, rows=3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: scorer(x), (logits,))


def test_empty_batch(scorer_and_width):
    scorer, width = scorer_and_width
    assert scorer(torch.zeros(0, width)).shape == (0,)
    empty = scorer(np.zeros((0, width), dtype=np.float32))
    assert isinstance(empty, np.ndarray)
    assert empty.shape == (0,)


def test_public_name_round_trips(scorer_and_width):
    scorer, _ = scorer_and_width
    cls = type(scorer)
    assert build(scorer.name)[0].__class__ is cls
    assert getattr(oodscore, cls.__name__) is cls
    assert cls.__name__ in oodscore.__all__
    # the public names (oodscore loads them on first use, so vars() holds only those used)
    namespace = {name: getattr(oodscore, name) for name in oodscore.__all__}
    rebuilt = eval(repr(scorer), namespace)
    assert rebuilt.get_params() == scorer.get_params()


def test_docstring_cites_a_source(scorer_and_width):
    scorer, _ = scorer_and_width
    doc = type(scorer).__doc__ or ""
    assert re.search(r"\b20[12]\d\b", doc)
    assert "\n    Examples:\n" in doc  # the heading mkdocstrings renders as code
    assert "\n    Source: " in doc
