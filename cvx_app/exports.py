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
import shutil
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
    "metrics_json",
    "metrics_csv",
    "weights_safetensors",
    "comparison_csv",
    "png_available",
    "export_layout",
    "figure_image",
    "figure_png",
    "posts_frame",
    "posts_parquet",
    "posts_csv",
    "validation_report",
    "validation_report_json",
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


EXPORT_WIDTH = 1000  # px at scale 1 (PNG is rendered at scale 2)
MAX_ASPECT = 1.8  # width / height of an exported figure, at most


def export_layout(fig: Any, *, width: int | None = None, height: int | None = None) -> tuple[Any, int, int]:
    """A copy of ``fig`` laid out for a file: the screen's colours and labels (traces keep
    their explicit colours; the white template stands in for the app theme), margins that
    fit every tick and title (automargin), a readable font, and a sensible size: the
    screen height, with the width at most ``MAX_ASPECT`` times it. Returns
    ``(figure, width, height)``."""
    import plotly.graph_objects as go

    out = go.Figure(fig)
    h = int(height or out.layout.height or 500)
    w = int(width or min(EXPORT_WIDTH, round(h * MAX_ASPECT)))
    out.update_layout(template="plotly_white", font=dict(size=13), margin=dict(l=20, r=20, t=70, b=20),
                      paper_bgcolor="white", plot_bgcolor="white", width=w, height=h)
    out.update_xaxes(automargin=True, title_standoff=8)
    out.update_yaxes(automargin=True, title_standoff=8)
    return out, w, h


IMAGE_FORMATS = {"png": "image/png", "svg": "image/svg+xml"}


