"""scikit-learn adapters: CVX's temporal features as a transformer and its classifier as an estimator.

- :class:`FeatureTransformer` (``TransformerMixin``; ``TemporalFeatures`` is its deprecated old name): trajectories in, the SPEC feature vector
  ``[N, 4*D + 5 + 2*S]`` out (the analytic path), so the features drop into any
  ``Pipeline`` (e.g. ``make_pipeline(FeatureTransformer(), StandardScaler(), LogisticRegression())``).
- :class:`TemporalClassifier` (``ClassifierMixin``): CVX's trainer (head chosen by
  validation, learnable feature parts) behind ``fit`` / ``predict`` / ``predict_proba``,
  usable in ``Pipeline``, ``cross_val_score`` and ``GridSearchCV``.

Inputs ``X`` (one user per sample):

- a :class:`~cvx_core.data.trajectory.TrajectorySet` (or a list of ``Trajectory``);
- a long ``pandas.DataFrame`` of posts (``user_id``, ``timestamp``, ``embedding`` or
  ``e0, e1, ...``, optional ``label``), validated like a file by ``load_trajectories``;
  users are taken in order of first row;
- a 3-D array ``[N, T, D]`` (equal-length series, one post per time unit) or a 2-D array
  ``[N, T]`` (univariate series, ``D = 1``), the shapes scikit-learn's checks use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.validation import check_is_fitted, validate_data

from cvx_core.data.deprecation import deprecated_names
from cvx_core.data.trajectory import Trajectory, TrajectorySet
from cvx_core.features.config import TemporalFeaturesConfig

__all__ = ["FeatureTransformer", "TemporalClassifier", "as_trajectory_set"]

_EPOCH = np.datetime64("2000-01-01T00:00:00", "us")  # microseconds: no wrap-around after 292 years
_UNIT_US = {"seconds": 10**6, "minutes": 60 * 10**6, "hours": 3600 * 10**6, "days": 86400 * 10**6, "weeks": 7 * 86400 * 10**6}


def _config(features: TemporalFeaturesConfig | dict[str, Any] | None) -> TemporalFeaturesConfig:
    if features is None:
        return TemporalFeaturesConfig()
    if isinstance(features, TemporalFeaturesConfig):
        return features
    return TemporalFeaturesConfig.from_dict(dict(features))


def _is_trajectories(X: Any) -> bool:
    """A TrajectorySet, a DataFrame of posts or a list of Trajectory (not an array of series)."""
    return isinstance(X, (TrajectorySet, pd.DataFrame)) or (
        isinstance(X, Sequence) and len(X) > 0 and all(isinstance(t, Trajectory) for t in X))


def _validated(est: BaseEstimator, X: Any, *, reset: bool) -> Any:
    """Arrays go through scikit-learn's own validation (messages, n_features_in_); sets pass."""
    if _is_trajectories(X):
        return X
    return validate_data(est, X, reset=reset, allow_nd=True, dtype=np.float64)


def _frame_to_set(frame: pd.DataFrame) -> TrajectorySet:
    """A long DataFrame of posts -> TrajectorySet through the loader's parser (as Arrow, no
    file round trip); a column that mixes types is refused naming it."""
    import pyarrow as pa

    from cvx_core.data.parse import parse_posts
    from cvx_core.data.trajectory import TrajectoryError

    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        column = next((str(c) for c in frame.columns if not _arrow_ok(frame[c])), None)
        raise TrajectoryError(
            f"DataFrame: column {column!r} does not hold one type ({str(exc).splitlines()[0]}); expected one type "
            "per column",
            file="DataFrame",
            column=column,
        ) from None
    return parse_posts(table, source="DataFrame").to_set()


def _arrow_ok(series: pd.Series) -> bool:
    import pyarrow as pa

    try:
        pa.Array.from_pandas(series)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False
    return True


