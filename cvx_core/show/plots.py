"""Plotly figure builders of CVX: pure functions from results to figures (Plotly only, no
Streamlit), used by the app and usable in a notebook: the projection with users' paths and
change points, a user's timeline (with the posts' words), training curves, ROC, confusion
matrix, early detection, and learned attention against the analytic attribution.

User-supplied text (user ids, post words) reaches a figure only HTML-escaped (the
``escape`` argument, or :func:`html.escape` here), never as markup.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "CATEGORY_COLOURS",
    "DIM_COLOUR",
    "EXPLORE_PATH_COLOURS",
    "HALO",
    "HIGHLIGHT_COLOUR",
    "LABEL_COLOURS",
    "MAX_CATEGORIES",
    "PATH_COLOURS",
    "PLANTED_COLOUR",
    "add_forecast_path",
    "attention_bars",
    "attention_scatter",
    "confusion_figure",
    "early_detection_figure",
    "explore_figure",
    "explore_figure_3d",
    "grad_norm_figure",
    "loss_auc_figures",
    "projection_figure",
    "roc_figure",
    "timeline_figure",
    "words_timeline_figure",
]

LABEL_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
PATH_COLOURS = ["#111111", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
_MARGIN = dict(l=10, r=10, t=40, b=10)


# ------------------------------------------------------------------------------------------
# Explore
# ------------------------------------------------------------------------------------------
def projection_figure(
    proj: pd.DataFrame,
    *,
    method: str,
    colour_by: str,
    paths: Sequence[str],
    changepoints: Mapping[str, Sequence[int]],
    escape: Callable[[object], str],
    zoom: bool = False,
) -> go.Figure:
    """The 2-D projection: every post (WebGL), the time-ordered paths of ``paths`` and their
    change points as ✕. ``proj`` is ``cvx_app.cache.projection_frame``'s table."""
    fig = go.Figure()
    hover = "user %{customdata[0]}<br>post %{customdata[1]}<br>%{customdata[2]}<extra></extra>"
    if colour_by == "label":
        for k, lab in enumerate(sorted(proj["label"].unique())):
            part = proj[proj["label"] == lab]
            fig.add_trace(go.Scattergl(
                x=part["x"], y=part["y"], mode="markers", name=f"label {lab}",
                marker=dict(size=5, opacity=0.35, color=LABEL_COLOURS[k % len(LABEL_COLOURS)]),
                customdata=part[["user_id_safe", "post", "when"]].to_numpy(), hovertemplate=hover,
            ))
    else:
        fig.add_trace(go.Scattergl(
            x=proj["x"], y=proj["y"], mode="markers", name="posts",
            marker=dict(size=5, opacity=0.6, color=proj["days_since_start"], colorscale="Viridis",
                        colorbar=dict(title="days since<br>first post")),
            customdata=proj[["user_id_safe", "post", "when"]].to_numpy(), hovertemplate=hover,
        ))
    for k, uid in enumerate(paths):
        part = proj[proj["user_id"] == uid].sort_values("post")
        colour = PATH_COLOURS[k % len(PATH_COLOURS)]
        safe = escape(uid)
        # WebGL traces draw above SVG ones, so the paths are WebGL too (else the cloud hides them)
        fig.add_trace(go.Scattergl(
            x=part["x"], y=part["y"], mode="lines+markers", name=f"path {safe}",
            line=dict(color=colour, width=2), marker=dict(size=5, color=colour),
            hovertemplate=f"user {safe}<br>post %{{text}}<extra></extra>", text=part["post"],
        ))
        cps = [i for i in changepoints.get(uid, ()) if i < len(part)]
        if cps:
            at = part.iloc[cps]
            fig.add_trace(go.Scattergl(
                x=at["x"], y=at["y"], mode="markers", name=f"change points {safe}",
                marker=dict(symbol="x", size=16, color=colour, line=dict(width=1, color="white")),
                hovertemplate=f"change point of {safe}<br>post %{{text}}<extra></extra>", text=at["post"],
            ))
    if zoom:
        drawn = proj[proj["user_id"].isin(paths)]
        pad_x = 0.15 * max(float(np.ptp(drawn["x"])), 1e-6)
        pad_y = 0.15 * max(float(np.ptp(drawn["y"])), 1e-6)
        fig.update_xaxes(range=[drawn["x"].min() - pad_x, drawn["x"].max() + pad_x])
        fig.update_yaxes(range=[drawn["y"].min() - pad_y, drawn["y"].max() + pad_y])
    fig.update_layout(
        height=560, margin=dict(l=10, r=10, t=30, b=10), dragmode="zoom",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
        xaxis_title=f"{method} 1", yaxis_title=f"{method} 2",
    )
    return fig


