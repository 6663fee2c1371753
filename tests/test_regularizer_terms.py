"""`Regularizer.last_terms` against float64 references, and the energy loss's dead-hinge warning."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from oodscore import (
    BalancedEnergyLoss,
    EDGELoss,
    EnergyMarginLoss,
    OutlierExposureLoss,
    SparsityLoss,
    calibrate_margins,
    spectral_normalize,
)
from oodscore.data import load_digits_split
from oodscore.regularizers.energy import dead_hinge_message
from tests.reference import multilabel_regularizers as ref_multilabel
from tests.reference import regularizer_terms as ref
from tests.reference import regularizers as ref_single

C = 5
PRIOR = np.array([0.45, 0.25, 0.15, 0.1, 0.05])


def _logits(seed: int, rows: int, *, scale: float, shift: float = 0.0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.normal(shift, scale, size=(rows, C)))


def _extreme(seed: int, rows: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.choice([-1e4, 1e4, 0.0, 3.0], size=(rows, C)))


CASES = {
    "random": lambda: (_logits(0, 16, scale=8.0), _logits(1, 24, scale=8.0)),
    "shifted": lambda: (_logits(2, 9, scale=3.0, shift=6.0), _logits(3, 11, scale=1.0)),
    "extreme": lambda: (_extreme(4, 12), _extreme(5, 12)),
    "batch_of_one": lambda: (_logits(6, 1, scale=8.0), _logits(7, 1, scale=8.0)),
}


def _assert_terms(terms: dict[str, torch.Tensor], expected: dict[str, float]) -> None:
    for key, value in expected.items():
        assert terms[key].dtype == torch.float64, key
        np.testing.assert_allclose(float(terms[key]), value, rtol=1e-10, atol=1e-12, err_msg=key)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the dead-hinge warning where a test builds such batches on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


# ---------------------------------------------------------------------- energy margin


@pytest.mark.filterwarnings("ignore:EnergyMarginLoss. :UserWarning")
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"weight": 1.0, "margin_in": -3.0, "margin_out": -1.0},
        {"weight": 0.5, "margin_in": -12.0, "margin_out": -6.0, "temperature": 2.5},
    ],
)
def test_energy_margin_terms_match_reference(case, params):
    logits_in, logits_out = CASES[case]()
    reg = EnergyMarginLoss(**params)
    out = reg(logits_in=logits_in, logits_out=logits_out)
    reference_params = {k: v for k, v in params.items() if k != "weight"}
    expected = ref.energy_margin_terms(logits_in.numpy(), logits_out.numpy(), **reference_params)
    _assert_terms(reg.last_terms, {**expected, "weight": reg.weight})
    # The output is the weighted sum of the two logged hinges.
    np.testing.assert_allclose(
        float(out), reg.weight * (expected["hinge_in"] + expected["hinge_out"]), rtol=1e-10
    )


def test_energy_margin_dense_terms_are_those_of_the_pixels():
    rng = np.random.default_rng(8)
    logits = torch.from_numpy(rng.normal(0.0, 8.0, size=(2, C, 3, 4)))
    labels = torch.from_numpy(rng.integers(0, 3, size=(2, 3, 4)))
    mask_out, mask_in = labels == 1, labels == 0
    reg = EnergyMarginLoss(weight=0.1, margin_in=-12.0, margin_out=-6.0)
    out = reg(logits_in=logits, mask_out=mask_out, mask_in=mask_in)
    pixels = logits.permute(0, 2, 3, 1).numpy()
    expected = ref.energy_margin_terms(
        pixels[mask_in.numpy()], pixels[mask_out.numpy()], margin_in=-12.0, margin_out=-6.0
    )
    _assert_terms(reg.last_terms, expected)
    np.testing.assert_allclose(
        float(out), 0.1 * 0.5 * (expected["hinge_in"] + expected["hinge_out"]), rtol=1e-10
    )
    # Without outlier pixels the outlier entries are 0 (no hinge), not NaN.
    reg(logits_in=logits, mask_out=torch.zeros_like(mask_out))
    for key in ("hinge_out", "active_out", "energy_out"):
        assert float(reg.last_terms[key]) == 0.0


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(
    "params",
    [{}, {"weight": 1.0, "margin_in": -10.0, "margin_out": -4.0, "alpha": 3.0, "gamma": 2.0}],
)
def test_balanced_energy_terms_match_reference(case, params):
    logits_in, logits_out = CASES[case]()
    reg = BalancedEnergyLoss(PRIOR, **params)
    out = reg(logits_in=logits_in, logits_out=logits_out)
    reference_params = {k: v for k, v in params.items() if k != "weight"}
    expected = ref.balanced_energy_terms(
        logits_in.numpy(), logits_out.numpy(), PRIOR, **reference_params
    )
    _assert_terms(reg.last_terms, {**expected, "weight": reg.weight})
    np.testing.assert_allclose(
        float(out), reg.weight * (expected["hinge_in"] + expected["hinge_out"]), rtol=1e-10
    )


# ---------------------------------------------------------------------- OE, SR, EDGE


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("target", ["uniform", "zeros"])
def test_outlier_exposure_terms_match_reference(case, target):
    _, logits_out = CASES[case]()
    reg = OutlierExposureLoss(target=target)
    reg(logits_out=logits_out)
    reference = (
        ref_single.outlier_exposure if target == "uniform" else ref_single.outlier_exposure_zeros
    )
    expected = reference(logits_out.numpy(), weight=1.0)
    _assert_terms(reg.last_terms, {"outlier_exposure": expected, "weight": 0.5})


@pytest.mark.parametrize("with_outliers", [False, True])
def test_sparsity_terms_match_reference(with_outliers):
    rng = np.random.default_rng(9)
    h_in = torch.from_numpy(np.maximum(rng.normal(size=(12, 16)), 0.0))  # post-ReLU: zeros
    h_out = torch.from_numpy(np.maximum(rng.normal(0.5, 2.0, size=(7, 16)), 0.0))
    reg = SparsityLoss()
    if with_outliers:
        reg(features_in=h_in, features_out=h_out)
        rows = torch.cat([h_in, h_out]).numpy()
    else:
        reg(features_in=h_in)
        rows = h_in.numpy()
    expected = ref.sparsity_terms(rows)
    assert 0.2 < expected["active_features"] < 0.8
    _assert_terms(reg.last_terms, {**expected, "weight": 0.02})


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("epoch", [0, 3])
def test_edge_terms_match_reference(seed, epoch):
    """Before the start (epoch 0) the gap is still logged, with gap_weight 0."""
    z_in = _logits(10 + seed, 13, scale=3.0)
    z_out = _logits(20 + seed, 7, scale=3.0, shift=-0.5)
    reg = EDGELoss(conf_weight=0.7, gap_weight=0.3, margin=2.0, tail_size=5, start_epoch=3)
    out = reg(logits_in=z_in, logits_out=z_out, epoch=epoch)
    expected = ref.edge_terms(z_in.numpy(), z_out.numpy(), margin=2.0, k=5)
    assert 0 < expected["active_pairs"] < 1
    beta = 0.3 if epoch >= 3 else 0.0
    _assert_terms(reg.last_terms, {**expected, "conf_weight": 0.7, "gap_weight": beta})
    np.testing.assert_allclose(
        float(out), 0.7 * expected["confidence"] + beta * expected["gap"], rtol=1e-10
    )
    np.testing.assert_allclose(
        float(out),
        ref_multilabel.edge(
            z_in.numpy(), z_out.numpy(), epoch, alpha=0.7, beta=0.3, margin=2.0, k=5, tau=3
        ),
        rtol=1e-10,
    )


def test_edge_gap_logged_before_the_start_sends_no_gradient():
    z_in = _logits(30, 6, scale=3.0).requires_grad_(True)
    z_out = _logits(31, 4, scale=3.0).requires_grad_(True)
    reg = EDGELoss(tail_size=3, margin=50.0, start_epoch=5)
    reg(logits_in=z_in, logits_out=z_out, epoch=0).backward()
    assert z_in.grad is None  # only the gap term reaches the ID logits
    assert float(reg.last_terms["gap"]) > 0
    assert float(reg.last_terms["gap_weight"]) == 0.0


# ---------------------------------------------------------------------- dead hinges


def test_dead_energy_hinges_show_as_active_fraction_0_or_1():
    low = torch.tensor([[30.0, 0.0], [28.0, 1.0]], dtype=torch.float64)  # E ≈ -30: below m_in
    high = torch.tensor([[-10.0, -10.0], [-9.0, -12.0]], dtype=torch.float64)  # E ≈ +9
    reg = EnergyMarginLoss()
    with _quiet():
        assert float(reg(logits_in=low, logits_out=high)) == 0.0
    terms = reg.last_terms
    assert (float(terms["active_in"]), float(terms["active_out"])) == (0.0, 0.0)
    assert (float(terms["hinge_in"]), float(terms["hinge_out"])) == (0.0, 0.0)
    with _quiet():
        reg(logits_in=high, logits_out=low)  # roles swapped: every hinge active
    assert (float(reg.last_terms["active_in"]), float(reg.last_terms["active_out"])) == (1.0, 1.0)
    balanced = BalancedEnergyLoss([0.5, 0.5])
    balanced(logits_in=low, logits_out=high)
    assert float(balanced.last_terms["active_in"]) == 0.0
    assert float(balanced.last_terms["active_out"]) == 0.0


def test_an_energy_exactly_at_its_margin_is_inactive():
    """relu(0) = 0: such a sample pays nothing and gets no gradient, so it is not active."""
    at = torch.zeros(3, 2, dtype=torch.float64)  # E = -log 2 exactly
    edge = -math.log(2.0)
    reg_in = EnergyMarginLoss(margin_in=edge, margin_out=edge + 1)
    reg_out = EnergyMarginLoss(margin_in=edge - 1, margin_out=edge)
    with _quiet():
        reg_in(logits_in=at, logits_out=at)
        reg_out(logits_in=at, logits_out=at)
    assert float(reg_in.last_terms["active_in"]) == 0.0
    assert float(reg_out.last_terms["active_out"]) == 0.0
    assert float(reg_in.last_terms["active_out"]) == 1.0


def test_dead_gap_hinge_shows_as_active_pairs_0_or_1():
    z_in = torch.full((4, 3), 6.0, dtype=torch.float64)  # S ≈ 18
    far_out = torch.full((5, 3), -8.0, dtype=torch.float64)  # S ≈ 0: 18 below, margin 1
    reg = EDGELoss(start_epoch=0)
    reg(logits_in=z_in, logits_out=far_out, epoch=0)
    assert float(reg.last_terms["active_pairs"]) == 0.0
    assert float(reg.last_terms["gap"]) == 0.0
    reg(logits_in=far_out, logits_out=z_in, epoch=0)
    assert float(reg.last_terms["active_pairs"]) == 1.0


# ---------------------------------------------------------------------- the warning


def _energies(logits: torch.Tensor) -> np.ndarray:
    return ref_single.energy(logits.numpy())


@pytest.mark.parametrize(
    ("logits_in", "logits_out", "pattern"),
    [
        (  # ID energies ≈ -1.6 to -3.1: above even m_out = -7 (the spectral-norm trap)
            torch.tensor([[1.0, 0.0, 0.0], [3.0, 0.0, -1.0]]),
            torch.tensor([[0.0, 0.0, 0.0]]),
            r"every ID energy of this batch \(from {low_in} to {high_in}\) lies above even "
            r"margin_out=-7, far from margin_in=-25: the ID hinge acts on every sample",
        ),
        (  # outlier energies ≈ -30 and -40: below even m_in = -25
            torch.tensor([[1.0, 0.0, 0.0]]),
            torch.tensor([[30.0, 0.0, 0.0], [40.0, 0.0, 0.0]]),
            r"every outlier energy of this batch \(from {low_out} to {high_out}\) lies below "
            r"even margin_in=-25, far from margin_out=-7: the outlier hinge acts on every",
        ),
        (  # every hinge satisfied: the loss and its gradient are 0
            torch.tensor([[30.0, 0.0, 0.0], [26.0, 0.0, 0.0]]),
            torch.tensor([[-10.0, -10.0, -10.0]]),
            r"the loss and its gradient are 0 on this batch: every ID energy \(highest "
            r"{high_in}\) lies below margin_in=-25 and every outlier energy \(lowest "
            r"{low_out}\) above margin_out=-7",
        ),
    ],
    ids=["id_always_active", "outliers_always_active", "loss_zero"],
)
def test_dead_hinge_warns_once_with_the_numbers(logits_in, logits_out, pattern):
    e_in, e_out = _energies(logits_in), _energies(logits_out)
    numbers = {
        "low_in": f"{e_in.min():.4g}",
        "high_in": f"{e_in.max():.4g}",
        "low_out": f"{e_out.min():.4g}",
        "high_out": f"{e_out.max():.4g}",
    }
    expected = pattern.format(**{k: re.escape(v) for k, v in numbers.items()})
    reg = EnergyMarginLoss()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            reg(logits_in=logits_in, logits_out=logits_out)
    assert len(caught) == 1
    assert caught[0].category is UserWarning
    text = str(caught[0].message)
    assert text.startswith("EnergyMarginLoss: ")
    assert re.search(expected, text), text
    assert "calibrate_margins" in text
    assert caught[0].filename == __file__  # the user's line, not torch's
    with pytest.warns(UserWarning, match="EnergyMarginLoss"):  # once per instance
        EnergyMarginLoss()(logits_in=logits_in, logits_out=logits_out)


def test_no_warning_for_live_hinges_or_without_validation():
    logits_in, logits_out = CASES["random"]()
    margins = calibrate_margins(logits_in, logits_out)
    dead_in = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EnergyMarginLoss(**margins._asdict())(logits_in=logits_in, logits_out=logits_out)
        # Official margins, outliers all above m_out: one idle hinge alone is no warning.
        EnergyMarginLoss()(logits_in=logits_in * 2, logits_out=logits_out / 4)
        reg = EnergyMarginLoss(validate_args=False)  # no host sync, so no check
        reg(logits_in=dead_in, logits_out=dead_in)
        # Dense form without outlier pixels: one side is empty, nothing to judge.
        dense = torch.full((1, C, 2, 2), 30.0, dtype=torch.float64)
        EnergyMarginLoss()(logits_in=dense, mask_out=torch.zeros(1, 2, 2, dtype=torch.bool))
    assert float(reg.last_terms["active_in"]) == 1.0  # still visible in the terms


@pytest.mark.parametrize(
    ("energy_in", "energy_out", "found"),
    [
        ((-6.9, -1.0), (-20.0, 0.0), True),  # lowest ID energy above m_out = -7
        ((-7.0, -1.0), (-20.0, 0.0), False),  # one ID energy at m_out: not "every"
        ((-30.0, -26.0), (-30.0, -25.1), True),  # every outlier below m_in = -25
        ((-30.0, -26.0), (-30.0, -25.0), False),
        ((-40.0, -25.0), (-7.0, 3.0), True),  # both hinges inactive (ties count inactive)
        ((-40.0, -24.9), (-7.0, 3.0), False),
        ((-40.0, -30.0), (-7.1, 3.0), False),
    ],
)
def test_dead_hinge_rules_at_their_boundaries(energy_in, energy_out, found):
    message = dead_hinge_message(energy_in, energy_out, margin_in=-25.0, margin_out=-7.0)
    assert (message is not None) == found


def test_spectral_norm_with_the_papers_margins_warns_and_calibrated_margins_do_not():
    """The trap of the README's training snippet: bounded logits keep energies near -log C,
    far above the official -25 / -7; margins read off the model's energies are live."""
    torch.manual_seed(0)
    split = load_digits_split()
    x_in, y_in, x_out = split.x_train[:, None], split.y_train, split.x_ood[:, None]
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 6))
    spectral_normalize(model, include=nn.Conv2d, legacy=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        F.cross_entropy(model(x_in), y_in).backward()
        optimizer.step()
    with torch.no_grad():
        logits_in, logits_out = model(x_in[:128]), model(x_out[:128])
    with pytest.warns(UserWarning, match=r"every ID energy of this batch .* above even margin_out"):
        EnergyMarginLoss()(logits_in=logits_in, logits_out=logits_out)
    margins = calibrate_margins(logits_in, logits_out)
    reg = EnergyMarginLoss(**margins._asdict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg(logits_in=logits_in, logits_out=logits_out)
    assert 0.0 < float(reg.last_terms["active_in"]) < 1.0
    assert 0.0 < float(reg.last_terms["active_out"]) < 1.0


# ---------------------------------------------------------------------- compile / export


def test_terms_survive_torch_compile_and_export_records_none():
    logits_in, logits_out = CASES["random"]()
    eager = EnergyMarginLoss(weight=1.0, margin_in=-12.0, margin_out=-6.0, validate_args=False)
    expected = eager(logits_in=logits_in, logits_out=logits_out)
    compiled_reg = EnergyMarginLoss(
        weight=1.0, margin_in=-12.0, margin_out=-6.0, validate_args=False
    )
    compiled = torch.compile(compiled_reg, backend="aot_eager")
    torch.testing.assert_close(compiled(logits_in=logits_in, logits_out=logits_out), expected)
    assert list(compiled_reg.last_terms) == list(eager.term_names)
    for key, value in eager.last_terms.items():
        torch.testing.assert_close(compiled_reg.last_terms[key], value)
    exported_reg = EnergyMarginLoss(validate_args=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "tensor attributes assigned during export"
        program = torch.export.export(
            exported_reg, (), {"logits_in": logits_in, "logits_out": logits_out}
        )
    assert exported_reg.last_terms == {}
    assert math.isfinite(float(program.module()(logits_in=logits_in, logits_out=logits_out)))
