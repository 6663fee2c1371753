"""The torchmetrics adapter: the numbers of `ood_metrics` and `OODMetrics`, DDP, Lightning."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

pytest.importorskip("torchmetrics")

from torchmetrics.utilities.distributed import gather_all_tensors

from oodscore import Energy
from oodscore._distributed import is_distributed
from oodscore.metrics import OODMetrics, ood_metrics
from oodscore.metrics.torchmetrics import (
    HEADER,
    TorchmetricsOODMetrics,
    merge_histograms,
)
from tests.distributed import spawn_gloo

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "lightning.md"
WORLD = 2


def batches(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Uneven batches: ties (scores on a 1/8 grid), ±inf, one-sided and empty batches."""
    rng = np.random.default_rng(seed)
    out = []
    for size in (50, 1, 0, 300, 17, 128):
        is_ood = rng.random(size) < 0.4
        scores = np.round(rng.normal(0.0, 2.0, size) * 8) / 8 - 1.5 * is_ood
        out.append((scores.astype(np.float32), is_ood))
    out.append((np.array([np.inf, -np.inf, 3.0], np.float32), np.array([False, True, True])))
    out.append((rng.normal(0.0, 2.0, 40).astype(np.float32), np.zeros(40, bool)))  # ID only
    return out


def union(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([p[0] for p in parts]).astype(np.float64)
    is_ood = np.concatenate([p[1] for p in parts])
    return scores[~is_ood], scores[is_ood]


def as_floats(result: dict[str, torch.Tensor]) -> dict[str, float]:
    for value in result.values():
        assert value.dtype == torch.float64
        assert value.ndim == 0
    return {name: float(value) for name, value in result.items()}


def fed(metric: TorchmetricsOODMetrics, parts, *, call: bool = False) -> TorchmetricsOODMetrics:
    for scores, is_ood in parts:
        if call:
            metric(torch.from_numpy(scores), torch.from_numpy(is_ood))
        else:
            metric.update(torch.from_numpy(scores), torch.from_numpy(is_ood))
    return metric


# --- exact mode: ood_metrics, and scikit-learn through it ----------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_equals_ood_metrics_and_sklearn(seed: int) -> None:
    parts = batches(seed)
    ids, oods = union(parts)
    got = as_floats(fed(TorchmetricsOODMetrics(), parts).compute())
    assert got == ood_metrics(ids, oods)
    # scikit-learn on the finite scores (it refuses ±inf): the same metrics, independently.
    finite = fed(TorchmetricsOODMetrics(), parts[:-2]).compute()
    ids, oods = union(parts[:-2])
    scores, is_id = np.r_[ids, oods], np.r_[np.ones(len(ids)), np.zeros(len(oods))]
    assert float(finite["auroc"]) == pytest.approx(roc_auc_score(is_id, scores), abs=1e-12)
    assert float(finite["aupr_in"]) == pytest.approx(
        average_precision_score(is_id, scores), abs=1e-12
    )
    assert float(finite["aupr_out"]) == pytest.approx(
        average_precision_score(1 - is_id, -scores), abs=1e-12
    )
    fpr, tpr, _ = roc_curve(is_id, scores, drop_intermediate=False)
    assert float(finite["fpr95"]) == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)


def test_exact_rules_tpr_and_dtypes() -> None:
    ids = np.array([3, 3, 2, 1, 1, 0], np.int64)
    oods = np.array([2.0, 1.0, 1.0, -1.0], np.float16)
    metric = TorchmetricsOODMetrics(tpr=0.9, rule="nearest")
    metric.update(ids, np.zeros(6, np.int64))
    metric.update(torch.from_numpy(oods), torch.ones(4, dtype=torch.bool))
    want = ood_metrics(ids.astype(np.float64), oods.astype(np.float64), 0.9, rule="nearest")
    assert list(want) == ["auroc", "aupr_in", "aupr_out", "fpr90"]
    assert as_floats(metric.compute()) == want
    # float64 scores a float32 state would tie: kept apart.
    close = TorchmetricsOODMetrics()
    close.update(torch.tensor([1.0 + 2**-40], dtype=torch.float64), torch.tensor([0]))
    close.update(torch.tensor([1.0], dtype=torch.float64), torch.tensor([1]))
    assert float(close.compute()["auroc"]) == 1.0