def as_trajectory_set(X: Any, y: Any = None, *, time_unit: str = "days") -> TrajectorySet:
    """``X`` (see the module docstring) -> TrajectorySet; ``y [N]`` (integer class indices)
    becomes the labels. Array series get one post per ``time_unit``."""
    if isinstance(X, TrajectorySet):
        ts = X
    elif isinstance(X, pd.DataFrame):
        ts = _frame_to_set(X)
    elif isinstance(X, Sequence) and len(X) and all(isinstance(t, Trajectory) for t in X):
        ts = TrajectorySet(list(X))
    else:
        arr = np.asarray(X)
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"X must be numeric series, a TrajectorySet or a DataFrame of posts, got dtype {arr.dtype}")
        arr = arr.astype(np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1 or arr.shape[2] < 1:
            raise ValueError(f"X must be [N, T] or [N, T, D] with N, T, D >= 1, got shape {np.asarray(X).shape}")
        if not np.isfinite(arr).all():
            raise ValueError("X contains NaN or infinity")
        steps = (np.arange(arr.shape[1], dtype=np.int64) * _UNIT_US[time_unit]).astype("timedelta64[us]")
        ts = TrajectorySet([Trajectory(f"u{i}", arr[i], _EPOCH + steps) for i in range(arr.shape[0])])
    if y is not None:
        yy = np.asarray(y)
        if yy.shape != (len(ts),):
            raise ValueError(f"y must have one label per user: {len(ts)} users, y of shape {yy.shape}")
        if yy.dtype.kind not in "iu" or (yy.dtype.kind == "i" and len(yy) and int(yy.min()) < 0):
            kind = "floats" if yy.dtype.kind == "f" else f"values of type {yy.dtype}"
            raise ValueError(f"y must hold integer class indices >= 0 (the loader's label rule), got {kind}"
                             + (" with a negative value" if yy.dtype.kind == "i" else "")
                             + "; a float such as 1.0 is refused, never rounded (TemporalClassifier takes any labels)")
        ts = TrajectorySet([Trajectory(tr.user_id, tr.embeddings, tr.datetimes, label=int(v), texts=tr.texts)
                            for tr, v in zip(ts, yy)], name=ts.name)
    return ts


class FeatureTransformer(TransformerMixin, BaseEstimator):
    """Trajectories -> the SPEC feature vector ``[N, 4*D + 5 + 2*S]`` (analytic path, float64).

    Args:
        features: a :class:`TemporalFeaturesConfig` or a dict of its fields (None: defaults).
    """

    def __init__(self, features: TemporalFeaturesConfig | dict[str, Any] | None = None) -> None:
        self.features = features

    def fit(self, X: Any, y: Any = None) -> "FeatureTransformer":
        from cvx_core.features.analytic import feature_names

        cfg = _config(self.features)
        ts = as_trajectory_set(_validated(self, X, reset=True), time_unit=cfg.time_unit)
        self.dim_ = ts.dim
        self.feature_names_out_ = np.asarray(feature_names(ts.dim, cfg), dtype=object)
        return self

    def transform(self, X: Any) -> np.ndarray:
        from cvx_core.features.analytic import AnalyticBackend
        from cvx_core.features.finite import check_finite_features

        check_is_fitted(self, "dim_")
        cfg = _config(self.features)
        ts = as_trajectory_set(_validated(self, X, reset=False), time_unit=cfg.time_unit)
        if ts.dim != self.dim_:
            raise ValueError(f"X has D={ts.dim}; this transformer was fitted on D={self.dim_}")
        feats = np.stack([AnalyticBackend.extract_all(tr.embeddings, tr.timestamps, cfg) for tr in ts])
        # an extreme time constant overflows them: extract's refusal, not a NaN further down the pipeline
        check_finite_features(feats, ts.user_ids, self.feature_names_out_, cfg, source=ts.name or "X")
        return feats

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_


class TemporalClassifier(ClassifierMixin, BaseEstimator):
    """CVX's classifier as a scikit-learn estimator (``cvx_core.learn.trainer.Trainer`` inside).

    ``fit`` holds out ``val_fraction`` of the users (stratified) for early stopping and for
    choosing the head, and does only the fit (:meth:`Trainer.fit`: no test metrics, baseline
    evaluation, bootstrap or early detection, so a ``GridSearchCV`` candidate pays for none); any label type works (encoded with ``LabelEncoder``; ``classes_``).
    The parameters are :class:`~cvx_core.learn.config.TrainConfig` fields; ``features`` is a
    :class:`TemporalFeaturesConfig` or a dict of its fields.
    """

    def __init__(
        self,
        *,
        head: str = "auto",
        hidden: int = 64,
        epochs: int = 40,
        patience: int = 10,
        lr: float = 3e-3,
        feature_lr: float = 5e-2,
        head_c: float | None = None,
        batch_size: int = 32,
        val_fraction: float = 0.2,
        mean_inputs: bool = True,
        features: TemporalFeaturesConfig | dict[str, Any] | None = None,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        self.head = head
        self.hidden = hidden
        self.epochs = epochs
        self.patience = patience
        self.lr = lr
        self.feature_lr = feature_lr
        self.head_c = head_c
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.mean_inputs = mean_inputs
        self.features = features
        self.device = device
        self.seed = seed

    def _train_config(self) -> Any:
        from cvx_core.learn.config import TrainConfig

        return TrainConfig(
            head=self.head, hidden=self.hidden, epochs=self.epochs, patience=self.patience, lr=self.lr,
            feature_lr=self.feature_lr, head_c=self.head_c, batch_size=self.batch_size,
            val_fraction=self.val_fraction, mean_inputs=self.mean_inputs, features=_config(self.features),
            device=self.device, seed=self.seed, bootstrap=0,
        )

    def fit(self, X: Any, y: Any = None) -> "TemporalClassifier":
        from cvx_core.learn.splits import Split, validation_split
        from cvx_core.learn.trainer import Trainer

        cfg = self._train_config()
        if y is None:
            ts0 = as_trajectory_set(X, time_unit=cfg.features.time_unit)
            if not ts0.has_labels:
                raise ValueError("TemporalClassifier.fit needs y, or labelled trajectories")
            y = ts0.labels
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D, got shape {y.shape}")
        self._le = LabelEncoder().fit(y)
        self.classes_ = self._le.classes_
        if self.classes_.size < 2:
            raise ValueError("TemporalClassifier needs samples of at least 2 classes; y has only one class")
        ts = as_trajectory_set(_validated(self, X, reset=True), self._le.transform(y), time_unit=cfg.features.time_unit)
        everyone = np.arange(len(ts))
        split = validation_split(ts.labels, everyone, np.array([], dtype=np.int64), val_fraction=cfg.val_fraction,
                                 seed=cfg.seed)
        # the fit alone (no test users: no baseline evaluation, bootstrap or early detection)
        split = Split(train=split.train, val=split.val, test=np.array([], dtype=np.int64))
        result = Trainer(ts, cfg, split=split).fit()
        self.model_ = result.model
        self.head_ = result.head.head if result.head else None
        self.head_choice_ = result.head.reason if result.head else None
        self.dim_ = ts.dim
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        from cvx_core.learn.model import predict_proba

        check_is_fitted(self, "model_")
        ts = as_trajectory_set(_validated(self, X, reset=False), time_unit=_config(self.features).time_unit)
        if ts.dim != self.dim_:
            raise ValueError(f"X has D={ts.dim}; this classifier was fitted on D={self.dim_}")
        return predict_proba(self.model_, ts, device=self.device)

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)  # checks fitted first
        return self.classes_[proba.argmax(axis=1)]


# the old name of FeatureTransformer (a near-twin of TemporalFeaturesConfig and extract_features)
__getattr__ = deprecated_names(__name__, {"TemporalFeatures": ("FeatureTransformer", lambda: FeatureTransformer)})
