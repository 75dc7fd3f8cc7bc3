"""The Train page's view of one finished run, drawn: score tiles beside the baseline with the
small-data warnings, the caption, time scales, head choice and verdict, cross-validation,
ROC / confusion / validation-AUC figures, early detection and eRisk, and the downloads of the
run and of the dataset's features and change points.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from cvx_app import cache, escape, exports, figures, run_results, run_store, sensitivity, workspace
from cvx_core.data.trajectory import TrajectorySet

num = run_results.number_text


def _tiles(metrics: dict[str, Any], run: run_store.RunView) -> None:
    warnings = run_results.run_warnings(metrics)
    ci_text = run_results.auc_interval_text(metrics)
    m1, m2, m3, m4, m5 = st.columns(5)
    m1.metric("Test ROC AUC" + (" ⚠" if warnings else ""), num(metrics.get("test_auc")),
              delta=ci_text, delta_color="off", delta_arrow="off",
              help=("; ".join(warnings) if warnings else "ROC AUC on the held-out test users.")
              + (" The interval is a bootstrap over test users." if ci_text else ""))
    test, base = metrics.get("test_auc"), metrics.get("baseline_auc")
    gap = test - base if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (test, base)) else None
    m2.metric("Baseline AUC (mean embedding)", num(metrics.get("baseline_auc")),
              delta=f"{num(gap, '+.3f')} model − baseline", delta_color="off")
    m3.metric("Test F1", num(metrics.get("test_f1")))
    m4.metric("Test accuracy", num(metrics.get("test_accuracy")))
    m5.metric("Epochs (best)", f"{metrics.get('epochs', '?')} ({metrics.get('best_epoch', '?')})")
    for w in warnings:
        st.warning(escape.escape_markdown(w[0].upper() + w[1:]), icon=":material/warning:")
    st.caption(escape.escape_markdown(run_results.run_caption(metrics)))
    scales = run_results.run_scales_text(run.path)
    if scales:
        st.caption(escape.escape_markdown(scales[0]), help=scales[1])
    if metrics.get("head_choice"):  # why this head won, and the verdict when the plain baseline did
        st.caption("Head choice: " + escape.escape_markdown(metrics["head_choice"]))
    if metrics.get("verdict"):
        st.info(escape.escape_markdown(metrics["verdict"]))
    cv = run_results.cv_tables(metrics)
    if cv is not None:
        st.markdown(f"**Cross-validation, {run_results.n_folds(metrics)} folds** (mean ± sd)")
        st.dataframe(cv[0], hide_index=True)
        if cv[1] is not None:
            with st.expander("Per fold"):
                st.dataframe(cv[1], hide_index=True)


def _figures(metrics: dict[str, Any], run: run_store.RunView, name: str, ts: TrajectorySet) -> dict[str, Any]:
    """Draw ROC, confusion with per-class F1, validation AUC, early detection and eRisk; return
    the figures by file stem (None where a run has none)."""
    data = ts if run.dataset == name else run_results.run_data(run.dataset)
    curves = run_results.roc_curves(metrics, run.path, data, stamp=workspace.weights_stamp(run.path))
    confusion = run_store.confusion_of(metrics)
    figs: dict[str, Any] = {
        "roc": figures.roc_figure(metrics, curves),
        "confusion": None if confusion is None else figures.confusion_figure(
            {"confusion": confusion[0], "classes": confusion[1]}),
        "validation-auc": figures.loss_auc_figures([], run.history or [])[1].update_layout(height=380),
        "early": None,
    }
    left, mid, right = st.columns(3)
    left.plotly_chart(figs["roc"], key="train_roc")
    with mid:
        if figs["confusion"] is not None:
            st.plotly_chart(figs["confusion"], key="train_confusion")
        f1_table = run_results.per_class_f1(metrics)
        if f1_table is not None:
            st.caption("F1 per class (one-vs-rest) on the test users")
            st.dataframe(f1_table, hide_index=True, height=38 + 35 * len(f1_table))
    right.plotly_chart(figs["validation-auc"], key="train_hist_auc")
    e1, e2 = st.columns([2, 1])
    curve = run_results.early_curve(metrics)
    if curve is not None:
        figs["early"] = figures.early_detection_figure(curve["xs"], curve["ys"], x_title=curve["x_title"],
                                                       baseline=curve["baseline"])
        e1.plotly_chart(figs["early"], key="train_early")
    with e2:
        st.markdown("**Early risk (eRisk)**")
        values, why_none = run_results.early_risk(metrics)
        for label, value, hint in values:
            st.metric(label, num(value), help=hint + " Definitions: docs/training.md.")
        if why_none:
            st.caption("No eRisk values: " + escape.escape_markdown(why_none) + ".")
    return figs


def _run_downloads(run: run_store.RunView, figs: dict[str, Any]) -> None:
    metrics = run.metrics or {}
    st.markdown("**Download this run**")
    d = st.columns(3)
    d[0].download_button("Metrics (JSON)", data=exports.metrics_json(metrics), file_name=f"{run.name}-metrics.json",
                         mime="application/json", key="train_dl_metrics_json", on_click="ignore",
                         icon=":material/download:")
    d[1].download_button("Metrics (CSV)", data=exports.metrics_csv(metrics, run=run.name),
                         file_name=f"{run.name}-metrics.csv", mime="text/csv", key="train_dl_metrics_csv",
                         on_click="ignore", icon=":material/download:")
    if run.has_weights:
        run_path = run.path
        d[2].download_button("Weights (safetensors)", data=lambda: exports.weights_safetensors(run_path),
                             file_name=f"{run.name}.safetensors", mime="application/octet-stream",
                             key="train_dl_weights", on_click="ignore", icon=":material/download:",
                             help="The best checkpoint; the file's metadata holds the run's config.json.")
    st.markdown("**Figures of this run** (PNG or SVG, as on screen)")
    labels = {"roc": "ROC", "confusion": "Confusion", "validation-auc": "Validation AUC", "early": "Early"}
    for col, (stem, fig) in zip(st.columns(4), figs.items()):
        if fig is not None:
            with col:
                exports.image_buttons(fig, file_stem=f"{run.name}-{stem}", key=f"train_dl_{stem}", label=labels[stem],
                                      stacked=True)


def dataset_downloads(name: str, ts: TrajectorySet) -> None:
    """The dataset's features (Parquet, CSV) and change points (CSV, JSON) in an expander; the
    change points at the sensitivity chosen on Explore (the library's default before any choice)."""
    rate = sensitivity.current()
    with st.expander(f"Download the dataset's features and change points ({name})", icon=":material/download:"):
        st.caption("Features: one row per user, the SPEC feature vector (as `python -m cvx_core extract`). "
                   f"Change points: one row per PELT change point (sensitivity {sensitivity.rate_text(rate)}, as on "
                   "Explore) with its narrative"
                   + (" and the words that rose and fell across it." if ts.has_text else
                      " (this dataset has no texts, so no words)."))
        f = st.columns(4)
        f[0].download_button("Features (Parquet)", data=lambda: exports.features_parquet(cache.features_frame(ts)),
                             file_name=f"{name}-features.parquet", mime="application/vnd.apache.parquet",
                             key="train_dl_features_parquet", on_click="ignore")
        f[1].download_button("Features (CSV)", data=lambda: exports.features_csv(cache.features_frame(ts)),
                             file_name=f"{name}-features.csv", mime="text/csv", key="train_dl_features_csv",
                             on_click="ignore")
        f[2].download_button("Change points (CSV)",
                             data=lambda: exports.changepoints_csv(cache.changepoints_frame(ts, sensitivity=rate)),
                             file_name=f"{name}-changepoints.csv", mime="text/csv", key="train_dl_cp_csv",
                             on_click="ignore")
        f[3].download_button("Change points (JSON)",
                             data=lambda: exports.changepoints_json(cache.changepoints_frame(ts, sensitivity=rate)),
                             file_name=f"{name}-changepoints.json", mime="application/json",
                             key="train_dl_cp_json", on_click="ignore")


def show_run(run: run_store.RunView, name: str, ts: TrajectorySet) -> None:
    """Everything about a finished ``run`` (metrics present); ``ts`` is dataset ``name``."""
    metrics = run.metrics or {}
    _tiles(metrics, run)
    figs = _figures(metrics, run, name, ts)
    st.page_link("pages/4_compare.py", label="Compare this run's attention with the analytics",
                 icon=":material/compare_arrows:", query_params={"run": run.name})
    _run_downloads(run, figs)
