"""The trainer: fits the classifier on temporal features (the model, splits, metrics and baseline live in their own modules).

The model is ``TemporalFeatureExtractor`` (differentiable features ``[B, 4D+5+2S]``, with
learnable DimensionAttention, MultiScaleAggregator and change-point temperature) followed by
a *fixed* standardisation and a linear or MLP head. The standardisation statistics (mean and
std of the training set's features, computed once at initialisation with the feature
modules at their initial values) are buffers, not batch/layer norm: a per-batch
standardisation would divide DimensionAttention's scaling of the drift block straight back
out and the attention could not learn anything.

Small data first, and never below the plain baseline by construction. Before any gradient
step the head is chosen by inner cross-validated log-loss on the features at their initial
values (:func:`cvx_core.learn.selection.choose_head`): the mean-embedding logistic
regression itself, one on the temporal features, one on both. When the baseline wins, the
features-plus-mean model starts as that regression and a trained epoch is kept only if it
beats it on validation by more than ``min_delta``; otherwise the run *is* that regression
and says the temporal features add nothing.
A linear head starts from its logistic regression, so epoch 0 *is* that regression;
training then moves the head and the learnable feature parts together.

Splits: stratified train/val/test (seeded), a test set of the user's own (validation drawn
from the training data), a per-user split column, or stratified K-fold cross-validation
(``cv``); with ``group_column`` every split keeps each group on one side. Batches are
length-bucketed and padded; AdamW (a separate, lower learning rate for the feature
parameters, so the attention does not wander once the loss saturates); class-weighted
cross-entropy plus the head's L2 penalty. The kept epoch has the lowest validation log-loss
and early stopping fires after ``patience`` epochs without a fall of more than
``min_delta`` (:class:`~cvx_core.learn.selection.EpochSelector`; validation AUC is only
reported); the best-so-far checkpoint is written atomically after every improvement. Test
metrics carry 95% intervals (model and baseline: AUC, F1, accuracy), small-data warnings,
per-class F1 and a confusion matrix with class names, the mean-embedding
logistic-regression baseline on the same split, and the early-detection curve on the test
users. Progress goes to callbacks (``on_train_start``, ``on_step_end``, ``on_epoch_end``,
``on_checkpoint``, ``on_train_end``) and a ``should_stop`` callable or
``threading.Event`` is checked at every step.

The run is a loop plus steps: :meth:`Trainer.run` is :meth:`Trainer.fit` (split, head
choice, the epoch loop with its callbacks, the kept epoch) then :meth:`Trainer.evaluate`,
which composes the steps of :mod:`cvx_core.learn.steps` (test metrics, the baseline, the
bootstrap intervals, the warnings, early detection) and :func:`cross_validate`. The
scikit-learn estimator calls ``fit`` alone. Data-parallel training
(:mod:`cvx_core.scale.ddp`) overrides the public hooks ``prepare_model``, ``batch_loss``,
``baseline`` and ``baseline_selection``.

Precision: features are computed in ``feature_dtype`` (float32 by default, float64 on
request) and never under autocast (cosines and variances cancel badly in low precision);
on CUDA, with ``mixed_precision=True``, only the head runs under bf16 autocast.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn import functional as F

from cvx_core.data.trajectory import TrajectorySet
from cvx_core.learn.baseline import BaselineResult, Selection, mean_embedding_fit, mean_embedding_selection
from cvx_core.learn.config import TrainConfig, resolve_device
from cvx_core.learn.metrics import class_weights, classification_metrics
from cvx_core.learn.model import TrajectoryClassifier, _recent_texts, build_model_from_spec, classifier_of, predict_proba
from cvx_core.learn.optim import HEAD_LR_FAN_IN, head_param_groups, l2_penalty, param_groups
from cvx_core.learn.results import CVResult, EpochRecord, FitResult, TrainProgress, TrainResult
from cvx_core.learn.selection import (
    GUARD_ALPHA,
    EpochSelector,
    HeadChoice,
    HeadLayout,
    choose_head,
    multiclass_weights,
    pipeline_head,
    sk_linear,
)
from cvx_core.learn.splits import (
    Split,
    check_groups,
    kfold_splits,
    length_buckets,
    split_from_assignments,
    stratified_split,
    user_groups,
    validation_split,
)
from cvx_core.learn.steps import (
    EARLY_DENSE_CUTS,
    EARLY_EXTRA_CUTS,
    baseline_step,
    early_step,
    evaluation_step,
    features_step,
    inputs_to,
    interval_step,
    run_files_step,
    warning_step,
)

__all__ = ["CALLBACK_EVENTS", "CVResult", "EARLY_DENSE_CUTS", "EARLY_EXTRA_CUTS", "EpochRecord", "FitResult",
           "HEAD_LR_FAN_IN", "HeadChoice", "TrainProgress", "TrainResult", "Trainer", "cross_validate", "head_param_groups", "train"]

CALLBACK_EVENTS = ("on_train_start", "on_step_end", "on_epoch_end", "on_checkpoint", "on_train_end")


Callback = Callable[[TrainProgress], None]
StopSignal = Callable[[], bool] | threading.Event | None


def _stop_requested(signal: StopSignal) -> bool:
    if signal is None:
        return False
    if isinstance(signal, threading.Event):
        return signal.is_set()
    return bool(signal())


class _Loop:
    """The epoch loop's running state (one :meth:`Trainer.fit`)."""

    def __init__(self, selector: EpochSelector, batches: int, t0: float) -> None:
        self.selector = selector
        self.batches = batches
        self.t0 = t0
        self.history: list[EpochRecord] = []
        self.step = 0
        self.epoch = 0
        self.last_loss = float("nan")
        self.interrupted = False
        self.stopped_early = False
        self.best_state: dict[str, torch.Tensor] = {}

    def progress(self, event: str, **kw: Any) -> TrainProgress:
        s = self.selector
        return TrainProgress(event, self.epoch, self.step, self.batches, loss=self.last_loss,
                             best_val_auc=s.best_auc, best_epoch=s.best_epoch, best_val_loss=s.best_loss,
                             elapsed_s=time.perf_counter() - self.t0, **kw)


