"""The trainer: fits the classifier on temporal features (the model, splits, metrics and baseline live in their own modules).

The model is ``TemporalFeatureExtractor`` (differentiable features ``[B, 4D+5+2S]``, with
learnable DimensionAttention, MultiScaleAggregator and change-point temperature) followed by
a *fixed* standardisation and a linear or MLP head. The standardisation statistics (mean and
std of the training set's features, computed once at initialisation with the feature
modules at their initial values) are buffers, not batch/layer norm: a per-batch
standardisation would divide DimensionAttention's scaling of the drift block straight back
out and the attention could not learn anything.

Small data first. Before any gradient step the head and its L2 strength are chosen by
validation on the features at their initial values (scikit-learn: a logistic regression
against an MLP of the same width, inner stratified CV when there are few users, see
``cvx_core.learn.baseline.choose_by_validation``). A linear head starts from that logistic
regression, so epoch 0 *is* a logistic regression on CVX's analytic features; training
then moves the head and the learnable feature parts together and keeps a later epoch only
if it beats epoch 0 on validation.

Splits: stratified train/val/test (seeded), a test set of the user's own (validation drawn
from the training data), a per-user split column, or stratified K-fold cross-validation
(``cv``). Batches are length-bucketed and padded; AdamW (separate learning rate for the
feature parameters); class-weighted cross-entropy plus the head's L2 penalty; early
stopping on validation ROC AUC (then loss); the best-so-far checkpoint is written
atomically after every improvement. Test metrics carry a bootstrap interval for the AUC,
small-data warnings, per-class F1 and a confusion matrix with class names, the
mean-embedding logistic-regression baseline on the same split, and the early-detection
curve on the test users. Progress goes to callbacks (``on_train_start``, ``on_step_end``,
``on_epoch_end``, ``on_checkpoint``, ``on_train_end``) and a ``should_stop`` callable or
``threading.Event`` is checked at every step.

Precision: features are computed in ``feature_dtype`` (float32 by default, float64 on
request) and never under autocast (cosines and variances cancel badly in low precision);
on CUDA, with ``mixed_precision=True``, only the head runs under bf16 autocast.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn import functional as F

from cvx_core.data.trajectory import TrajectorySet
from cvx_core.learn.baseline import C_GRID, BaselineResult, Selection, choose_by_validation, mean_embedding_baseline
from cvx_core.learn.config import TrainConfig, resolve_device
from cvx_core.learn.metrics import (
    ClassificationMetrics,
    bootstrap_auc_ci,
    class_weights,
    classification_metrics,
    small_data_warnings,
)
from cvx_core.learn.model import _recent_texts, build_model_from_spec, predict_proba
from cvx_core.learn.splits import Split, kfold_splits, length_buckets, split_from_assignments, stratified_split, validation_split

#: inverse L2 strengths tried for the MLP candidate (a shorter grid: each is a network fit per fold)
MLP_C_GRID: tuple[float, ...] = (0.1, 1.0, 10.0)

CALLBACK_EVENTS = ("on_train_start", "on_step_end", "on_epoch_end", "on_checkpoint", "on_train_end")


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
        best_val_auc, best_epoch: best validation AUC so far and its epoch.
        is_best: this epoch improved the best validation AUC.
        elapsed_s: seconds since training started.
        grad_norm: L2 norm of all gradients of the last step, before clipping (on_step_end).
        encoder_grad_norm: the text encoder's part of it (NaN without a trained encoder).
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


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of the learning curves."""

    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    seconds: float


@dataclass(frozen=True)
class HeadChoice:
    """Which head was used and why.

    Attributes:
        head: "linear" or "mlp".
        c: inverse L2 strength of the head (scikit-learn's ``C``).
        reason: one sentence, e.g. "auto: linear (validation log-loss 0.210 at C=1) over
            mlp (0.350 at C=10), by 5-fold inner CV on 48 train+val users".
        scores: validation log-loss of every candidate, ``{"linear": {C: loss}, "mlp": ...}``.
    """

    head: str
    c: float
    reason: str
    scores: dict[str, dict[str, float]]


