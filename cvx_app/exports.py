"""Downloads of the app: a dataset's temporal features (Parquet/CSV), its change points with
their narratives and the posts' words (CSV/JSON), a run's metrics (JSON/CSV), its model
weights (safetensors) and figures (PNG).

Builders return bytes and never touch Streamlit; every CSV goes through
``cvx_app.escape.neutralise_csv`` so no cell runs as a spreadsheet formula. PNG export uses
Plotly's kaleido, which drives a local Chromium: :func:`png_available` says whether it can
run here; without it the charts' own camera button (client side) saves a PNG.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cvx_app.escape import neutralise_csv
from cvx_core.data.trajectory import TrajectorySet

__all__ = [
    "features_frame",
    "features_parquet",
    "features_csv",
    "changepoints_frame",
    "changepoints_csv",
    "changepoints_json",
    "segment_words",
    "metrics_json",
    "metrics_csv",
    "weights_safetensors",
    "comparison_csv",
    "png_available",
    "figure_png",
]


def _csv(frame: pd.DataFrame) -> bytes:
    return neutralise_csv(frame).to_csv(index=False).encode("utf-8")


# ---- features ------------------------------------------------------------------------------
def features_frame(ts: TrajectorySet, config: Any = None) -> pd.DataFrame:
    """One row per user: ``user_id``, ``label`` (nullable), then the SPEC feature vector
    ``[4*D + 5 + 2*S]`` under the names of ``cvx_core.features.analytic.feature_names``
    (the same table as ``python -m cvx_core extract``)."""
    from cvx_core.features.analytic import AnalyticBackend, feature_names

    feats = np.stack([AnalyticBackend.extract_all(tr.embeddings, tr.timestamps, config) for tr in ts])
    names = feature_names(ts.dim, config)
    if len(names) != feats.shape[1]:
        raise RuntimeError(f"{len(names)} feature names for {feats.shape[1]} features")
    frame = pd.DataFrame(feats, columns=names)
    frame.insert(0, "label", pd.array([None if v < 0 else int(v) for v in ts.labels], dtype="Int64"))
    frame.insert(0, "user_id", list(ts.user_ids))
    return frame


def features_parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def features_csv(frame: pd.DataFrame) -> bytes:
    return _csv(frame)


# ---- change points, narratives and words -----------------------------------------------------
_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)


def segment_words(before: Sequence[str], after: Sequence[str], *, k: int = 8) -> tuple[list[str], list[str]]:
    """The words that rose most after a change point and those that fell most: per word, its
    share of the ``after`` posts' words minus its share of the ``before`` posts' words
    (lower-cased, letters only, 3+ letters); ``k`` of each, largest change first."""
    def shares(texts: Sequence[str]) -> dict[str, float]:
        counts = Counter(w for t in texts for w in _WORD.findall(str(t).lower()))
        total = sum(counts.values())
        return {w: c / total for w, c in counts.items()} if total else {}

    a, b = shares(before), shares(after)
    diff = {w: b.get(w, 0.0) - a.get(w, 0.0) for w in set(a) | set(b)}
    rose = sorted((w for w, d in diff.items() if d > 0), key=lambda w: (-diff[w], w))[:k]
    fell = sorted((w for w, d in diff.items() if d < 0), key=lambda w: (diff[w], w))[:k]
    return rose, fell


CHANGEPOINT_COLUMNS = [
    "user_id", "label", "index", "datetime", "day", "posts_before", "posts_after", "severity",
    "severity_label", "jump_norm", "top_dims", "top_shares", "dims_for_pareto", "narrative",
    "text_before", "text_at", "words_rose", "words_fell",
]


def changepoints_frame(ts: TrajectorySet, analysis: Any, *, features_config: Any = None) -> pd.DataFrame:
    """One row per change point of a set analysis (``cvx_core.analysis.batch.SetAnalysis``):
    where it is, how large it is, its plain-text narrative, and, when the dataset has texts,
    the last post before it, the first post after it, and the words that rose and fell
    across it: ``terms_after`` / ``terms_before`` of
    :func:`cvx_core.analysis.explain.explain_changepoints`, the same words as on screen and
    in ``cvx explain`` (stop words removed, c-TF-IDF ranking). ``index`` counts posts from 0."""
    from cvx_core.analysis.explain import explain_changepoints
    from cvx_core.analysis.narrative import narrate_changepoints

    rows: list[dict[str, Any]] = []
    for u in analysis:
        if not u.changepoints.indices:
            continue
        tr = ts[u.user_id]
        narratives = u.narratives or narrate_changepoints(tr, u.changepoints, features_config=features_config)
        words = explain_changepoints(tr, changepoints=u.changepoints).change_points if tr.texts is not None else ()
        for k, n in enumerate(narratives):
            row: dict[str, Any] = {
                "user_id": u.user_id,
                "label": u.label,
                "index": int(n.index),
                "datetime": pd.Timestamp(n.datetime).isoformat(),
                "day": float(n.day),
                "posts_before": int(n.n_before),
                "posts_after": int(n.n_after),
                "severity": float(n.severity) if math.isfinite(n.severity) else None,
                "severity_label": n.severity_label,
                "jump_norm": float(n.jump_norm),
                "top_dims": " ".join(str(int(d)) for d in n.top_dims),
                "top_shares": " ".join(f"{s:.4f}" for s in n.top_shares),
                "dims_for_pareto": int(n.pareto_size),
                "narrative": n.text,
                "text_before": None, "text_at": None, "words_rose": None, "words_fell": None,
            }
            if tr.texts is not None:
                row.update(text_before=tr.texts[n.index - 1], text_at=tr.texts[n.index],
                           words_rose=", ".join(t for t, _ in words[k].terms_after),
                           words_fell=", ".join(t for t, _ in words[k].terms_before))
            rows.append(row)
    return pd.DataFrame(rows, columns=CHANGEPOINT_COLUMNS)


def changepoints_csv(frame: pd.DataFrame) -> bytes:
    return _csv(frame)


def changepoints_json(frame: pd.DataFrame) -> bytes:
    """A JSON array of change-point objects (``null`` where a value is absent)."""
    records = json.loads(frame.to_json(orient="records", force_ascii=False))
    return json.dumps(records, indent=1, ensure_ascii=False).encode("utf-8")


# ---- runs ------------------------------------------------------------------------------------
def metrics_json(metrics: dict[str, Any]) -> bytes:
    return json.dumps(metrics, indent=2, allow_nan=True).encode("utf-8")


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, float, str, bool)) or v is None for v in value) and len(value) <= 64:
            out.append((prefix, json.dumps(list(value))))
        else:
            for i, v in enumerate(value):
                _flatten(f"{prefix}[{i}]", v, out)
    else:
        out.append((prefix, value))


def metrics_csv(metrics: dict[str, Any], *, run: str) -> bytes:
    """The run's metrics as ``run,metric,value`` rows (nested keys joined with ``.``)."""
    flat: list[tuple[str, Any]] = []
    _flatten("", metrics, flat)
    frame = pd.DataFrame({"run": run, "metric": [k for k, _ in flat], "value": [v for _, v in flat]})
    frame["value"] = frame["value"].map(lambda v: v if isinstance(v, str) else json.dumps(v))
    return _csv(frame)