def test_key_gives_one_tensor() -> None:
    parts = batches()
    for key in ("auroc", "aupr_in", "aupr_out", "fpr95"):
        for mode in ("exact", "binned"):
            one = fed(TorchmetricsOODMetrics(mode, key=key), parts).compute()
            every = fed(TorchmetricsOODMetrics(mode), parts).compute()
            assert isinstance(one, torch.Tensor)
            assert one.ndim == 0
            assert float(one) == float(every[key])
    with pytest.raises(ValueError, match=r"`key`.*'fpr90'.*got 'fpr95'"):
        TorchmetricsOODMetrics(tpr=0.9, key="fpr95")


# --- binned mode: OODMetrics("binned") -----------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"num_bins": 64},  # the learned grid coarsens as the range grows
        {"num_bins": 512, "score_range": (-6.0, 6.0)},
        {"tpr": 0.9, "rule": "openood", "num_bins": 128},
    ],
)
def test_binned_equals_binned_oodmetrics(settings: dict) -> None:
    parts = [*batches(3), (np.linspace(-400, 900, 77), np.arange(77) % 3 == 0)]
    streaming = OODMetrics("binned", **settings)
    for scores, is_ood in parts:
        streaming.update(scores, is_ood)
    got = as_floats(fed(TorchmetricsOODMetrics("binned", **settings), parts).compute())
    assert got == streaming.compute()
    # forward reduces the batch's histogram into the total: the same grid, the same numbers.
    called = fed(TorchmetricsOODMetrics("binned", **settings), parts, call=True)
    assert as_floats(called.compute()) == got


def test_binned_state_has_a_fixed_size() -> None:
    metric = TorchmetricsOODMetrics("binned", num_bins=32)
    size = metric.histogram.shape
    fed(metric, batches())
    assert metric.histogram.shape == size == (HEADER + 2 * 32,)
    assert metric.histogram.dtype == torch.int64


def bins(packed: torch.Tensor) -> dict[tuple[int, int], int]:
    """(row, grid index) -> count of a packed histogram's non-empty bins."""
    start = int(packed[1])
    counts = packed[HEADER:].reshape(2, -1)
    return {
        (r, start + j): int(counts[r, j]) for r, j in zip(*np.nonzero(counts.numpy()), strict=True)
    }


def test_merge_histograms_sums_counts_on_one_grid() -> None:
    """Two histograms on the same grid sum bin by bin; on different grids they align first."""
    parts = batches(4)
    first, second = parts[:4], parts[4:]
    left = fed(TorchmetricsOODMetrics("binned", score_range=(-8.0, 8.0)), first)
    right = fed(TorchmetricsOODMetrics("binned", score_range=(-8.0, 8.0)), second)
    merged = merge_histograms(torch.stack([left.histogram, right.histogram]))
    assert int(merged[0]) == int(left.histogram[0]) == int(right.histogram[0])  # one width
    torch.testing.assert_close(
        merged[4:HEADER], left.histogram[4:HEADER] + right.histogram[4:HEADER], rtol=0, atol=0
    )
    want = bins(left.histogram)
    for key, count in bins(right.histogram).items():
        want[key] = want.get(key, 0) + count
    assert bins(merged) == want
    # Learned grids of different widths: the merged metric is the one of all the batches.
    narrow = fed(TorchmetricsOODMetrics("binned", num_bins=128), first)
    wide = fed(TorchmetricsOODMetrics("binned", num_bins=128), [*second, parts[3]])
    wide.update(torch.linspace(-300, 300, 50), torch.arange(50) % 2)
    assert narrow.histogram[0] != wide.histogram[0]  # the exponents differ
    streaming = OODMetrics("binned", num_bins=128)
    for scores, is_ood in [*first, *second, parts[3]]:
        streaming.update(scores, is_ood)
    streaming.update(torch.linspace(-300, 300, 50), torch.arange(50) % 2)
    narrow.merge_state(wide)
    got = as_floats(narrow.compute())
    total = sum(len(s) for s, _ in [*first, *second, parts[3]]) + 50
    assert int(narrow.histogram[HEADER:].sum() + narrow.histogram[4:HEADER].sum()) == total
    exact = ood_metrics(
        *union([*first, *second, parts[3], (np.linspace(-300, 300, 50), np.arange(50) % 2 == 1)])
    )
    bounds = streaming.error_bounds()
    assert abs(got["auroc"] - exact["auroc"]) <= bounds["auroc"] + 1e-12
    assert got == streaming.compute()


