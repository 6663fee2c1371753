"""Spectral normalization under DistributedDataParallel: two CPU processes over gloo."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from oodscore import spectral_normalize, spectral_norms
from tests.distributed import spawn_gloo

WORLD_SIZE = 2
STEPS = 4
# (mode, example_input given): u, v created at registration, at the first forward inside
# DDP (they then differ between ranks until DDP's buffer broadcast), and with example_input.
CONFIGURATIONS = [("reshape", False), ("operator", False), ("operator", True)]


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 3),
    )


def _worker(rank: int, out_dir: str) -> None:
    for index, (mode, example) in enumerate(CONFIGURATIONS):
        _train_one(rank, mode, example, Path(out_dir) / f"{index}-rank{rank}.pt")


def _train_one(rank: int, mode: str, example: bool, path: Path) -> None:
    torch.manual_seed(0)  # the same initial weights on both ranks
    model = _model()
    # Different random u, v per rank: DDP must make them agree.
    torch.manual_seed(100 + rank)
    example_input = torch.zeros(1, 1, 8, 8) if example else None
    spectral_normalize(model, mode=mode, coeff=1.0, example_input=example_input)
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(rank)  # each rank its own data
    for _ in range(STEPS):
        x = torch.randn(6, 1, 8, 8, generator=generator)
        y = torch.randint(0, 3, (6,), generator=generator)
        loss = nn.functional.cross_entropy(ddp(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save({"state": model.state_dict(), "sigma": spectral_norms(model)}, path)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_ranks_agree_on_weights_and_sigma(tmp_path: Path) -> None:
    spawn_gloo(_worker, str(tmp_path), world_size=WORLD_SIZE)
    for index, configuration in enumerate(CONFIGURATIONS):
        results = [
            torch.load(tmp_path / f"{index}-rank{rank}.pt", weights_only=True)
            for rank in range(WORLD_SIZE)
        ]
        states = [result["state"] for result in results]
        assert list(states[0]) == list(states[1])
        assert any(key.endswith("_u") for key in states[0])
        for key in states[0]:
            torch.testing.assert_close(
                states[0][key], states[1][key], rtol=0, atol=0, msg=f"{configuration}: {key}"
            )
        assert results[0]["sigma"] == results[1]["sigma"]
        assert set(results[0]["sigma"]) == {"0", "2"}
