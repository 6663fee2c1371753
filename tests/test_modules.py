"""The shared model utilities of oodscore.nn._modules: lookups, their errors, eval_mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from oodscore.nn._modules import (
    eval_mode,
    find_head,
    find_module,
    locate_module,
    original_weight,
    output_head,
    replace_module,
    weight_parametrizations,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout())
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class Wrapper(nn.Module):
    """Holds the model as ``module``, as DistributedDataParallel does."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def test_output_head_and_find_head() -> None:
    assert output_head(Net()) == "head"
    assert output_head(nn.Sequential(nn.Conv2d(1, 2, 3))) is None
    assert find_head(Net()) == "head"
    assert find_head(Net(), "body.0") == "body.0"


def test_find_head_errors_name_the_argument_and_the_value() -> None:
    with pytest.raises(ValueError, match=r"`model` \(Sequential\) to contain an nn.Linear.*`fc`"):
        find_head(nn.Sequential(nn.Conv2d(1, 2, 3)), argument="fc")
    with pytest.raises(ValueError, match=r"`head` to name an nn.Linear, but 'body.1' is a Batch"):
        find_head(Net(), "body.1")
    with pytest.raises(ValueError, match=r"`head` to name a submodule of Net, got 'haed'"):
        find_head(Net(), "haed")


def test_find_module_errors_name_the_argument_and_the_value() -> None:
    assert isinstance(find_module(Net(), "body.2"), nn.Dropout)
    with pytest.raises(ValueError, match=r"`layer` .* got 'body.7'\. Did you mean 'body\.[0-2]'"):
        find_module(Net(), "body.7", argument="layer")
    with pytest.raises(ValueError, match=r"`module` to name a submodule of Net, got ''\.$"):
        find_module(Net(), "")
    with pytest.raises(TypeError, match=r"`layer` to be a str or None, got int"):
        find_module(Net(), 0, argument="layer")  # type: ignore[arg-type]


def test_locate_module_looks_inside_a_wrapper_only_when_asked() -> None:
    net = Net()
    wrapped = Wrapper(net)
    assert locate_module(wrapped, "head", unwrap=True) == ("module.head", net.head)
    assert locate_module(wrapped, "module.head", unwrap=True) == ("module.head", net.head)
    assert locate_module(net, "head", unwrap=True) == ("head", net.head)
    with pytest.raises(ValueError, match=r"submodule of Wrapper, got 'head'"):
        locate_module(wrapped, "head")
    with pytest.raises(ValueError, match=r"got ''"):
        locate_module(wrapped, "", unwrap=True)


def test_replace_module() -> None:
    net = Net()
    replace_module(net, "body.1", nn.Identity())
    replace_module(net, "head", nn.Linear(8, 5))
    assert isinstance(net.body[1], nn.Identity)
    assert net(torch.randn(2, 4)).shape == (2, 5)


def test_weight_parametrizations_and_original_weight() -> None:
    layer = nn.Linear(2, 2)
    stored = layer.weight

    class Double(nn.Module):
        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            return 2 * weight

    parametrize.register_parametrization(layer, "weight", Double())
    assert isinstance(weight_parametrizations(layer)[0], Double)
    assert original_weight(layer) is weight_parametrizations(layer).original
    torch.testing.assert_close(layer.weight, 2 * stored.detach())


def test_eval_mode_restores_mixed_modes_even_when_the_block_raises() -> None:
    net = Net()
    net.body[1].eval()  # a frozen batch norm inside a model in training mode
    expected = [m.training for m in net.modules()]
    with eval_mode(net) as inside:
        assert inside is net
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == expected
    with pytest.raises(ZeroDivisionError), eval_mode(net):
        _ = 1 / 0
    assert [m.training for m in net.modules()] == expected
    assert expected == [True, True, True, False, True, True]
