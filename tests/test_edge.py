"""EDGELoss, dilation_distance and rank_outlier_sets against the float64 reference."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

import oodscore
from oodscore import EDGELoss, dilation_distance, get_regularizer, rank_outlier_sets
from tests.reference import multilabel_regularizers as ref

WEIGHT_ONE = {"conf_weight": 1.0, "gap_weight": 1.0, "margin": 1.0, "tail_size": 5}
REF_ONE = {"alpha": 1.0, "beta": 1.0, "margin": 1.0, "k": 5}


def logits(rows: int, cols: int = 6, *, scale: float = 3.0, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=generator, dtype=torch.float64) * scale


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("epoch", [0, 49, 50, 120])
def test_defaults_match_reference(seed, epoch):
    z_in, z_out = logits(64, seed=seed), logits(64, seed=seed + 100) - 1.0
    got = EDGELoss()(logits_in=z_in, logits_out=z_out, epoch=epoch)
    expected = ref.edge(z_in.numpy(), z_out.numpy(), epoch)  # official defaults
    assert got.item() == pytest.approx(expected, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_weight_one_matches_reference(seed):
    z_in, z_out = logits(13, seed=seed), logits(7, seed=seed + 50)
    got = EDGELoss(**WEIGHT_ONE, start_epoch=0)(logits_in=z_in, logits_out=z_out, epoch=0)
    expected = ref.edge(z_in.numpy(), z_out.numpy(), 0, tau=0, **REF_ONE)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # The gap term alone, with a margin that makes most pairs active.
    gap = EDGELoss(conf_weight=0.0, gap_weight=1.0, margin=8.0, tail_size=4, start_epoch=0)
    expected_gap = ref.edge_gap(z_in.numpy(), z_out.numpy(), 8.0, 4)
    assert gap(logits_in=z_in, logits_out=z_out, epoch=3).item() == pytest.approx(
        expected_gap, rel=1e-12
    )
    assert expected_gap > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits_are_finite_and_exact(dtype):
    """log(1 + exp(x)) of the official code overflows at x = 1e4; softplus does not."""
    z_in = torch.tensor([[1e4, -1e4, 0.0], [50.0, 80.0, -90.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    z_out = torch.tensor([[1e4, 1e4, 1e4], [-1e4, 3.0, 100.0]], dtype=dtype)
    loss = EDGELoss(**WEIGHT_ONE, start_epoch=0)
    got = loss(logits_in=z_in, logits_out=z_out, epoch=0)
    assert torch.isfinite(got)
    expected = ref.edge(z_in.double().numpy(), z_out.double().numpy(), 0, tau=0, **REF_ONE)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert got.dtype == dtype


def test_gradients_match_finite_differences():
    z_in = logits(6, 4, seed=3).requires_grad_(True)
    z_out = (logits(5, 4, seed=4) - 1).requires_grad_(True)
    loss = EDGELoss(gap_weight=0.7, margin=2.0, tail_size=3, start_epoch=0)
    assert torch.autograd.gradcheck(
        lambda a, b: loss(logits_in=a, logits_out=b, epoch=1), (z_in, z_out)
    )


def test_gradient_reaches_only_the_tail_of_the_id_batch():
    """Nothing is detached (as in weg.py): the k lowest-energy ID rows get gradient, others none."""
    z_in = logits(8, seed=5).requires_grad_(True)
    z_out = (logits(4, seed=6) + 2).requires_grad_(True)
    loss = EDGELoss(tail_size=3, margin=50.0, start_epoch=0)
    loss(logits_in=z_in, logits_out=z_out, epoch=0).backward()
    energies = torch.nn.functional.softplus(z_in.detach()).sum(1)
    tail = set(torch.argsort(energies)[:3].tolist())
    touched = {i for i in range(8) if z_in.grad[i].abs().sum() > 0}
    assert touched == tail
    assert (z_out.grad.abs().sum(1) > 0).all()


def test_schedule_gap_off_before_start_epoch_and_on_after():
    z_in, z_out = logits(10, seed=7), logits(10, seed=8) + 3
    loss = EDGELoss(gap_weight=0.5, tail_size=4, start_epoch=3)
    conf_only = ref.edge_conf(z_out.numpy())
    gap = ref.edge_gap(z_in.numpy(), z_out.numpy(), 1.0, 4)
    assert gap > 0
    for epoch in (0, 1, 2):
        assert loss(logits_in=z_in, logits_out=z_out, epoch=epoch).item() == pytest.approx(
            conf_only, rel=1e-12
        )
        assert loss.gap_weight_at(epoch) == 0.0
    for epoch in (3, 4, 100):
        got = loss(logits_in=z_in, logits_out=z_out, epoch=epoch).item()
        assert got == pytest.approx(conf_only + 0.5 * gap, rel=1e-12)
        assert loss.gap_weight_at(epoch) == 0.5


@pytest.mark.parametrize(
    ("start_epoch", "num_epochs", "first"),
    [
        (0.2, 250, 50),  # the official 50 of 250
        (0.2, 30, 6),
        (0.2, 4, 1),  # 0.8 rounds to 1
        (0.5, 5, 3),  # 2.5: halves round up
        (0.1, 4, 0),  # 0.4 rounds to 0: on from the start
        (0.0, 7, 0),
        (0.99, 100, 99),
        (50, 250, 50),  # an integer epoch keeps its meaning
        (3, None, 3),
    ],
)
def test_start_epoch_relative_to_the_run(start_epoch, num_epochs, first):
    z_in, z_out = logits(10, seed=7), logits(10, seed=8) + 3
    loss = EDGELoss(gap_weight=0.5, tail_size=4, start_epoch=start_epoch, num_epochs=num_epochs)
    assert loss.first_gap_epoch == first
    conf_only = ref.edge_conf(z_out.numpy())
    with_gap = conf_only + 0.5 * ref.edge_gap(z_in.numpy(), z_out.numpy(), 1.0, 4)
    last = (num_epochs or 100) - 1
    for epoch in sorted({0, max(first - 1, 0), first, last}):
        expected = with_gap if epoch >= first else conf_only
        got = loss(logits_in=z_in, logits_out=z_out, epoch=epoch).item()
        assert got == pytest.approx(expected, rel=1e-12), epoch
        assert loss.gap_weight_at(epoch) == (0.5 if epoch >= first else 0.0)


def test_fraction_of_the_official_run_is_the_official_schedule():
    z_in, z_out = logits(16, seed=3), logits(12, seed=4) + 2
    official, relative = EDGELoss(), EDGELoss(start_epoch=0.2, num_epochs=250)
    for epoch in (0, 49, 50, 249):
        torch.testing.assert_close(
            relative(logits_in=z_in, logits_out=z_out, epoch=epoch),
            official(logits_in=z_in, logits_out=z_out, epoch=epoch),
            rtol=0,
            atol=0,
        )


def _run(loss, epochs, seed=20):
    z_in, z_out = logits(8, seed=seed), logits(8, seed=seed + 1)
    return [loss(logits_in=z_in, logits_out=z_out, epoch=e).item() for e in epochs]


def test_warns_once_at_construction_when_the_run_ends_before_the_gap():
    """The trap of the issue: 30 epochs with the official start 50 are plain multi-label OE."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = EDGELoss(num_epochs=30)
        values = _run(loss, range(30))
        loss.finish()
        loss.finish()
    assert [w.category for w in caught] == [UserWarning]
    text = str(caught[0].message)
    assert re.search(
        r"gap term starts at epoch 50 \(start_epoch=50\) but the run has num_epochs=30 "
        r"\(epochs 0 to 29\): it never turns on.*plain multi-label outlier exposure",
        text,
    )
    assert "start_epoch=0.2" in text
    assert "50 of 250" in text
    z_out = logits(8, seed=21).numpy()
    assert values == pytest.approx([ref.edge_conf(z_out)] * 30, rel=1e-12)
    assert caught[0].filename == __file__  # points at the user's line


