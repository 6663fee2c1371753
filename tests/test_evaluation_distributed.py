"""evaluate under torch.distributed: 2 CPU processes (gloo), each scoring its shard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from oodscore import evaluate
from tests.distributed import spawn_gloo

WORLD = 2
SCORERS = ["msp", "energy", "joint_energy"]


def make_data() -> dict[str, torch.Tensor]:
    """The same tensors on every process; 101 and 37 samples do not split evenly in two."""
    generator = torch.Generator().manual_seed(5)
    x_id = torch.randn(101, 5, generator=generator) * 2
    return {
        "x_id": x_id,
        "classes": torch.randint(0, 4, (101,), generator=generator),
        "multi_hot": (torch.rand(101, 4, generator=generator) < 0.4).float(),
        "near": torch.randn(37, 5, generator=generator),
        "far": torch.randn(20, 5, generator=generator) * 0.2,
    }


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4))


def loader(dataset: Any, *, distributed: bool, shuffle: bool) -> DataLoader[Any]:
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=3) if distributed else None
    return DataLoader(dataset, batch_size=8, sampler=sampler)


def run_all(distributed: bool) -> dict[str, Any]:
    """Both reports (class targets, multi-hot targets) as plain data, plus the ID score order."""
    data = make_data()
    model = make_model()
    out: dict[str, Any] = {}
    for targets in ("classes", "multi_hot"):
        id_set = TensorDataset(data["x_id"], data[targets])
        ood = {
            name: loader(TensorDataset(data[name]), distributed=distributed, shuffle=False)
            for name in ("near", "far")
        }
        # The ID shard is shuffled: the gathered scores come back in another order, the
        # metrics must not change.
        report = evaluate(
            model,
            loader(id_set, distributed=distributed, shuffle=True),
            ood,
            SCORERS,
            progress=False,
        )
        out[targets] = report.to_dict()
        out[targets + "_id_scores"] = sorted(report.id_scores["energy"].tolist())
        out[targets + "_near_scores"] = report.ood_scores["near"]["msp"].tolist()
    return out


def _worker(rank: int, out_dir: str) -> None:
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(run_all(distributed=True)))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out_dir = tmp_path_factory.mktemp("ddp_evaluate")
    spawn_gloo(_worker, str(out_dir), world_size=WORLD)
    return [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_every_rank_reports_the_single_process_numbers(ranks: list[dict[str, Any]]) -> None:
    single = run_all(distributed=False)
    for result in ranks:
        for targets in ("classes", "multi_hot"):
            got, expected = result[targets], single[targets]
            # The padding of DistributedSampler is gone: 101 ID samples, not 102.
            assert got["num_samples"] == {"id": 101, "near": 37, "far": 20}
            assert got["id_metrics"].keys() == expected["id_metrics"].keys()
            for key, value in expected["id_metrics"].items():
                assert got["id_metrics"][key] == pytest.approx(value, abs=1e-12)
            for got_row, row in zip(
                got["rows"] + got["mean"], expected["rows"] + expected["mean"], strict=True
            ):
                assert got_row == pytest.approx(row, abs=1e-12)
            assert result[targets + "_id_scores"] == pytest.approx(
                single[targets + "_id_scores"], abs=1e-6
            )
            # Unshuffled OOD shards come back in dataset order.
            assert result[targets + "_near_scores"] == pytest.approx(
                single[targets + "_near_scores"], abs=1e-6
            )
    assert single["classes"]["id_metrics"].keys() == {"accuracy"}
    assert single["multi_hot"]["id_metrics"].keys() == {"map"}
