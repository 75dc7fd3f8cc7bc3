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
from cvx_core.learn.baseline import BaselineResult, mean_embedding_baseline
from cvx_core.learn.config import TrainConfig, resolve_device
from cvx_core.learn.metrics import (
    class_weights,
    classification_metrics,
    metric_intervals,
    small_data_warnings,
    split_size_warnings,
)
from cvx_core.learn.model import _recent_texts, build_model_from_spec, predict_proba
from cvx_core.learn.results import CVResult, EpochRecord, TrainProgress, TrainResult
from cvx_core.learn.selection import EpochSelector, HeadChoice, HeadLayout, choose_head, multiclass_weights, sk_linear
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

__all__ = ["CALLBACK_EVENTS", "CVResult", "EpochRecord", "HeadChoice", "TrainProgress", "TrainResult", "Trainer",
           "cross_validate", "head_param_groups", "train"]

#: the run's own early-detection curve: every cut up to this many posts, then ``EARLY_EXTRA_CUTS`` geometric steps
EARLY_DENSE_CUTS, EARLY_EXTRA_CUTS = 20, 10

CALLBACK_EVENTS = ("on_train_start", "on_step_end", "on_epoch_end", "on_checkpoint", "on_train_end")


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
        self._groups = self._read_groups(test_data)

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
        self._val_user_losses = w[y] * nll  # [n_val] per-user (weighted) log-loss, for the baseline guard
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

    def _initial_model(self, split: Split) -> nn.Module:
        """Choose the head on the initial features (:func:`~cvx_core.learn.selection.choose_head`),
        build the model, fix its normalisation and (linear head) warm-start it from the
        chosen logistic regression."""
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
        n_spec = int(clf_probe.extractor.out_dim)
        layout = HeadLayout(n_spec=n_spec, n_mean=clf_probe.dim if clf_probe.mean_inputs else 0,
                            magnitude=clf_probe.magnitude_inputs)
        baseline = self._baseline(split) if (cfg.head == "auto" and layout.n_mean) else None
        self.head = choose_head(
            h, y, split, layout=layout, head=cfg.head, n_classes=len(self.classes),
            baseline=None if baseline is None else baseline.selection, head_c=cfg.head_c, hidden=cfg.hidden,
            class_weighting=cfg.class_weighting, inner_cv=cfg.inner_cv, seed=cfg.seed,
        )
        model = build_model_from_spec(self.model_spec()).to(self.device)
        if cfg.text_encoder is not None:  # the probe's encoder (same starting weights) and its embedded posts
            from cvx_core.learn.finetune import adopt_text_encoder

            adopt_text_encoder(model, probe)
        clf = model.classifier if hasattr(model, "classifier") else model
        self._clf = clf
        clf.fit_normalisation(feats[:n_tr] if self.head.uses_mean or not layout.n_mean else feats[:n_tr, :n_spec])
        if self.head.head == "linear":
            cols = self.head.columns
            with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
                warnings.simplefilter("ignore", ConvergenceWarning)
                lr = sk_linear(self.head.c, cfg.class_weighting).fit(h[split.train][:, cols], y[split.train])
            w_sub, b = multiclass_weights(lr, len(self.classes))
            w = np.zeros((len(self.classes), clf.n_inputs))
            # the model's head inputs: the probe's with the mean columns dropped when it reads no mean
            w[:, cols if self.head.uses_mean or not layout.n_mean else np.arange(cols.size)] = w_sub
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
        """The mean-embedding baseline on ``split`` (fitted once: the head choice reuses it)."""
        cfg = self.config
        cached = getattr(self, "_baseline_cache", None)
        if cached is not None and cached[0] is split:
            return cached[1]
        res = mean_embedding_baseline(self.data, split, classes=self.classes, class_weighting=cfg.class_weighting,
                                      seed=cfg.seed, inner_cv=cfg.inner_cv)
        self._baseline_cache = (split, res)
        return res
    # -- end of the data-parallel hooks ---------------------------------------------------

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Split, choose the head, train with early stopping on validation log-loss, keep the
        best epoch, evaluate on the test users (see the module docstring)."""
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
                    "head": {"head": self.head.head, "c": self.head.c, "reason": self.head.reason,
                             "candidate": self.head.candidate, "candidates": self.head.candidate_scores},
                    "group_column": cfg.group_column,
                    "scales": None if self.scale_choice is None else self.scale_choice.to_dict(),
                },
            )
        fit = self._fit(model, split, weights, rng, t0)
        model.eval()
        result = self._evaluate(model, split, fit, t0)
        if self.run_dir is not None:
            runs.atomic_write_json(self.run_dir / runs.METRICS_FILE, result.metrics_dict())
        self._fire(TrainProgress("on_train_end", fit["epoch"], fit["step"], fit["batches"], loss=fit["last_loss"],
                                 best_val_auc=fit["selector"].best_auc, best_epoch=fit["selector"].best_epoch,
                                 best_val_loss=fit["selector"].best_loss, elapsed_s=result.seconds))
        return result

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

    def _fit(self, model: nn.Module, split: Split, weights: torch.Tensor, rng: np.random.Generator,
             t0: float) -> dict[str, Any]:
        """The epoch loop: AdamW steps, validation log-loss after each epoch, the kept epoch's
        weights restored at the end (when the baseline won the head choice, a trained epoch
        must beat it by more than ``min_delta``)."""
        from cvx_core.learn import runs
        from cvx_core.learn.finetune import StepHooks  # clipping, gradient norms, encoder warm-up

        cfg = self.config
        assert self.head is not None
        penalty = self._l2_penalty(split.train.size)
        opt = torch.optim.AdamW(self._param_groups(model))
        hooks = StepHooks(model, opt, cfg)
        batches = math.ceil(split.train.size / cfg.batch_size)
        selector = EpochSelector(min_delta=cfg.min_delta, patience=cfg.patience,
                                 guard_start=self.head.candidate == "baseline")
        history: list[EpochRecord] = []
        step, epoch = 0, 0
        interrupted = stopped_early = False
        last_loss = float("nan")
        self._fire(TrainProgress("on_train_start", 0, 0, batches))
        # epoch 0: the starting weights (for a linear head, the chosen logistic regression) are the first checkpoint
        val_auc0, val_loss0 = self._val_metrics(model, split, weights)
        selector.offer(0, val_loss0, val_auc0, per_user=self._val_user_losses)
        best_state = self._checkpoint(model, 0, val_auc0, val_loss0)

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
                    TrainProgress("on_step_end", epoch, step, batches, loss=last_loss,
                                  best_val_auc=selector.best_auc, best_epoch=selector.best_epoch,
                                  best_val_loss=selector.best_loss, elapsed_s=time.perf_counter() - t0,
                                  grad_norm=grad_norm, encoder_grad_norm=encoder_grad_norm)
                )
            if interrupted and not losses:
                break
            val_auc, val_loss = self._val_metrics(model, split, weights)
            is_best = selector.offer(epoch, val_loss, val_auc, per_user=self._val_user_losses)
            train_loss = float(np.mean(losses)) if losses else float("nan")
            history.append(EpochRecord(epoch, train_loss, val_loss, val_auc, time.perf_counter() - te))
            if is_best:
                best_state = self._checkpoint(model, epoch, val_auc, val_loss)
            if self.run_dir is not None:
                runs.atomic_write_json(self.run_dir / runs.HISTORY_FILE, [asdict(h) for h in history])
            progress = TrainProgress(
                "on_epoch_end", epoch, step, batches, loss=last_loss, train_loss=train_loss,
                val_auc=val_auc, val_loss=val_loss, best_val_auc=selector.best_auc, best_epoch=selector.best_epoch,
                best_val_loss=selector.best_loss, is_best=is_best, elapsed_s=time.perf_counter() - t0,
            )
            self._fire(progress)
            if is_best:
                self._fire(replace(progress, event="on_checkpoint"))
            if interrupted:
                break
            if selector.should_stop:
                stopped_early = epoch < cfg.epochs
                break
        model.load_state_dict(best_state)
        return {"selector": selector, "history": tuple(history), "epoch": epoch, "step": step, "batches": batches,
                "last_loss": last_loss, "interrupted": interrupted, "stopped_early": stopped_early, "amp": use_amp}

    def _evaluate(self, model: nn.Module, split: Split, fit: dict[str, Any], t0: float) -> TrainResult:
        """Test metrics with intervals, the baseline, warnings, early detection and CV."""
        cfg = self.config
        y_test = self._y(split.test)
        p_test = self._predict(model, split.test)
        test = classification_metrics(y_test, p_test, self.classes)
        baseline = self._baseline(split)
        intervals = metric_intervals(y_test, p_test, baseline.test_proba, n_resamples=cfg.bootstrap, seed=cfg.seed)
        ci = intervals.get("test_auc", (float("nan"), float("nan")))
        notes = small_data_warnings(test.class_counts, [str(c) for c in self.classes])
        notes += split_size_warnings(len(self.data), cv=cfg.cv, given=self._given_test is not None
                                     or self._split_arg is not None)
        early = None
        if cfg.text_encoder is None and split.test.size:
            from cvx_core.learn.early import early_detection, post_grid

            test_ts = self.data.subset([self.data.user_ids[i] for i in split.test])
            # every cut to 20 posts, then 10 geometric steps (``evaluate --early`` draws the full grid)
            cuts = post_grid(int(test_ts.lengths.max()), dense=EARLY_DENSE_CUTS, extra=EARLY_EXTRA_CUTS)
            early = early_detection(model, test_ts, classes=self.classes, cuts=cuts, max_len=cfg.max_len,
                                    device=self.device.type).to_dict()
        cv = None
        if cfg.cv >= 2 and not fit["interrupted"]:
            cv = cross_validate(self.train_data, cfg, k=cfg.cv, should_stop=self.should_stop)
        selector: EpochSelector = fit["selector"]
        head = self.head
        if head is not None and head.candidate == "baseline" and selector.best_epoch > 0:
            start = selector.scored[0][1]
            head = self.head = replace(head, verdict=None, reason=(
                f"{head.reason}; trained from the baseline's weights, epoch {selector.best_epoch} lowered the "
                f"validation log-loss by more than min_delta {cfg.min_delta:g} ({start:.4g} -> "
                f"{selector.best_loss:.4g}; paired one-sided Wilcoxon over the validation users p = "
                f"{selector.guard_p:.2g}), so the temporal features stay"))
        return TrainResult(
            model=model, test=test, baseline=baseline, best_val_auc=selector.best_auc, best_epoch=selector.best_epoch,
            epochs_run=fit["epoch"], stopped_early=fit["stopped_early"], interrupted=fit["interrupted"],
            device=self.device.type, classes=self.classes, split=split, history=fit["history"], run_dir=self.run_dir,
            seconds=time.perf_counter() - t0, config=cfg, mixed_precision=fit["amp"], head=head,
            test_auc_ci=ci, warnings=tuple(notes), cv=cv, early=early, test_proba=p_test,
            epoch_choice=selector.choice(), intervals=intervals,
        )


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
