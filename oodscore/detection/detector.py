r"""`OODDetector`: any scorer turned into accept/reject decisions with a finite-sample guarantee."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from typing_extensions import Self

from oodscore._validation import UNIT_OPEN
from oodscore.detection.calibration import (
    ALL,
    calibration_buffers,
    check_group_ids,
    fit_scorer,
    rule_groups,
)
from oodscore.detection.decision import BUFFERS, ConformalDecision
from oodscore.detection.grouping import Grouping, GroupingSpec, as_grouping
from oodscore.detection.inputs import ModelRunner, Source, read_source
from oodscore.detection.rates import RejectionRate
from oodscore.detection.report import CalibrationReport, build_report
from oodscore.detection.result import Detection
from oodscore.detection.state import SCORER, rule_state, split_state
from oodscore.model_io import Forward, ModelIO
from oodscore.scorers.base import FittedScorer, Scorer, get_scorer


class OODDetector:
    r"""Accept or reject inputs with a guaranteed ID rejection rate: split-conformal p-values.

    Calibrate on $n$ held-out in-distribution inputs at a level $\alpha$; then for a test
    score $s$ (higher = more in-distribution) with calibration scores $s_1, \dots, s_n$:

    $$ p(s) = \frac{1 + \#\{i : s_i \le s\}}{n + 1}, \qquad
       \text{reject} \iff p(s) \le \alpha \iff s < s_{(k)}, \quad
       k = \lfloor \alpha (n + 1) \rfloor. $$

    **Guarantee.** For a new ID input exchangeable with the calibration inputs (e.g. drawn
    i.i.d. from the same distribution, and not used to train the model or fit the scorer),
    $P(\text{reject}) \le \alpha$ over the draw of calibration and test data; exactly
    $k/(n+1)$ when the scores have no ties. Conditional on the calibration set, the
    rejection rate of fresh ID inputs is a random variable with law
    $\mathrm{Beta}(k, n + 1 - k)$ (continuous scores), of mean $k/(n+1) \le \alpha$.
    With $n < \lceil 1/\alpha \rceil - 1$ calibration inputs $k = 0$ and nothing could be
    rejected: calibration refuses, naming the minimum. Nothing is promised about OOD
    inputs (recall depends on the scorer), nor under a shift of the ID distribution.

    **Groups (Mondrian).** With ``grouping`` each group (predicted class, a group of
    classes, or the number of labels predicted present) gets its own threshold from its own
    calibration inputs, and the guarantee holds per group: $P(\text{reject} \mid g) \le
    \alpha$. A group with fewer than $\lceil 1/\alpha \rceil - 1$ calibration inputs is
    refused, or, with ``merge_small_groups=True``, pooled into one ``"rest"`` group.

    Args:
        scorer: A registered scorer name or a `oodscore.Scorer`. A fitted scorer
            (`oodscore.FittedScorer`) is fitted before calibration, or fitted by
            `calibrate` on the fit data it is given (never on the calibration data).
        model: The model whose outputs the scorer reads, to calibrate and detect on
            loaders and input batches; ``None`` for saved logits, features or scores.
        grouping: ``None`` (one group), ``"predicted_class"``, ``"label_count"``
            (multi-label: labels with sigmoid > 0.5), a `Grouping`, or the group of each
            class (a sequence or mapping, see `ByClassGroups`).
        merge_small_groups: Pool the groups too small for alpha into ``"rest"``.
        input_keys: How mapping batches feed the model (see `oodscore.evaluate`).
        target_key: The targets' key in mapping batches (read by fit loaders only).
        forward: ``forward(model, batch) -> output`` when ``model(inputs)`` does not fit.
        device: Where batches go (default: the model's device).
        progress: Show a progress bar over loaders (needs ``tqdm``).

    Examples:
        >>> import torch
        >>> from oodscore.detection import OODDetector
        >>> g = torch.Generator().manual_seed(0)
        >>> centres = 4 * torch.eye(3)
        >>> calibration = centres[torch.arange(300) % 3] + torch.randn(300, 3, generator=g)
        >>> detector = OODDetector("energy").calibrate(logits=calibration, alpha=0.05)
        >>> result = detector(torch.tensor([[5.0, 0.0, 0.0], [0.1, -0.2, 0.0]]))
        >>> result.reject
        tensor([False,  True])
        >>> fresh = centres[torch.arange(3000) % 3] + torch.randn(3000, 3, generator=g)
        >>> detector.id_rejection_rate(logits=fresh).rate <= 0.06
        True

    Source: Bates, Candès, Lei, Romano & Sesia, Annals of Statistics 2023; Vovk, Gammerman
    & Shafer, *Algorithmic Learning in a Random World* (Mondrian conformal prediction).
    """

    def __init__(
        self,
        scorer: str | Scorer,
        *,
        model: nn.Module | None = None,
        grouping: GroupingSpec = None,
        merge_small_groups: bool = False,
        input_keys: str | Sequence[str] | None = None,
        target_key: str | None = "labels",
        forward: Forward | None = None,
        device: str | torch.device | None = None,
        progress: bool = False,
    ) -> None:
        if isinstance(scorer, str):
            scorer = get_scorer(scorer)
        if not isinstance(scorer, Scorer):
            raise TypeError(
                f"Expected `scorer` to be a scorer name or a Scorer, got {type(scorer).__name__}."
            )
        if not (model is None or isinstance(model, nn.Module)):
            raise TypeError(f"Expected `model` to be an nn.Module, got {type(model).__name__}.")
        if not isinstance(merge_small_groups, bool):
            raise TypeError(
                f"Expected `merge_small_groups` to be a bool, got {merge_small_groups!r}."
            )
        self.scorer = scorer
        self.model = model
        self.grouping: Grouping | None = as_grouping(grouping)
        self.merge_small_groups = merge_small_groups
        self._runner = None
        if model is not None:
            io = ModelIO(input_keys=input_keys, target_key=target_key, forward=forward)
            place = None if device is None else torch.device(device)
            self._runner = ModelRunner(model, io, place, progress)
        self._decision: ConformalDecision | None = None
        self._on_device: dict[torch.device, ConformalDecision] = {}
        self._alpha = 0.0
        self._num_classes = -1
        self._report: CalibrationReport | None = None

    def calibrate(
        self,
        loader: Iterable[Any] | None = None,
        *,
        alpha: float,
        logits: Any = None,
        features: Any = None,
        scores: Any = None,
        fit_loader: Iterable[Any] | None = None,
        fit_logits: Any = None,
        fit_features: Any = None,
        fit_targets: Any = None,
    ) -> Self:
        r"""Calibrate on held-out ID data at level ``alpha``; returns the detector.

        Give the calibration set as one of: a loader (the detector's model runs on it),
        ``logits`` (N, C), ``features`` (N, D) for feature scorers (with ``logits`` when a
        group rule reads them), or precomputed ``scores`` (N,) of this scorer (with
        ``logits`` for a group rule). The calibration set must not have been used to train
        the model or fit the scorer: the guarantee needs it exchangeable with test inputs.

        Args:
            loader: ID calibration batches (needs ``model``).
            alpha: The level, in (0, 1): the bound on the ID rejection rate.
            logits: ID calibration logits (N, C).
            features: ID calibration features (N, D), for feature scorers.
            scores: ID calibration scores (N,), higher = more in-distribution.
            fit_loader: ID batches to fit an unfitted fitted scorer on (needs ``model``).
            fit_logits: ID logits to fit an unfitted fitted logit scorer on.
            fit_features: ID features to fit an unfitted feature scorer on.
            fit_targets: Targets of the fit rows (class ids or multi-hot labels).

        Raises:
            ValueError: On ``alpha`` outside (0, 1), fewer than ``ceil(1/alpha) - 1``
                calibration inputs (the message gives the minimum and n), groups too
                small for alpha (named, with their sizes), NaN or ±inf inputs, wrong
                shapes, fit data that is the calibration data, or a fitted scorer that is
                not fitted and gets no fit data.
        """
        level = UNIT_OPEN.check(alpha, "alpha")
        source = Source(loader, logits, features, scores)
        fit_scorer(
            self.scorer,
            source,
            self._runner,
            {"fit_loader": fit_loader, "fit_logits": fit_logits, "fit_features": fit_features},
            fit_targets,
        )
        cal_scores, cal_logits = read_source(
            self.scorer,
            source,
            self._runner,
            need_logits=self.grouping is not None,
            name="calibration",
            min_rows=1,
        )
        num_classes = -1 if cal_logits is None else int(cal_logits.shape[1])
        raw, names = rule_groups(self.grouping, cal_logits, cal_scores.shape[0], num_classes)
        buffers = calibration_buffers(
            cal_scores, raw, names, level, merge_small_groups=self.merge_small_groups
        )
        self._set(buffers, level, num_classes)
        return self

    def _set(self, buffers: dict[str, Tensor], alpha: float, num_classes: int) -> None:
        names = [ALL] if self.grouping is None else self.grouping.group_names(num_classes)
        self._report = build_report(alpha, repr(self.scorer), buffers, names)
        self._decision = ConformalDecision(self.scorer, self.grouping, buffers)
        self._on_device = {}
        self._alpha = alpha
        self._num_classes = num_classes

    def __call__(
        self,
        inputs: Any = None,
        /,
        *,
        loader: Iterable[Any] | None = None,
        logits: Any = None,
        features: Any = None,
        scores: Any = None,
    ) -> Detection:
        """Score a batch and decide: scores, conformal p-values, rejections (`Detection`).

        ``inputs`` is one batch for the detector's model when it has one, otherwise what
        the scorer reads (logits, or features for feature scorers). The keywords give a
        loader (all its batches, with the model), logits, features (with logits for a
        group rule) or precomputed scores explicitly.

        Raises:
            RuntimeError: Before `calibrate` (or `load_state_dict`).
            ValueError: On NaN/±inf, wrong shapes, or logits of another width than the
                calibration's.
        """
        decision = self._calibrated()
        if inputs is not None:
            if any(v is not None for v in (loader, logits, features, scores)):
                raise ValueError("Expected the inputs positionally or as keywords, not both.")
            if self._runner is not None:
                loader = [inputs]
            elif self.scorer.input_kind == "features":
                features = inputs
            else:
                logits = inputs
        return self._detect(decision, Source(loader, logits, features, scores))

    def _detect(self, decision: ConformalDecision, source: Source) -> Detection:
        with torch.no_grad():
            test_scores, test_logits = read_source(
                self.scorer,
                source,
                self._runner,
                need_logits=self.grouping is not None,
                name="test",
                min_rows=0,
            )
        if test_logits is not None and 0 <= self._num_classes != test_logits.shape[1]:
            raise ValueError(
                f"Expected `logits` with C = {self._num_classes} columns, the width the "
                f"detector was calibrated on, got shape {tuple(test_logits.shape)}."
            )
        device = test_scores.device
        local = self._on(device)
        rule = (
            local.rule_groups(test_logits)
            if test_logits is not None
            else torch.zeros(test_scores.shape[0], dtype=torch.int64, device=device)
        )
        check_group_ids(rule, local.group_of.shape[0], self.grouping)
        p_values, reject, groups = local.decide(test_scores, rule.to(device))
        assert self._report is not None
        names = tuple(group.name for group in self._report.groups)
        return Detection(test_scores, p_values, reject, groups, self._alpha, names)

    def id_rejection_rate(
        self,
        loader: Iterable[Any] | None = None,
        *,
        logits: Any = None,
        features: Any = None,
        scores: Any = None,
        confidence: float = 0.95,
    ) -> RejectionRate:
        """The share of fresh ID inputs rejected, with a Clopper–Pearson interval.

        Calibration bounds its expectation by alpha; this measures it on one set. Takes
        what `calibrate` takes: a loader (with the detector's model), ``logits``,
        ``features`` or ``scores``; ``confidence`` is the interval's level.
        """
        source = Source(loader, logits, features, scores)
        return self._rate(source, confidence, "ID rejection rate")

    def ood_detection_rate(
        self,
        loader: Iterable[Any] | None = None,
        *,
        logits: Any = None,
        features: Any = None,
        scores: Any = None,
        confidence: float = 0.95,
    ) -> RejectionRate:
        """The share of OOD validation inputs rejected (recall), with a Clopper–Pearson interval.

        Not guaranteed by calibration: it holds for inputs like the validation set only.
        Takes what `calibrate` takes: a loader (with the detector's model), ``logits``,
        ``features`` or ``scores``; ``confidence`` is the interval's level.
        """
        source = Source(loader, logits, features, scores)
        return self._rate(source, confidence, "OOD detection rate")

    def _rate(self, source: Source, confidence: float, label: str) -> RejectionRate:
        result = self._detect(self._calibrated(), source)
        return RejectionRate.of(result.reject, confidence=confidence, label=label)

    @property
    def is_calibrated(self) -> bool:
        """Whether `calibrate` or `load_state_dict` has run."""
        return self._decision is not None

    @property
    def alpha(self) -> float:
        """The calibrated level."""
        self._calibrated()
        return self._alpha

    @property
    def report(self) -> CalibrationReport:
        """Per calibration group: size, rank, threshold, rejection rates (`CalibrationReport`)."""
        self._calibrated()
        assert self._report is not None
        return self._report

    def decision_module(self) -> ConformalDecision:
        """The decision path as an ``nn.Module``, logits -> (scores, p-values, rejections).

        Built from buffers (on the CPU; move it with ``.to``): it exports with
        ``torch.export.export(module, (logits,))`` when the scorer's formula is torch code
        (the logit scorers, e.g. MSP, energy, max logit, JointEnergy), and decides exactly
        as calling the detector does. It checks no input: validate upstream.

        Raises:
            TypeError: If the scorer does not read logits.
        """
        decision = self._calibrated()
        if self.scorer.input_kind != "logits":
            raise TypeError(
                f"The decision module maps logits to decisions; {type(self.scorer).__name__} "
                f"reads {self.scorer.input_kind}. Call the detector instead."
            )
        return decision

    def state_dict(self) -> dict[str, Tensor]:
        """The calibration as tensors only (and the fitted scorer's, under ``"scorer."``).

        Save with ``torch.save``; ``torch.load(path, weights_only=True)`` reads it back for
        `load_state_dict` on a detector built with the same scorer and grouping.
        """
        decision = self._calibrated()
        state = {name: getattr(decision, name).detach().cpu().clone() for name in BUFFERS}
        state["alpha"] = torch.tensor(self._alpha, dtype=torch.float64)
        state["num_classes"] = torch.tensor(self._num_classes, dtype=torch.int64)
        state.update(rule_state(self.grouping, max(self._num_classes, 0)))
        if isinstance(self.scorer, FittedScorer):
            for key, value in self.scorer.state_dict().items():
                state[SCORER + key] = value.detach().cpu().clone()
        return state

    def load_state_dict(self, state: Mapping[str, object]) -> Self:
        """Restore a calibration saved by `state_dict`; returns the detector.

        Raises:
            ValueError: On missing or unexpected keys, another group rule or scorer than
                the detector's, or tensors that are not one consistent calibration.
        """
        buffers, alpha, num_classes, scorer_state = split_state(state, self.scorer, self.grouping)
        if isinstance(self.scorer, FittedScorer) and scorer_state:
            self.scorer.load_state_dict(scorer_state)
        self._set(buffers, alpha, num_classes)
        return self

    def _calibrated(self) -> ConformalDecision:
        if self._decision is None:
            raise RuntimeError(
                "This OODDetector is not calibrated yet. Call 'calibrate' with held-out ID "
                "data and alpha (or 'load_state_dict') first."
            )
        return self._decision

    def _on(self, device: torch.device) -> ConformalDecision:
        """The decision module with its buffers on ``device`` (moved once and cached)."""
        decision = self._calibrated()
        if device == decision.calibration_scores.device:
            return decision
        if device not in self._on_device:
            moved = {name: getattr(decision, name).to(device) for name in BUFFERS}
            self._on_device[device] = ConformalDecision(self.scorer, self.grouping, moved)
        return self._on_device[device]

    def __repr__(self) -> str:
        parts = [f"scorer={self.scorer!r}"]
        if self.model is not None:
            parts.append(f"model={type(self.model).__name__}")
        if self.grouping is not None:
            parts.append(f"grouping={self.grouping!r}")
        if self.merge_small_groups:
            parts.append("merge_small_groups=True")
        if self._report is not None:
            parts.append(f"alpha={self._alpha:g}, n={self._report.num_calibration}")
        return f"OODDetector({', '.join(parts)})"