def timeline_figure(tl: Any) -> go.Figure:
    """One user's timeline over real time: velocity norm, cosine distance, drift and BOCPD
    change probability; PELT change points as dashed lines, silences as grey bands.
    ``tl``: :class:`~cvx_core.show.inputs.TimelineFrames`, or a
    :class:`cvx_core.analysis.batch.UserTimeline` (converted by ``timeline_frames``)."""
    tl = _frames(tl)
    fig = make_subplots(
        rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.075,
        subplot_titles=("velocity norm |u| (per day, log)", "cosine distance between posts",
                        "drift |v_i - v_1|", "BOCPD change probability"),
    )
    fig.add_trace(go.Scatter(x=tl.steps["when"], y=tl.steps["velocity_norm"], mode="lines+markers",
                             name="velocity", marker=dict(size=4)), row=1, col=1)
    fig.add_trace(go.Scatter(x=tl.steps["when"], y=tl.steps["cosine_distance"], mode="lines+markers",
                             name="cosine distance", marker=dict(size=4)), row=2, col=1)
    fig.add_trace(go.Scatter(x=tl.posts["when"], y=tl.posts["drift"], mode="lines+markers",
                             name="drift", marker=dict(size=4)), row=3, col=1)
    fig.add_trace(go.Scatter(x=tl.posts["when"], y=tl.posts["change_probability"], mode="lines+markers",
                             name="BOCPD", marker=dict(size=4)), row=4, col=1)
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], row=4, col=1)
    for start, end in tl.silences:
        fig.add_vrect(x0=start, x1=end, fillcolor="#999999", opacity=0.18, line_width=0, row="all", col=1)
    for _index, when in tl.change_points:
        fig.add_vline(x=when, line=dict(color="#d62728", width=2, dash="dash"), row="all", col=1)
    fig.update_layout(height=640, showlegend=False, margin=_MARGIN)
    return fig


def _frames(tl: Any) -> Any:
    """A timeline as the figures read it: ``UserTimeline`` is converted, frames pass through."""
    if hasattr(tl, "steps"):
        return tl
    from cvx_core.show.inputs import timeline_frames

    return timeline_frames(tl)


# ------------------------------------------------------------------------------------------
# Train
# ------------------------------------------------------------------------------------------
def loss_auc_figures(steps: Sequence[Sequence[float]], epochs: Sequence[Mapping[str, Any]]) -> tuple[go.Figure, go.Figure]:
    """Live curves: training loss per step (with validation loss per epoch), and validation
    ROC AUC per epoch. ``steps`` are ``(step, loss)`` pairs; ``epochs`` dicts with ``epoch``,
    ``val_loss``, ``val_auc``."""
    loss = go.Figure()
    if steps:
        s = np.array(steps, dtype=float)
        loss.add_trace(go.Scatter(x=s[:, 0], y=s[:, 1], mode="lines", name="training loss (step)"))
    if epochs:
        e = pd.DataFrame(epochs)
        per_step = max(1, (steps[-1][0] if steps else 1) / max(1, e["epoch"].max()))
        loss.add_trace(go.Scatter(x=e["epoch"] * per_step, y=e["val_loss"], mode="lines+markers",
                                  name="validation loss (epoch)"))
    loss.update_layout(title="Loss", xaxis_title="step", height=280, margin=_MARGIN,
                       legend=dict(orientation="h", y=-0.3))
    auc = go.Figure()
    if epochs:
        e = pd.DataFrame(epochs)
        auc.add_trace(go.Scatter(x=e["epoch"], y=e["val_auc"], mode="lines+markers", name="validation AUC"))
    auc.update_layout(title="Validation ROC AUC", xaxis_title="epoch", yaxis_range=[0, 1.02], height=280,
                      margin=_MARGIN)
    return loss, auc


