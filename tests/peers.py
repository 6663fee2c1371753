"""The peer libraries the tests compare with, imported one way (or the test is skipped)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import pytest


def pytorch_ood_module(name: str) -> Any:
    """``pytorch_ood.detector.<name>`` of pytorch-ood 0.4, or skip the test.

    The package's ``__init__`` imports torchvision, which cannot be imported with the CPU
    build of torch here; the detector modules need only torch. So the package is entered
    through a stub parent module that points at its files (once per process, shared by
    every test), as ``benchmarks/bench_mahalanobis.py`` does.
    """
    try:
        release = version("pytorch-ood")
    except PackageNotFoundError:
        pytest.skip(
            "pytorch-ood is not installed (pip install --no-deps -r requirements/bench.txt)"
        )
    if not release.startswith("0.4"):
        pytest.skip(f"the comparisons are written for pytorch-ood 0.4, found {release}")
    if "pytorch_ood" not in sys.modules:
        spec = importlib.util.find_spec("pytorch_ood")
        if spec is None or spec.submodule_search_locations is None:
            pytest.skip("pytorch-ood is not importable")
        stub = types.ModuleType("pytorch_ood")
        stub.__path__ = list(spec.submodule_search_locations)
        stub.__spec__ = spec
        sys.modules["pytorch_ood"] = stub
    try:
        return importlib.import_module(f"pytorch_ood.detector.{name}")
    except ImportError as error:
        pytest.skip(f"pytorch_ood.detector.{name} does not import here: {error}")