def test_fraction_that_rounds_to_the_end_warns():
    with pytest.warns(UserWarning, match=r"starts at epoch 2 \(start_epoch=0.9\).*num_epochs=2"):
        EDGELoss(start_epoch=0.9, num_epochs=2)


def test_finish_warns_once_when_the_gap_never_turned_on():
    loss = EDGELoss()  # start 50, run length unknown
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning while training
        _run(loss, range(10))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss.finish()
        loss.finish()
    assert len(caught) == 1
    assert caught[0].category is UserWarning
    assert re.search(
        r"never turned on: it starts at epoch 50 \(start_epoch=50\) and the last epoch it "
        r"saw was 9, so the loss was plain multi-label outlier exposure",
        str(caught[0].message),
    )
    assert caught[0].filename == __file__
    with pytest.warns(UserWarning, match=r"epoch 50 .*and no call reached this loss"):
        EDGELoss().finish()


@pytest.mark.parametrize(
    "make",
    [
        lambda: EDGELoss(start_epoch=2),
        lambda: EDGELoss(start_epoch=0.2, num_epochs=5),
        lambda: EDGELoss(start_epoch=4, num_epochs=5),
        lambda: EDGELoss(gap_weight=0.0, num_epochs=5),  # the gap is off on purpose
    ],
)
def test_no_warning_when_the_gap_turned_on(make):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = make()
        _run(loss, range(5))
        loss.finish()
    if loss.gap_weight > 0:
        assert loss.last_terms["gap_weight"].item() == loss.gap_weight