def roc_figure(metrics: Mapping[str, Any], curves: Sequence[Any] = ()) -> go.Figure:
    """The test ROC curves of a run: ``curves`` (objects with ``name``, ``fpr``, ``tpr``
    and ``auc``: the binary curve, or one per class, one-vs-rest) with the chance diagonal.
    The title gives the test AUC (macro for more than two classes); without curves it says
    none could be drawn."""
    fig = go.Figure()
    for k, curve in enumerate(curves):
        name = curve.name if len(curves) == 1 else f"{curve.name} (AUC {curve.auc:.3f})"
        fig.add_trace(go.Scatter(x=list(curve.fpr), y=list(curve.tpr), mode="lines", name=name,
                                 line=dict(width=3, color=CATEGORY_COLOURS[k % len(CATEGORY_COLOURS)])))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line=dict(dash="dot", color="#999999")))
    auc = metrics.get("test_auc")
    auc_text = f"{auc:.3f}" if isinstance(auc, (int, float)) and auc == auc else "–"
    multi = isinstance(metrics.get("classes"), list) and len(metrics["classes"]) > 2
    title = f"ROC (test, {'macro ' if multi else ''}AUC {auc_text})"
    if not curves:
        title += "<br><sup>no curve: the run's test users are not in this dataset</sup>"
    fig.update_layout(title=title, xaxis_title="false positive rate", yaxis_title="true positive rate",
                      xaxis_range=[-0.01, 1.01], yaxis_range=[-0.01, 1.02], height=380, margin=_MARGIN,
                      legend=dict(orientation="h", y=-0.22))
    return fig


def confusion_figure(metrics: Mapping[str, Any]) -> go.Figure:
    """The test confusion matrix of a run's ``metrics.json``: rows the true class, columns the
    predicted class, every cell labelled with its count."""
    conf = np.array(metrics["confusion"])
    classes = [str(c) for c in metrics.get("classes", range(conf.shape[0]))]
    fig = go.Figure(go.Heatmap(
        z=conf, x=[f"class {c}" for c in classes], y=[f"class {c}" for c in classes],
        text=conf, texttemplate="%{text}", textfont=dict(size=16), colorscale="Blues", showscale=False,
        hovertemplate="true %{y}<br>predicted %{x}<br>%{z} users<extra></extra>",
    ))
    fig.update_layout(title="Confusion matrix (test users)", height=380, margin=_MARGIN,
                      xaxis=dict(title="predicted", type="category", side="bottom"),
                      yaxis=dict(title="true", type="category", autorange="reversed"))
    return fig


# ------------------------------------------------------------------------------------------
# Compare
# ------------------------------------------------------------------------------------------
DIM_COLOUR, PLANTED_COLOUR = "#1f77b4", "#d62728"  # one meaning in every Compare chart


