"""Shared fixtures and hypothesis profiles."""

from __future__ import annotations

import importlib
import os
import pkgutil

import numpy as np
import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded NumPy generator."""
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


def _import_scorer_modules() -> None:
    """Import every module of `oodscore.scorers`, so each registered scorer gets the contracts.

    `oodscore` imports them all itself (`tests/test_architecture.py` checks); this makes the
    contract suites cover a scorer module even before the package exports it.
    """
    import oodscore.scorers

    for module in pkgutil.iter_modules(oodscore.scorers.__path__):
        importlib.import_module(f"oodscore.scorers.{module.name}")


_import_scorer_modules()
