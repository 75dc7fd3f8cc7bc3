"""What a training run reports: progress records for callbacks, the per-epoch curve, why the
head and the kept epoch were chosen, cross-validation and the run's result (``metrics.json``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from cvx_core.learn.baseline import BaselineResult
from cvx_core.learn.config import TrainConfig
from cvx_core.learn.metrics import ClassificationMetrics
from cvx_core.learn.selection import EpochChoice, HeadChoice
from cvx_core.learn.splits import Split

__all__ = ["CVResult", "EpochChoice", "EpochRecord", "FitResult", "HeadChoice", "TrainProgress", "TrainResult"]


@dataclass(frozen=True)
class TrainProgress:
    """What a callback receives.

    Attributes:
        event: the callback event name.
        epoch: current epoch (1-based; 0 before the first).
        step: optimisation steps done so far (all epochs).
        steps_per_epoch: batches per epoch.
        loss: loss of the last step (NaN before the first).
        train_loss: mean training loss of the epoch (on_epoch_end only, else NaN).
        val_auc, val_loss: validation metrics of this epoch (on_epoch_end / on_checkpoint).
        best_val_auc, best_epoch: validation AUC of the kept epoch so far, and that epoch
            (the kept epoch is the one with the lowest validation log-loss, see
            :class:`~cvx_core.learn.selection.EpochSelector`).
        is_best: this epoch became the kept epoch.
        elapsed_s: seconds since training started.
        grad_norm: L2 norm of all gradients of the last step, before clipping (on_step_end).
        encoder_grad_norm: the text encoder's part of it (NaN without a trained encoder).
        best_val_loss: validation log-loss of the kept epoch so far.
    """

    event: str
    epoch: int
    step: int
    steps_per_epoch: int
    loss: float = float("nan")
    train_loss: float = float("nan")
    val_auc: float = float("nan")
    val_loss: float = float("nan")
    best_val_auc: float = float("nan")
    best_epoch: int = 0
    is_best: bool = False
    elapsed_s: float = 0.0
    grad_norm: float = float("nan")
    encoder_grad_norm: float = float("nan")
    best_val_loss: float = float("nan")


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of the learning curves."""

    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    seconds: float


@dataclass(frozen=True, eq=False)
class FitResult:
    """What :meth:`cvx_core.learn.trainer.Trainer.fit` returns: the fitted model and how it
    was chosen, with no test evaluation (no test metrics, baseline, bootstrap or early
    detection; :meth:`~cvx_core.learn.trainer.Trainer.evaluate` adds them).

    Attributes:
        model: the model holding the kept epoch's weights, eval mode.
        split: the users of each split.
        head: the head used and why.
        epoch_choice: why the kept epoch won.
        history: per-epoch curves.
        epochs_run: epochs started (an interrupted epoch counts).
        steps, steps_per_epoch: optimisation steps done, batches per epoch.
        last_loss: the last step's training loss (NaN without a step).
        stopped_early: patience ran out before ``epochs``.
        interrupted: ``should_stop`` ended training.
        mixed_precision: the head's steps ran under bf16 autocast.
        seconds: wall time from the start of the fit.
    """

    model: nn.Module
    split: Split
    head: HeadChoice
    epoch_choice: EpochChoice
    history: tuple[EpochRecord, ...]
    epochs_run: int
    steps: int
    steps_per_epoch: int
    last_loss: float
    stopped_early: bool
    interrupted: bool
    mixed_precision: bool
    seconds: float

    @property
    def best_epoch(self) -> int:
        return self.epoch_choice.epoch

    @property
    def best_val_auc(self) -> float:
        return self.epoch_choice.val_auc


@dataclass(frozen=True)
class CVResult:
    """K-fold cross-validation (stratified; grouped with a group column): per-fold metrics
    of model and baseline, and their mean and sd (sample sd, ``ddof=1``)."""

    folds: tuple[dict[str, Any], ...]

    def _stat(self, key: str, fn: Callable[[np.ndarray], float]) -> float:
        vals = np.array([f[key] for f in self.folds], dtype=np.float64)
        vals = vals[~np.isnan(vals)]
        return float(fn(vals)) if vals.size else float("nan")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"k": len(self.folds), "folds": list(self.folds)}
        for key in ("test_auc", "baseline_auc", "test_accuracy", "baseline_accuracy"):
            out[f"{key}_mean"] = self._stat(key, np.mean)
            out[f"{key}_sd"] = self._stat(key, lambda v: np.std(v, ddof=1) if v.size > 1 else 0.0)
        return out