def test_epoch_must_lie_in_the_run():
    loss = EDGELoss(start_epoch=0.2, num_epochs=5)
    z = logits(4)
    loss(logits_in=z, logits_out=z, epoch=4)
    with pytest.raises(
        ValueError, match=r"`epoch` < `num_epochs` = 5 \(epochs are 0-based\), got 5"
    ):
        loss(logits_in=z, logits_out=z, epoch=5)


def test_batch_of_one():
    z_in, z_out = logits(1, seed=9), logits(1, seed=10)
    got = EDGELoss(**WEIGHT_ONE, start_epoch=0)(logits_in=z_in, logits_out=z_out, epoch=0)
    expected = ref.edge(z_in.numpy(), z_out.numpy(), 0, tau=0, **REF_ONE)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_tail_size_larger_than_batch_uses_every_id_row():
    z_in, z_out = logits(4, seed=11), logits(6, seed=12)
    big = EDGELoss(tail_size=50, margin=5.0, start_epoch=0)(
        logits_in=z_in, logits_out=z_out, epoch=0
    )
    exact = EDGELoss(tail_size=4, margin=5.0, start_epoch=0)(
        logits_in=z_in, logits_out=z_out, epoch=0
    )
    assert big.item() == exact.item()
    smaller = EDGELoss(tail_size=2, margin=5.0, start_epoch=0)(
        logits_in=z_in, logits_out=z_out, epoch=0
    )
    assert smaller.item() != exact.item()


def test_defaults_come_from_the_official_code():
    loss = get_regularizer("edge")
    assert isinstance(loss, EDGELoss)
    assert loss.get_params() == {
        "conf_weight": 1.0,
        "gap_weight": 0.1,
        "margin": 1.0,
        "tail_size": 50,
        "start_epoch": 50,
        "num_epochs": None,
        "validate_args": True,
    }
    assert "edge" in oodscore.list_regularizers()
    assert "EDGELoss" in oodscore.__all__


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"conf_weight": -1.0}, "conf_weight"),
        ({"gap_weight": -0.1}, "gap_weight"),
        ({"gap_weight": math.nan}, "gap_weight"),
        ({"margin": math.inf}, "margin"),
        ({"margin": "1"}, "margin"),
        ({"tail_size": 0}, "tail_size"),
        ({"tail_size": 2.5}, "tail_size"),
        ({"start_epoch": -1}, "start_epoch"),
        ({"start_epoch": 1.0, "num_epochs": 10}, r"`start_epoch` to be an integer epoch >= 0 or"),
        ({"start_epoch": 50.0}, r"a fraction in \[0, 1\) of `num_epochs`, got 50.0"),
        ({"start_epoch": -0.2, "num_epochs": 10}, r"`start_epoch`.*got -0.2"),
        ({"start_epoch": math.nan, "num_epochs": 10}, r"`start_epoch`.*got nan"),
        ({"start_epoch": True}, r"`start_epoch`.*got True"),
        ({"start_epoch": 0.2}, r"Expected `num_epochs` with a fractional `start_epoch`"),
        ({"num_epochs": 0}, r"`num_epochs` to be an integer >= 1, got 0"),
        ({"num_epochs": 2.5}, r"`num_epochs`"),
    ],
)
def test_bad_hyper_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EDGELoss(**kwargs)


