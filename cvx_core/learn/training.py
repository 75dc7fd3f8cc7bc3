"""Train a classifier on temporal features: splits, metrics, the model, the trainer, a baseline.

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.data.trajectory import TrajectorySet

__all__ = [
    "TrainConfig",
    "Split",
    "ClassificationMetrics",
    "BaselineResult",
    "TrainProgress",
    "EpochRecord",
    "TrainResult",
    "TrajectoryClassifier",
    "Trainer",
    "train",
    "stratified_split",
    "length_buckets",
    "rankdata",
    "roc_auc",
    "roc_curve",
    "classification_metrics",
    "mean_embedding_baseline",
    "class_weights",
    "resolve_device",
    "DeviceUnavailableError",
    "predict_proba",
    "build_model_from_spec",
    "CALLBACK_EVENTS",
]

CALLBACK_EVENTS = ("on_train_start", "on_step_end", "on_epoch_end", "on_checkpoint", "on_train_end")


# ==========================================================================================
# config
# ==========================================================================================
@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run is set up with (saved in the run folder's config.json).

    Attributes:
        epochs: maximum number of epochs.
        lr: AdamW learning rate of the head.
        feature_lr: learning rate of the feature parameters (attention ``w``, scale weights
            ``b``, change-point ``log_temperature``); they get no weight decay.
        batch_size: trajectories per training step.
        weight_decay: AdamW weight decay of the head.
        patience: stop after this many epochs without a better validation AUC.
        seed: seed of the split, the batch order and the initial weights.
        val_fraction, test_fraction: share of each class held out (stratified).
        device: "auto" (CUDA when available, else CPU), "cpu" or "cuda".
        learn_attention: train DimensionAttention (else alpha stays all ones).
        learn_scales: train MultiScaleAggregator's scale weights.
        learn_temperatures: train the soft change-point temperature.
        hidden: hidden units of the MLP head (0: a linear head).
        dropout: dropout before the head's output layer.
        magnitude_inputs: feed the head ``|z|`` beside the standardised features ``z``
            (``[B, 2F]``), so a drift of either sign along a dimension counts the same
            without the head having to learn ``|x|`` from few users.
        max_len: keep only each trajectory's last ``max_len`` posts (None: all).
        class_weighting: weight the loss by inverse class frequency (imbalanced labels).
        mixed_precision: bf16 autocast for the head on CUDA (ignored on CPU and on GPUs without bf16).
        feature_dtype: "float32" or "float64" for the temporal features.
        grad_clip: max gradient norm (0: no clipping).
        eval_batch_size: trajectories per evaluation batch.
        text_encoder: None (use the stored embeddings), "hashing" (the small built-in
            encoder) or "minilm" (all-MiniLM-L6-v2, optional extra): end-to-end from text.
        freeze_encoder: keep the text encoder's weights fixed.
        encoder_lr: learning rate of the text encoder.
        features: the temporal features' constants.
    """

    epochs: int = 40
    lr: float = 3e-3
    feature_lr: float = 5e-2
    batch_size: int = 32
    weight_decay: float = 1e-2
    patience: int = 10
    seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    device: str = "auto"
    learn_attention: bool = True
    learn_scales: bool = True
    learn_temperatures: bool = True
    hidden: int = 64
    dropout: float = 0.1
    magnitude_inputs: bool = True
    max_len: int | None = None
    class_weighting: bool = True
    mixed_precision: bool = True
    feature_dtype: str = "float32"
    grad_clip: float = 5.0
    eval_batch_size: int = 128
    text_encoder: str | None = None
    freeze_encoder: bool = False
    encoder_lr: float = 2e-5
    features: TemporalFeaturesConfig = field(default_factory=TemporalFeaturesConfig)

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig: {message}")

        def is_int(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        check(is_int(self.epochs) and self.epochs >= 1, f"epochs must be an integer >= 1, got {self.epochs!r}")
        check(is_int(self.batch_size) and self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size!r}")
        check(is_int(self.eval_batch_size) and self.eval_batch_size >= 1, "eval_batch_size must be >= 1")
        check(is_int(self.patience) and self.patience >= 1, f"patience must be >= 1, got {self.patience!r}")
        check(is_int(self.hidden) and self.hidden >= 0, f"hidden must be >= 0, got {self.hidden!r}")
        check(is_int(self.seed), f"seed must be an integer, got {self.seed!r}")
        for name in ("lr", "feature_lr", "encoder_lr"):
            v = getattr(self, name)
            check(isinstance(v, (int, float)) and math.isfinite(v) and v > 0, f"{name} must be > 0, got {v!r}")
        for name in ("weight_decay", "grad_clip"):
            v = getattr(self, name)
            check(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, f"{name} must be >= 0, got {v!r}")
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout!r}")
        check(0.0 < self.val_fraction < 1.0, f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        check(0.0 < self.test_fraction < 1.0, f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
        check(self.val_fraction + self.test_fraction < 1.0, "val_fraction + test_fraction must be < 1")
        check(self.device in ("auto", "cpu", "cuda"), f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        check(self.feature_dtype in ("float32", "float64"), f"feature_dtype must be 'float32' or 'float64', got {self.feature_dtype!r}")
        check(self.max_len is None or (is_int(self.max_len) and self.max_len >= 1), f"max_len must be None or >= 1, got {self.max_len!r}")
        check(self.text_encoder in (None, "hashing", "minilm"), f"text_encoder must be None, 'hashing' or 'minilm', got {self.text_encoder!r}")
        if isinstance(self.features, Mapping):
            object.__setattr__(self, "features", TemporalFeaturesConfig.from_dict(dict(self.features)))
        check(isinstance(self.features, TemporalFeaturesConfig), "features must be a TemporalFeaturesConfig")

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "features"}
        d["features"] = self.features.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        kw = dict(d)
        if "features" in kw and isinstance(kw["features"], Mapping):
            kw["features"] = TemporalFeaturesConfig.from_dict(dict(kw["features"]))
        return cls(**kw)


class DeviceUnavailableError(RuntimeError):
    """The requested device (CUDA) is not available on this machine."""


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cuda" without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "device='cuda' was asked for but no CUDA device is available (torch.cuda.is_available() is False); "
            "use device='auto' or 'cpu'"
        )
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    return torch.device(device)


# ==========================================================================================
# splits and batches
# ==========================================================================================
@dataclass(frozen=True)
class Split:
    """Positions (into the TrajectorySet) of the train / validation / test users, each sorted."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def as_user_ids(self, ts: TrajectorySet) -> dict[str, list[str]]:
        ids = ts.user_ids
        return {name: [ids[i] for i in getattr(self, name)] for name in ("train", "val", "test")}


def stratified_split(
    labels: Sequence[int] | np.ndarray, *, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0
) -> Split:
    """Split positions ``0..N-1`` so each class keeps its share in train, val and test.

    Per class of size ``n``: ``round(n * test_fraction)`` test and ``round(n * val_fraction)``
    validation users (each at least 1), the rest train (at least 1). Deterministic in ``seed``.
    Raises ValueError if a class has fewer than 3 members or a label is missing (-1).
    """
    y = np.asarray(labels, dtype=np.int64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError("labels must be a non-empty 1-D array")
    if (y < 0).any():
        raise ValueError(f"{int((y < 0).sum())} trajectories have no label; every user needs one to train")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if idx.size < 3:
            raise ValueError(f"class {int(c)} has {idx.size} users; each class needs at least 3 (train, val, test)")
        idx = rng.permutation(idx)
        n_test = min(max(1, int(round(idx.size * test_fraction))), idx.size - 2)
        n_val = min(max(1, int(round(idx.size * val_fraction))), idx.size - n_test - 1)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return Split(**{k: np.sort(np.concatenate(v)) for k, v in parts.items()})


def length_buckets(
    lengths: np.ndarray, indices: np.ndarray, batch_size: int, *, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Group ``indices`` into batches of similar length (less padding).

    Sorted by length (ties broken at random when ``rng`` is given), cut into chunks of
    ``batch_size``; the chunk order is shuffled when ``rng`` is given.
    """
    indices = np.asarray(indices, dtype=np.int64)
    lens = np.asarray(lengths)[indices]
    tie = rng.random(indices.size) if rng is not None else np.arange(indices.size)
    order = indices[np.lexsort((tie, lens))]
    batches = [order[i : i + batch_size] for i in range(0, order.size, batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


# ==========================================================================================
# metrics
# ==========================================================================================
def rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x [N]``, ties get the average of their ranks (float64 ``[N]``)."""
    x = np.asarray(x)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg = ends - (counts - 1) / 2.0
    return avg[inverse.reshape(-1)].astype(np.float64)


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Binary ROC AUC by ranks (Mann-Whitney U; ties count 1/2). NaN if a class is absent.

    ``y_true [N]`` is truthy for positives; ``scores [N]`` higher = more positive.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"y_true {y.shape} and scores {s.shape} differ in shape")
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)``, one per distinct score, from (0, 0) to (1, 1).

    ``thresholds[0]`` is +inf (nothing predicted positive); a point is "score >= threshold".
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("roc_curve needs both classes")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tps = np.cumsum(y)[last_of_group]
    fps = (last_of_group + 1) - tps
    fpr = np.r_[0.0, fps / n0]
    tpr = np.r_[0.0, tps / n1]
    thresholds = np.r_[np.inf, s[last_of_group]]
    return fpr, tpr, thresholds


@dataclass(frozen=True)
class ClassificationMetrics:
    """Metrics of predicted class probabilities against true labels.

    Attributes:
        auc: ROC AUC (binary: of the positive class, the larger label; more classes:
            macro average of one-vs-rest AUCs).
        f1: F1 of the positive class (binary) or macro F1, predictions by argmax.
        accuracy: share of argmax predictions that are right.
        confusion: ``[K, K]`` counts, rows = true class, columns = predicted, in ``classes`` order.
        classes: the class labels.
        fpr, tpr: ROC curve points (binary only, else None).
        n: number of trajectories scored.
    """

    auc: float
    f1: float
    accuracy: float
    confusion: np.ndarray
    classes: tuple[int, ...]
    fpr: np.ndarray | None
    tpr: np.ndarray | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "auc": self.auc,
            "f1": self.f1,
            "accuracy": self.accuracy,
            "confusion": self.confusion.tolist(),
            "classes": list(self.classes),
            "roc": None if self.fpr is None else {"fpr": self.fpr.tolist(), "tpr": self.tpr.tolist()},
            "n": self.n,
        }


def _f1(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom > 0 else 0.0


def classification_metrics(
    y_index: np.ndarray, proba: np.ndarray, classes: Sequence[int]
) -> ClassificationMetrics:
    """Metrics from class indices ``y_index [N]`` (0..K-1) and probabilities ``proba [N, K]``."""
    y = np.asarray(y_index, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    k = len(classes)
    if p.shape != (y.size, k):
        raise ValueError(f"proba must be [N, K] = [{y.size}, {k}], got {p.shape}")
    pred = p.argmax(axis=1)
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (y, pred), 1)
    acc = float((pred == y).mean()) if y.size else float("nan")
    if k == 2:
        auc = roc_auc(y == 1, p[:, 1])
        f1 = _f1(conf[1, 1], conf[0, 1], conf[1, 0])
        if (y == 1).any() and (y == 0).any():
            fpr, tpr, _ = roc_curve(y == 1, p[:, 1])
        else:
            fpr = tpr = None
    else:
        aucs = [roc_auc(y == c, p[:, c]) for c in range(k)]
        aucs = [a for a in aucs if not math.isnan(a)]
        auc = float(np.mean(aucs)) if aucs else float("nan")
        f1 = float(np.mean([_f1(conf[c, c], conf[:, c].sum() - conf[c, c], conf[c, :].sum() - conf[c, c]) for c in range(k)]))
        fpr = tpr = None
    return ClassificationMetrics(auc, f1, acc, conf, tuple(int(c) for c in classes), fpr, tpr, int(y.size))


def class_weights(y_index: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency loss weights ``N / (K * n_k)`` ``[K]`` from class indices ``[N]``
    (a class absent from ``y_index`` gets the weight of a class seen once)."""
    counts = np.bincount(np.asarray(y_index, dtype=np.int64), minlength=n_classes).astype(np.float64)
    return counts.sum() / (n_classes * np.maximum(counts, 1.0))


# ==========================================================================================
# baseline
# ==========================================================================================
@dataclass(frozen=True)
class BaselineResult:
    """Mean-embedding logistic regression on the same split.

    Attributes:
        val_auc, test_auc: ROC AUC on the validation and test users.
        c: inverse L2 strength chosen on validation AUC from ``(0.01, 0.1, 1, 10)``.
        test: full test metrics.
    """

    val_auc: float
    test_auc: float
    c: float
    test: ClassificationMetrics


def _fit_logreg(x: torch.Tensor, y: torch.Tensor, k: int, c: float, weights: torch.Tensor) -> torch.Tensor:
    """Multinomial logistic regression, L2 penalty ``|W|^2 / (2 C n)``; returns ``W [D+1, K]``."""
    n, d = x.shape
    xb = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], dim=1)
    w = torch.zeros(d + 1, k, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=200, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xb @ w, y, weight=weights) + (w[:-1] ** 2).sum() / (2.0 * c * n)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def mean_embedding_baseline(
    ts: TrajectorySet, split: Split, *, classes: Sequence[int] | None = None, class_weighting: bool = True
) -> BaselineResult:
    """Logistic regression on each user's mean embedding (``[N, D]``), standardised on train.

    The regularisation ``C`` is picked on validation AUC; test metrics are for that ``C``.
    """
    classes = tuple(sorted(set(int(v) for v in ts.labels))) if classes is None else tuple(classes)
    cls_index = {c: i for i, c in enumerate(classes)}
    x_all = np.stack([tr.embeddings.astype(np.float64).mean(axis=0) for tr in ts])
    y_all = np.array([cls_index[int(v)] for v in ts.labels], dtype=np.int64)
    mu = x_all[split.train].mean(axis=0)
    sd = x_all[split.train].std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    x = torch.as_tensor((x_all - mu) / sd)
    y = torch.as_tensor(y_all)
    k = len(classes)
    weights = torch.as_tensor(class_weights(y_all[split.train], k) if class_weighting else np.ones(k), dtype=torch.float64)
    tr_idx = torch.as_tensor(split.train)
    best: tuple[float, float, torch.Tensor] | None = None
    for c in (0.01, 0.1, 1.0, 10.0):
        w = _fit_logreg(x[tr_idx], y[tr_idx], k, c, weights)
        proba = _logreg_proba(x[split.val], w)
        auc = classification_metrics(y_all[split.val], proba, classes).auc
        score = -1.0 if math.isnan(auc) else auc
        if best is None or score > best[0]:
            best = (score, c, w)
    assert best is not None
    _, c, w = best
    val = classification_metrics(y_all[split.val], _logreg_proba(x[split.val], w), classes)
    test = classification_metrics(y_all[split.test], _logreg_proba(x[split.test], w), classes)
    return BaselineResult(val_auc=val.auc, test_auc=test.auc, c=c, test=test)


def _logreg_proba(x: torch.Tensor, w: torch.Tensor) -> np.ndarray:
    xb = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
    return torch.softmax(xb @ w, dim=1).numpy()


# ==========================================================================================
# model
# ==========================================================================================
class TrajectoryClassifier(nn.Module):
    """Temporal features -> fixed standardisation -> MLP head -> class logits.

    ``forward(values [B,T,D], timestamps [B,T] float64, lengths [B] int64) -> logits [B, K]``.
    The buffers ``feature_mean`` / ``feature_std`` ``[F]`` are set once by
    :meth:`fit_normalisation` (training-set statistics at initialisation) and saved with
    the weights.
    """

    def __init__(
        self,
        dim: int,
        n_classes: int,
        *,
        hidden: int = 64,
        dropout: float = 0.1,
        features: TemporalFeaturesConfig | None = None,
        feature_dtype: torch.dtype = torch.float32,
        magnitude_inputs: bool = True,
    ) -> None:
        super().__init__()
        from cvx_core.features.learnable import TemporalFeatureExtractor

        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
        self.dim = int(dim)
        self.n_classes = int(n_classes)
        self.feature_dtype = feature_dtype
        self.extractor = TemporalFeatureExtractor(dim, config=features)
        if feature_dtype == torch.float64:
            self.extractor.double()
        n_feat = int(self.extractor.out_dim)
        self.register_buffer("feature_mean", torch.zeros(n_feat, dtype=torch.float64))
        self.register_buffer("feature_std", torch.ones(n_feat, dtype=torch.float64))
        self.magnitude_inputs = bool(magnitude_inputs)
        n_in = 2 * n_feat if magnitude_inputs else n_feat
        if hidden > 0:
            self.head: nn.Module = nn.Sequential(
                nn.Linear(n_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
            )
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_in, n_classes))
        # bf16 autocast of the head: switched on by the trainer for its CUDA training steps
        # only; evaluation and loaded models run in full precision. Not part of the state.
        self.autocast_head = False

    @property
    def out_features(self) -> int:
        return int(self.feature_mean.numel())

    def features(self, values: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Raw temporal features ``[B, F]`` in ``feature_dtype`` (never autocast)."""
        with torch.autocast(device_type=values.device.type, enabled=False):
            return self.extractor(values.to(self.feature_dtype), timestamps.to(torch.float64), lengths)

    def normalise(self, feats: torch.Tensor) -> torch.Tensor:
        """``(feats - mean) / std`` with the fixed training statistics, as float32 ``[B, F]``."""
        mean = self.feature_mean.to(feats.dtype)
        std = self.feature_std.to(feats.dtype)
        return ((feats - mean) / std).float()

    def head_logits(self, z: torch.Tensor) -> torch.Tensor:
        if self.magnitude_inputs:
            z = torch.cat([z, z.abs()], dim=1)
        if self.autocast_head and z.device.type == "cuda":
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                return self.head(z).float()
        return self.head(z)

    def forward(self, values: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.normalise(self.features(values, timestamps, lengths)))

    @torch.no_grad()
    def fit_normalisation(self, feats: torch.Tensor) -> None:
        """Set the buffers from training features ``[N, F]``; constant features get std 1."""
        f = feats.detach().to(torch.float64)
        mean = f.mean(dim=0)
        std = f.std(dim=0, unbiased=False)
        scale = torch.clamp(mean.abs(), min=1.0)
        std = torch.where(std > 1e-9 * scale, std, torch.ones_like(std))
        self.feature_mean.copy_(mean.to(self.feature_mean.device))
        self.feature_std.copy_(std.to(self.feature_std.device))


_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_model_from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """Rebuild an (untrained) model from the ``model_spec`` stored in a run's config.json."""
    features = TemporalFeaturesConfig.from_dict(dict(spec["features"]))
    encoder_spec = spec.get("encoder")
    dim = int(spec["dim"])
    clf = TrajectoryClassifier(
        dim,
        len(spec["classes"]),
        hidden=int(spec["hidden"]),
        dropout=float(spec["dropout"]),
        features=features,
        feature_dtype=_DTYPES[spec.get("feature_dtype", "float32")],
        magnitude_inputs=bool(spec.get("magnitude_inputs", False)),
    )
    if encoder_spec:
        from cvx_core.learn.encoders import TextTrajectoryClassifier, build_text_encoder

        return TextTrajectoryClassifier(build_text_encoder(encoder_spec), clf)
    return clf


# ==========================================================================================
# progress reporting
# ==========================================================================================
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


# ==========================================================================================
# trainer
# ==========================================================================================
Callback = Callable[[TrainProgress], None]
StopSignal = Callable[[], bool] | threading.Event | None


def _stop_requested(signal: StopSignal) -> bool:
    if signal is None:
        return False
    if isinstance(signal, threading.Event):
        return signal.is_set()
    return bool(signal())


def _recent_texts(data: TrajectorySet, indices: Sequence[int], lengths: Sequence[int]) -> list[list[str]]:
    """The texts of each user's last ``lengths[k]`` posts (the posts a padded batch kept)."""
    out = []
    for i, n in zip(indices, lengths):
        tr = data.at(int(i))
        out.append(list(tr.texts[tr.n_posts - int(n) :]))
    return out


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


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    data: TrajectorySet,
    *,
    indices: Sequence[int] | None = None,
    max_len: int | None = None,
    batch_size: int = 128,
    device: str = "auto",
) -> np.ndarray:
    """Class probabilities ``[N, K]`` (float64) of a trained model for the users at ``indices``.

    Columns follow the model's classes (sorted labels). Works for stored-embedding models
    and, when the data has texts, for end-to-end text models.
    """
    dev = resolve_device(device)
    model = model.to(dev).eval()
    idx = np.arange(len(data)) if indices is None else np.asarray(indices, dtype=np.int64)
    text_mode = hasattr(model, "encoder")
    if text_mode and not data.has_text:
        raise ValueError("this model reads texts, but the data has none")
    n_classes = model.classifier.n_classes if text_mode else model.n_classes
    out = np.zeros((idx.size, n_classes), dtype=np.float64)
    pos = {int(i): k for k, i in enumerate(idx)}
    for b in length_buckets(data.lengths, idx, batch_size):
        batch = data.padded(b, max_len=max_len)
        values, stamps, lengths = batch.to_torch(dev)
        if text_mode:
            logits = model(_recent_texts(data, b, batch.lengths), stamps, lengths)
        else:
            logits = model(values, stamps, lengths)
        out[[pos[int(i)] for i in b]] = torch.softmax(logits.float(), dim=1).double().cpu().numpy()
    return out