# --- torchmetrics semantics: forward, reset, to, state_dict, merge_state -------------------


@pytest.mark.parametrize("mode", ["exact", "binned"])
def test_forward_returns_the_batch_and_accumulates(mode: str) -> None:
    parts = batches(5)
    metric = TorchmetricsOODMetrics(mode, num_bins=2**12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one-sided batches give NaN quietly
        values = [metric(torch.from_numpy(s), torch.from_numpy(o)) for s, o in parts]
    for (scores, is_ood), value in zip(parts, values, strict=True):
        if is_ood.any() and (~is_ood).any():
            batch = fed(TorchmetricsOODMetrics(mode, num_bins=2**12), [(scores, is_ood)])
            assert as_floats(value) == as_floats(batch.compute())
        else:
            assert all(np.isnan(float(v)) for v in value.values())
    update_only = fed(TorchmetricsOODMetrics(mode, num_bins=2**12), parts)
    assert as_floats(metric.compute()) == as_floats(update_only.compute())


@pytest.mark.parametrize("mode", ["exact", "binned"])
def test_one_sided_compute_is_nan_with_a_warning(mode: str) -> None:
    metric = TorchmetricsOODMetrics(mode)
    metric.update(torch.tensor([1.0, 2.0]), torch.tensor([0, 0]))
    with pytest.warns(UserWarning, match="seen 2 ID and 0 OOD scores"):
        result = metric.compute()
    assert all(np.isnan(float(v)) for v in result.values())


@pytest.mark.parametrize("mode", ["exact", "binned"])
def test_reset_forgets(mode: str) -> None:
    parts = batches(6)
    metric = fed(TorchmetricsOODMetrics(mode), batches(7))
    metric.compute()
    metric.reset()
    fresh = fed(TorchmetricsOODMetrics(mode), parts)
    assert as_floats(fed(metric, parts).compute()) == as_floats(fresh.compute())


@pytest.mark.filterwarnings("ignore:The ``compute`` method:UserWarning")
@pytest.mark.parametrize("mode", ["exact", "binned"])
def test_state_dict_round_trip(mode: str) -> None:
    metric = fed(TorchmetricsOODMetrics(mode, num_bins=256), batches(8))
    assert metric.state_dict() == {}  # torchmetrics' default: states are not saved
    metric.persistent(True)
    buffer = io.BytesIO()
    torch.save(metric.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = TorchmetricsOODMetrics(mode, num_bins=256)
    restored.load_state_dict(state)
    assert as_floats(restored.compute()) == as_floats(metric.compute())
    if mode == "binned":
        other = TorchmetricsOODMetrics(mode, num_bins=512)
        other.load_state_dict(state)
        with pytest.raises(ValueError, match="num_bins=512"):
            other.compute()


@pytest.mark.parametrize("mode", ["exact", "binned"])
def test_to_moves_states_and_results(mode: str) -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    parts = batches(9)
    want = as_floats(fed(TorchmetricsOODMetrics(mode), parts).compute())
    for device in devices:
        metric = TorchmetricsOODMetrics(mode).to(device)
        for scores, is_ood in parts:
            metric.update(torch.from_numpy(scores).to(device), torch.from_numpy(is_ood))
        result = metric.compute()
        assert {v.device.type for v in result.values()} == {torch.device(device).type}
        assert as_floats(result) == want
    # A dtype never reaches the states (Lightning's "16-true" precision, set_dtype, .to):
    # scores stay float64, counts int64.
    half = TorchmetricsOODMetrics(mode).to(torch.float16)
    fed(half, parts[:3])
    half.set_dtype(torch.float16)
    half.to(torch.bfloat16)
    assert as_floats(fed(half, parts[3:]).compute()) == want
    states = half.histogram if mode == "binned" else [*half.id_scores, *half.ood_scores]
    assert {t.dtype for t in ([states] if mode == "binned" else states)} == (
        {torch.int64} if mode == "binned" else {torch.float64}
    )


def test_merge_state_exact() -> None:
    parts = batches(10)
    left = fed(TorchmetricsOODMetrics(), parts[:3])
    left.merge_state(fed(TorchmetricsOODMetrics(), parts[3:]))
    assert as_floats(left.compute()) == ood_metrics(*union(parts))


def test_bad_input_is_refused_naming_it() -> None:
    metric = TorchmetricsOODMetrics()
    with pytest.raises(ValueError, match=r"`scores` to hold no NaN.*index 1"):
        metric.update(torch.tensor([1.0, float("nan")]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"`is_ood` to hold only 0 and 1, got 2"):
        metric.update(torch.tensor([1.0, 2.0]), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"same length as `scores` \(2\)"):
        metric.update(torch.tensor([1.0, 2.0]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"magnitude at most 2\*\*53.*9007199254740993"):
        metric.update(np.array([1, 2**53 + 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="`mode`"):
        TorchmetricsOODMetrics("approximate")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`num_bins`"):
        TorchmetricsOODMetrics("binned", num_bins=4)
    with pytest.raises(ValueError, match="`tpr`"):
        TorchmetricsOODMetrics(tpr=1.5)
    assert metric.update_count == 4  # torchmetrics counts the calls; nothing was kept
    assert sum(len(p) for p in metric.id_scores) == 0


def test_torchmetrics_is_imported_only_by_the_adapter_with_one_clear_error() -> None:
    """``import oodscore`` leaves torchmetrics alone; without it the adapter says what to do."""
    code = (
        "import sys, oodscore, oodscore.metrics\n"
        "oodscore.Energy, oodscore.OODMetrics\n"
        "assert 'torchmetrics' not in sys.modules, 'imported'\n"
        "sys.modules['torchmetrics'] = None  # as if not installed\n"
        "try:\n    import oodscore.metrics.torchmetrics\n"
        "except ImportError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == (
        "oodscore.metrics.torchmetrics needs torchmetrics, which is not installed; "
        "install it with `pip install oodscore[torchmetrics]`."
    )


# --- DDP: 2 gloo processes, each updating its own shard ------------------------------------


def shards(rank: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rank 0 sees a narrow range, rank 1 a wide one: their learned bin widths differ."""
    rng = np.random.default_rng(20 + rank)
    out = []
    for size in (400, 250, 333):
        is_ood = rng.random(size) < 0.4
        spread = 1.0 if rank == 0 else 40.0
        scores = np.round(rng.normal(0.0, spread, size) * 16) / 16 - 0.7 * is_ood
        out.append((scores, is_ood))
    return out


DDP_METRICS = {
    "exact": {},
    "exact_nearest": {"tpr": 0.9, "rule": "nearest"},
    "binned": {"mode": "binned", "num_bins": 256},
    "binned_range": {"mode": "binned", "num_bins": 512, "score_range": (-6.0, 6.0)},
}


def _ddp_worker(rank: int, out_dir: str) -> None:
    sent: dict[str, list[list[int]]] = {}

    def recording(name: str):
        def gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
            sent.setdefault(name, []).append([*tensor.shape, int(tensor.dtype == torch.int64)])
            return gather_all_tensors(tensor, group)

        return gather

    out: dict[str, object] = {"distributed": is_distributed()}
    for name, settings in DDP_METRICS.items():
        settings = dict(settings)
        mode = settings.pop("mode", "exact")
        metric = TorchmetricsOODMetrics(mode, dist_sync_fn=recording(name), **settings)
        streaming = OODMetrics(mode, **settings)
        for scores, is_ood in shards(rank):
            metric.update(torch.from_numpy(scores), torch.from_numpy(is_ood))
            streaming.update(scores, is_ood)
        out[name] = as_floats(metric.compute())
        out[f"{name}_streaming"] = streaming.compute()
        out[f"{name}_bounds"] = streaming.error_bounds()
        out[f"{name}_local_total"] = sum(len(s) for s, _ in shards(rank))
    # A rank that never updates: its empty state still travels (exact and binned).
    for mode in ("exact", "binned"):
        idle = TorchmetricsOODMetrics(mode, num_bins=128)
        if rank == 0:
            for scores, is_ood in shards(0):
                idle.update(torch.from_numpy(scores), torch.from_numpy(is_ood))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchmetrics: compute before update on rank 1
            out[f"idle_{mode}"] = as_floats(idle.compute())
    out["sent"] = sent
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("tm_ddp")
    spawn_gloo(_ddp_worker, str(out_dir), world_size=WORLD)
    return [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_ddp_exact_equals_ood_metrics_on_the_union(ddp: list[dict]) -> None:
    ids, oods = union([p for rank in range(WORLD) for p in shards(rank)])
    for result in ddp:
        assert result["distributed"]
        assert result["exact"] == ood_metrics(ids, oods)
        assert result["exact_nearest"] == ood_metrics(ids, oods, 0.9, rule="nearest")
        assert result["idle_exact"] == ood_metrics(*union(shards(0)))


def test_ddp_binned_sums_histograms_and_equals_oodmetrics(ddp: list[dict]) -> None:
    ids, oods = union([p for rank in range(WORLD) for p in shards(rank)])
    exact = ood_metrics(ids, oods)
    assert ddp[0]["binned"] == ddp[1]["binned"]
    for result in ddp:
        for name in ("binned", "binned_range"):
            assert result[name] == result[f"{name}_streaming"]  # OODMetrics under DDP
            bounds = result[f"{name}_bounds"]
            assert abs(result[name]["auroc"] - exact["auroc"]) <= bounds["auroc"] + 1e-12
            assert 0 <= result[name]["fpr95"] - exact["fpr95"] <= bounds["fpr95"] + 1e-12
            # Only the fixed-size int64 histogram crossed processes, never a score.
            size = HEADER + 2 * DDP_METRICS[name]["num_bins"]
            assert result["sent"][name] == [[size, 1]]
        assert result["idle_binned"] == binned_oodmetrics(shards(0), num_bins=128)
        # Exact mode, in contrast, sends the scores themselves.
        local = result["exact_local_total"]
        assert sum(shape[0] for shape in result["sent"]["exact"]) == local


def binned_oodmetrics(parts, **settings) -> dict[str, float]:
    metric = OODMetrics("binned", **settings)
    for scores, is_ood in parts:
        metric.update(scores, is_ood)
    return metric.compute()


# --- Lightning: the docs' LightningModule, run by a Trainer ---------------------------------


def docs_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    assert blocks, f"{DOCS} has no python block"
    return "\n".join(blocks)


def test_lightning_module_of_the_docs_logs_ood_metrics(tmp_path: Path) -> None:
    lightning = pytest.importorskip("lightning")
    namespace: dict[str, object] = {}
    exec(compile(docs_code(), str(DOCS), "exec"), namespace)
    module_class = namespace["OODLightningModule"]
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(96, 4, generator=generator)
    is_ood = torch.arange(96) >= 64  # ID first: the sanity check sees ID batches only
    x[is_ood] *= 0.2  # flatter logits: OOD
    targets = torch.randint(0, 3, (96,), generator=generator)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, targets), batch_size=32)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, is_ood), batch_size=16)
    module = module_class(model)
    trainer = lightning.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=lightning.pytorch.loggers.CSVLogger(tmp_path),
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's hints (workers, small data, NaN check)
        trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    # The numbers logged after the epoch: ood_metrics of the trained model's energies.
    with torch.no_grad():
        scores = torch.cat([Energy()(model(chunk)) for chunk in x.split(16)]).numpy()
    want = ood_metrics(scores[~is_ood.numpy()], scores[is_ood.numpy()])
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert {name: logged[f"val/{name}"] for name in want} == want
    assert logged["val/auroc_metric"] == want["auroc"]
    csv = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "val/auroc" in csv.splitlines()[0]
