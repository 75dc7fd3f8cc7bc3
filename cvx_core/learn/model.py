"""The classifier: ``LearnableFeatures`` then a fixed standardisation and a linear or
MLP head; rebuilding a model from its spec, and class probabilities.

Both heads read the same input (the standardised features ``z``, and ``|z|`` beside them
when ``magnitude_inputs``); the learnable feature parts (attention, scale weights,
change-point temperature) sit before the head and train with either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cvx_core.data.trajectory import TrajectorySet
from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.learn.config import resolve_device
from cvx_core.learn.splits import length_buckets


HEADS = ("linear", "mlp")
NOISE_STD_FRACTION = 1e-5  # a per-dimension feature spreading less than this share of its block's median is constant


class TrajectoryClassifier(nn.Module):
    """Temporal features -> fixed standardisation -> linear or MLP head -> class logits.

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
        head: str | None = None,
        mean_inputs: bool = False,
    ) -> None:
        super().__init__()
        from cvx_core.features.learnable import LearnableFeatures

        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
        self.dim = int(dim)
        self.n_classes = int(n_classes)
        self.feature_dtype = feature_dtype
        self.extractor = LearnableFeatures(dim, config=features)
        if feature_dtype == torch.float64:
            self.extractor.double()
        self.mean_inputs = bool(mean_inputs)
        # the head reads the SPEC vector [F] and, with mean_inputs, each user's mean embedding [D] after it
        n_feat = int(self.extractor.out_dim) + (self.dim if self.mean_inputs else 0)
        self.register_buffer("feature_mean", torch.zeros(n_feat, dtype=torch.float64))
        self.register_buffer("feature_std", torch.ones(n_feat, dtype=torch.float64))
        self.magnitude_inputs = bool(magnitude_inputs)
        n_in = 2 * n_feat if magnitude_inputs else n_feat
        self.n_inputs = n_in
        head = head if head is not None else ("mlp" if hidden > 0 else "linear")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if head == "mlp" and hidden < 1:
            raise ValueError("an MLP head needs hidden >= 1 units")
        self.head_kind = head
        if head == "mlp":
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

    def inputs(self, values: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """What gets standardised: the features ``[B, F]``, then (``mean_inputs``) each user's
        mean embedding over its real posts ``[B, D]`` -> ``[B, F (+ D)]`` in ``feature_dtype``."""
        f = self.features(values, timestamps, lengths)
        if not self.mean_inputs:
            return f
        v = values.to(f.dtype)
        ln = torch.as_tensor(lengths, device=v.device).to(torch.int64).reshape(-1)
        mask = (torch.arange(v.shape[1], device=v.device)[None, :] < ln[:, None]).to(v.dtype)
        mean = (v * mask[..., None]).sum(1) / ln.clamp_min(1).to(v.dtype)[:, None]
        return torch.cat([f, mean], dim=1)

    def normalise(self, feats: torch.Tensor) -> torch.Tensor:
        """``(feats - mean) / std`` with the fixed training statistics, as float32 ``[B, F]``."""
        mean = self.feature_mean.to(feats.dtype)
        std = self.feature_std.to(feats.dtype)
        return ((feats - mean) / std).float()

    def _dimension_blocks(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of the input blocks with one feature per embedding dimension."""
        d = int(self.dim)
        blocks = [(k * d, (k + 1) * d) for k in range(4)] if int(self.extractor.out_dim) >= 4 * d else []
        if self.mean_inputs:
            n = self.out_features
            blocks.append((n - d, n))
        return blocks

    def head_inputs(self, z: torch.Tensor) -> torch.Tensor:
        """What the head reads: ``[z, |z|]`` ``[B, 2F]`` with ``magnitude_inputs``, else ``z``."""
        return torch.cat([z, z.abs()], dim=1) if self.magnitude_inputs else z

    @torch.no_grad()
    def set_linear_head(self, weight: np.ndarray, bias: np.ndarray) -> None:
        """Warm-start the linear head: ``weight [K, n_inputs]``, ``bias [K]`` (e.g. from a
        scikit-learn logistic regression fitted on :meth:`head_inputs`)."""
        if self.head_kind != "linear":
            raise ValueError("set_linear_head needs a linear head")
        lin = self.head[-1]
        w = torch.as_tensor(np.asarray(weight), dtype=lin.weight.dtype, device=lin.weight.device)
        b = torch.as_tensor(np.asarray(bias), dtype=lin.bias.dtype, device=lin.bias.device)
        if tuple(w.shape) != tuple(lin.weight.shape) or tuple(b.shape) != tuple(lin.bias.shape):
            raise ValueError(f"linear head is {tuple(lin.weight.shape)}, got weight {tuple(w.shape)} bias {tuple(b.shape)}")
        lin.weight.copy_(w)
        lin.bias.copy_(b)

    def head_weights(self) -> list[nn.Parameter]:
        """The head's weight matrices (what an L2 penalty acts on; biases excluded)."""
        return [m.weight for m in self.head.modules() if isinstance(m, nn.Linear)]

    def head_logits(self, z: torch.Tensor) -> torch.Tensor:
        z = self.head_inputs(z)
        if self.autocast_head and z.device.type == "cuda":
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                return self.head(z).float()
        return self.head(z)

    def forward(self, values: torch.Tensor, timestamps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.normalise(self.inputs(values, timestamps, lengths)))

    @torch.no_grad()
    def fit_normalisation(self, feats: torch.Tensor) -> None:
        """Set the buffers from training features ``[N, F]``; constant features get std 1.

        A feature whose std is at most ``1e-9 * max(1, |mean|)`` is constant (std 1). In a
        per-dimension block (the four D-blocks of the SPEC vector and the mean embedding), a
        feature whose std is below ``NOISE_STD_FRACTION`` (1e-5) of the block's median std
        belongs to a dead embedding dimension (its spread is rounding noise) and gets the
        block's median std, as if it were a typical live dimension. Dividing it by its own
        std would make noise an input as loud as any real feature, with a gradient millions
        of times too large. all-MiniLM-L6-v2 has such a dimension (319): on the State of the
        Union sample its features spread 2e-7 to 4e-7 of their blocks' medians (the next
        smallest: 0.05), and standardising them made the loss's gradient with respect to
        the embeddings 4e5, almost all of it on dimension 319 (every other dimension: below 0.8).
        """
        f = feats.detach().to(torch.float64)
        mean = f.mean(dim=0)
        std = f.std(dim=0, unbiased=False)
        scale = torch.clamp(mean.abs(), min=1.0)
        spread = torch.where(std > 1e-9 * scale, std, torch.ones_like(std))
        for a, b in self._dimension_blocks():
            median = std[a:b].median()
            # a dead dimension is scaled like its live siblings: its inputs stay ~0 and its
            # gradients no larger than theirs (std 1 would leave them 1/median times larger)
            spread[a:b] = torch.where(std[a:b] < NOISE_STD_FRACTION * median, median, spread[a:b])
        std = spread
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
        head=spec.get("head"),
        mean_inputs=bool(spec.get("mean_inputs", False)),
    )
    if encoder_spec:
        from cvx_core.learn.encoders import TextTrajectoryClassifier, build_text_encoder

        return TextTrajectoryClassifier(build_text_encoder(encoder_spec), clf)
    return clf




def classifier_of(model: nn.Module) -> TrajectoryClassifier:
    """The :class:`TrajectoryClassifier` of a model: itself, or an end-to-end text model's
    ``classifier`` (what reads the features, holds the normalisation and the head)."""
    return getattr(model, "classifier", model)


def _recent_texts(data: TrajectorySet, indices: Sequence[int], lengths: Sequence[int]) -> list[list[str]]:
    """The texts of each user's last ``lengths[k]`` posts (the posts a padded batch kept)."""
    out = []
    for i, n in zip(indices, lengths):
        tr = data.at(int(i))
        out.append(list(tr.texts[tr.n_posts - int(n) :]))
    return out


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
    n_classes = classifier_of(model).n_classes
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
