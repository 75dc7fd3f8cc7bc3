"""Compare page: a trained run's learned DimensionAttention weights beside the analytic drift
attribution of its held-out users, with the statistics and graded verdict of
cvx_core.learn.compare (the numbers `python -m cvx_core compare` prints), and planted truth if known."""

import pandas as pd
import streamlit as st

from cvx_app import compare_view, escape, exports, figures, jobs, session, workspace
from cvx_app import run_store

name = session.bootstrap("Compare")
st.title("Compare")
st.caption("A trained run's learned DimensionAttention weights (alpha) beside the analytic drift "
           "attribution of the users it did not train on: does the model weight the dimensions the analytics single out?")

views = run_store.list_run_views(running={n for n, j in jobs.training_jobs().items() if j.status == "running"})
runs = [v for v in views if v.has_weights and v.status not in (run_store.DAMAGED, run_store.RUNNING)]
damaged = [v for v in views if v.status == run_store.DAMAGED]
if damaged:
    st.warning(f"{len(damaged)} damaged run(s) are not offered here (see the Train page): "
               + escape.escape_markdown(", ".join(v.name for v in damaged)))
if not runs:
    st.info("No trained run yet. Train one on the Train page first.")
    st.page_link("pages/3_train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

dataset_of = {r.name: workspace.run_dataset(r.path) for r in runs}
show_all = st.toggle("Show runs of all datasets", key="compare_all_runs",
                     help=f"Off: only the runs trained on the current dataset ({name}).")
offered, note = compare_view.runs_for_dataset(runs, dataset_of, name, show_all=show_all)
if note:
    st.caption(escape.escape_markdown(note))
names = [r.name for r in offered]
by_name = {r.name: r for r in offered}
# the run to show: the link's ?run=, else the run last shown on Train or here, else the newest
wanted = st.query_params.get("run") or st.session_state.get(run_store.SELECTED_KEY)
if wanted not in names:
    wanted = names[0]
st.session_state["compare_run"] = wanted
st.session_state[run_store.SELECTED_KEY] = wanted
st.query_params["run"] = wanted


def _on_run_change() -> None:
    chosen = st.session_state.get("compare_run")
    if chosen in by_name:
        st.session_state[run_store.SELECTED_KEY] = chosen
        st.query_params["run"] = chosen


def _label(n: str) -> str:
    title = by_name[n].title + ("" if by_name[n].title == n else f" ({n})")
    other = dataset_of.get(n)
    return title if other == name else f"{title} · on {other or 'an unknown dataset'}"


c1, c2, c3 = st.columns([2, 1, 1])
run_name = c1.selectbox("Run", names, key="compare_run", on_change=_on_run_change, format_func=_label)
run = by_name.get(run_name, by_name[wanted])
if run.status != run_store.FINISHED:
    st.caption(f"This run is {run.status}: its best checkpoint is compared.")
dataset = dataset_of.get(run.name)
if dataset is None:
    dataset = name
    st.warning("The dataset this run was trained on is not in the workspace any more; "
               "comparing on the current dataset instead.")
ts = session.require_dataset(dataset)
dim = ts.dim
if dim > 5:
    lo, hi = min(5, dim), min(80, dim)
    shown = st.session_state.get("compare_top", min(30, hi))
    st.session_state["compare_top"] = int(min(max(shown, lo), hi))  # another run's D may be smaller
    top_n = c2.slider("Top dimensions shown", min_value=lo, max_value=hi, step=1 if hi - lo < 40 else 5,
                      key="compare_top", help=f"Of D = {dim} dimensions.")
else:
    top_n = dim
    c2.caption(f"All {dim} dimensions are shown.")
order_by = c3.radio("Order by", ["learned alpha", "attribution"], key="compare_order", horizontal=True)
truth = workspace.load_truth(dataset)
planted = list(truth.get("planted_dims", [])) if truth else None

with st.spinner("Loading the run and computing the analytic attribution and the permutation test…"):
    try:
        cmp = compare_view.comparison(run.path, ts, planted)
    except (ValueError, RuntimeError) as exc:  # RunError: weights that do not load; no held-out users
        st.error(escape.escape_markdown(exc))
        st.stop()

kind_text = {"abs_class_difference": f"|mean drift share of label {cmp.positive_class} − that of the other label|",
             "class_spread": "spread (SD) of the class-mean drift shares",
             "mean_shares": "mean drift share over all users"}.get(cmp.attribution_kind, cmp.attribution_kind)
st.caption("Run and dataset:")
st.code(f"run {run.name}  ·  dataset {dataset}  ·  D = {ts.dim}  ·  users: {cmp.users}  ·  "
        f"attribution per dimension: {kind_text}", language=None, wrap_lines=True)
st.info(escape.escape_markdown(cmp.verdict.sentence), icon=":material/insights:")
st.caption(escape.escape_markdown(compare_view.verdict_caption(cmp)))


def _tiles(metrics: list[compare_view.Metric], per_row: int = 4) -> None:
    """Metric tiles, ``per_row`` to a row (narrower tiles cut their labels and values)."""
    for start in range(0, len(metrics), per_row):
        for slot, m in zip(st.columns(per_row), metrics[start:start + per_row]):
            note = {} if m.note is None else {"delta": m.note, "delta_color": "off", "delta_arrow": "off"}
            slot.metric(m.label, m.value, help=m.help, **note)


level = compare_view.Metric("Verdict", cmp.level, "significant" if cmp.significant else "not significant",
                            compare_view.verdict_caption(cmp))
stats_tiles = compare_view.statistic_metrics(cmp)  # Spearman, Pearson, p-value, then the top-k overlaps
_tiles([level, stats_tiles[2], stats_tiles[1], stats_tiles[0]])
_tiles(stats_tiles[3:] + compare_view.planted_metrics(cmp)[:1])
_tiles(compare_view.planted_metrics(cmp)[1:])

# ---- two aligned bar charts over the top dimensions ------------------------------------------
table = pd.DataFrame(cmp.table())
table["planted"] = table["dimension"].isin(planted or [])
key = "alpha" if order_by == "learned alpha" else "attribution"
top = table.sort_values([key, "dimension"], ascending=[False, True]).head(top_n)
bars = figures.attention_bars(top, order_by=order_by)
st.plotly_chart(bars, key="compare_bars")
st.caption(f"The {len(top)} dimensions with the highest {order_by} (of D = {dim}). Both panels share one "
           "x axis, the same dimensions in the same order, and one colour per kind of dimension"
           + (": red bars and ★ are the planted dimensions of the sample data, blue the others."
              if planted else "."))

# ---- scatter of one against the other ----------------------------------------------------------------
scatter = figures.attention_scatter(table, dim=ts.dim, spearman=float("nan") if cmp.spearman is None else cmp.spearman,
                                    planted=bool(planted))
left, right = st.columns([1, 1])
with left:
    st.plotly_chart(scatter, key="compare_scatter")
with right:
    st.markdown("**Top dimensions**")
    columns = ["dimension", "alpha", "attribution", "alpha_rank", "attribution_rank"] + (["planted"] if planted else [])
    st.dataframe(top[columns].rename(columns={"alpha_rank": "rank by alpha", "attribution_rank": "rank by attribution"}),
                 hide_index=True, height=420)

# ---- downloads ----------------------------------------------------------------------------------------
st.markdown("**Download**")
d1, d2, d3, _ = st.columns([1, 1, 1, 3])
d1.download_button("Comparison (CSV)", data=exports.comparison_csv(table if planted else table.drop(columns="planted"),
                                                                    run=run.name),
                   file_name=f"{run.name}-comparison.csv", mime="text/csv", key="compare_dl_csv",
                   on_click="ignore", icon=":material/download:")
with d2:
    exports.png_button(bars, file_name=f"{run.name}-attention-bars.png", key="compare_dl_bars",
                       label="Bars (PNG)")
with d3:
    exports.png_button(scatter, file_name=f"{run.name}-attention-scatter.png", key="compare_dl_scatter",
                       label="Scatter (PNG)")
