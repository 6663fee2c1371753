"""What the peer benchmarks share, with no heavy import: one timed step's peak memory, pytorch-ood.

Each benchmark runs every method in a fresh child process, so that one method's memory and
threads do not leak into the next; a child imports only what its method needs, and this module
imports nothing beyond the standard library.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import platform
import sys
import time
import types
from collections.abc import Callable
from typing import Any


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_step(step: Callable[[], Any]) -> tuple[Any, float, int]:
    """Result, wall seconds and peak RSS increase (bytes) of ``step()``.

    The peak is ``VmHWM`` (reset through ``/proc/self/clear_refs`` just before the step)
    minus the resident size then: it counts NumPy, torch, BLAS and faiss allocations alike.
    """
    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM (the peak RSS) to the current RSS
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    result = step()
    seconds = time.perf_counter() - start
    return result, seconds, max(0, _status_kib("VmHWM") - before) * 1024


def import_pytorch_ood(module: str) -> Any:
    """``pytorch_ood.detector.<module>``, without running ``pytorch_ood/__init__``.

    The package's ``__init__`` imports torchvision, which the CPU build of torch here cannot
    import; the detector modules need only torch, so the package is entered through a stub
    parent module that points at its files.
    """
    if "pytorch_ood" not in sys.modules:
        spec = importlib.util.find_spec("pytorch_ood")
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError("pytorch-ood is not installed (requirements/bench.txt)")
        stub = types.ModuleType("pytorch_ood")
        stub.__path__ = list(spec.submodule_search_locations)
        stub.__spec__ = spec
        sys.modules["pytorch_ood"] = stub
    return importlib.import_module(f"pytorch_ood.detector.{module}")


def cpu_model() -> str:
    """The processor's model name, for the results tables."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
