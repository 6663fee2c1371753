"""FeatureCapture on several architectures, its lifecycle, errors, no_grad and DDP."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.distributed as dist
from torch import nn

import oodscore
from oodscore import SparsityLoss
from oodscore.nn import FeatureCapture


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 12)
        self.head = nn.Linear(12, 3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc2(torch.relu(self.fc1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SmallCNN(nn.Module):
    """Conv blocks, adaptive average pooling, then a Linear head (ResNet's layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(torch.relu(self.conv(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class NestedHead(nn.Module):
    """The last Linear sits inside a Sequential after an earlier top-level Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(5, 7)
        self.classifier = nn.Sequential(nn.ReLU(), nn.Dropout(0.0), nn.Linear(7, 4))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stem(x))


CASES = [
    (MLP, (10, 8), "head"),
    (SmallCNN, (10, 1, 6, 6), "fc"),
    (NestedHead, (10, 5), "classifier.2"),
]


@pytest.mark.parametrize(("factory", "shape", "name"), CASES)
def test_default_captures_input_of_last_linear(factory, shape, name):
    model = factory()
    x = torch.randn(*shape)
    with FeatureCapture(model) as capture:
        logits = model(x)
    assert capture.module_name == name
    torch.testing.assert_close(capture.features, model.features(x))
    torch.testing.assert_close(logits, model(x))
    assert not capture.active


def test_named_module_output_is_flattened():
    model = SmallCNN()
    x = torch.randn(3, 1, 6, 6)
    capture = FeatureCapture(model, "avgpool", capture="output")
    model(x)
    assert capture.features.shape == (3, 6)
    torch.testing.assert_close(capture.features, model.features(x))
    raw = FeatureCapture(model, "avgpool", capture="output", flatten=False)
    model(x)
    assert raw.features.shape == (3, 6, 1, 1)
    capture.remove()
    raw.remove()


def test_named_module_input():
    model = SmallCNN()
    x = torch.randn(2, 1, 6, 6)
    with FeatureCapture(model, "conv.2") as capture:
        model(x)
    assert capture.features.shape == (2, 4 * 6 * 6)  # flattened (N, C, H, W) input


def test_sparsity_loss_trains_through_captured_features():
    torch.manual_seed(0)
    model = MLP()
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    with FeatureCapture(model) as capture:
        logits = model(x)
        penalty = SparsityLoss(weight=1.0)(features_in=capture.features)
        loss = nn.functional.cross_entropy(logits, y) + penalty
    loss.backward()
    # The first layer's gradient includes the L1 term: compare with the explicit forward.
    model_grad = model.fc1.weight.grad.clone()
    model.zero_grad()
    h = model.features(x)
    explicit = nn.functional.cross_entropy(model.head(h), y) + h.abs().sum(1).mean()
    explicit.backward()
    torch.testing.assert_close(model_grad, model.fc1.weight.grad)


def test_repeated_forwards_replace_features_and_count_calls():
    model = MLP()
    capture = FeatureCapture(model)
    x1, x2 = torch.randn(4, 8), torch.randn(6, 8)
    model(x1)
    first = capture.features
    model(x2)
    assert capture.calls == 2
    assert capture.features.shape == (6, 12)
    torch.testing.assert_close(capture.features, model.features(x2))
    torch.testing.assert_close(first, model.features(x1))
    capture.remove()
    model(x1)  # no longer recorded
    assert capture.calls == 2
    assert capture.features.shape == (6, 12)
    capture.remove()  # idempotent


def test_no_grad_and_detach():
    model = MLP()
    with FeatureCapture(model) as capture, torch.no_grad():
        model(torch.randn(3, 8))
    assert not capture.features.requires_grad
    with FeatureCapture(model, detach=True) as detached:
        model(torch.randn(3, 8))
    assert not detached.features.requires_grad
    with FeatureCapture(model) as attached:
        model(torch.randn(3, 8))
    assert attached.features.requires_grad


def test_clear_releases_the_graph():
    model = MLP()
    capture = FeatureCapture(model)
    model(torch.randn(3, 8))
    ref = weakref.ref(capture.features)
    capture.clear()
    gc.collect()
    assert ref() is None
    with pytest.raises(RuntimeError, match="No features captured yet"):
        _ = capture.features
    capture.remove()


def test_hooks_are_removed_on_exit_even_after_an_error():
    model = MLP()
    with pytest.raises(ZeroDivisionError), FeatureCapture(model):
        _ = 1 / 0
    assert not model.head._forward_hooks


def test_errors():
    with pytest.raises(
        ValueError, match=r"`model` \(Sequential\) to contain an nn.Linear.*`module`"
    ):
        FeatureCapture(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
    with pytest.raises(ValueError, match=r"`module` to name a submodule of MLP, got 'hed'\. Did"):
        FeatureCapture(MLP(), "hed")
    with pytest.raises(ValueError, match=r"`module` to name a submodule of MLP, got ''"):
        FeatureCapture(MLP(), "")  # the model itself is no layer
    with pytest.raises(TypeError, match=r"`module` to be a str or None, got int"):
        FeatureCapture(MLP(), 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`capture` to be 'input' or 'output', got 'inputs'"):
        FeatureCapture(MLP(), capture="inputs")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`model` to be a torch.nn.Module, got function"):
        FeatureCapture(lambda x: x)  # type: ignore[arg-type]
    capture = FeatureCapture(MLP())
    with pytest.raises(RuntimeError, match=r"module 'head' has not run a forward pass"):
        _ = capture.features
    capture.remove()


class Pair(nn.Module):
    """Returns a tuple, as an LSTM or a ``return_dict=False`` Hugging Face model does."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 2 * x, x


class Named(nn.Module):
    """Returns a dict, with or without a "logits" entry."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.key: 3 * x, "hidden": x}


class WithLogits(nn.Module):
    """Returns an object with a ``.logits`` tensor, as a Hugging Face ModelOutput."""

    class Output:
        def __init__(self, logits: torch.Tensor) -> None:
            self.logits = logits

    def forward(self, x: torch.Tensor) -> WithLogits.Output:
        return self.Output(4 * x)


@pytest.mark.parametrize(
    ("module", "factor"), [(Pair(), 2), (Named("logits"), 3), (WithLogits(), 4)]
)
def test_structured_outputs_are_read_like_model_outputs(module, factor):
    model = nn.Sequential()
    model.add_module("block", module)
    x = torch.randn(2, 3, 2)
    with FeatureCapture(model, "block", capture="output") as capture:
        model(x)
    torch.testing.assert_close(capture.features, factor * x.flatten(1))


def test_output_without_a_tensor_is_reported():
    model = nn.Sequential()
    model.add_module("named", Named("scores"))
    with (
        FeatureCapture(model, "named", capture="output"),
        pytest.raises(
            TypeError,
            match=r"module 'named' to return a tensor, .*got a dict with keys "
            r"\['scores', 'hidden'\]; capture its 'input' or hook another module",
        ),
    ):
        model(torch.randn(2, 3))


def test_repr_and_exports():
    capture = FeatureCapture(MLP(), detach=True)
    assert repr(capture) == (
        "FeatureCapture(module='head' (Linear), capture='input', flatten=True, detach=True, "
        "active=True)"
    )
    capture.remove()
    assert oodscore.FeatureCapture is FeatureCapture
    assert "FeatureCapture" in oodscore.__all__


@pytest.fixture
def process_group(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    if dist.is_initialized():  # another test's group: use it, leave it alone
        yield
        return
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


def test_distributed_data_parallel(process_group):
    model = MLP()
    ddp = nn.parallel.DistributedDataParallel(model)
    x = torch.randn(5, 8)
    for name, expected in ((None, "module.head"), ("head", "module.head"), ("module.fc2", None)):
        with FeatureCapture(ddp, name) as capture:
            ddp(x).sum().backward()
        assert capture.module_name == (expected or name)
        if name == "module.fc2":
            assert capture.features.shape == (5, 16)  # input of fc2
        else:
            torch.testing.assert_close(capture.features, model.features(x))
