"""Run a function on several CPU processes joined in a gloo process group (for DDP tests)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _entry(
    rank: int, port: int, world_size: int, target: Callable[..., None], args: tuple[Any, ...]
) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        target(rank, *args)
    finally:
        dist.destroy_process_group()


def spawn_gloo(target: Callable[..., None], *args: Any, world_size: int = 2) -> None:
    """Call ``target(rank, *args)`` on ``world_size`` processes inside one gloo group.

    ``target`` must be a module-level function (the processes import it by name); it
    reports back by writing files, e.g. into a ``tmp_path`` passed in ``args``.
    """
    mp.spawn(_entry, args=(free_port(), world_size, target, args), nprocs=world_size, join=True)