def weights_safetensors(run_dir: Path) -> bytes:
    """The run's best weights (``model.pt``, read with ``weights_only=True``) as safetensors
    bytes; the metadata keeps the run name and its ``config.json`` (model spec included), so
    the file alone says how to rebuild the model."""
    from safetensors.torch import save

    from cvx_core.learn.runs import CONFIG_FILE, load_weights

    state = load_weights(run_dir, device="cpu")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    meta = {"format": "pt", "cvx_run": Path(run_dir).name}
    cfg = Path(run_dir) / CONFIG_FILE
    if cfg.is_file():
        meta["cvx_config"] = cfg.read_text(encoding="utf-8")
    return save(tensors, metadata=meta)


def comparison_csv(table: pd.DataFrame, *, run: str) -> bytes:
    """The Compare page's per-dimension table (dimension, alpha, attribution, ranks, planted)."""
    out = table.copy()
    out.insert(0, "run", run)
    return _csv(out)


# ---- figures ---------------------------------------------------------------------------------
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def png_available() -> tuple[bool, str]:
    """(can PNG be made here, why not): needs the ``kaleido`` package and a Chromium."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False, "PNG export needs the kaleido package (pip install kaleido)"
    if _chromium() is None:
        return False, "PNG export needs Chromium or Chrome on this machine (kaleido drives it)"
    return True, ""


def figure_png(fig: Any, *, width: int = 1100, height: int | None = None, scale: float = 2.0) -> bytes:
    """``fig`` rendered to PNG bytes by kaleido (a few seconds: it starts a headless Chromium)."""
    h = height or int(fig.layout.height or 500)
    return fig.to_image(format="png", width=width, height=h, scale=scale)


# ---- download buttons (the only Streamlit part) -------------------------------------------------
def png_button(fig: Any, *, file_name: str, key: str, label: str = "PNG") -> None:
    """A download button that renders ``fig`` to PNG when clicked (deferred: the page does not
    wait for Chromium); where kaleido or Chromium is missing, a note points to the chart's
    camera button instead."""
    import streamlit as st

    ok, why = png_available()
    if not ok:
        st.caption(f"{why}; the camera icon above each chart saves a PNG from the browser.")
        return
    st.download_button(label, data=lambda: figure_png(fig), file_name=file_name, mime="image/png",
                       key=key, on_click="ignore", icon=":material/image:",
                       help="Rendered by kaleido with a headless Chromium (a few seconds).")
