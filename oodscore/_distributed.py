"""Small ``torch.distributed`` helpers: is a group running, gather ragged tensors, all-reduce.

`gather_samples` also puts back in dataset order the shards a ``DistributedSampler`` dealt.

The gathering and reducing helpers are collectives when a process group is initialized
with more than one rank:
every rank must call them in the same order. Without an initialized group (or with one
rank) they return their input unchanged, so code written with them runs the same on one
process. Nothing is pickled: tensors travel with ``all_gather`` / ``all_reduce`` only.

Tensors are sent on the device the backend needs (CUDA for NCCL, the tensor's own
device otherwise) and come back on the device they were given on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor

ReduceOp = Literal["sum", "max", "min"]

_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available, initialized and has several ranks."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks of the default group, 1 without an initialized group."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """Rank of this process in the default group, 0 without an initialized group."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _wire_device(tensor: Tensor) -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def all_reduce(tensor: Tensor, op: ReduceOp = "sum") -> Tensor:
    """Reduce ``tensor`` element-wise over all ranks (``"sum"``, ``"max"`` or ``"min"``).

    Returns a new tensor (the input is left unchanged) on the input's device; every rank
    must pass a tensor of the same shape and dtype.

    Examples:
        >>> import torch
        >>> from oodscore._distributed import all_reduce
        >>> all_reduce(torch.tensor([1, 2]))  # one process: the input itself
        tensor([1, 2])
    """
    if op not in _OPS:
        raise ValueError(f"Expected `op` to be one of {tuple(_OPS)}, got {op!r}.")
    if not is_distributed():
        return tensor
    wire = tensor.detach().to(_wire_device(tensor), copy=True).contiguous()
    dist.all_reduce(wire, op=getattr(dist.ReduceOp, _OPS[op]))
    return wire.to(tensor.device)


def gather_variable(tensor: Tensor) -> list[Tensor]:
    """Gather tensors whose first dimension differs between ranks, in rank order.

    The lengths are gathered first, every rank pads its tensor to the longest, the padded
    tensors are gathered with ``all_gather`` and each is cut back to its length. Shapes
    after the first dimension and the dtype must agree across ranks.

    Args:
        tensor: ``(n_rank, ...)`` this rank's part; ``n_rank`` may be 0.

    Returns:
        One tensor per rank, on the input's device; ``[tensor]`` without a group.

    Examples:
        >>> import torch
        >>> from oodscore._distributed import gather_variable
        >>> gather_variable(torch.arange(3))
        [tensor([0, 1, 2])]
    """
    if not is_distributed():
        return [tensor]
    device = _wire_device(tensor)
    size = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.empty_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    lengths = [int(s.item()) for s in sizes]
    longest = max(lengths)
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=device)
    padded[: tensor.shape[0]] = tensor.detach().to(device)
    parts = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(parts, padded)
    return [part[:length].to(tensor.device) for part, length in zip(parts, lengths, strict=True)]


def gather_cat(tensor: Tensor) -> Tensor:
    """Concatenate along the first dimension the tensors of all ranks, in rank order.

    Examples:
        >>> import torch
        >>> from oodscore._distributed import gather_cat
        >>> gather_cat(torch.tensor([1.0, 2.0]))
        tensor([1., 2.])
    """
    parts = gather_variable(tensor)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def gather_samples(local: Tensor, loader: Iterable[Any]) -> Tensor:
    """The rows of ``local`` from every rank, in sample order when a DistributedSampler split them.

    Without several ranks this is ``local``. Under ``torch.distributed``, with a
    ``DistributedSampler`` that padded the dataset and a loader that yielded all of this
    rank's indices, the padding rows are dropped (rank r holds the samples r, r + W,
    r + 2W... of the padded order, whose last ``total_size - len(dataset)`` entries repeat
    earlier ones); otherwise the ranks' rows are concatenated in rank order.

    Args:
        local: ``(n_rank, ...)`` the rows this rank computed, in the loader's order.
        loader: The loader they came from; its ``sampler`` attribute is read, if any.

    Examples:
        >>> import torch
        >>> from oodscore._distributed import gather_samples
        >>> gather_samples(torch.tensor([3.0, 1.0]), [])
        tensor([3., 1.])
    """
    if not is_distributed():
        return local
    parts = gather_variable(local)
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, torch.utils.data.DistributedSampler) and not sampler.drop_last:
        dataset_size = len(sampler.dataset)  # type: ignore[arg-type]
        per_rank = sampler.num_samples
        if len(parts) == sampler.num_replicas and all(len(p) == per_rank for p in parts):
            interleaved = torch.stack(parts, dim=1).reshape(-1, *local.shape[1:])
            return interleaved[:dataset_size]
    return torch.cat(parts)
