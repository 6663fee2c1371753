"""How a batch goes into a model and how logits come out of what the model returns.

One place for the shapes that batches and model outputs take in practice, shared by
`oodscore.evaluate` and `oodscore.nn.FeatureCapture`:

- **Batches**: a tensor (the inputs); a tuple or list ``(inputs, targets, ...)`` whose
  inputs are a tensor or a mapping of keyword inputs; or a mapping, whose ``target_key``
  entry (``"labels"`` by default, as in Hugging Face batches) holds the targets and whose
  other entries (or those named by ``input_keys``) are the inputs.
- **Outputs**: a tensor; an object with a ``.logits`` tensor (a Hugging Face
  ``ModelOutput``); a mapping with a ``"logits"`` tensor; or a tuple or list whose first
  item is the tensor.

Anything else goes through a ``forward(model, batch)`` function of the user's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

Forward = Callable[[nn.Module, Any], Any]
"""``forward(model, batch) -> output``: runs the model on one batch (tensors already moved)."""

LOGITS_KEY = "logits"
"""The attribute or key under which a structured output holds its logits."""

ACCEPTED_OUTPUTS = (
    "a tensor, an object with a `.logits` tensor, a mapping with a 'logits' tensor, or a "
    "tuple/list whose first item is a tensor"
)
"""The output forms `output_tensor` reads, in words, for error messages."""


def output_tensor(output: Any) -> Tensor | None:
    """The tensor a model or module output stands for, or ``None`` if it has none.

    In this order: the output itself if it is a tensor; its ``.logits`` attribute (a
    Hugging Face ``ModelOutput``); its ``"logits"`` entry (a mapping); its first item (a
    tuple or list, as ``return logits, features`` or ``return_dict=False`` give).

    Examples:
        >>> import torch
        >>> from oodscore.model_io import output_tensor
        >>> logits = torch.zeros(2, 3)
        >>> all(output_tensor(out) is logits
        ...     for out in (logits, {"logits": logits}, (logits, torch.ones(2, 8))))
        True
        >>> output_tensor({"scores": logits}) is None
        True
    """
    if isinstance(output, Tensor):
        return output
    attribute = getattr(output, LOGITS_KEY, None)
    if isinstance(attribute, Tensor):
        return attribute
    if isinstance(output, Mapping):
        value = output.get(LOGITS_KEY)
        return value if isinstance(value, Tensor) else None
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return None


def describe(value: Any) -> str:
    """A short description of ``value`` for error messages: its type, keys, items or shape.

    Examples:
        >>> import torch
        >>> from oodscore.model_io import describe
        >>> describe({"scores": 1, "hidden": 2})
        "a dict with keys ['scores', 'hidden']"
        >>> describe((None, torch.zeros(2)))
        'a tuple of 2 items, the first None'
        >>> describe(torch.zeros(2, 3))
        'a tensor of shape (2, 3)'
    """
    if value is None:
        return "None"
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    kind = type(value).__name__
    if isinstance(value, (tuple, list)) and not value:
        return f"an empty {kind}"
    kind = f"{'an' if kind[0].lower() in 'aeiou' else 'a'} {kind}"
    if isinstance(value, Mapping):
        return f"{kind} with keys {list(value)}"
    if isinstance(value, (tuple, list)):
        return f"{kind} of {len(value)} items, the first {describe(value[0])}"
    return kind


def read_logits(output: Any, *, where: str = "the model output") -> Tensor:
    """The logits in a model output (see `output_tensor` for the forms read).

    Args:
        output: What the model (or a ``forward`` function) returned.
        where: What ``output`` is, for the error message (e.g. "the model output on
            batch 3 of 'ID'").

    Raises:
        TypeError: If ``output`` holds no logits; the message says what it is and how to
            fix it.

    Examples:
        >>> import torch
        >>> from oodscore.model_io import read_logits
        >>> class Output:  # a Hugging Face ModelOutput, for example
        ...     logits = torch.ones(2, 3)
        >>> read_logits(Output()).shape
        torch.Size([2, 3])
        >>> read_logits({"scores": torch.ones(2, 3)})
        Traceback (most recent call last):
        ...
        TypeError: Expected the model output to hold logits (a tensor, an object with a \
`.logits` tensor, a mapping with a 'logits' tensor, or a tuple/list whose first item is a \
tensor), but the model returned a dict with keys ['scores']; pass forward=... (a function \
(model, batch) -> logits) or return 'logits'.
    """
    logits = output_tensor(output)
    if logits is None:
        raise TypeError(
            f"Expected {where} to hold logits ({ACCEPTED_OUTPUTS}), but the model returned "
            f"{describe(output)}; pass forward=... (a function (model, batch) -> logits) or "
            f"return '{LOGITS_KEY}'."
        )
    return logits


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it (also inside tuples, lists and mappings) on ``device``.

    Mappings become dicts; other objects are returned as they are.
    """
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {key: to_device(item, device) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(item, device) for item in value)
    return value


@dataclass(frozen=True)
class ModelIO:
    """How to read the targets of a batch and run a model on it to get logits.

    Batch forms (see the module docstring): for a tuple or list, item 0 holds the inputs
    and item 1 (if any) the targets; for a mapping, ``target_key`` names the targets and
    ``input_keys`` the inputs. A tensor of inputs is passed positionally, ``model(x)``;
    a mapping of inputs as keywords, ``model(**inputs)``.

    Args:
        input_keys: For mapping batches: ``None`` passes every entry but the targets as
            keyword inputs (Hugging Face style, ``model(**inputs)``); one key passes that
            entry positionally (``model(batch["image"])``); a sequence of keys passes
            those entries as keywords.
        target_key: For mapping batches, the key of the targets (``"labels"``); a batch
            without it has no targets. ``None``: never read targets, from any batch form.
        forward: ``forward(model, batch) -> output`` replaces the call of the model: it
            gets the batch as the loader yields it, with its tensors moved to the device
            (inside tuples, lists and mappings; mappings become dicts), and returns logits
            or any output form `output_tensor` reads. Targets are still read from the
            batch when it has one of the forms above.

    Examples:
        >>> import torch
        >>> from oodscore.model_io import ModelIO
        >>> class Net(torch.nn.Module):
        ...     def forward(self, input_ids, attention_mask):
        ...         return {"logits": (input_ids * attention_mask).float()}
        >>> batch = {"input_ids": torch.ones(2, 3), "attention_mask": torch.ones(2, 3),
        ...          "labels": torch.tensor([0, 2])}
        >>> io = ModelIO()
        >>> io.targets(batch)
        tensor([0, 2])
        >>> io.logits(Net(), batch, torch.device("cpu")).shape
        torch.Size([2, 3])
    """

    input_keys: str | Sequence[str] | None = None
    target_key: str | None = "labels"
    forward: Forward | None = None

    def __post_init__(self) -> None:
        keys = self.input_keys
        if not (
            keys is None
            or isinstance(keys, str)
            or (isinstance(keys, Sequence) and keys and all(isinstance(k, str) for k in keys))
        ):
            raise TypeError(
                "Expected `input_keys` to be None, a key or a non-empty sequence of keys "
                f"(str), got {keys!r}."
            )
        if not (self.target_key is None or isinstance(self.target_key, str)):
            raise TypeError(f"Expected `target_key` to be a str or None, got {self.target_key!r}.")
        if not (self.forward is None or callable(self.forward)):
            raise TypeError(
                "Expected `forward` to be a function (model, batch) -> output, got "
                f"{type(self.forward).__name__}."
            )

    def targets(self, batch: Any, where: str = "the batch") -> Tensor | None:
        """The targets of ``batch``: item 1 of a tuple/list, ``target_key`` of a mapping.

        Raises:
            TypeError: If the targets found are not a tensor.
        """
        if self.target_key is None:
            return None
        if isinstance(batch, Mapping):
            targets = batch.get(self.target_key)
        elif isinstance(batch, (tuple, list)) and len(batch) > 1:
            targets = batch[1]
        else:
            return None
        if targets is not None and not isinstance(targets, Tensor):
            raise TypeError(
                f"Expected the targets of {where} to be a tensor, got {describe(targets)}."
            )
        return targets

    def logits(
        self, model: nn.Module, batch: Any, device: torch.device, where: str = "the batch"
    ) -> Tensor:
        """Run ``model`` on ``batch`` (moved to ``device``) and read the logits it returns.

        Args:
            model: The model.
            batch: One batch as the loader yields it.
            device: Where the batch's tensors go.
            where: Which batch, for error messages (e.g. "batch 3 of 'ID'").

        Raises:
            TypeError: If the batch has no inputs this can find, or the output no logits.
        """
        if self.forward is not None:
            output = self.forward(model, to_device(batch, device))
        else:
            output = self._call(model, self._inputs(batch, where), device, where)
        return read_logits(output, where=f"the model output on {where}")

    def tensor_inputs(self, batch: Any, device: torch.device, where: str = "the batch") -> Tensor:
        """The inputs of ``batch`` as one tensor on ``device``, for scorers that perturb them.

        Model scorers (`oodscore.ModelScorer`, e.g. ODIN) differentiate the model with
        respect to its input, so it must be one tensor passed as ``model(inputs)``.

        Raises:
            TypeError: If the batch's inputs are keyword inputs, or ``forward`` is set.
        """
        if self.forward is not None:
            raise TypeError(
                "Expected no `forward` with model scorers: they run model(inputs) on the "
                "batch's input tensor themselves; name that tensor with input_keys=... instead."
            )
        inputs = self._inputs(batch, where)
        if not isinstance(inputs, Tensor):
            raise TypeError(
                f"Expected the inputs of {where} to be one tensor for the model scorers (they "
                f"perturb the inputs), got the keyword inputs {list(inputs)}; name the input "
                "tensor with input_keys='...' (one key, passed positionally)."
            )
        return inputs.to(device, non_blocking=True)

    def _inputs(self, batch: Any, where: str) -> Tensor | dict[str, Any]:
        """The inputs of ``batch``: a tensor (positional) or a dict of keyword inputs."""
        if isinstance(batch, Mapping):
            return self._mapping_inputs(batch, where)
        if isinstance(batch, (tuple, list)) and batch:
            first = batch[0]
            if isinstance(first, Tensor):
                return first
            if isinstance(first, Mapping):
                return dict(first)
        elif isinstance(batch, Tensor):
            return batch
        raise TypeError(
            f"Expected {where} to be a tensor, an (inputs, targets) tuple/list whose inputs "
            f"are a tensor or a mapping, or a mapping of inputs and targets, but it is "
            f"{describe(batch)}; pass forward=... (a function (model, batch) -> logits)."
        )

    def _mapping_inputs(self, batch: Mapping[Any, Any], where: str) -> Tensor | dict[str, Any]:
        keys = self.input_keys
        if keys is None:
            inputs = {k: v for k, v in batch.items() if k != self.target_key}
            if not inputs:
                raise TypeError(
                    f"Expected {where} to hold inputs besides its targets, but its only keys "
                    f"are {list(batch)}; pass input_keys=... or forward=...."
                )
            return inputs
        wanted = [keys] if isinstance(keys, str) else list(keys)
        missing = [k for k in wanted if k not in batch]
        if missing:
            raise TypeError(
                f"Expected {where} to hold the input keys {wanted}, but it has the keys "
                f"{list(batch)} (missing {missing}); pass input_keys=... naming its inputs."
            )
        if not isinstance(keys, str):
            return {k: batch[k] for k in wanted}
        value = batch[keys]
        if not isinstance(value, Tensor):
            raise TypeError(
                f"Expected the input {keys!r} of {where} to be a tensor, got {describe(value)}; "
                "pass a sequence of keys to input_keys for keyword inputs, or forward=...."
            )
        return value

    def _call(
        self, model: nn.Module, inputs: Tensor | dict[str, Any], device: torch.device, where: str
    ) -> Any:
        if isinstance(inputs, Tensor):
            return model(inputs.to(device, non_blocking=True))
        moved = to_device(inputs, device)
        try:
            return model(**moved)
        except TypeError as error:
            # A model that takes other keywords fails here; say which keywords it was given.
            raise TypeError(
                f"{error} (oodscore called model(**inputs) on {where} with the keys "
                f"{list(moved)}; if the model takes other inputs, name them with "
                "input_keys=..., the targets with target_key=..., or pass forward=....)"
            ) from error