def attention_bars(top: pd.DataFrame, *, order_by: str) -> go.Figure:
    """Two aligned bar charts over the same dimensions (same x axis, same order): learned
    alpha (bars from 1 = neutral) above, analytic attribution below. Both panels and the
    scatter use the same colours (dimension blue, planted dimension red and starred), with
    one legend. ``top`` has ``dimension``, ``alpha``, ``attribution``, ``planted``."""
    labels = [f"{d}★" if pl else str(d) for d, pl in zip(top["dimension"], top["planted"])]
    planted = np.asarray(top["planted"], dtype=bool)
    x = np.array(labels, dtype=object)
    bars = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                         subplot_titles=("learned attention alpha (bars start at 1 = neutral)",
                                         "analytic drift attribution"))
    groups = [("dimension", ~planted, DIM_COLOUR)]
    if planted.any():
        groups.append(("planted dimension", planted, PLANTED_COLOUR))
    for name, mask, colour in groups:
        alpha = np.asarray(top["alpha"], dtype=float)[mask]
        bars.add_trace(go.Bar(x=x[mask], y=alpha - 1.0, base=1.0, marker_color=colour, name=name,
                              legendgroup=name, customdata=alpha,
                              hovertemplate="dim %{x}<br>alpha %{customdata:.3f}<extra></extra>"), row=1, col=1)
        bars.add_trace(go.Bar(x=x[mask], y=np.asarray(top["attribution"], dtype=float)[mask], marker_color=colour,
                              name=name, legendgroup=name, showlegend=False,
                              hovertemplate="dim %{x}<br>attribution %{y:.4f}<extra></extra>"), row=2, col=1)
    bars.add_hline(y=1.0, line=dict(color="#999999", dash="dot"), row=1, col=1)
    bars.update_xaxes(type="category", categoryorder="array", categoryarray=labels)
    bars.update_xaxes(title_text="dimension (ordered by " + order_by + ")", row=2, col=1)
    bars.update_layout(height=540, showlegend=True, margin=dict(l=10, r=10, t=60, b=10), barmode="overlay",
                       legend=dict(orientation="h", yanchor="bottom", y=1.06, x=0))
    return bars


def attention_scatter(table: pd.DataFrame, *, dim: int, spearman: float, planted: bool) -> go.Figure:
    """Learned alpha against analytic attribution for every dimension; planted dims as stars."""
    scatter = go.Figure()
    rest = table[~table["planted"]]
    scatter.add_trace(go.Scattergl(
        x=rest["attribution"], y=rest["alpha"], mode="markers", name="dimension",
        marker=dict(size=6, color=DIM_COLOUR, opacity=0.6), customdata=rest["dimension"],
        hovertemplate="dim %{customdata}<br>attribution %{x:.4f}<br>alpha %{y:.3f}<extra></extra>",
    ))
    if planted:
        pl = table[table["planted"]]
        scatter.add_trace(go.Scattergl(
            x=pl["attribution"], y=pl["alpha"], mode="markers", name="planted dimension",
            marker=dict(size=10, color=PLANTED_COLOUR, symbol="star"), customdata=pl["dimension"],
            hovertemplate="planted dim %{customdata}<br>attribution %{x:.4f}<br>alpha %{y:.3f}<extra></extra>",
        ))
    rho = f"Spearman {spearman:.2f}" if np.isfinite(spearman) else "Spearman –: flat"
    scatter.update_layout(title=f"alpha vs attribution, all {dim} dimensions ({rho})",
                          xaxis_title="analytic drift attribution", yaxis_title="learned alpha", height=460,
                          margin=_MARGIN, legend=dict(orientation="h", y=-0.2))
    return scatter


# ------------------------------------------------------------------------------------------
# Train: gradient norms and early detection
# ------------------------------------------------------------------------------------------
def grad_norm_figure(grad_norms: Sequence[Sequence[Any]]) -> go.Figure:
    """Gradient norms per step, one line per part (e.g. "model", "encoder"), log scale.
    ``grad_norms`` are ``(step, part, norm)`` triples."""
    fig = go.Figure()
    if grad_norms:
        frame = pd.DataFrame(list(grad_norms), columns=["step", "part", "norm"])
        for part, rows in frame.groupby("part", sort=True):
            fig.add_trace(go.Scatter(x=rows["step"], y=rows["norm"], mode="lines", name=f"{part} gradient norm"))
    fig.update_layout(title="Gradient norm", xaxis_title="step", yaxis_type="log", height=280, margin=_MARGIN,
                      legend=dict(orientation="h", y=-0.3))
    return fig


