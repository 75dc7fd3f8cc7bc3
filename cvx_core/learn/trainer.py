"""The trainer: fits the classifier on temporal features (the model, splits, metrics and baseline live in their own modules).

The model is ``TemporalFeatureExtractor`` (differentiable features ``[B, 4D+5+2S]``, with
learnable DimensionAttention, MultiScaleAggregator and change-point temperature) followed by
a *fixed* standardisation and a small MLP head. The standardisation statistics (mean and
std of the training set's features, computed once at initialisation with the feature
modules at their initial values) are buffers, not batch/layer norm: a per-batch
standardisation would divide DimensionAttention's scaling of the drift block straight back
out and the attention could not learn anything.

Training: stratified train/val/test split (seeded), length-bucketed padded batches,
AdamW (separate learning rate for the feature parameters), class-weighted cross-entropy,
early stopping on validation ROC AUC, best-so-far checkpoint written atomically into the
run folder after every improvement, and a mean-embedding logistic-regression baseline on
the same split. Progress goes to callbacks (``on_train_start``, ``on_step_end``,
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cvx_core.data.trajectory import TrajectorySet
from cvx_core.learn.baseline import BaselineResult, mean_embedding_baseline
from cvx_core.learn.config import TrainConfig, resolve_device
from cvx_core.learn.metrics import (
    ClassificationMetrics,
    class_weights,
    classification_metrics,
)
from cvx_core.learn.model import _recent_texts, build_model_from_spec, predict_proba
from cvx_core.learn.splits import Split, length_buckets, stratified_split

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


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of the learning curves."""

    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    seconds: float


