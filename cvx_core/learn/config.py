"""Training configuration and device choice: ``TrainConfig`` (frozen, JSON round-trip) and ``resolve_device``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cvx_core.features.config import TemporalFeaturesConfig


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run is set up with (saved in the run folder's config.json).

    Attributes:
        epochs: maximum number of epochs.
        lr: AdamW learning rate of the head.
        feature_lr: learning rate of the feature parameters (attention ``w``, scale weights
            ``b``, change-point ``log_temperature``); they get no weight decay.
        batch_size: trajectories per training step.
        weight_decay: decoupled AdamW weight decay of the head, on top of its L2 penalty
            (``head_c``); 0 by default.
        patience: stop after this many epochs without a fall in validation log-loss of more
            than ``min_delta``.
        min_delta: early stopping: the fall in validation log-loss (cross-entropy,
            class-weighted) that resets the patience. The kept checkpoint is the epoch with
            the lowest validation log-loss; the validation AUC is reported, not optimised.
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
            encoder), "minilm" (all-MiniLM-L6-v2) or the path of a sentence-transformers
            model folder: end-to-end from text (see ``cvx_core.learn.finetune``).
        freeze_encoder: keep the text encoder's weights fixed (posts are then embedded once);
            True by default, as in the CLI (``--finetune`` turns it off) and the app.
        encoder_lr: learning rate of the text encoder (after a linear warm-up).
        encoder_warmup_steps: steps of the encoder's linear learning-rate warm-up (0: none).
        encoder_grad_clip: max gradient norm of the encoder's parameters, clipped apart from
            the head's (0: no clipping).
        posts_with_grad: K, posts per user per step whose embeddings get gradients when the
            encoder is fine-tuned; the user's other posts come from the in-memory embedding
            table without gradient (None: every post; memory stays bounded, compute grows).
        micro_batch_posts: most posts in one encoder pass with gradients (the chunk of the
            gradient cache; with ``max_tokens`` it bounds the encoder's activation memory).
        max_tokens: token window of a transformer text encoder (longer posts are truncated).
        embedding_cache: path of a :class:`cvx_core.data.text.EmbeddingCache` (SQLite) the
            posts are embedded through before training (None: no persistent cache).
        encoder_backend: None, or how the packaged MiniLM embedded the posts' texts before
            training on the vectors (``train DATA --encoder-backend torch|onnx|onnx-int8``
            on a table of texts; :func:`cvx_core.data.text.load_encoder`'s ``backend``).
            A record of where the embeddings came from: the trainer itself reads vectors.
        features: the temporal features' constants; the default, ``TemporalFeaturesConfig.auto()``,
            chooses the time unit, scales and silence threshold from the training users' gaps
            between posts (cvx_core.features.scales; the resolved values are kept in the run).
        head: "auto", "linear" or "mlp". "auto" chooses by inner-CV log-loss among the plain
            mean-embedding logistic regression (the baseline: when it wins, the run is that
            regression and says the temporal features add nothing), a logistic regression on
            the temporal features, and one on the features plus the mean vector (see
            :mod:`cvx_core.learn.selection`); "linear" is the last of these, "mlp" an MLP of
            ``hidden`` units. A linear head starts from its logistic regression.
        mean_inputs: the head also reads each user's mean embedding (standardised like the
            features), so the model contains the mean-embedding baseline as a special case
            (stored-embedding models only).
        head_c: inverse L2 strength of the head (scikit-learn's ``C``: the loss gets
            ``|W|^2 / (2 C n_train)``); None: chosen by validation like the head.
        inner_cv: folds of the inner cross-validation that chooses the head and ``head_c``
            (used below ``SMALL_DATA`` train + validation users).
        cv: outer stratified cross-validation folds (0: none); the run also reports mean
            and sd of model and baseline over the folds.
        bootstrap: resamples of the test users for the AUC's confidence interval (0: none).
        test_data: path of a separate test set (recorded for provenance; the trainer is
            handed the loaded set); validation users are then drawn from the training data.
        split_column: per-user column of the training file holding train / val / test.
        group_column: per-user metadata column (e.g. subject, author) whose groups each stay
            on one side of every split: validation, test and CV folds (``StratifiedGroupKFold``).
    """

    epochs: int = 40
    lr: float = 3e-3
    feature_lr: float = 1e-2
    batch_size: int = 32
    weight_decay: float = 0.0
    patience: int = 10
    min_delta: float = 1e-3
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
    freeze_encoder: bool = True
    encoder_lr: float = 2e-5
    encoder_warmup_steps: int = 10
    encoder_grad_clip: float = 1.0
    posts_with_grad: int | None = 8
    micro_batch_posts: int = 8
    max_tokens: int = 128
    embedding_cache: str | None = None
    encoder_backend: str | None = None
    features: TemporalFeaturesConfig = field(default_factory=TemporalFeaturesConfig.auto)
    head: str = "auto"
    mean_inputs: bool = True
    head_c: float | None = None
    inner_cv: int = 5
    cv: int = 0
    bootstrap: int = 1000
    test_data: str | None = None
    split_column: str | None = None
    group_column: str | None = None

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
        for name in ("weight_decay", "grad_clip", "min_delta"):
            v = getattr(self, name)
            check(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, f"{name} must be >= 0, got {v!r}")
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout!r}")
        check(0.0 < self.val_fraction < 1.0, f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        check(0.0 < self.test_fraction < 1.0, f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
        check(self.val_fraction + self.test_fraction < 1.0, "val_fraction + test_fraction must be < 1")
        check(self.device in ("auto", "cpu", "cuda"), f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        check(self.feature_dtype in ("float32", "float64"), f"feature_dtype must be 'float32' or 'float64', got {self.feature_dtype!r}")
        check(self.max_len is None or (is_int(self.max_len) and self.max_len >= 1), f"max_len must be None or >= 1, got {self.max_len!r}")
        check(self.head in ("auto", "linear", "mlp"), f"head must be 'auto', 'linear' or 'mlp', got {self.head!r}")
        check(not (self.head == "mlp" and self.hidden < 1), "head='mlp' needs hidden >= 1")
        check(self.head_c is None or (isinstance(self.head_c, (int, float)) and math.isfinite(self.head_c)
                                      and self.head_c > 0), f"head_c must be None or > 0, got {self.head_c!r}")
        check(is_int(self.inner_cv) and self.inner_cv >= 2, f"inner_cv must be an integer >= 2, got {self.inner_cv!r}")
        check(is_int(self.cv) and (self.cv == 0 or self.cv >= 2), f"cv must be 0 (none) or >= 2 folds, got {self.cv!r}")
        check(is_int(self.bootstrap) and self.bootstrap >= 0, f"bootstrap must be >= 0, got {self.bootstrap!r}")
        check(not (self.test_data is not None and self.split_column is not None),
              "give a test set or a split column, not both")
        check(self.text_encoder is None or (isinstance(self.text_encoder, str) and self.text_encoder != ""),
              f"text_encoder must be None, 'hashing', 'minilm' or a model folder path, got {self.text_encoder!r}")
        check(is_int(self.encoder_warmup_steps) and self.encoder_warmup_steps >= 0, "encoder_warmup_steps must be >= 0")
        check(isinstance(self.encoder_grad_clip, (int, float)) and math.isfinite(self.encoder_grad_clip)
              and self.encoder_grad_clip >= 0, f"encoder_grad_clip must be >= 0, got {self.encoder_grad_clip!r}")
        check(self.posts_with_grad is None or (is_int(self.posts_with_grad) and self.posts_with_grad >= 1),
              f"posts_with_grad must be None or >= 1, got {self.posts_with_grad!r}")
        check(is_int(self.micro_batch_posts) and self.micro_batch_posts >= 1, "micro_batch_posts must be >= 1")
        check(is_int(self.max_tokens) and self.max_tokens >= 1, f"max_tokens must be >= 1, got {self.max_tokens!r}")
        check(self.embedding_cache is None or isinstance(self.embedding_cache, str), "embedding_cache must be None or a path")
        check(self.encoder_backend in (None, "torch", "onnx", "onnx-int8"),
              f"encoder_backend must be None, 'torch', 'onnx' or 'onnx-int8', got {self.encoder_backend!r}")
        check(self.encoder_backend is None or self.text_encoder is None,
              "encoder_backend embeds the texts before training; with text_encoder the model's own encoder does")
        check(self.split_column is None or (isinstance(self.split_column, str) and self.split_column != ""),
              f"split_column must be None or a column name, got {self.split_column!r}")
        check(self.group_column is None or (isinstance(self.group_column, str) and self.group_column != ""),
              f"group_column must be None or a column name, got {self.group_column!r}")
        if isinstance(self.features, Mapping):
            object.__setattr__(self, "features", TemporalFeaturesConfig.from_dict(dict(self.features)))
        check(isinstance(self.features, TemporalFeaturesConfig), "features must be a TemporalFeaturesConfig")

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "features"}
        d["features"] = self.features.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        from cvx_core.data.strict import strict_fields  # unknown keys, types: one line naming the field

        return cls(**strict_fields(cls, d))


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