def figure_image(fig: Any, fmt: str = "png", *, width: int | None = None, height: int | None = None,
                 scale: float = 2.0) -> bytes:
    """``fig`` as PNG or SVG bytes, through :func:`export_layout` (one look for both formats),
    rendered by kaleido (a few seconds: it drives a headless Chromium)."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image format {fmt!r}: expected one of {', '.join(IMAGE_FORMATS)}")
    out, w, h = export_layout(fig, width=width, height=height)
    return out.to_image(format=fmt, width=w, height=h, scale=scale if fmt == "png" else 1)


def figure_png(fig: Any, *, width: int | None = None, height: int | None = None, scale: float = 2.0) -> bytes:
    """``fig`` as PNG bytes (:func:`figure_image`)."""
    return figure_image(fig, "png", width=width, height=height, scale=scale)


# ---- datasets: posts tables and the validation report -----------------------------------------
def posts_frame(ts: TrajectorySet, user_ids: Sequence[str] | None = None, *, wide: bool = False) -> pd.DataFrame:
    """One row per post of ``user_ids`` (default: every user), in the upload format the
    loader reads back: ``user_id``, ``timestamp`` (UTC), ``label`` (nullable), ``text`` when
    the data has texts, and the embedding as a list column ``embedding`` or, with ``wide``,
    as columns ``e0 … e{D-1}`` (for CSV)."""
    users = list(ts.user_ids if user_ids is None else user_ids)
    parts = []
    for uid in users:
        tr = ts[uid]
        part = pd.DataFrame({"user_id": tr.user_id, "timestamp": pd.to_datetime(tr.datetimes, utc=True)})
        part["label"] = pd.array([tr.label] * tr.n_posts, dtype="Int64")
        if ts.has_text:
            part["text"] = list(tr.texts) if tr.texts is not None else None
        emb = np.asarray(tr.embeddings, dtype=np.float32)
        if wide:
            part = pd.concat([part, pd.DataFrame(emb, columns=[f"e{d}" for d in range(ts.dim)])], axis=1)
        else:
            part["embedding"] = list(emb)
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=["user_id", "timestamp", "label", "embedding"])
    return pd.concat(parts, ignore_index=True)


def posts_parquet(ts: TrajectorySet, user_ids: Sequence[str] | None = None) -> bytes:
    buf = io.BytesIO()
    posts_frame(ts, user_ids).to_parquet(buf, index=False)
    return buf.getvalue()


def posts_csv(ts: TrajectorySet, user_ids: Sequence[str] | None = None) -> bytes:
    return _csv(posts_frame(ts, user_ids, wide=True))


def validation_report(ts: TrajectorySet, *, dataset: str, source: str) -> dict[str, Any]:
    """What validating ``dataset`` found, as a JSON-ready dict: the file, the shape (users,
    posts, D, time span, posts per user), labels (per class and unlabelled), texts and
    metadata columns, and each check the loader passed or the warnings that apply."""
    summary = ts.summary()
    labels = np.asarray(ts.labels)
    lengths = np.asarray(ts.lengths)
    unlabelled = int((labels < 0).sum())
    warnings = []
    if unlabelled:
        warnings.append(f"{unlabelled} of {len(ts)} users have no label: training leaves them out")
    short = int((lengths < 3).sum())
    if short:
        warnings.append(f"{short} users have fewer than 3 posts: too short for change points")
    if len({int(v) for v in labels[labels >= 0]}) < 2:
        warnings.append("fewer than two classes among the labelled users: the dataset cannot be trained on")
    meta = getattr(ts, "metadata", None)
    return {
        "dataset": dataset,
        "source": source,
        "users": len(ts),
        "posts": int(ts.n_posts),
        "dimension": int(ts.dim),
        "first_post": pd.Timestamp(summary.start).isoformat(),
        "last_post": pd.Timestamp(summary.end).isoformat(),
        "posts_per_user": {"min": int(lengths.min()), "median": float(np.median(lengths)), "max": int(lengths.max())},
        "users_per_label": {str(k): int(v) for k, v in summary.label_counts.items()},
        "unlabelled_users": unlabelled,
        "has_text": bool(ts.has_text),
        "metadata_columns": [str(c) for c in meta.columns] if isinstance(meta, pd.DataFrame) else [],
        "checks_passed": [
            "every row has a user id, a valid timestamp and an embedding of the same dimension",
            "every embedding value is finite",
            "labels are integer class indices or empty",
            "each user's posts are in time order (the loader sorts them stably by time)",
        ],
        "warnings": warnings,
    }


def validation_report_json(report: dict[str, Any]) -> bytes:
    return json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8")


# ---- download buttons (the only Streamlit part) -------------------------------------------------
def image_buttons(fig: Any, *, file_stem: str, key: str, label: str = "Figure", stacked: bool = False) -> None:
    """Two download buttons, PNG and SVG (side by side, or one above the other with
    ``stacked`` for a narrow column), that render ``fig`` through :func:`figure_image` when
    clicked (deferred: the page does not wait for Chromium); where kaleido or Chromium is
    missing, a note points to the chart's camera button instead."""
    import streamlit as st

    ok, why = png_available()
    if not ok:
        st.caption(f"{why}; the camera icon above each chart saves a PNG from the browser.")
        return
    cols = (st.container(), st.container()) if stacked else st.columns(2)
    for col, fmt in zip(cols, IMAGE_FORMATS):
        col.download_button(f"{label} ({fmt.upper()})", data=lambda f=fmt: figure_image(fig, f),
                            file_name=f"{file_stem}.{fmt}", mime=IMAGE_FORMATS[fmt], key=f"{key}_{fmt}",
                            on_click="ignore", icon=":material/image:",
                            help="Rendered by kaleido with a headless Chromium (a few seconds).")


def png_button(fig: Any, *, file_name: str, key: str, label: str = "PNG") -> None:
    """A PNG download button (:func:`image_buttons` offers PNG and SVG)."""
    import streamlit as st

    ok, why = png_available()
    if not ok:
        st.caption(f"{why}; the camera icon above each chart saves a PNG from the browser.")
        return
    st.download_button(label, data=lambda: figure_png(fig), file_name=file_name, mime="image/png",
                       key=key, on_click="ignore", icon=":material/image:",
                       help="Rendered by kaleido with a headless Chromium (a few seconds).")