@dataclass(frozen=True, eq=False)
class TrainResult:
    """The outcome of a training run.

    Attributes:
        model: the trained model holding the kept epoch's weights, eval mode.
        test: test metrics of the model.
        baseline: mean-embedding logistic regression on the same split.
        best_val_auc, best_epoch: validation AUC of the kept epoch and that epoch (0: the
            starting weights, e.g. the logistic-regression warm start, were kept).
        epochs_run: epochs started (an interrupted epoch counts).
        stopped_early: patience ran out before ``epochs``.
        interrupted: ``should_stop`` ended training.
        device: where it trained ("cpu" / "cuda").
        classes: class labels in logit order.
        split: the users of each split.
        history: per-epoch curves.
        run_dir: the run folder (None if none was given).
        seconds: wall time of training (including evaluation and baseline).
        config: the TrainConfig used.
        mixed_precision: the head's training steps ran under bf16 autocast (CUDA only).
        head: the head used and why (:class:`HeadChoice`).
        test_auc_ci: 95% bootstrap interval of the test AUC (NaNs without resamples).
        warnings: small-data warnings about the test set and the split.
        cv: cross-validation result when ``config.cv >= 2``.
        early: early-detection block on the test users (see :mod:`cvx_core.learn.early`).
        test_proba: ``[n_test, K]`` test probabilities.
        epoch_choice: why the kept epoch won (:class:`EpochChoice`).
        intervals: 95% intervals of every test metric of model and baseline,
            ``{"test_accuracy": (lo, hi), "baseline_auc": ..., ...}``.
    """

    model: nn.Module
    test: ClassificationMetrics
    baseline: BaselineResult
    best_val_auc: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    interrupted: bool
    device: str
    classes: tuple[int, ...]
    split: Split
    history: tuple[EpochRecord, ...]
    run_dir: Path | None
    seconds: float
    config: TrainConfig
    mixed_precision: bool = False
    head: HeadChoice | None = None
    test_auc_ci: tuple[float, float] = (float("nan"), float("nan"))
    warnings: tuple[str, ...] = ()
    cv: CVResult | None = None
    early: dict[str, Any] | None = None
    test_proba: np.ndarray | None = field(default=None, repr=False)
    epoch_choice: EpochChoice | None = None
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def test_auc(self) -> float:
        return self.test.auc

    @property
    def baseline_auc(self) -> float:
        return self.baseline.test_auc

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.classes]

    @property
    def features_add_nothing(self) -> bool:
        """The head choice picked the plain mean-embedding logistic regression and no trained
        epoch beat it: the run is that regression."""
        return bool(self.head is not None and self.head.candidate == "baseline" and self.best_epoch == 0)

    def metrics_dict(self) -> dict[str, Any]:
        """The content of ``metrics.json``."""
        names = self.class_names
        per_class = self.test.f1_per_class if self.test.f1_per_class is not None else np.full(len(names), np.nan)
        head = self.head
        return {
            "test_auc": self.test.auc,
            "baseline_auc": self.baseline.test_auc,
            "test_auc_ci": list(self.test_auc_ci),
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "macro_auc": self.test.auc,
            "test_accuracy": self.test.accuracy,
            "baseline_accuracy": self.baseline.test.accuracy,
            "test_f1": self.test.f1,
            "f1_per_class": {n: float(f) for n, f in zip(names, per_class)},
            "confusion": {"classes": names, "matrix": self.test.confusion.tolist()},
            "classes": list(self.classes),
            "roc": None if self.test.fpr is None else {"fpr": self.test.fpr.tolist(), "tpr": self.test.tpr.tolist()},
            "warnings": list(self.warnings),
            "head": None if head is None else head.head,
            "head_candidate": None if head is None else head.candidate,
            "head_choice": None if head is None else head.reason,
            "head_c": None if head is None else head.c,
            "head_scores": None if head is None else head.scores,
            "head_candidates": None if head is None else head.candidate_scores,
            "head_candidates_p": None if head is None else head.candidate_p,
            "head_alpha": None if head is None else head.alpha,
            "features_add_nothing": self.features_add_nothing,
            "verdict": None if head is None else head.verdict,
            "baseline_val_auc": self.baseline.val_auc,
            "baseline_f1": self.baseline.test.f1,
            "baseline_c": self.baseline.c,
            "baseline_choice": None if self.baseline.selection is None else self.baseline.selection.how,
            "best_val_auc": self.best_val_auc,
            "best_epoch": self.best_epoch,
            "epoch_choice": None if self.epoch_choice is None else self.epoch_choice.to_dict(),
            "epochs": self.epochs_run,
            "stopped_early": self.stopped_early,
            "interrupted": self.interrupted,
            "device": self.device,
            "mixed_precision": self.mixed_precision,
            "n_train": int(self.split.train.size),
            "n_val": int(self.split.val.size),
            "n_test": int(self.split.test.size),
            "group_column": self.config.group_column,
            "cv": None if self.cv is None else self.cv.to_dict(),
            "early": self.early,
            "seconds": self.seconds,
        }