@dataclass(frozen=True, eq=False)
class TrainResult:
    """The outcome of a training run.

    Attributes:
        model: the trained model holding the best (by validation AUC) weights, eval mode.
        test: test metrics of the model.
        baseline: mean-embedding logistic regression on the same split.
        best_val_auc, best_epoch: the early-stopping criterion's best value and its epoch.
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

    @property
    def test_auc(self) -> float:
        return self.test.auc

    @property
    def baseline_auc(self) -> float:
        return self.baseline.test_auc

    def metrics_dict(self) -> dict[str, Any]:
        """The content of ``metrics.json``."""
        return {
            "test_auc": self.test.auc,
            "baseline_auc": self.baseline.test_auc,
            "test_f1": self.test.f1,
            "test_accuracy": self.test.accuracy,
            "confusion": self.test.confusion.tolist(),
            "classes": list(self.classes),
            "roc": None if self.test.fpr is None else {"fpr": self.test.fpr.tolist(), "tpr": self.test.tpr.tolist()},
            "baseline_val_auc": self.baseline.val_auc,
            "baseline_f1": self.baseline.test.f1,
            "baseline_c": self.baseline.c,
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

    ``should_stop`` (a callable returning bool, or a ``threading.Event``) is checked before
    every step; when it fires, training ends and the best checkpoint so far is kept (if no
    epoch has finished, the current weights become the checkpoint).
    """

    def __init__(
        self,
        data: TrajectorySet,
        config: TrainConfig | None = None,
        *,
        run_dir: str | Path | None = None,
        should_stop: StopSignal = None,
    ) -> None:
        self.data = data
        self.config = config or TrainConfig()
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.should_stop = should_stop
        self.callbacks: dict[str, list[Callback]] = {e: [] for e in CALLBACK_EVENTS}
        if not data.has_labels:
            missing = int((data.labels < 0).sum())
            raise ValueError(f"{missing} of {len(data)} trajectories have no label; training needs a label on every user")
        if self.config.text_encoder is not None and not data.has_text:
            raise ValueError(f"text_encoder={self.config.text_encoder!r} needs per-post texts, but the data has none")
        self.classes = tuple(sorted(set(int(v) for v in data.labels)))
        if len(self.classes) < 2:
            raise ValueError(f"training needs at least 2 classes, the data has only {list(self.classes)}")
        self.device = resolve_device(self.config.device)

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

    # -- model and batches ----------------------------------------------------------------
    def model_spec(self) -> dict[str, Any]:
        cfg = self.config
        encoder = None
        dim = self.data.dim
        if cfg.text_encoder is not None:
            from cvx_core.learn.encoders import default_encoder_spec

            encoder = default_encoder_spec(cfg.text_encoder)
            dim = int(encoder["dim"])
        return {
            "dim": dim,
            "classes": list(self.classes),
            "hidden": cfg.hidden,
            "dropout": cfg.dropout,
            "features": cfg.features.to_dict(),
            "feature_dtype": cfg.feature_dtype,
            "magnitude_inputs": cfg.magnitude_inputs,
            "encoder": encoder,
        }

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
        y = np.array([self._cls_index[int(v)] for v in self.data.labels[split.val]])
        auc = classification_metrics(y, proba, self.classes).auc
        w = weights.cpu().numpy()
        nll = -np.log(np.clip(proba[np.arange(y.size), y], 1e-12, None))
        loss = float((w[y] * nll).sum() / w[y].sum())
        return auc, loss

    def _param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        cfg = self.config
        groups: dict[str, list[nn.Parameter]] = {"head": [], "features": [], "encoder": []}
        for name, p in model.named_parameters():
            if name.startswith("encoder."):
                p.requires_grad_(not cfg.freeze_encoder)
                if not cfg.freeze_encoder:
                    groups["encoder"].append(p)
                continue
            local = name.split("extractor.", 1)[1] if "extractor." in name else None
            if local is None:
                groups["head"].append(p)
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
        out = [{"params": groups["head"], "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
        if groups["features"]:
            out.append({"params": groups["features"], "lr": cfg.feature_lr, "weight_decay": 0.0})
        if groups["encoder"]:
            out.append({"params": groups["encoder"], "lr": cfg.encoder_lr, "weight_decay": 0.01})
        return out

    def _initial_model(self, split: Split) -> nn.Module:
        spec = self.model_spec()
        model = build_model_from_spec(spec).to(self.device)
        clf = model.classifier if hasattr(model, "classifier") else model
        self._clf = clf
        # fixed normalisation: training-set features with every module at its initial value
        feats = []
        model.eval()
        with torch.no_grad():
            for b in length_buckets(self.data.lengths, split.train, self.config.eval_batch_size):
                inputs, _ = self._batch(b)
                inputs = _inputs_to(inputs, self.device)
                feats.append(model.features(*inputs).double())
        clf.fit_normalisation(torch.cat(feats))
        return model

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> TrainResult:
        from cvx_core.learn import runs

        cfg = self.config
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        self._cls_index = {c: i for i, c in enumerate(self.classes)}
        split = stratified_split(self.data.labels, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)
        y_train = np.array([self._cls_index[int(v)] for v in self.data.labels[split.train]])
        weights_np = class_weights(y_train, len(self.classes)) if cfg.class_weighting else np.ones(len(self.classes))
        weights = torch.as_tensor(weights_np, dtype=torch.float32, device=self.device)

        model = self._initial_model(split)
        spec = self.model_spec()
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            runs.clear_run_files(self.run_dir)
            runs.atomic_write_json(self.run_dir / runs.CONFIG_FILE, {"train_config": cfg.to_dict(), "model_spec": spec})
            runs.atomic_write_json(
                self.run_dir / runs.DATA_FILE,
                {
                    "name": self.data.name,
                    "digest": self.data.digest(),
                    "summary": self.data.summary().as_dict(),
                    "classes": list(self.classes),
                    "split": split.as_user_ids(self.data),
                },
            )
        opt = torch.optim.AdamW(self._param_groups(model))

        batches_per_epoch = math.ceil(split.train.size / cfg.batch_size)
        best_key: tuple[float, float] | None = None
        best_state: dict[str, torch.Tensor] | None = None
        best_auc, best_epoch = float("nan"), 0
        history: list[EpochRecord] = []
        step, epoch, bad_epochs = 0, 0, 0
        interrupted = stopped_early = False
        last_loss = float("nan")
        self._fire(TrainProgress("on_train_start", 0, 0, batches_per_epoch))

        def checkpoint(epoch_: int, val_auc: float, val_loss: float) -> None:
            nonlocal best_state
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if self.run_dir is not None:
                runs.save_weights(self.run_dir, best_state)
                runs.atomic_write_json(
                    self.run_dir / runs.CHECKPOINT_FILE,
                    {"epoch": epoch_, "val_auc": val_auc, "val_loss": val_loss, "device": self.device.type},
                )

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
                inputs, y = self._batch(b)
                logits = model(*_inputs_to(inputs, self.device))
                loss = F.cross_entropy(logits.float(), y.to(self.device), weight=weights)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], cfg.grad_clip)
                opt.step()
                step += 1
                last_loss = float(loss.detach())
                losses.append(last_loss)
                self._fire(
                    TrainProgress("on_step_end", epoch, step, batches_per_epoch, loss=last_loss,
                                  best_val_auc=best_auc, best_epoch=best_epoch, elapsed_s=time.perf_counter() - t0)
                )
            if interrupted and best_state is not None:
                break
            val_auc, val_loss = self._val_metrics(model, split, weights)
            key = (-1.0 if math.isnan(val_auc) else val_auc, -val_loss)
            is_best = best_key is None or key > best_key
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
        y_test = np.array([self._cls_index[int(v)] for v in self.data.labels[split.test]])
        test = classification_metrics(y_test, self._predict(model, split.test), self.classes)
        baseline = mean_embedding_baseline(self.data, split, classes=self.classes, class_weighting=cfg.class_weighting)
        result = TrainResult(
            model=model, test=test, baseline=baseline, best_val_auc=best_auc, best_epoch=best_epoch,
            epochs_run=epoch, stopped_early=stopped_early, interrupted=interrupted, device=self.device.type,
            classes=self.classes, split=split, history=tuple(history), run_dir=self.run_dir,
            seconds=time.perf_counter() - t0, config=cfg, mixed_precision=use_amp,
        )
        if self.run_dir is not None:
            runs.atomic_write_json(self.run_dir / runs.METRICS_FILE, result.metrics_dict())
        self._fire(TrainProgress("on_train_end", epoch, step, batches_per_epoch, loss=last_loss,
                                 best_val_auc=best_auc, best_epoch=best_epoch, elapsed_s=result.seconds))
        return result


def train(
    data: TrajectorySet,
    config: TrainConfig | None = None,
    *,
    run_dir: str | Path | None = None,
    callbacks: Mapping[str, Callback | Sequence[Callback]] | None = None,
    should_stop: StopSignal = None,
) -> TrainResult:
    """Train on ``data`` and return test metrics beside the baseline (see :class:`Trainer`).

    ``callbacks`` maps event names (``on_step_end``, ``on_epoch_end``, ...) to a callback
    or a list of them.
    """
    trainer = Trainer(data, config, run_dir=run_dir, should_stop=should_stop)
    for event, fns in (callbacks or {}).items():
        for fn in [fns] if callable(fns) else list(fns):
            trainer.add_callback(event, fn)
    return trainer.run()
