"""OODMetrics and the distributed helpers under torch.distributed: 2 CPU processes (gloo)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from oodscore._distributed import all_reduce, gather_cat, gather_variable, is_distributed
from oodscore.metrics import OODMetrics, ood_metrics
from tests.distributed import spawn_gloo

WORLD = 2


def make_data() -> dict[str, np.ndarray]:
    """Scores and labels, the same on every process; rank r gets its own uneven share."""
    rng = np.random.default_rng(11)
    scores = np.round(rng.normal(0.0, 1.0, 3001) * 16) / 16  # ties across ranks
    is_ood = rng.random(3001) < 0.4
    scores[is_ood] -= 0.7
    # Rank 0 sees a narrow range, rank 1 a wide one: their learned bin widths differ.
    wide = rng.normal(0.0, 40.0, 500)
    return {
        "scores": scores.astype(np.float32),
        "is_ood": is_ood,
        "wide": wide,
        "wide_is_ood": rng.random(500) < 0.5,
    }


def shard(data: dict[str, np.ndarray], rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank 0: the first 2000 scores; rank 1: the rest, which holds no OOD score at all."""
    scores, is_ood = data["scores"], data["is_ood"]
    if rank == 0:
        return scores[:2000], is_ood[:2000]
    keep = ~is_ood[2000:]
    return scores[2000:][keep], is_ood[2000:][keep]


def all_scores(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    parts = [shard(data, rank) for rank in range(WORLD)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def integer_batches() -> dict[str, list[tuple[int, np.ndarray, np.ndarray]]]:
    """(rank, scores, is_ood) batches: int64 beyond 2**53, uint64 beyond 2**63, mixed."""
    return {
        "exact_int64": [
            (0, np.array([2**53 + 1, 2**62], np.int64), np.array([0, 1])),
            (1, np.array([2**53, 2**62 + 1], np.int64), np.array([1, 0])),
        ],
        "exact_uint64": [
            (0, np.array([2**64 - 1], np.uint64), np.array([0])),
            (1, np.array([2**64 - 2, 2**63 + 1], np.uint64), np.array([1, 1])),
        ],
        "exact_mixed": [
            (0, np.array([3, 1], np.int32), np.array([0, 1])),
            (1, np.array([2.5, 0.5], np.float16), np.array([1, 0])),
        ],
    }


def compute_all(rank: int) -> dict[str, object]:
    """Every metric of this test on this process's share (all of it without a group)."""
    data = make_data()
    if is_distributed():
        scores, is_ood = shard(data, rank)
        wide, wide_is_ood = (data["wide"], data["wide_is_ood"]) if rank == 1 else (None, None)
    else:
        scores, is_ood = all_scores(data)
        wide, wide_is_ood = data["wide"], data["wide_is_ood"]
    out: dict[str, object] = {}
    for name, metric in (
        ("exact", OODMetrics()),
        ("exact_nearest", OODMetrics(rule="nearest", tpr=0.9)),
        ("binned_range", OODMetrics("binned", num_bins=512, score_range=(-6.0, 6.0))),
    ):
        for start in range(0, len(scores), 700):  # several batches per rank
            metric.update(scores[start : start + 700], is_ood[start : start + 700])
        out[name] = metric.compute()
    # Integers stay exact across ranks (uint64 too); mixed dtypes promote as on one process.
    for name, batches in integer_batches().items():
        metric = OODMetrics()
        for batch_rank, scores_, is_ood_ in batches:
            if not is_distributed() or rank == batch_rank:
                metric.update(scores_, is_ood_)
        out[name] = metric.compute()
    learned = OODMetrics("binned", num_bins=256)
    learned.update(scores, is_ood)
    if wide is not None:
        learned.update(wide, wide_is_ood)
    out["binned_learned"] = learned.compute()
    out["binned_learned_bounds"] = learned.error_bounds()
    out["binned_learned_total"] = int(learned._histogram.synchronized().counts.sum())
    # The helpers themselves: ragged gather (rank 1 sends nothing), reductions.
    part = torch.arange(3.0) if rank == 0 else torch.empty(0)
    out["gathered"] = [t.tolist() for t in gather_variable(part)]
    out["gather_cat_2d"] = gather_cat(torch.full((rank + 1, 2), float(rank))).tolist()
    out["reduced"] = [
        all_reduce(torch.tensor([rank + 1.0]), op).item() for op in ("sum", "max", "min")
    ]
    return out


def _worker(rank: int, out_dir: str) -> None:
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(compute_all(rank)))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ddp")
    spawn_gloo(_worker, str(out_dir), world_size=WORLD)
    return [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_every_rank_gets_the_single_process_numbers(ranks: list[dict]) -> None:
    single = compute_all(0)
    for result in ranks:
        for name in ("exact", "exact_nearest", "binned_range", *integer_batches()):
            assert result[name] == single[name], name
        # Exact equals the functional metrics on all the scores.
        scores, is_ood = all_scores(make_data())
        assert result["exact"] == ood_metrics(scores[~is_ood], scores[is_ood])


def test_integers_stay_exact_across_ranks(ranks: list[dict]) -> None:
    int64 = ood_metrics(np.array([2**53 + 1, 2**62 + 1]), np.array([2**62, 2**53]))
    uint64 = ood_metrics(
        np.array([2**64 - 1], np.uint64), np.array([2**64 - 2, 2**63 + 1], np.uint64)
    )
    mixed = ood_metrics(np.array([3.0, 0.5]), np.array([1.0, 2.5]))
    assert int64["auroc"] == 0.75  # in float64, 2**53 + 1 and 2**62 + 1 would tie: 0.5
    assert uint64["auroc"] == 1.0
    for result in ranks:
        assert result["exact_int64"] == int64
        assert result["exact_uint64"] == uint64
        assert result["exact_mixed"] == mixed


def test_learned_ranges_merge_onto_one_grid(ranks: list[dict]) -> None:
    data = make_data()
    scores, is_ood = all_scores(data)
    scores = np.concatenate([scores, data["wide"]])
    is_ood = np.concatenate([is_ood, data["wide_is_ood"]])
    exact = ood_metrics(scores[~is_ood], scores[is_ood])
    assert ranks[0]["binned_learned"] == ranks[1]["binned_learned"]
    for result in ranks:
        assert result["binned_learned_total"] == len(scores)
        binned, bounds = result["binned_learned"], result["binned_learned_bounds"]
        assert abs(binned["auroc"] - exact["auroc"]) <= bounds["auroc"] + 1e-12
        assert 0 <= binned["fpr95"] - exact["fpr95"] <= bounds["fpr95"] + 1e-12


def test_helpers(ranks: list[dict]) -> None:
    for result in ranks:
        assert result["gathered"] == [[0.0, 1.0, 2.0], []]
        assert result["gather_cat_2d"] == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
        assert result["reduced"] == [3.0, 2.0, 1.0]