def early_detection_figure(x: Sequence[float], auc: Sequence[float], *, x_title: str,
                           baseline: Sequence[float] | None = None) -> go.Figure:
    """Early detection: test AUC of a trained model against how much of each user's history it
    has seen (first k posts or first d days), with the baseline's curve when given."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(x), y=list(auc), mode="lines+markers", name="model"))
    if baseline is not None and len(baseline) == len(x):
        fig.add_trace(go.Scatter(x=list(x), y=list(baseline), mode="lines+markers", name="baseline",
                                 line=dict(dash="dash")))
    fig.add_hline(y=0.5, line=dict(color="#999999", dash="dot"))
    fig.update_layout(title="Early detection: test AUC vs history seen", xaxis_title=x_title,
                      yaxis_title="test AUC", yaxis_range=[0, 1.02], height=360, margin=_MARGIN,
                      legend=dict(orientation="h", y=-0.25))
    return fig


# ------------------------------------------------------------------------------------------
# Explore: colour by anything, a time window, search highlights, posts' words on hover
# ------------------------------------------------------------------------------------------
# paths are drawn over a dark halo, so they read on the light and the dark theme and over any
# colour of the cloud; the open user's path is white on its halo
EXPLORE_PATH_COLOURS = ["#ffffff", "#ff7f0e", "#17becf", "#bcbd22", "#e377c2", "#9467bd", "#2ca02c", "#8c564b"]
HALO = "#111111"
CATEGORY_COLOURS = LABEL_COLOURS + ["#17becf", "#bcbd22", "#e377c2", "#7f7f7f", "#aec7e8", "#98df8a"]
MAX_CATEGORIES = 12
HIGHLIGHT_COLOUR = "#e377c2"
_EXPLORE_HOVER = "user %{customdata[0]}<br>post %{customdata[1]} · %{customdata[2]}<br>%{customdata[3]}<extra></extra>"
_EXPLORE_CUSTOM = ["user_id_safe", "post", "when", "words"]


def _category_codes(values: pd.Series) -> tuple[pd.Series, list[str]]:
    """Values as category names (text), the most frequent first; beyond ``MAX_CATEGORIES - 1``
    categories the rest become ``"other"``; missing values become ``"none"``."""
    names = values.map(lambda v: "none" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    counts = names.value_counts(sort=True)
    if len(counts) > MAX_CATEGORIES:
        keep = set(counts.index[: MAX_CATEGORIES - 1])
        names = names.where(names.isin(keep), "other")
    order = sorted(names.unique(), key=lambda n: (n in ("other", "none"), n))
    return names, order


def explore_figure(
    proj: pd.DataFrame,
    *,
    method: str,
    colour: pd.Series | None,
    colour_title: str,
    categorical: bool,
    paths: Sequence[str],
    changepoints: Mapping[str, Sequence[int]],
    escape: Callable[[object], str],
    window: tuple[float, float] | None = None,
    highlight: Sequence[str] = (),
    zoom: bool = False,
    trust: float | None = None,
) -> go.Figure:
    """The Explore cloud: every post (WebGL), coloured by ``colour`` (one value per row of
    ``proj``: categories as one trace each, numbers on a colour scale; ``None`` colours by
    label). Hover shows the user, post, date and the post's first words (``proj["words"]``,
    already escaped).

    ``window`` (days since the first post, inclusive) keeps full colour for the posts inside
    it and greys the rest; the ``paths`` (time-ordered, with change points as ✕) are drawn up
    to the window's end, the last post inside it enlarged, so moving the window animates
    them. ``highlight`` users get a ring on each post (search results). ``proj`` is
    ``cvx_app.projection_jobs.projection_frame``'s table."""
    fig = go.Figure()
    inside = np.ones(len(proj), dtype=bool)
    if window is not None:
        days = proj["days_since_start"].to_numpy()
        inside = (days >= window[0]) & (days <= window[1])
        out = proj[~inside]
        if len(out):
            fig.add_trace(_post_markers(out, "outside the time window", dict(size=4, opacity=0.12, color="#9e9e9e")))
    if colour is None:
        values, categorical, colour_title = proj["label"], True, "label"
    else:
        values = pd.Series(np.asarray(colour, dtype=object), index=proj.index)
    _add_coloured_posts(fig, proj[inside], values[inside], title=colour_title, categorical=categorical, escape=escape)
    if len(highlight):
        part = proj[proj["user_id"].isin(list(highlight))]
        fig.add_trace(_post_markers(part, f"search: {len(highlight)} user(s)",
                                    dict(size=13, symbol="circle-open", color=HIGHLIGHT_COLOUR, line=dict(width=2))))
    end = None if window is None else window[1]
    for k, uid in enumerate(paths):
        part = proj[proj["user_id"] == uid].sort_values("post")
        if end is not None:
            part = part[part["days_since_start"] <= end]
        if len(part):
            _add_path(fig, part, k=k, label=escape(uid), moving=window is not None,
                      changepoints=[i for i in changepoints.get(uid, ()) if i < len(part)])
    if zoom and len(paths):
        drawn = proj[proj["user_id"].isin(list(paths))]
        pad_x = 0.15 * max(float(np.ptp(drawn["x"])), 1e-6)
        pad_y = 0.15 * max(float(np.ptp(drawn["y"])), 1e-6)
        fig.update_xaxes(range=[drawn["x"].min() - pad_x, drawn["x"].max() + pad_x])
        fig.update_yaxes(range=[drawn["y"].min() - pad_y, drawn["y"].max() + pad_y])
    title = f"{method} of {len(proj):,} posts"
    if trust is not None and np.isfinite(trust):
        title += f" · trustworthiness {trust:.2f}"
    fig.update_layout(
        title=dict(text=title, x=0, font=dict(size=14)),
        height=600, margin=dict(l=10, r=10, t=70, b=10), dragmode="zoom", uirevision=method,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
        xaxis_title=f"{method} 1", yaxis_title=f"{method} 2",
    )
    return fig


