"""Features that overflow although the posts are finite: one refusal for every path that
computes them (``extract``, the in-memory and streamed feature tables, and training before
any fitting), naming the data, the user, the feature and the time constants to change.

The loader keeps every post finite and of ordinary size (``cvx_core.data.columns``), so a
feature that is not finite comes from a time constant: an extreme ``min_dt`` (or a tiny
``temperature``) divides a step between posts at one instant by almost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cvx_core.features.config import TemporalFeaturesConfig

__all__ = ["feature_overflow_error", "check_finite_features"]


def feature_overflow_error(source: str, user_id: str, feature: str, config: TemporalFeaturesConfig | None = None,
                           *, dtype: str | None = None) -> ValueError:
    """The refusal of user ``user_id``'s ``feature`` (not finite) in data ``source``; ``dtype``
    (e.g. ``"float32"``) names the precision the features were computed in, when it matters."""
    cfg = config or TemporalFeaturesConfig()
    tail = "" if dtype in (None, "float64") else (
        f" (training computes the features in {dtype}; feature_dtype='float64' holds larger values)")
    return ValueError(
        f"{source}: user {user_id!r}: feature {feature!r} is not finite although the posts are; a time "
        f"constant of the features config is too extreme for this data (min_dt {cfg.min_dt}, temperature "
        f"{cfg.temperature} in {cfg.time_unit}): raise min_dt{tail}"
    )


def check_finite_features(feats: np.ndarray, user_ids: Sequence[str], names: Sequence[str],
                          config: TemporalFeaturesConfig | None = None, *, source: str,
                          dtype: str | None = None) -> None:
    """Raise :func:`feature_overflow_error` for the first user (row of ``feats`` ``[N, F]``,
    in the order of ``user_ids`` ``[N]``) with a feature that is not finite; ``names`` are the
    columns' names (a column past them is named by its position)."""
    bad = ~np.isfinite(np.asarray(feats))
    if not bad.any():
        return
    i, j = (int(x[0]) for x in np.nonzero(bad))
    name = names[j] if j < len(names) else f"input {j}"
    raise feature_overflow_error(source, str(user_ids[i]), name, config, dtype=dtype)