class Trainer:
    """Trains a :class:`TrajectoryClassifier` (or its end-to-end text variant) on a TrajectorySet.

    Usage (minGPT style)::

        trainer = Trainer(ts, TrainConfig(epochs=20), run_dir="runs/a")
        trainer.add_callback("on_epoch_end", lambda p: print(p.epoch, p.val_auc))
        result = trainer.run()          # fit, then evaluate on the test users
        fitted = trainer.fit()          # or the fit alone (a FitResult)

    ``test_data`` (a TrajectorySet of other users) is scored as the test set, validation
    users are drawn from ``data``. ``split`` gives the split directly: a :class:`Split` of
    positions, or ``{user_id: "train" | "val" | "test"}`` (e.g. from a split column).

    ``should_stop`` (a callable returning bool, or a ``threading.Event``) is checked before
    every step; when it fires, training ends and the best checkpoint so far is kept (the
    starting weights are the first checkpoint, evaluated before any step).

    ``trainer.model`` is the model being trained (set by ``fit``; callbacks may read it):
    during the run it holds the latest weights, after it the best checkpoint's;
    ``trainer.classifier`` is its :class:`TrajectoryClassifier` (the model itself, or a text
    model's classifier).
    """

    model: nn.Module | None = None
    classifier: TrajectoryClassifier | None = None

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
        from cvx_core.data.budgets import apply_posts_budget  # max_len unset: the posts-per-user budget

        self.config = apply_posts_budget(config or TrainConfig(), data.lengths)
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
        # scales="auto" (the default): time unit, scales and silence threshold from the training
        # users' gaps between posts; the resolved values go into config.json, the choice into data.json
        from cvx_core.features.scales import resolve_features

        features, self.scale_choice = resolve_features(self.config.features, data)
        self.config = replace(self.config, features=features)
        self._given_test: np.ndarray | None = None
        if test_data is not None:
            data = self._with_test(data, test_data, split)
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
        self._groups = self._read_groups(test_data)
        self._baseline_cache: tuple[Split, BaselineResult] | None = None
        self._selection_cache: tuple[Split, Selection] | None = None

    def _with_test(self, data: TrajectorySet, test_data: TrajectorySet, split: Any) -> TrajectorySet:
        """The training users then a given test set's (checked: other users, same D, known classes)."""
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
        self._given_test = np.arange(len(data), len(data) + len(test_data))
        return TrajectorySet([*data, *test_data], name=data.name)

    def _read_groups(self, test_data: TrajectorySet | None) -> np.ndarray | None:
        """``[N]`` group of each user of ``self.data`` from ``config.group_column`` (None without
        one). A given test set's users get their own groups, which must not be training groups."""
        column = self.config.group_column
        if column is None:
            return None
        groups = user_groups(self.train_data, column)
        if test_data is None:
            return groups
        test_groups = user_groups(test_data, column) if column in test_data.metadata.columns else np.array(
            [f"\0test:{u}" for u in test_data.user_ids], dtype=object)
        shared = sorted(set(groups.tolist()) & set(test_groups.tolist()))
        if shared:
            raise ValueError(f"group {shared[0]!r} of column {column!r} has users in the training data and in the "
                             f"test data ({len(shared)} such groups); a group column keeps each group on one side")
        return np.concatenate([groups, test_groups])

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
        groups = self._groups
        if self._given_test is not None:
            pool = np.arange(len(self.train_data))
            return validation_split(self.data.labels, pool, self._given_test, val_fraction=cfg.val_fraction,
                                    seed=cfg.seed, groups=groups)
        if isinstance(self._split_arg, Split):
            if groups is not None:
                check_groups(self._split_arg, groups, source="the given split")
            return self._split_arg
        if self._split_arg is not None:
            return split_from_assignments(self.data, self._split_arg, val_fraction=cfg.val_fraction, seed=cfg.seed,
                                          groups=groups)
        return stratified_split(self.data.labels, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                                seed=cfg.seed, groups=groups)

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
            "mean_inputs": bool(cfg.mean_inputs and cfg.text_encoder is None
                                and (self.head is None or self.head.uses_mean)),
            "encoder": encoder,
        }

    def targets(self, indices: np.ndarray) -> np.ndarray:
        """``[n]`` class index (0..K-1) of the users at ``indices``."""
        return np.array([self._cls_index[int(v)] for v in self.data.labels[np.asarray(indices, dtype=np.int64)]],
                        dtype=np.int64)

    def batch(self, indices: np.ndarray) -> tuple[tuple[Any, ...], torch.Tensor]:
        """Model inputs (on the CPU) and class-index targets ``[B]`` for the users at ``indices``."""
        batch = self.data.padded(indices, max_len=self.config.max_len)
        values, stamps, lengths = batch.to_torch("cpu")
        y = torch.as_tensor([self._cls_index[int(v)] for v in batch.labels], dtype=torch.int64)
        if self.config.text_encoder is not None:
            return (_recent_texts(self.data, indices, batch.lengths), stamps, lengths), y
        return (values, stamps, lengths), y

    @torch.no_grad()
    def _val_metrics(self, model: nn.Module, split: Split, weights: torch.Tensor) -> tuple[float, float, np.ndarray]:
        """Validation AUC, class-weighted log-loss and each validation user's (weighted) log-loss ``[n_val]``."""
        assert self.classifier is not None
        self.classifier.autocast_head = False  # evaluation in full precision
        proba = predict_proba(model, self.data, indices=split.val, max_len=self.config.max_len,
                              batch_size=self.config.eval_batch_size, device=self.device.type)
        y = self.targets(split.val)
        auc = classification_metrics(y, proba, self.classes).auc
        w = weights.cpu().numpy()
        nll = -np.log(np.clip(proba[np.arange(y.size), y], 1e-12, None))
        return auc, float((w[y] * nll).sum() / w[y].sum()), w[y] * nll

    @torch.no_grad()
    def _initial_features(self, model: nn.Module, indices: np.ndarray) -> torch.Tensor:
        """Features ``[N, F]`` float64 of the users at ``indices`` (in order), with every
        feature module at its initial value."""
        model.eval()
        rows: list[torch.Tensor] = []
        order: list[np.ndarray] = []
        for b in length_buckets(self.data.lengths, indices, self.config.eval_batch_size):
            inputs, _ = self.batch(b)
            x = inputs_to(inputs, self.device)
            rows.append((model.inputs(*x) if getattr(model, "mean_inputs", False) else model.features(*x)).double().cpu())
            order.append(b)
        feats = torch.cat(rows)
        pos = {int(i): k for k, i in enumerate(indices)}
        out = torch.empty_like(feats)
        out[[pos[int(i)] for i in np.concatenate(order)]] = feats
        return out

    def _probe(self, split: Split) -> tuple[nn.Module, torch.Tensor, np.ndarray, np.ndarray, HeadLayout]:
        """A linear model at initial values: its features ``[n_fit, F]`` of the train+val users,
        the head inputs ``h [N, n_in]`` and targets ``y [N]`` (rows of train and val users filled)
        and where the candidates' columns sit."""
        fit_idx = np.concatenate([split.train, split.val])
        probe = build_model_from_spec(self.model_spec(head="linear")).to(self.device)
        if self.config.text_encoder is not None:  # text encoder: posts embedded once (cvx_core.learn.finetune)
            from cvx_core.learn.finetune import prepare_text_model

            prepare_text_model(probe, self.data, self.config, device=self.device, indices=fit_idx)
        feats = self._initial_features(probe, fit_idx)
        clf = classifier_of(probe)
        # every user's starting features finite, test users too (a text model embedded only the fit users' posts)
        test = split.test if self.config.text_encoder is None else fit_idx[:0]
        checked = torch.cat([feats, self._initial_features(probe, test)]) if test.size else feats
        features_step(checked.numpy(), np.concatenate([fit_idx, test]), self.data, self.config,
                      n_spec=int(clf.extractor.out_dim), dim=clf.dim)
        clf.fit_normalisation(feats[: split.train.size])
        with torch.no_grad():
            h_fit = clf.head_inputs(clf.normalise(feats.to(clf.feature_mean.device))).double().cpu().numpy()
        h = np.zeros((len(self.data), h_fit.shape[1]))
        h[fit_idx] = h_fit
        y = np.zeros(len(self.data), dtype=np.int64)
        y[fit_idx] = self.targets(fit_idx)
        layout = HeadLayout(n_spec=int(clf.extractor.out_dim), n_mean=clf.dim if clf.mean_inputs else 0,
                            magnitude=clf.magnitude_inputs)
        return probe, feats, h, y, layout

    def prepare_model(self, split: Split) -> nn.Module:
        """Choose the head on the initial features (:func:`~cvx_core.learn.selection.choose_head`),
        build the model, fix its normalisation and (linear head) warm-start it from the
        chosen logistic regression. Sets ``self.head`` and ``self.classifier``."""
        cfg = self.config
        probe, feats, h, y, layout = self._probe(split)
        baseline = self.baseline_selection(split) if (cfg.head == "auto" and layout.n_mean) else None
        self.head = choose_head(
            h, y, split, layout=layout, head=cfg.head, n_classes=len(self.classes), baseline=baseline,
            head_c=cfg.head_c, hidden=cfg.hidden, class_weighting=cfg.class_weighting, inner_cv=cfg.inner_cv,
            seed=cfg.seed,
        )
        model = build_model_from_spec(self.model_spec()).to(self.device)
        if cfg.text_encoder is not None:  # the probe's encoder (same starting weights) and its embedded posts
            from cvx_core.learn.finetune import adopt_text_encoder

            adopt_text_encoder(model, probe)
        clf = self.classifier = classifier_of(model)
        n_tr, n_spec, reads_mean = split.train.size, layout.n_spec, self.head.uses_mean or not layout.n_mean
        clf.fit_normalisation(feats[:n_tr] if reads_mean else feats[:n_tr, :n_spec])
        if self.head.head == "linear":
            cols = self.head.columns
            with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
                warnings.simplefilter("ignore", ConvergenceWarning)
                lr = sk_linear(self.head.c, cfg.class_weighting).fit(h[split.train][:, cols], y[split.train])
            w_sub, b = multiclass_weights(lr, len(self.classes))
            w = np.zeros((len(self.classes), clf.n_inputs))
            # the model's head inputs: the probe's with the mean columns dropped when it reads no mean
            w[:, cols if reads_mean else np.arange(cols.size)] = w_sub
            clf.set_linear_head(w, b)
        return model

    def adopt_baseline(self, split: Split) -> None:
        """Set the linear head to the mean-embedding baseline's own regression (fitted on
        every non-test user), so the model predicts what the reported baseline predicts."""
        clf = self.classifier
        if clf is None or self.head is None or self.head.head != "linear" or not clf.mean_inputs:
            return
        est = mean_embedding_fit(self.data, split, self.baseline_selection(split).value, classes=self.classes,
                                 class_weighting=self.config.class_weighting)
        n_feat = clf.out_features
        cols = np.arange(n_feat - clf.dim, n_feat)  # the mean-embedding block of z
        w, b = pipeline_head(est, columns=cols, mean=clf.feature_mean[cols].cpu().numpy(),
                             std=clf.feature_std[cols].cpu().numpy(), n_inputs=clf.n_inputs, k=len(self.classes))
        clf.set_linear_head(w, b)

    # -- hooks that data-parallel training (cvx_core.scale.ddp) overrides -------------------
    def batch_loss(self, model: nn.Module, indices: np.ndarray, weights: torch.Tensor) -> torch.Tensor:
        """Class-weighted cross-entropy (weighted mean) of the batch of users at ``indices``."""
        inputs, y = self.batch(indices)
        logits = model(*inputs_to(inputs, self.device))
        return F.cross_entropy(logits.float(), y.to(self.device), weight=weights)

    def baseline_selection(self, split: Split) -> Selection:
        """The baseline's inner-CV choice of ``C`` on ``split`` (computed once: the head choice,
        the adopted baseline and the reported baseline share it)."""
        if self._selection_cache is not None and self._selection_cache[0] is split:
            return self._selection_cache[1]
        cfg = self.config
        sel = mean_embedding_selection(self.data, split, classes=self.classes, class_weighting=cfg.class_weighting,
                                       seed=cfg.seed, inner_cv=cfg.inner_cv)
        self._selection_cache = (split, sel)
        return sel

    def baseline(self, split: Split) -> BaselineResult:
        """The mean-embedding baseline on ``split``, scored on its test users (fitted once)."""
        if self._baseline_cache is not None and self._baseline_cache[0] is split:
            return self._baseline_cache[1]
        res = baseline_step(self.data, split, self.classes, config=self.config,
                            selection=self.baseline_selection(split))
        self._baseline_cache = (split, res)
        return res

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Fit (split, head choice, the epoch loop, the kept epoch), then evaluate on the test
        users (see the module docstring); ``metrics.json`` is written when there is a run folder."""
        from cvx_core.learn import runs

        t0 = time.perf_counter()
        fitted = self.fit()
        result = self.evaluate(fitted, t0=t0)
        if self.run_dir is not None:
            runs.atomic_write_json(self.run_dir / runs.METRICS_FILE, result.metrics_dict())
        self._fire(TrainProgress("on_train_end", fitted.epochs_run, fitted.steps, fitted.steps_per_epoch,
                                 loss=fitted.last_loss, best_val_auc=fitted.best_val_auc, best_epoch=fitted.best_epoch,
                                 best_val_loss=fitted.epoch_choice.val_loss, elapsed_s=result.seconds))
        return result

    def fit(self) -> FitResult:
        """Split, choose the head, train with early stopping on validation log-loss and keep
        the best epoch: the fit alone, with no test evaluation."""
        cfg = self.config
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        split = self.make_split()
        y_train = self.targets(split.train)
        weights_np = class_weights(y_train, len(self.classes)) if cfg.class_weighting else np.ones(len(self.classes))
        weights = torch.as_tensor(weights_np, dtype=torch.float32, device=self.device)
        model = self.model = self.prepare_model(split)
        assert self.head is not None
        if self.run_dir is not None:
            run_files_step(self.run_dir, config=cfg, spec=self.model_spec(), data=self.data,
                           train_data=self.train_data, classes=self.classes, split=split, head=self.head,
                           scale_choice=self.scale_choice)
        loop = self._loop(model, split, weights, rng, t0)
        model.eval()
        return FitResult(model=model, split=split, head=self._head_after(loop.selector), history=tuple(loop.history),
                         epoch_choice=loop.selector.choice(), epochs_run=loop.epoch, steps=loop.step,
                         steps_per_epoch=loop.batches, last_loss=loop.last_loss, stopped_early=loop.stopped_early,
                         interrupted=loop.interrupted, mixed_precision=self._amp(),
                         seconds=time.perf_counter() - t0)

    def _amp(self) -> bool:
        # bf16 autocast raises on a CUDA device without bf16 support: fall back to float32 there
        return bool(self.config.mixed_precision and self.device.type == "cuda" and torch.cuda.is_bf16_supported())

    def _checkpoint(self, model: nn.Module, epoch: int, val_auc: float, val_loss: float) -> dict[str, torch.Tensor]:
        """The best-so-far weights (a copy), written atomically to the run folder if there is one."""
        from cvx_core.learn import runs

        cfg = self.config
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if self.run_dir is not None:
            runs.save_weights(self.run_dir, state,
                              encoder_weights=bool(cfg.text_encoder is not None and not cfg.freeze_encoder))
            runs.atomic_write_json(
                self.run_dir / runs.CHECKPOINT_FILE,
                {"epoch": epoch, "val_auc": val_auc, "val_loss": val_loss, "device": self.device.type,
                 "criterion": "validation log-loss"},
            )
        return state

    def _loop(self, model: nn.Module, split: Split, weights: torch.Tensor, rng: np.random.Generator,
              t0: float) -> _Loop:
        """The epoch loop: AdamW steps, validation log-loss after each epoch, the kept epoch's
        weights restored at the end (when the baseline won the head choice, a trained epoch
        must beat it by more than ``min_delta`` and significantly, else the model becomes
        the baseline's own regression)."""
        from cvx_core.learn.finetune import StepHooks  # clipping, gradient norms, encoder warm-up

        cfg = self.config
        assert self.head is not None
        opt = torch.optim.AdamW(param_groups(model, cfg))
        hooks = StepHooks(model, opt, cfg)
        selector = EpochSelector(min_delta=cfg.min_delta, patience=cfg.patience,
                                 guard_start=self.head.candidate == "baseline", guard_alpha=GUARD_ALPHA / cfg.epochs)
        loop = _Loop(selector, math.ceil(split.train.size / cfg.batch_size), t0)
        self._fire(loop.progress("on_train_start"))
        # epoch 0: the starting weights (for a linear head, the chosen logistic regression) are the first checkpoint
        val_auc0, val_loss0, per_user = self._val_metrics(model, split, weights)
        selector.offer(0, val_loss0, val_auc0, per_user=per_user)
        loop.best_state = self._checkpoint(model, 0, val_auc0, val_loss0)
        penalty = l2_penalty(self.classifier, self.head, n_classes=len(self.classes), n_train=split.train.size)
        for epoch in range(1, cfg.epochs + 1):
            loop.epoch = epoch
            if not self._epoch(model, split, weights, rng, opt, hooks, penalty, loop):
                break
        model.load_state_dict(loop.best_state)
        if selector.guard_start and selector.best_epoch == 0:
            # no trained epoch beat the baseline: the run *is* the baseline, refitted on train+val as reported
            self.adopt_baseline(split)
            self._checkpoint(model, 0, val_auc0, val_loss0)
        return loop

    def _epoch(self, model: nn.Module, split: Split, weights: torch.Tensor, rng: np.random.Generator,
               opt: torch.optim.Optimizer, hooks: Any, penalty: Callable[[], torch.Tensor] | None, loop: _Loop) -> bool:
        """One epoch of steps, its validation and callbacks; False when the loop should end."""
        from cvx_core.learn import runs

        te = time.perf_counter()
        model.train()
        assert self.classifier is not None
        self.classifier.autocast_head = self._amp()
        losses: list[float] = []
        for b in length_buckets(self.data.lengths, split.train, self.config.batch_size, rng=rng):
            if _stop_requested(self.should_stop):
                loop.interrupted = True
                break
            loss = self.batch_loss(model, b, weights)
            if penalty is not None:
                loss = loss + penalty()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm, encoder_grad_norm = hooks.clip()
            opt.step()
            hooks.after_step()
            loop.step += 1
            loop.last_loss = float(loss.detach())
            losses.append(loop.last_loss)
            self._fire(loop.progress("on_step_end", grad_norm=grad_norm, encoder_grad_norm=encoder_grad_norm))
        if loop.interrupted and not losses:
            return False
        val_auc, val_loss, per_user = self._val_metrics(model, split, weights)
        is_best = loop.selector.offer(loop.epoch, val_loss, val_auc, per_user=per_user)
        train_loss = float(np.mean(losses)) if losses else float("nan")
        loop.history.append(EpochRecord(loop.epoch, train_loss, val_loss, val_auc, time.perf_counter() - te))
        if is_best:
            loop.best_state = self._checkpoint(model, loop.epoch, val_auc, val_loss)
        if self.run_dir is not None:
            runs.atomic_write_json(self.run_dir / runs.HISTORY_FILE, [asdict(h) for h in loop.history])
        progress = loop.progress("on_epoch_end", train_loss=train_loss, val_auc=val_auc, val_loss=val_loss,
                                 is_best=is_best)
        self._fire(progress)
        if is_best:
            self._fire(replace(progress, event="on_checkpoint"))
        if loop.interrupted:
            return False
        if loop.selector.should_stop:
            loop.stopped_early = loop.epoch < self.config.epochs
            return False
        return True

    def _head_after(self, selector: EpochSelector) -> HeadChoice:
        """The head choice, its reason extended when a trained epoch replaced a baseline start."""
        head = self.head
        assert head is not None
        if head.candidate == "baseline" and selector.best_epoch > 0:
            start = selector.scored[0][1]
            head = self.head = replace(head, verdict=None, reason=(
                f"{head.reason}; trained from the baseline's weights, epoch {selector.best_epoch} lowered the "
                f"validation log-loss by more than min_delta {self.config.min_delta:g} ({start:.4g} -> "
                f"{selector.best_loss:.4g}; paired one-sided Wilcoxon over the validation users p = "
                f"{selector.guard_p:.2g} < {selector.guard_alpha:.3g}, 0.05 Bonferroni over {self.config.epochs} "
                "epochs), so the temporal features stay"))
        return head

    def evaluate(self, fitted: FitResult, *, t0: float | None = None) -> TrainResult:
        """The steps after a fit: test metrics, the baseline, bootstrap intervals, small-data
        warnings, early detection (:mod:`cvx_core.learn.steps`) and cross-validation."""
        cfg, split, model, dev = self.config, fitted.split, fitted.model, self.device.type
        t0 = time.perf_counter() - fitted.seconds if t0 is None else t0
        test, p_test = evaluation_step(model, self.data, split, self.classes, config=cfg, device=dev)
        baseline = self.baseline(split)
        intervals = interval_step(self.data, split, self.classes, p_test, baseline, config=cfg)
        notes = warning_step(test, self.classes, n_users=len(self.data), cv=cfg.cv,
                             given=self._given_test is not None or self._split_arg is not None)
        early = early_step(model, self.data, split, self.classes, config=cfg, device=dev)
        cv = None
        if cfg.cv >= 2 and not fitted.interrupted:
            cv = cross_validate(self.train_data, cfg, k=cfg.cv, should_stop=self.should_stop)
        return TrainResult(
            model=model, test=test, baseline=baseline, best_val_auc=fitted.best_val_auc, best_epoch=fitted.best_epoch,
            epochs_run=fitted.epochs_run, stopped_early=fitted.stopped_early, interrupted=fitted.interrupted,
            device=dev, classes=self.classes, split=split, history=fitted.history, run_dir=self.run_dir,
            seconds=time.perf_counter() - t0, config=cfg, mixed_precision=fitted.mixed_precision, head=fitted.head,
            test_auc_ci=intervals.get("test_auc", (float("nan"), float("nan"))), warnings=notes, cv=cv,
            early=early, test_proba=p_test, epoch_choice=fitted.epoch_choice, intervals=intervals,
        )


def cross_validate(
    data: TrajectorySet,
    config: TrainConfig,
    *,
    k: int,
    should_stop: StopSignal = None,
    on_fold: Callable[[int, dict[str, Any]], None] | None = None,
) -> CVResult:
    """Stratified, seeded ``k``-fold cross-validation of the model and the mean-embedding
    baseline (each fold: validation drawn from the other folds, no bootstrap). With
    ``config.group_column``: grouped folds (``StratifiedGroupKFold``), no group on two sides."""
    groups = None if config.group_column is None else user_groups(data, config.group_column)
    folds = kfold_splits(data.labels, k, val_fraction=config.val_fraction, seed=config.seed, groups=groups)
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
            "best_epoch": res.best_epoch, "head_candidate": res.head.candidate if res.head else None,
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
