"""KL matching: how far a softmax posterior is from the typical posterior of its closest class."""

from __future__ import annotations

from typing import ClassVar, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from oodscore._arrays import to_torch
from oodscore.functional.kl_matching import kl_log_templates, kl_matching_score
from oodscore.scorers.base import ArrayLike, FittedScorer, InputKind, register_scorer

Labels = Literal["predicted", "targets"]


@register_scorer("kl_matching")
class KLMatching(FittedScorer):
    r"""KL matching: minus the KL divergence of the softmax to the closest class template.

    $$ S(x) = -\min_k \mathrm{KL}\big(p(x) \,\Vert\, d_k\big), \qquad
       p(x) = \operatorname{softmax}(f(x)) $$

    ``fit(logits)`` takes held-out ID logits; the template $d_k$ is the mean softmax of the
    fit rows whose predicted class (argmax) is $k$, for every class predicted at least once.
    The divergence is of the test posterior from the template (test posterior first). The
    log-templates are computed as a log-sum-exp of log-softmax values and every divergence
    in float64.

    Args:
        labels: ``"predicted"``: group the fit rows by their argmax (the paper; targets are
            ignored); ``"targets"``: by the class ids (N,) given to ``fit``.

    Examples:
        >>> import torch
        >>> from oodscore.scorers.kl_matching import KLMatching
        >>> g = torch.Generator().manual_seed(0)
        >>> logits = 4 * torch.eye(3)[torch.arange(300) % 3] + torch.randn(300, 3, generator=g)
        >>> scorer = KLMatching().fit(logits)
        >>> scorer(torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 20.0, 0.0]]))
        tensor([-0.0203, -1.0328, -0.0839])

    Source: Hendrycks, Basart, Mazeika, Zou, Kwon, Mostajabi, Steinhardt & Song, ICML 2022.
    """

    input_kind: ClassVar[InputKind] = "logits"
    state_names: ClassVar[tuple[str, ...]] = ("log_templates",)

    def __init__(self, *, labels: Labels = "predicted") -> None:
        if labels not in get_args(Labels):
            raise ValueError(f"Expected `labels` to be 'predicted' or 'targets', got {labels!r}.")
        self.labels: Labels = labels

    def fit_state(self, logits: Tensor, targets: ArrayLike | None) -> dict[str, Tensor]:
        """The log-templates (K, C) of the classes present in the fit set."""
        if self.labels == "predicted":
            classes = logits.argmax(dim=1).cpu()
        else:
            classes = _class_ids(targets, logits.shape[0])
        _, groups = torch.unique(classes, return_inverse=True)
        num_groups = int(groups.max()) + 1
        return {"log_templates": kl_log_templates(logits, groups, num_groups)}

    def check_state(self, state: dict[str, Tensor]) -> None:
        """Check that the log-templates are a (K, C) matrix with K >= 1."""
        templates = state["log_templates"]
        if templates.ndim != 2 or templates.shape[0] == 0:
            raise ValueError(
                "Expected `state['log_templates']` of shape (K, C) with K >= 1, got "
                f"{tuple(templates.shape)}."
            )

    def score(self, x: Tensor) -> Tensor:
        """KL-matching score of checked logits (N, C)."""
        state = self.state_on(x.device)
        return kl_matching_score(x, state["log_templates"]).to(x.dtype)


def _class_ids(targets: object, num_rows: int) -> Tensor:
    """Checked int64 class ids (N,) on the CPU, for ``labels="targets"``."""
    if targets is None:
        raise ValueError(
            "Expected `targets` (class ids of shape (N,)) with labels='targets', got None: "
            "pass the class ids to fit, or use labels='predicted'."
        )
    if isinstance(targets, np.ndarray):
        if targets.dtype.kind not in "biuf":
            raise TypeError(f"Expected `targets` to hold numbers, got dtype {targets.dtype}.")
        ids = to_torch(targets)
    elif isinstance(targets, Tensor):
        ids = targets.detach().cpu()
    else:
        raise TypeError(
            f"Expected `targets` to be a torch.Tensor or a numpy.ndarray, got "
            f"{type(targets).__name__}."
        )
    if ids.shape != (num_rows,):
        raise ValueError(
            f"Expected `targets` of shape (N,) = ({num_rows},), class ids of the rows of "
            f"`logits`, got shape {tuple(ids.shape)} (KL matching has no multi-label form)."
        )
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"Expected `targets` to hold integer class ids, got dtype {ids.dtype}.")
    if num_rows and int(ids.min()) < 0:
        raise ValueError(f"Expected `targets` >= 0 (class ids), got {int(ids.min())}.")
    return ids.long()
