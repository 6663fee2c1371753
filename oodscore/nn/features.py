"""Capture the penultimate features of any model with a forward hook."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Literal

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from oodscore.model_io import ACCEPTED_OUTPUTS, describe, output_tensor
from oodscore.nn._modules import find_head, locate_module

CaptureWhat = Literal["input", "output"]


class FeatureCapture:
    """Record the features a module sees during the forward pass that also yields logits.

    By default the hook sits on the output head of ``model``, its **last** ``nn.Linear``
    in module order (`oodscore.nn.output_head`), and records its **input**: the penultimate,
    pooled features of a classifier whose head is a linear layer (ResNet's ``fc``, a
    WideResNet's ``fc``, an MLP's last layer). Give ``module`` to hook a named submodule
    instead (any non-empty name of ``model.named_modules()``, e.g. ``"avgpool"`` or
    ``"body.3"``) and ``capture`` to record its input or its output.

    Use it as a persistent handle (``capture.features`` after each forward, ``remove()``
    when done) or as a context manager that removes the hook on exit. Each forward call of
    the hooked module replaces `features`, so after ``model(x_in)`` followed by
    ``model(x_out)`` it holds the outlier batch's features: read it between the calls, or
    pass ID and outliers through one forward and split the rows (as the official SR/SROE
    and EDGE scripts do).

    The recorded tensor keeps its autograd graph (``detach=False``), so a loss on it
    trains the model; under ``torch.no_grad`` it simply has none. Works with
    ``DistributedDataParallel`` (each process hooks its own replica; names may be given
    with or without DDP's ``module.`` prefix). ``nn.DataParallel`` is not supported:
    its replicas would race to write one attribute.

    Args:
        model: The model whose forward yields logits.
        module: Name of the submodule to hook; ``None`` hooks the last ``nn.Linear``.
        capture: ``"input"`` (the first positional argument of the module's forward) or
            ``"output"`` (what it returns: a tensor, or the tensor in a structured output,
            read as `oodscore.model_io.output_tensor` reads model outputs: ``.logits``,
            ``["logits"]`` or the first item of a tuple); ``"input"`` by default, which for
            the last linear layer is the penultimate feature vector.
        flatten: Reshape the recorded tensor to (N, D) (``x.flatten(1)``), so that e.g. the
            (N, C, 1, 1) output of an average-pooling layer becomes (N, C).
        detach: Record ``x.detach()`` (for evaluation-only feature collection).

    Raises:
        ValueError: If ``model`` has no ``nn.Linear`` (and no ``module`` was named), if no
            submodule is named ``module``, or if ``capture`` is not ``"input"``/``"output"``.
        TypeError: If ``model`` is not an ``nn.Module`` or ``module`` not a str.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from oodscore.nn import FeatureCapture
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> with FeatureCapture(model) as capture:
        ...     logits = model(torch.ones(5, 4))
        ...     capture.features.shape
        torch.Size([5, 3])
        >>> capture.module_name
        '2'
    """

    def __init__(
        self,
        model: nn.Module,
        module: str | None = None,
        *,
        capture: CaptureWhat = "input",
        flatten: bool = True,
        detach: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"Expected `model` to be a torch.nn.Module, got {type(model).__name__}."
            )
        if capture not in ("input", "output"):
            raise ValueError(f"Expected `capture` to be 'input' or 'output', got {capture!r}.")
        self.capture: CaptureWhat = capture
        self.flatten = bool(flatten)
        self.detach = bool(detach)
        name = find_head(model, argument="module") if module is None else module
        self.module_name, self.module = locate_module(model, name, argument="module", unwrap=True)
        self._features: Tensor | None = None
        self.calls = 0
        """How many forward calls of the hooked module have been recorded."""
        self._handle: RemovableHandle | None = self.module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self.capture == "input":
            if not args or not isinstance(args[0], Tensor):
                raise TypeError(
                    f"FeatureCapture expected the first positional input of module "
                    f"{self.module_name!r} to be a tensor, got "
                    f"{type(args[0]).__name__ if args else 'no positional input'}."
                )
            value = args[0]
        else:
            found = output_tensor(output)
            if found is None:
                raise TypeError(
                    f"FeatureCapture expected module {self.module_name!r} to return "
                    f"{ACCEPTED_OUTPUTS}, got {describe(output)}; capture its 'input' or hook "
                    "another module."
                )
            value = found
        if self.flatten and value.ndim > 2:
            value = value.flatten(1)
        self._features = value.detach() if self.detach else value
        self.calls += 1

    @property
    def features(self) -> Tensor:
        """The tensor recorded by the most recent forward call of the hooked module.

        Raises:
            RuntimeError: If the hooked module has not run since the capture was created.
        """
        if self._features is None:
            raise RuntimeError(
                f"No features captured yet: module {self.module_name!r} has not run a forward "
                f"pass since this FeatureCapture was created. Call the model first."
            )
        return self._features

    @property
    def active(self) -> bool:
        """Whether the hook is still registered."""
        return self._handle is not None

    def clear(self) -> None:
        """Forget the recorded features (and release the autograd graph they hold)."""
        self._features = None

    def remove(self) -> None:
        """Remove the hook; the last recorded features stay readable. Safe to call twice."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> FeatureCapture:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        return (
            f"FeatureCapture(module={self.module_name!r} ({type(self.module).__name__}), "
            f"capture={self.capture!r}, flatten={self.flatten}, detach={self.detach}, "
            f"active={self.active})"
        )