@dataclass(frozen=True)
class CVResult:
    """Stratified K-fold cross-validation: per-fold metrics of model and baseline, and their
    mean and sd (sample sd, ``ddof=1``)."""

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
        model: the trained model holding the best (by validation AUC) weights, eval mode.
        test: test metrics of the model.
        baseline: mean-embedding logistic regression on the same split.
        best_val_auc, best_epoch: the early-stopping criterion's best value and its epoch
            (0: the starting weights, e.g. the logistic-regression warm start, were best).
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
        warnings: small-data warnings about the test set.
        cv: cross-validation result when ``config.cv >= 2``.
        early: early-detection block on the test users (see :mod:`cvx_core.learn.early`).
        test_proba: ``[n_test, K]`` test probabilities.
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

    @property
    def test_auc(self) -> float:
        return self.test.auc

    @property
    def baseline_auc(self) -> float:
        return self.baseline.test_auc

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.classes]

    def metrics_dict(self) -> dict[str, Any]:
        """The content of ``metrics.json``."""
        names = self.class_names
        per_class = self.test.f1_per_class if self.test.f1_per_class is not None else np.full(len(names), np.nan)
        return {
            "test_auc": self.test.auc,
            "baseline_auc": self.baseline.test_auc,
            "test_auc_ci": list(self.test_auc_ci),
            "macro_auc": self.test.auc,
            "test_accuracy": self.test.accuracy,
            "baseline_accuracy": self.baseline.test.accuracy,
            "test_f1": self.test.f1,
            "f1_per_class": {n: float(f) for n, f in zip(names, per_class)},
            "confusion": {"classes": names, "matrix": self.test.confusion.tolist()},
            "classes": list(self.classes),
            "roc": None if self.test.fpr is None else {"fpr": self.test.fpr.tolist(), "tpr": self.test.tpr.tolist()},
            "warnings": list(self.warnings),
            "head": None if self.head is None else self.head.head,
            "head_choice": None if self.head is None else self.head.reason,
            "head_c": None if self.head is None else self.head.c,
            "head_scores": None if self.head is None else self.head.scores,
            "baseline_val_auc": self.baseline.val_auc,
            "baseline_f1": self.baseline.test.f1,
            "baseline_c": self.baseline.c,
            "baseline_choice": None if self.baseline.selection is None else self.baseline.selection.how,
            "best_val_auc": self.best_val_auc,
            "best_epoch": self.best_epoch,
            "epochs": self.epochs_run,
            "stopped_early": self.stopped_early,
            "interrupted": self.interrupted,
            "device": self.device,
            "mixed_precision": self.mixed_precision,
            "n_train": int(self.split.train.size),
            "n_val": int(self.split.val.size),
            "n_test": int(self.split.test.size),
            "cv": None if self.cv is None else self.cv.to_dict(),
            "early": self.early,
            "seconds": self.seconds,
        }


Callback = Callable[[TrainProgress], None]
StopSignal = Callable[[], bool] | threading.Event | None


def _stop_requested(signal: StopSignal) -> bool:
    if signal is None:
        return False
    if isinstance(signal, threading.Event):
        return signal.is_set()
    return bool(signal())




def _inputs_to(inputs: tuple[Any, ...], device: torch.device) -> tuple[Any, ...]:
    return tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)