def test_bad_inputs():
    loss = EDGELoss()
    z = logits(4)
    with pytest.raises(ValueError, match=r"`logits_out` to have at least 1 row"):
        loss(logits_in=z, logits_out=z[:0], epoch=0)
    with pytest.raises(ValueError, match=r"`logits_in` to have at least 1 row"):
        loss(logits_in=z[:0], logits_out=z, epoch=0)
    with pytest.raises(ValueError, match=r"as many classes as `logits_in` \(C = 6\)"):
        loss(logits_in=z, logits_out=logits(4, 5), epoch=0)
    bad = z.clone()
    bad[2, 1] = math.nan
    with pytest.raises(ValueError, match=r"`logits_out` to be finite.*NaN.*row 2"):
        loss(logits_in=z, logits_out=bad, epoch=0)
    bad[2, 1] = -math.inf
    with pytest.raises(ValueError, match=r"`logits_in` to be finite.*inf"):
        loss(logits_in=bad, logits_out=z, epoch=0)
    with pytest.raises(ValueError, match=r"`logits_in` to be 2-D"):
        loss(logits_in=z[0], logits_out=z, epoch=0)
    with pytest.raises(TypeError, match=r"`logits_in` to be a floating-point tensor"):
        loss(logits_in=z.long(), logits_out=z, epoch=0)
    with pytest.raises(TypeError, match=r"`logits_out` to be a torch.Tensor, got ndarray"):
        loss(logits_in=z, logits_out=z.numpy(), epoch=0)
    with pytest.raises(ValueError, match=r"`epoch` to be an integer >= 0, got -1"):
        loss(logits_in=z, logits_out=z, epoch=-1)
    with pytest.raises(ValueError, match=r"`epoch`"):
        loss(logits_in=z, logits_out=z, epoch=1.5)  # type: ignore[arg-type]


# ----------------------------------------------------------------------- dilation distance


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("n", "m", "d", "k"), [(50, 80, 16, 8), (40, 40, 64, 32), (5, 9, 3, 3)])
def test_dilation_distance_matches_numpy(seed, n, m, d, k):
    rng = np.random.default_rng(seed)
    h_id = np.abs(rng.normal(size=(n, d)))  # non-negative, like post-ReLU features
    h_out = np.abs(rng.normal(size=(m, d))) * 1.7 + 0.2
    got = dilation_distance(torch.from_numpy(h_id), torch.from_numpy(h_out), k=k)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(ref.dilation(h_id, h_out, k), rel=1e-10)
    # float32 input: computed in float32, close to the float64 value.
    got32 = dilation_distance(torch.from_numpy(h_id).float(), torch.from_numpy(h_out).float(), k=k)
    assert got32.dtype == torch.float32
    assert got32.item() == pytest.approx(ref.dilation(h_id, h_out, k), rel=1e-4)


def test_dilation_distance_properties():
    rng = np.random.default_rng(3)
    h = torch.from_numpy(rng.normal(size=(30, 10)))
    assert dilation_distance(h, h, k=10).item() == pytest.approx(0.0, abs=1e-12)
    # Row order and duplicating the whole set do not change the (size-normalised) spectrum.
    assert dilation_distance(h, torch.cat([h, h]).flip(0), k=10).item() == pytest.approx(
        0.0, abs=1e-10
    )
    # Scaling the outliers by s moves every singular value by (s - 1) sigma.
    sigma = np.linalg.svd(h.numpy() / np.sqrt(30), compute_uv=False)[:4]
    assert dilation_distance(h, 3 * h, k=4).item() == pytest.approx(
        2 * np.linalg.norm(sigma), rel=1e-10
    )
    assert not dilation_distance(h.requires_grad_(True), h * 2, k=3).requires_grad