def _post_markers(part: pd.DataFrame, name: str, marker: dict[str, Any], **kw: Any) -> go.Scattergl:
    """One WebGL marker trace of the posts ``part`` with the Explore hover."""
    return go.Scattergl(x=part["x"], y=part["y"], mode="markers", name=name, marker=marker,
                        customdata=part[_EXPLORE_CUSTOM].to_numpy(), hovertemplate=_EXPLORE_HOVER, **kw)


def _add_coloured_posts(fig: go.Figure, shown: pd.DataFrame, values: pd.Series, *, title: str, categorical: bool,
                        escape: Callable[[object], str]) -> None:
    """The posts inside the window: one trace per category, or one on a colour scale (posts
    without a number grey)."""
    if categorical:
        names, order = _category_codes(values)
        for k, cat in enumerate(order):
            fig.add_trace(_post_markers(shown[(names == cat).to_numpy()], f"{escape(title)} {escape(cat)}",
                                        dict(size=5, opacity=0.45, color=CATEGORY_COLOURS[k % len(CATEGORY_COLOURS)])))
        return
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(numbers)
    if (~ok).any():
        fig.add_trace(_post_markers(shown[~ok], f"{escape(title)}: no value", dict(size=5, opacity=0.35, color="#9e9e9e")))
    fig.add_trace(_post_markers(shown[ok], escape(title), dict(
        size=5, opacity=0.6, color=numbers[ok], colorscale="Viridis", showscale=True,
        colorbar=dict(title=dict(text=escape(title), side="right"), thickness=12))))