class Trainer:
    """Trains a :class:`TrajectoryClassifier` (or its end-to-end text variant) on a TrajectorySet.

    Usage (minGPT style)::

        trainer = Trainer(ts, TrainConfig(epochs=20), run_dir="runs/a")
        trainer.add_callback("on_epoch_end", lambda p: print(p.epoch, p.val_auc))
        result = trainer.run()

    ``test_data`` (a TrajectorySet of other users) is scored as the test set, validation
    users are drawn from ``data``. ``split`` gives the split directly: a :class:`Split` of
    positions, or ``{user_id: "train" | "val" | "test"}`` (e.g. from a split column).

    ``should_stop`` (a callable returning bool, or a ``threading.Event``) is checked before
    every step; when it fires, training ends and the best checkpoint so far is kept (the
    starting weights are the first checkpoint, evaluated before any step).

    ``trainer.model`` is the model being trained (set by ``run``; callbacks may read it):
    during the run it holds the latest weights, after it the best checkpoint's.
    """

    model: nn.Module | None = None

    def __init__(
        self,
        data: TrajectorySet,
        config: TrainConfig | None = None,
        *,
        run_dir: str | Path | None = None,
        should_stop: StopSignal = None,
        test_data: TrajectorySet | None = None,
        split: Split | Mapping[str, str] | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.should_stop = should_stop
        self.callbacks: dict[str, list[Callback]] = {e: [] for e in CALLBACK_EVENTS}
        for name, part in (("training", data), ("test", test_data)):
            if part is not None and not part.has_labels:
                missing = int((part.labels < 0).sum())
                raise ValueError(
                    f"{missing} of {len(part)} {name} trajectories have no label; training needs a label on every user"
                )
        self.train_data = data
        self._given_test: np.ndarray | None = None
        if test_data is not None:
            if split is not None:
                raise ValueError("give a test set or a split, not both")
            clash = sorted(set(data.user_ids) & set(test_data.user_ids))
            if clash:
                raise ValueError(
                    f"{len(clash)} user ids are in both the training and the test data (e.g. {clash[0]!r}); "
                    "a test set must hold other users"
                )
            if test_data.dim != data.dim:
                raise ValueError(f"the test data has D={test_data.dim} but the training data D={data.dim}")
            extra = sorted(set(int(v) for v in test_data.labels) - set(int(v) for v in data.labels))
            if extra:
                raise ValueError(f"the test data has classes {extra} that the training data lacks")
            data = TrajectorySet([*data, *test_data], name=data.name)
            self._given_test = np.arange(len(self.train_data), len(data))
        self.data = data
        self._split_arg = split
        if self.config.text_encoder is not None and not data.has_text:
            raise ValueError(f"text_encoder={self.config.text_encoder!r} needs per-post texts, but the data has none")
        self.classes = tuple(sorted(set(int(v) for v in data.labels)))
        if len(self.classes) < 2:
            raise ValueError(f"training needs at least 2 classes, the data has only {list(self.classes)}")
        self._cls_index = {c: i for i, c in enumerate(self.classes)}
        self.device = resolve_device(self.config.device)
        self.head: HeadChoice | None = None
        self._start_cols: np.ndarray | None = None

    # -- callbacks ------------------------------------------------------------------------
    def add_callback(self, event: str, fn: Callback) -> None:
        if event not in self.callbacks:
            raise ValueError(f"unknown callback event {event!r}; known: {', '.join(CALLBACK_EVENTS)}")
        self.callbacks[event].append(fn)

    def set_callback(self, event: str, fn: Callback) -> None:
        if event not in self.callbacks:
            raise ValueError(f"unknown callback event {event!r}; known: {', '.join(CALLBACK_EVENTS)}")
        self.callbacks[event] = [fn]

    def _fire(self, progress: TrainProgress) -> None:
        for fn in self.callbacks[progress.event]:
            fn(progress)

    # -- split ----------------------------------------------------------------------------
    def make_split(self) -> Split:
        """The split this run uses (given test set, given split, or stratified and seeded)."""
        cfg = self.config
        if self._given_test is not None:
            pool = np.arange(len(self.train_data))
            return validation_split(self.data.labels, pool, self._given_test, val_fraction=cfg.val_fraction, seed=cfg.seed)
        if isinstance(self._split_arg, Split):
            return self._split_arg
        if self._split_arg is not None:
            return split_from_assignments(self.data, self._split_arg, val_fraction=cfg.val_fraction, seed=cfg.seed)
        return stratified_split(self.data.labels, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)

    # -- model and batches ----------------------------------------------------------------
    def model_spec(self, head: str | None = None) -> dict[str, Any]:
        cfg = self.config
        head = head or (self.head.head if self.head is not None else ("linear" if cfg.head == "auto" else cfg.head))
        encoder = None
        dim = self.data.dim
        if cfg.text_encoder is not None:
            from cvx_core.learn.finetune import encoder_spec  # text encoder (issue 15)

            encoder = encoder_spec(cfg)
            dim = int(encoder["dim"])
        return {
            "dim": dim,
            "classes": list(self.classes),
            "head": head,
            "hidden": cfg.hidden if head == "mlp" else 0,
            "dropout": cfg.dropout if head == "mlp" else 0.0,
            "features": cfg.features.to_dict(),
            "feature_dtype": cfg.feature_dtype,
            "magnitude_inputs": cfg.magnitude_inputs,
            "mean_inputs": bool(cfg.mean_inputs and cfg.text_encoder is None),
            "encoder": encoder,
        }

    def _y(self, indices: np.ndarray) -> np.ndarray:
        return np.array([self._cls_index[int(v)] for v in self.data.labels[np.asarray(indices, dtype=np.int64)]],
                        dtype=np.int64)

    def _batch(self, indices: np.ndarray) -> tuple[tuple[Any, ...], torch.Tensor]:
        """Model inputs and class-index targets ``[B]`` for the users at ``indices``."""
        batch = self.data.padded(indices, max_len=self.config.max_len)
        values, stamps, lengths = batch.to_torch("cpu")
        y = torch.as_tensor([self._cls_index[int(v)] for v in batch.labels], dtype=torch.int64)
        if self.config.text_encoder is not None:
            return (_recent_texts(self.data, indices, batch.lengths), stamps, lengths), y
        return (values, stamps, lengths), y

    @torch.no_grad()
    def _predict(self, model: nn.Module, indices: np.ndarray) -> np.ndarray:
        """Class probabilities ``[N, K]`` (float64) for the users at ``indices``, in order."""
        self._clf.autocast_head = False  # evaluation in full precision
        return predict_proba(
            model,
            self.data,
            indices=indices,
            max_len=self.config.max_len,
            batch_size=self.config.eval_batch_size,
            device=self.device.type,
        )

    def _val_metrics(self, model: nn.Module, split: Split, weights: torch.Tensor) -> tuple[float, float]:
        proba = self._predict(model, split.val)
        y = self._y(split.val)
        auc = classification_metrics(y, proba, self.classes).auc
        w = weights.cpu().numpy()
        nll = -np.log(np.clip(proba[np.arange(y.size), y], 1e-12, None))
        loss = float((w[y] * nll).sum() / w[y].sum())
        return auc, loss

    def _param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        cfg = self.config
        groups: dict[str, list[nn.Parameter]] = {"features": [], "encoder": []}
        head_params: list[nn.Parameter] = []
        for name, p in model.named_parameters():
            if name.startswith("encoder."):
                p.requires_grad_(not cfg.freeze_encoder)
                if not cfg.freeze_encoder:
                    groups["encoder"].append(p)
                continue
            local = name.split("extractor.", 1)[1] if "extractor." in name else None
            if local is None:
                head_params.append(p)
                continue
            if local.startswith("attention."):
                trainable = cfg.learn_attention
            elif local.startswith("aggregator."):
                trainable = cfg.learn_scales
            else:  # change-point detector and any other feature parameter
                trainable = cfg.learn_temperatures
            p.requires_grad_(trainable)
            if trainable:
                groups["features"].append(p)
        out = head_param_groups(head_params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if groups["features"]:
            out.append({"params": groups["features"], "lr": cfg.feature_lr, "weight_decay": 0.0})
        if groups["encoder"]:
            out.append({"params": groups["encoder"], "lr": cfg.encoder_lr, "weight_decay": 0.01})
        return out

    @torch.no_grad()
    def _initial_features(self, model: nn.Module, indices: np.ndarray) -> torch.Tensor:
        """Features ``[N, F]`` float64 of the users at ``indices`` (in order), with every
        feature module at its initial value."""
        model.eval()
        rows: list[torch.Tensor] = []
        order: list[np.ndarray] = []
        for b in length_buckets(self.data.lengths, indices, self.config.eval_batch_size):
            inputs, _ = self._batch(b)
            x = _inputs_to(inputs, self.device)
            rows.append((model.inputs(*x) if getattr(model, "mean_inputs", False) else model.features(*x)).double().cpu())
            order.append(b)
        feats = torch.cat(rows)
        pos = {int(i): k for k, i in enumerate(indices)}
        out = torch.empty_like(feats)
        out[[pos[int(i)] for i in np.concatenate(order)]] = feats
        return out

    def _choose_head(self, h: np.ndarray, y: np.ndarray, split: Split, mean_cols: np.ndarray | None = None) -> HeadChoice:
        """Choose the head and its L2 strength by validation on head inputs ``h [N, n_in]``
        (rows indexed like the data; only train and val rows are read). With ``mean_cols``
        (the standardised mean-embedding columns), a linear head that *starts* from the
        mean embedding alone (the baseline's own model; other weights 0) is a candidate too."""
        cfg = self.config
        k = len(self.classes)
        cands = [cfg.head_c] if cfg.head_c is not None else list(C_GRID)
        mlp_cands = [cfg.head_c] if cfg.head_c is not None else list(MLP_C_GRID)
        kinds = ["linear", "mlp"] if cfg.head == "auto" and cfg.hidden > 0 else (
            ["linear"] if cfg.head == "auto" else [cfg.head])
        if mean_cols is not None and "linear" in kinds:
            kinds.insert(1, "linear-mean")
        sels: dict[str, Selection] = {}
        for kind in kinds:
            if kind == "mlp":
                make, x = (lambda c: _sk_mlp(c, cfg.hidden, cfg.seed)), h
            else:
                make = lambda c: _sk_linear(c, cfg.class_weighting)  # noqa: E731
                x = h[:, mean_cols] if kind == "linear-mean" else h
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                sels[kind] = choose_by_validation(make, mlp_cands if kind == "mlp" else cands, x, y, split,
                                                  n_classes=k, inner_cv=cfg.inner_cv, seed=cfg.seed)
        best = min(kinds, key=lambda kd: sels[kd].best_score)  # min keeps the first of equals
        sel = sels[best]
        scores = {kd: dict(sv.scores) for kd, sv in sels.items()}
        names = {"linear": "linear", "linear-mean": "linear from the mean embedding", "mlp": "mlp"}
        if len(kinds) > 1:
            others = ", ".join(f"{names[o]} ({sels[o].best_score:.3f} at C={sels[o].value:g})" for o in kinds if o != best)
            reason = (f"{cfg.head}: {names[best]} (validation log-loss {sel.best_score:.3f} at C={sel.value:g}) over "
                      f"{others}, by {sel.how}")
        else:
            reason = (f"{best} as asked; C={sel.value:g}" + (" as given" if cfg.head_c is not None else f" by {sel.how}"))
        head = "mlp" if best == "mlp" else "linear"
        self._start_cols = mean_cols if best == "linear-mean" else None
        return HeadChoice(head=head, c=float(sel.value), reason=reason, scores=scores)

    def _initial_model(self, split: Split) -> nn.Module:
        """Choose the head on the initial features, build the model, fix its normalisation
        and (linear head) warm-start it from the logistic regression."""
        cfg = self.config
        fit_idx = np.concatenate([split.train, split.val])
        probe = build_model_from_spec(self.model_spec(head="linear")).to(self.device)
        if cfg.text_encoder is not None:  # text encoder: posts embedded once (cvx_core.learn.finetune)
            from cvx_core.learn.finetune import prepare_text_model

            prepare_text_model(probe, self.data, cfg, device=self.device, indices=fit_idx)
        feats = self._initial_features(probe, fit_idx)
        n_tr = split.train.size
        clf_probe = probe.classifier if hasattr(probe, "classifier") else probe
        clf_probe.fit_normalisation(feats[:n_tr])
        with torch.no_grad():
            z = clf_probe.normalise(feats.to(clf_probe.feature_mean.device))
            h_fit = clf_probe.head_inputs(z).double().cpu().numpy()
        # rows of h indexed like the data (only train and val rows are filled)
        h = np.zeros((len(self.data), h_fit.shape[1]))
        h[fit_idx] = h_fit
        y = np.zeros(len(self.data), dtype=np.int64)
        y[fit_idx] = self._y(fit_idx)
        mean_cols = None
        if getattr(clf_probe, "mean_inputs", False):  # z = [SPEC features, mean embedding]; h = [z, |z|]
            n_spec = int(clf_probe.extractor.out_dim)
            mean_cols = np.arange(n_spec, n_spec + clf_probe.dim)
        self.head = self._choose_head(h, y, split, mean_cols)
        model = build_model_from_spec(self.model_spec()).to(self.device)
        if cfg.text_encoder is not None:  # the probe's encoder (same starting weights) and its embedded posts
            from cvx_core.learn.finetune import adopt_text_encoder

            adopt_text_encoder(model, probe)
        clf = model.classifier if hasattr(model, "classifier") else model
        self._clf = clf
        clf.fit_normalisation(feats[:n_tr])
        if self.head.head == "linear":
            with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
                warnings.simplefilter("ignore", ConvergenceWarning)
                cols = self._start_cols if self._start_cols is not None else np.arange(h.shape[1])
                lr = _sk_linear(self.head.c, cfg.class_weighting).fit(h[split.train][:, cols], y[split.train])
            w_sub, b = _multiclass_weights(lr, len(self.classes))
            w = np.zeros((len(self.classes), h.shape[1]))
            w[:, cols] = w_sub
            clf.set_linear_head(w, b)
        return model

    def _l2_penalty(self, n_train: int) -> Callable[[], torch.Tensor] | None:
        """The head's L2 term ``scale * sum |W|^2 / (2 C n_train)`` (scale 2 for a binary
        linear head, whose two logit rows are ``-w/2, w/2``: this is scikit-learn's binary
        objective, so the warm start is its minimum)."""
        assert self.head is not None
        weights = self._clf.head_weights()
        scale = 2.0 if (self.head.head == "linear" and len(self.classes) == 2) else 1.0
        coef = scale / (2.0 * self.head.c * max(1, n_train))

        def penalty() -> torch.Tensor:
            return coef * sum((w.float() ** 2).sum() for w in weights)

        return penalty

    # -- hooks for data-parallel training (cvx_core.scale.ddp overrides these two) ---------
    def _batch_loss(self, model: nn.Module, indices: np.ndarray, weights: torch.Tensor) -> torch.Tensor:
        """Class-weighted cross-entropy (weighted mean) of the batch of users at ``indices``."""
        inputs, y = self._batch(indices)
        logits = model(*_inputs_to(inputs, self.device))
        return F.cross_entropy(logits.float(), y.to(self.device), weight=weights)

    def _baseline(self, split: Split) -> BaselineResult:
        """The mean-embedding baseline on ``split``."""
        cfg = self.config
        return mean_embedding_baseline(self.data, split, classes=self.classes, class_weighting=cfg.class_weighting,
                                       seed=cfg.seed, inner_cv=cfg.inner_cv)
    # -- end of the data-parallel hooks ---------------------------------------------------

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> TrainResult:
        from cvx_core.learn import runs

        cfg = self.config
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        split = self.make_split()
        y_train = self._y(split.train)
        weights_np = class_weights(y_train, len(self.classes)) if cfg.class_weighting else np.ones(len(self.classes))
        weights = torch.as_tensor(weights_np, dtype=torch.float32, device=self.device)

        model = self.model = self._initial_model(split)
        penalty = self._l2_penalty(split.train.size)
        spec = self.model_spec()
        if self.run_dir is not None:
            runs.claim_run_folder(self.run_dir)  # exclusive lock; clears the old run's files
            runs.atomic_write_json(self.run_dir / runs.CONFIG_FILE, {"train_config": cfg.to_dict(), "model_spec": spec})
            runs.atomic_write_json(
                self.run_dir / runs.DATA_FILE,
                {
                    "name": self.data.name,
                    "digest": self.train_data.digest(),
                    "summary": self.train_data.summary().as_dict(),
                    "classes": list(self.classes),
                    "split": split.as_user_ids(self.data),
                    "head": {"head": self.head.head, "c": self.head.c, "reason": self.head.reason},
                },
            )
        opt = torch.optim.AdamW(self._param_groups(model))
        from cvx_core.learn.finetune import StepHooks  # clipping, gradient norms, encoder warm-up

        hooks = StepHooks(model, opt, cfg)

        batches_per_epoch = math.ceil(split.train.size / cfg.batch_size)
        best_state: dict[str, torch.Tensor] | None = None
        history: list[EpochRecord] = []
        step, epoch, bad_epochs = 0, 0, 0
        interrupted = stopped_early = False
        last_loss = float("nan")
        self._fire(TrainProgress("on_train_start", 0, 0, batches_per_epoch))

        def checkpoint(epoch_: int, val_auc: float, val_loss: float) -> None:
            nonlocal best_state
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if self.run_dir is not None:
                runs.save_weights(self.run_dir, best_state,
                                  encoder_weights=bool(cfg.text_encoder is not None and not cfg.freeze_encoder))
                runs.atomic_write_json(
                    self.run_dir / runs.CHECKPOINT_FILE,
                    {"epoch": epoch_, "val_auc": val_auc, "val_loss": val_loss, "device": self.device.type},
                )

        # epoch 0: the starting weights (for a linear head, the logistic regression) are the first checkpoint
        val_auc0, val_loss0 = self._val_metrics(model, split, weights)
        best_key: tuple[float, float] = (-1.0 if math.isnan(val_auc0) else val_auc0, -val_loss0)
        best_auc, best_epoch = val_auc0, 0
        checkpoint(0, val_auc0, val_loss0)

        # bf16 autocast raises on a CUDA device without bf16 support: fall back to float32 there
        use_amp = bool(cfg.mixed_precision and self.device.type == "cuda" and torch.cuda.is_bf16_supported())
        for epoch in range(1, cfg.epochs + 1):
            te = time.perf_counter()
            model.train()
            self._clf.autocast_head = use_amp
            losses: list[float] = []
            for b in length_buckets(self.data.lengths, split.train, cfg.batch_size, rng=rng):
                if _stop_requested(self.should_stop):
                    interrupted = True
                    break
                loss = self._batch_loss(model, b, weights)
                if penalty is not None:
                    loss = loss + penalty()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm, encoder_grad_norm = hooks.clip()
                opt.step()
                hooks.after_step()
                step += 1
                last_loss = float(loss.detach())
                losses.append(last_loss)
                self._fire(
                    TrainProgress("on_step_end", epoch, step, batches_per_epoch, loss=last_loss,
                                  best_val_auc=best_auc, best_epoch=best_epoch, elapsed_s=time.perf_counter() - t0,
                                  grad_norm=grad_norm, encoder_grad_norm=encoder_grad_norm)
                )
            if interrupted and not losses:
                break
            val_auc, val_loss = self._val_metrics(model, split, weights)
            key = (-1.0 if math.isnan(val_auc) else val_auc, -val_loss)
            is_best = key > best_key
            train_loss = float(np.mean(losses)) if losses else float("nan")
            history.append(EpochRecord(epoch, train_loss, val_loss, val_auc, time.perf_counter() - te))
            if is_best:
                best_key, best_auc, best_epoch, bad_epochs = key, val_auc, epoch, 0
                checkpoint(epoch, val_auc, val_loss)
            else:
                bad_epochs += 1
            if self.run_dir is not None:
                runs.atomic_write_json(self.run_dir / runs.HISTORY_FILE, [asdict(h) for h in history])
            progress = TrainProgress(
                "on_epoch_end", epoch, step, batches_per_epoch, loss=last_loss, train_loss=train_loss,
                val_auc=val_auc, val_loss=val_loss, best_val_auc=best_auc, best_epoch=best_epoch,
                is_best=is_best, elapsed_s=time.perf_counter() - t0,
            )
            self._fire(progress)
            if is_best:
                self._fire(replace(progress, event="on_checkpoint"))
            if interrupted:
                break
            if bad_epochs >= cfg.patience:
                stopped_early = epoch < cfg.epochs
                break

        assert best_state is not None
        model.load_state_dict(best_state)
        model.eval()
        y_test = self._y(split.test)
        p_test = self._predict(model, split.test)
        test = classification_metrics(y_test, p_test, self.classes)
        baseline = self._baseline(split)
        ci = bootstrap_auc_ci(y_test, p_test, n_resamples=cfg.bootstrap, seed=cfg.seed) if cfg.bootstrap else (
            float("nan"), float("nan"))
        notes = small_data_warnings(test.class_counts, [str(c) for c in self.classes])
        early = None
        if cfg.text_encoder is None and split.test.size:
            from cvx_core.learn.early import early_detection

            early = early_detection(model, self.data.subset([self.data.user_ids[i] for i in split.test]),
                                    classes=self.classes, max_len=cfg.max_len, device=self.device.type).to_dict()
        cv = None
        if cfg.cv >= 2 and not interrupted:
            cv = cross_validate(self.train_data, cfg, k=cfg.cv, should_stop=self.should_stop)
        result = TrainResult(
            model=model, test=test, baseline=baseline, best_val_auc=best_auc, best_epoch=best_epoch,
            epochs_run=epoch, stopped_early=stopped_early, interrupted=interrupted, device=self.device.type,
            classes=self.classes, split=split, history=tuple(history), run_dir=self.run_dir,
            seconds=time.perf_counter() - t0, config=cfg, mixed_precision=use_amp, head=self.head,
            test_auc_ci=ci, warnings=tuple(notes), cv=cv, early=early, test_proba=p_test,
        )
        if self.run_dir is not None:
            runs.atomic_write_json(self.run_dir / runs.METRICS_FILE, result.metrics_dict())
        self._fire(TrainProgress("on_train_end", epoch, step, batches_per_epoch, loss=last_loss,
                                 best_val_auc=best_auc, best_epoch=best_epoch, elapsed_s=result.seconds))
        return result


HEAD_LR_FAN_IN = 64  # the head's weight matrices learn at ``lr`` when they read this many inputs


def head_param_groups(params: list[nn.Parameter], *, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups of the head, with a learning rate per weight matrix of
    ``lr * min(1, HEAD_LR_FAN_IN / fan_in)`` (biases: ``lr``).

    Adam moves every weight by about its learning rate per step, whatever the gradient's
    size, so one step moves a logit (or a hidden unit) by up to ``lr * sum_j |h_j|``: with
    thousands of standardised inputs (384-dimensional embeddings give about 10,000) and
    few users the first step of a warm-started head at ``lr`` threw the training loss up
    (0.28 -> 1.38 on 18 users). Scaling the rate as ``1 / fan_in`` (as muP does for Adam's
    input and hidden layers) bounds that move at what ``lr`` does with 64 inputs.
    """
    groups: dict[float, list[nn.Parameter]] = {}
    for p in params:
        scale = min(1.0, HEAD_LR_FAN_IN / p.shape[1]) if p.ndim == 2 else 1.0
        groups.setdefault(lr * scale, []).append(p)
    return [{"params": ps, "lr": g_lr, "weight_decay": weight_decay} for g_lr, ps in groups.items()]


def _sk_linear(c: float, class_weighting: bool) -> LogisticRegression:
    """The linear head's scikit-learn twin on head inputs (already standardised)."""
    return LogisticRegression(C=float(c), class_weight="balanced" if class_weighting else None, max_iter=2000)


def _sk_mlp(c: float, hidden: int, seed: int) -> MLPClassifier:
    """The MLP candidate on head inputs: one hidden layer of ``hidden`` units, L2 ``alpha = 1/C``."""
    return MLPClassifier(hidden_layer_sizes=(int(hidden),), alpha=1.0 / float(c), max_iter=200, random_state=seed)


def _multiclass_weights(lr: LogisticRegression, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Logit rows ``W [K, n_in]``, ``b [K]`` equal in softmax to a fitted logistic regression
    (binary: rows ``-w/2, w/2``; a class the fit never saw gets a very negative bias)."""
    coef, icpt = lr.coef_, lr.intercept_
    seen = lr.classes_.astype(np.int64)
    if coef.shape[0] == 1:  # binary
        w = np.zeros((k, coef.shape[1]))
        b = np.full(k, -30.0)
        w[seen[0]], w[seen[1]] = -coef[0] / 2, coef[0] / 2
        b[seen[0]], b[seen[1]] = -icpt[0] / 2, icpt[0] / 2
        return w, b
    w = np.zeros((k, coef.shape[1]))
    b = np.full(k, -30.0)
    w[seen], b[seen] = coef, icpt
    return w, b


def cross_validate(
    data: TrajectorySet,
    config: TrainConfig,
    *,
    k: int,
    should_stop: StopSignal = None,
    on_fold: Callable[[int, dict[str, Any]], None] | None = None,
) -> CVResult:
    """Stratified, seeded ``k``-fold cross-validation of the model and the mean-embedding
    baseline (each fold: validation drawn from the other folds, no bootstrap)."""
    folds = kfold_splits(data.labels, k, val_fraction=config.val_fraction, seed=config.seed)
    cfg = replace(config, cv=0, bootstrap=0)
    rows: list[dict[str, Any]] = []
    for i, split in enumerate(folds):
        if _stop_requested(should_stop):
            break
        trainer = Trainer(data, cfg, split=split, should_stop=should_stop)
        res = trainer.run()
        row = {
            "fold": i + 1, "n_train": int(split.train.size), "n_val": int(split.val.size), "n_test": int(split.test.size),
            "test_auc": res.test.auc, "baseline_auc": res.baseline.test_auc,
            "test_accuracy": res.test.accuracy, "baseline_accuracy": res.baseline.test.accuracy,
            "head": res.head.head if res.head else None, "head_c": res.head.c if res.head else None,
            "best_epoch": res.best_epoch,
        }
        rows.append(row)
        if on_fold is not None:
            on_fold(i + 1, row)
    return CVResult(folds=tuple(rows))


def train(
    data: TrajectorySet,
    config: TrainConfig | None = None,
    *,
    run_dir: str | Path | None = None,
    callbacks: Mapping[str, Callback | Sequence[Callback]] | None = None,
    should_stop: StopSignal = None,
    test_data: TrajectorySet | None = None,
    split: Split | Mapping[str, str] | None = None,
) -> TrainResult:
    """Train on ``data`` and return test metrics beside the baseline (see :class:`Trainer`).

    ``callbacks`` maps event names (``on_step_end``, ``on_epoch_end``, ...) to a callback
    or a list of them.
    """
    trainer = Trainer(data, config, run_dir=run_dir, should_stop=should_stop, test_data=test_data, split=split)
    for event, fns in (callbacks or {}).items():
        for fn in [fns] if callable(fns) else list(fns):
            trainer.add_callback(event, fn)
    return trainer.run()
