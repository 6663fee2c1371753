r"""A normalized weight kept between eval forwards, valid while its sources are unchanged.

In eval mode `SpectralNormWrapper` runs no power iteration, so $W/\sigma$ depends only on the
unnormalized weight and the buffers ``u``, ``v``. `CachedWeight` keeps the result with, for
each of the three, its identity and its ``_version`` counter (bumped by every in-place
change autograd tracks: optimizer steps, ``copy_`` under ``no_grad``, ``load_state_dict``),
and the weight's storage address (changed by ``.data = ...``, by moves between devices and
dtypes, and by ``torch.nn.utils.vector_to_parameters``). A value is served only while all
of them match, never while autograd records the weight and never to torch.compile, torch.export
or the JIT, which trace the computation itself.

Not seen (torch counts no version for them): in-place edits through ``tensor.data`` and
fused optimizer steps (``torch.optim.Adam(..., fused=True)``). `SpectralNormWrapper` drops
the cache in training mode and at every forward that records gradients for the weight, and
it can be switched off (``eval_cache=False``).

`read_through_cache` lets a layer's weight property serve the value without running torch's
parametrization modules, the larger part of the cost of reading a parametrized weight.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from oodscore._arrays import compiling as _compiling
from oodscore._arrays import jit_tracing as _jit_tracing

# Looked up once: `CachedWeight.get` runs at every access of a weight, where each attribute
# lookup counts.
_grad_enabled = torch.is_grad_enabled
_inference_mode = torch.is_inference_mode_enabled


def records_gradient(weight: Tensor) -> bool:
    """Whether autograd records ``weight`` now; a result with a graph is never cached.

    One graph cannot be back-propagated twice, and the weight may be about to change.
    """
    return torch.is_grad_enabled() and weight.requires_grad


def storable(sources: tuple[Tensor, ...]) -> bool:
    """Whether ``sources`` can be fingerprinted.

    Not tensors without storage (``torch.func`` transforms) or without version counters
    (inference tensors).
    """
    return all(
        x.layout == torch.strided and not x.is_inference() and _has_storage(x) for x in sources
    )


def _has_storage(x: Tensor) -> bool:
    try:
        x.data_ptr()
    except RuntimeError:  # functorch's wrapped tensors
        return False
    return True


@dataclass(frozen=True, slots=True)
class CachedWeight:
    """A normalized weight, the tensors it was computed from and their versions.

    The weight is held by a weak reference (a new weight must not be mistaken for it) with
    its version and storage address; ``u`` and ``v`` (small buffers) directly, with their
    versions; the value with its own version (edited in place, it is not served again).
    Immutable: a new entry replaces the old one, so module copies that share the entry
    (``DataParallel`` replicas) never write into each other's. Flat fields and one test:
    `get` runs at every access of the weight.
    """

    value: Tensor
    inference: bool  # an inference tensor: served in inference mode only, no version counter
    value_version: int
    weight: weakref.ref[Tensor]
    weight_version: int
    weight_address: int
    u: Tensor
    u_version: int
    v: Tensor
    v_version: int

    @classmethod
    def of(cls, value: Tensor, weight: Tensor, u: Tensor, v: Tensor) -> CachedWeight:
        """The entry for ``value``, computed from ``weight``, ``u`` and ``v``."""
        inference = value.is_inference()
        return cls(
            value=value,
            inference=inference,
            value_version=-1 if inference else value._version,
            weight=weakref.ref(weight),
            weight_version=weight._version,
            weight_address=weight.data_ptr(),
            u=u,
            u_version=u._version,
            v=v,
            v_version=v._version,
        )

    def get(self, weight: Tensor, u: Tensor, v: Tensor) -> Tensor | None:
        """The cached value if it may serve ``weight``, ``u``, ``v`` now; else ``None``.

        ``None`` when one of them is another tensor or was changed in place, while
        autograd records ``weight``, or while torch.compile or the JIT traces. An inference
        tensor is served only in inference mode (it cannot be saved for a backward pass).
        """
        if (
            _compiling()  # first: torch.compile must not trace the tests below
            or _jit_tracing()
            or self.weight() is not weight
            or weight._version != self.weight_version
            or weight.data_ptr() != self.weight_address
            or u is not self.u
            or v is not self.v
            or self.u._version != self.u_version
            or self.v._version != self.v_version
            or (_grad_enabled() and weight.requires_grad)
            or (
                not _inference_mode()
                if self.inference
                else self.value._version != self.value_version  # the served tensor, edited
            )
        ):
            return None
        return self.value


def read_through_cache(module: nn.Module, tensor_name: str) -> None:
    """Let ``module.<tensor_name>`` return a cached value without torch's parametrize calls.

    ``torch.nn.utils.parametrize`` computes a parametrized tensor through a property of the
    module's class that calls a ``ParametrizationList`` module, which calls each
    parametrization module: several times the cost of reading a plain parameter, at every
    access. The property is replaced by one that serves the `CachedWeight` of the tensor's
    only parametrization (a `SpectralNormWrapper`'s ``_cached``) when `CachedWeight.get`
    allows, and calls torch's property otherwise. Removal deletes the property as before.
    """
    cls = type(module)
    torch_property = cls.__dict__.get(tensor_name)
    if not isinstance(torch_property, property) or torch_property.fget is None:
        return
    if getattr(torch_property.fget, "_reads_through_cache", False):
        return
    compute = torch_property.fget

    def get(self: nn.Module) -> Tensor:
        chain: Any = self._modules["parametrizations"]._modules[tensor_name]  # type: ignore[union-attr]
        first = chain._modules["0"]
        cached = first.__dict__.get("_cached")
        if type(cached) is CachedWeight and not first.training and "1" not in chain._modules:
            original = chain._parameters.get("original")  # None: a buffer, not served
            buffers = first._buffers
            value: Tensor | None = (
                None if original is None else cached.get(original, buffers["_u"], buffers["_v"])
            )
            if value is not None:
                return value
        result: Tensor = compute(self)
        return result

    get._reads_through_cache = True  # type: ignore[attr-defined]
    setattr(cls, tensor_name, property(get, torch_property.fset))