def _add_path(fig: go.Figure, part: pd.DataFrame, *, k: int, label: str, moving: bool,
              changepoints: Sequence[int]) -> None:
    """User ``k``'s path over its posts ``part`` (time order, ``label`` escaped): a halo, the
    line, start/end markers for the open user (``k == 0``), the current post while the time
    window moves, and its change points as ✕."""
    colour_k = EXPLORE_PATH_COLOURS[k % len(EXPLORE_PATH_COLOURS)]
    fig.add_trace(go.Scattergl(
        x=part["x"], y=part["y"], mode="lines", name=f"halo {label}", showlegend=False,
        line=dict(color=HALO, width=4), hoverinfo="skip",
    ))
    fig.add_trace(go.Scattergl(
        x=part["x"], y=part["y"], mode="lines+markers", name=f"path {label}",
        line=dict(color=colour_k, width=2.5), marker=dict(size=6, color=colour_k, line=dict(width=1, color=HALO)),
        customdata=part[_EXPLORE_CUSTOM].to_numpy(), hovertemplate=_EXPLORE_HOVER,
    ))
    if k == 0 and len(part) > 1:  # the open user's path: where it starts and where it ends
        ends = part.iloc[[0, -1]]
        fig.add_trace(go.Scattergl(
            x=ends["x"], y=ends["y"], mode="markers+text", name=f"start / end {label}",
            text=["start", "end"], textposition="top center", textfont=dict(size=12, color=colour_k),
            marker=dict(symbol=["square", "diamond"], size=13, color=colour_k, line=dict(width=2, color=HALO)),
            customdata=ends[_EXPLORE_CUSTOM].to_numpy(), hovertemplate=_EXPLORE_HOVER,
        ))
    if moving:  # where the path has got to
        fig.add_trace(_post_markers(part.iloc[[-1]], f"now {label}",
                                    dict(size=15, color=colour_k, line=dict(width=2, color=HALO)), showlegend=False))
    if changepoints:
        at = part.iloc[list(changepoints)]
        fig.add_trace(go.Scattergl(
            x=at["x"], y=at["y"], mode="markers", name=f"change points {label}",
            marker=dict(symbol="x", size=17, color=colour_k, line=dict(width=1.5, color=HALO)),
            customdata=at[_EXPLORE_CUSTOM].to_numpy(),
            hovertemplate="change point<br>" + _EXPLORE_HOVER,
        ))


def explore_figure_3d(proj: pd.DataFrame, *, paths: Sequence[str], changepoints: Mapping[str, Sequence[int]],
                      explained: float | None = None) -> go.Figure:
    """The Explore cloud in 3-D: every post at ``proj``'s ``x, y, z`` (e.g. the first three
    principal components), coloured by label, the ``paths`` joined in time order with
    change points as ✕ and the first path's start and end marked. ``proj`` carries the
    columns of :func:`explore_figure`'s table plus ``z`` (user ids and words already
    escaped in ``user_id_safe`` and ``words``)."""
    fig = go.Figure()
    names, order = _category_codes(proj["label"])
    hover = "user %{customdata[0]}<br>post %{customdata[1]} · %{customdata[2]}<br>%{customdata[3]}<extra></extra>"
    for k, cat in enumerate(order):
        part = proj[(names == cat).to_numpy()]
        fig.add_trace(go.Scatter3d(
            x=part["x"], y=part["y"], z=part["z"], mode="markers", name=f"label {cat}",
            marker=dict(size=2.5, opacity=0.5, color=CATEGORY_COLOURS[k % len(CATEGORY_COLOURS)]),
            customdata=part[_EXPLORE_CUSTOM].to_numpy(), hovertemplate=hover,
        ))
    for k, uid in enumerate(paths):
        part = proj[proj["user_id"] == uid].sort_values("post")
        if not len(part):
            continue
        colour_k = PATH_COLOURS[k % len(PATH_COLOURS)] if k else "#111111"
        safe = part["user_id_safe"].iloc[0]
        fig.add_trace(go.Scatter3d(
            x=part["x"], y=part["y"], z=part["z"], mode="lines+markers", name=f"path {safe}",
            line=dict(color=colour_k, width=5), marker=dict(size=3, color=colour_k),
            customdata=part[_EXPLORE_CUSTOM].to_numpy(), hovertemplate=hover,
        ))
        cps = [i for i in changepoints.get(uid, ()) if i < len(part)]
        if cps:
            at = part.iloc[cps]
            fig.add_trace(go.Scatter3d(x=at["x"], y=at["y"], z=at["z"], mode="markers", name=f"change points {safe}",
                                       marker=dict(symbol="x", size=7, color="#d62728"),
                                       customdata=at[_EXPLORE_CUSTOM].to_numpy(), hovertemplate=hover))
        if k == 0 and len(part) > 1:
            ends = part.iloc[[0, -1]]
            fig.add_trace(go.Scatter3d(x=ends["x"], y=ends["y"], z=ends["z"], mode="markers+text",
                                       name=f"start / end {safe}", text=["start", "end"],
                                       marker=dict(symbol=["square", "diamond"], size=6, color=colour_k),
                                       customdata=ends[_EXPLORE_CUSTOM].to_numpy(), hovertemplate=hover))
    title = f"PCA 3-D of {len(proj):,} posts"
    if explained is not None and np.isfinite(explained):
        title += f" · {explained:.0%} of the variance"
    fig.update_layout(title=dict(text=title, x=0, font=dict(size=14)), height=600,
                      margin=dict(l=0, r=0, t=70, b=0), uirevision="pca3d",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
                      scene=dict(xaxis_title="PC 1", yaxis_title="PC 2", zaxis_title="PC 3"))
    return fig