def test_official_broadcast_is_not_the_top_k_distance():
    """oe.py's accumulators give sqrt(k) x the distance over all batch singular values."""
    rng = np.random.default_rng(4)
    batches_id = [np.abs(rng.normal(size=(8, 20))) for _ in range(3)]
    batches_out = [np.abs(rng.normal(size=(8, 20))) * 2 for _ in range(3)]
    official = ref.official_oe_py_measure(batches_id, batches_out, k=3)
    mean_id = np.mean([np.linalg.svd(b, compute_uv=False) for b in batches_id], axis=0)
    mean_out = np.mean([np.linalg.svd(b, compute_uv=False) for b in batches_out], axis=0)
    assert official == pytest.approx(np.sqrt(3) * np.linalg.norm(mean_id - mean_out))
    assert official != pytest.approx(np.linalg.norm(mean_id[:3] - mean_out[:3]))


def test_dilation_distance_errors():
    h = logits(10, 6)
    with pytest.raises(ValueError, match=r"`k` to be at most min\(N, M, D\) = 6"):
        dilation_distance(h, logits(20, 6), k=7)
    with pytest.raises(ValueError, match=r"`k` to be at most min\(N, M, D\) = 3"):
        dilation_distance(h, logits(3, 6), k=4)
    with pytest.raises(ValueError, match=r"as many features as `features_id` \(D = 6\)"):
        dilation_distance(h, logits(10, 5), k=2)
    with pytest.raises(ValueError, match=r"`features_out` to have at least 1 row"):
        dilation_distance(h, h[:0], k=1)
    with pytest.raises(ValueError, match=r"`k` to be an integer >= 1"):
        dilation_distance(h, h, k=0)
    bad = h.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"`features_id` to be finite"):
        dilation_distance(bad, h, k=2)


def test_rank_outlier_sets_prefers_the_closest_spectrum():
    rng = np.random.default_rng(5)
    h_id = torch.from_numpy(np.abs(rng.normal(size=(100, 12))))
    candidates = {
        "far": torch.from_numpy(np.abs(rng.normal(size=(60, 12))) * 4),
        "near": torch.from_numpy(np.abs(rng.normal(size=(80, 12))) * 1.1),
        "middle": torch.from_numpy(np.abs(rng.normal(size=(70, 12))) * 2),
    }
    ranking = rank_outlier_sets(h_id, candidates, k=8, prefer="closest")
    assert [name for name, _ in ranking] == ["near", "middle", "far"]
    farthest = rank_outlier_sets(h_id, candidates, k=8, prefer="farthest")
    assert [name for name, _ in farthest] == ["far", "middle", "near"]
    for name, distance in ranking:
        expected = ref.dilation(h_id.numpy(), candidates[name].numpy(), 8)
        assert distance == pytest.approx(expected, rel=1e-10)


def test_rank_outlier_sets_errors():
    h = logits(10, 4)
    with pytest.raises(ValueError, match="at least one outlier set"):
        rank_outlier_sets(h, {}, prefer="closest")
    with pytest.raises(ValueError, match=r"Candidate outlier set 'tiny'.*`k` to be at most"):
        rank_outlier_sets(h, {"ok": logits(10, 4), "tiny": logits(2, 4)}, k=3, prefer="closest")
    with pytest.raises(ValueError, match=r"`prefer` to be 'closest' or 'farthest', got 'near'"):
        rank_outlier_sets(h, {"a": h}, k=2, prefer="near")  # type: ignore[arg-type]


def test_half_precision_is_computed_in_float32():
    z_in, z_out = logits(9, seed=13), logits(5, seed=14)
    loss = EDGELoss(**WEIGHT_ONE, start_epoch=0)
    got = loss(logits_in=z_in.half(), logits_out=z_out.bfloat16(), epoch=0)
    assert got.dtype == torch.float32
    expected = ref.edge(
        z_in.half().double().numpy(), z_out.bfloat16().double().numpy(), 0, tau=0, **REF_ONE
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)