def words_timeline_figure(tl: Any, words: Sequence[str], cp_terms: Mapping[int, Sequence[str]] | None = None) -> go.Figure:
    """:func:`timeline_figure` with each post's first words (``words``, one per post,
    already escaped) in the hover of the per-post panels, and at each change point
    (``cp_terms``: first post index -> distinctive terms after it, raw) a label with
    those terms, escaped here."""
    tl = _frames(tl)
    fig = timeline_figure(tl)
    words = list(words)
    if len(words) == tl.n_posts:
        for trace in fig.data:
            if trace.name in ("drift", "BOCPD"):
                trace.customdata = np.array(words, dtype=object)
                trace.hovertemplate = "%{x}<br>" + trace.name + " %{y:.3f}<br>%{customdata}<extra></extra>"
        steps = words[1:]
        for trace in fig.data:
            if trace.name in ("velocity", "cosine distance"):
                trace.customdata = np.array(steps, dtype=object)
                trace.hovertemplate = "%{x}<br>" + trace.name + " %{y:.3g}<br>%{customdata}<extra></extra>"
    from html import escape as escape_hover

    for index, when in tl.change_points:
        terms = list((cp_terms or {}).get(int(index), ()))[:4]
        if terms:
            fig.add_annotation(  # inside the drift panel, right of the change point's line
                x=when, y=0.02, xref="x3", yref="y3 domain", xanchor="left", yanchor="bottom", showarrow=False,
                text=escape_hover("→ " + ", ".join(terms)), font=dict(size=11, color="#d62728"),
                bgcolor="rgba(128, 128, 128, 0.12)",
            )
    return fig


def add_forecast_path(fig: go.Figure, start_xy: Sequence[float], path_xy: np.ndarray, days: Sequence[float],
                      *, user_label: str) -> go.Figure:
    """Draw a forecast continuation on the Explore cloud: a dashed path from the user's last
    post ``start_xy`` through ``path_xy`` ``[S, 2]`` (``days`` after the last post, for the
    hover). ``user_label`` must already be escaped for hover text."""
    xs = [float(start_xy[0]), *map(float, path_xy[:, 0])]
    ys = [float(start_xy[1]), *map(float, path_xy[:, 1])]
    hover = ["last post"] + [f"forecast +{d:.1f} days" for d in days]
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="lines+markers", name=f"forecast: {user_label}",
        line={"dash": "dash", "width": 2, "color": "#d62728"}, marker={"size": 6, "symbol": "circle-open"},
        hovertext=hover, hoverinfo="text",
    ))
    return fig
