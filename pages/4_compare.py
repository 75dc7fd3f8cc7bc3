"""Compare page: a trained run's learned DimensionAttention weights beside the analytic
drift attribution, with correlation statistics, the verdict, and planted truth if known."""

import numpy as np
import pandas as pd
import streamlit as st

from cvx_app import cache, escape, exports, figures, jobs, overlap, session, workspace
from cvx_app import runs as runs_mod

name = session.bootstrap("Compare")
st.title("Compare")
st.caption("A trained run's learned DimensionAttention weights (alpha) beside the analytic drift "
           "attribution of the same data: does the model weight the dimensions the analytics single out?")

views = runs_mod.list_run_views(running={n for n, j in jobs.training_jobs().items() if j.status == "running"})
runs = [v for v in views if v.has_weights and v.status not in (runs_mod.DAMAGED, runs_mod.RUNNING)]
damaged = [v for v in views if v.status == runs_mod.DAMAGED]
if damaged:
    st.warning(f"{len(damaged)} damaged run(s) are not offered here (see the Train page): "
               + escape.escape_markdown(", ".join(v.name for v in damaged)))
if not runs:
    st.info("No trained run yet. Train one on the Train page first.")
    st.page_link("pages/3_train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

names = [r.name for r in runs]
by_name = {r.name: r for r in runs}
# the run to show: the link's ?run=, else the run last shown on Train or here, else the newest
wanted = st.query_params.get("run") or st.session_state.get(runs_mod.SELECTED_KEY)
if wanted not in names:
    wanted = names[0]
st.session_state["compare_run"] = wanted
st.session_state[runs_mod.SELECTED_KEY] = wanted
st.query_params["run"] = wanted


def _on_run_change() -> None:
    chosen = st.session_state.get("compare_run")
    if chosen in by_name:
        st.session_state[runs_mod.SELECTED_KEY] = chosen
        st.query_params["run"] = chosen


c1, c2, c3 = st.columns([2, 1, 1])
run_name = c1.selectbox(
    "Run", names, key="compare_run", on_change=_on_run_change,
    format_func=lambda n: by_name[n].title + ("" if by_name[n].title == n else f" ({n})"),
)
run = by_name.get(run_name, by_name[wanted])
if run.status != runs_mod.FINISHED:
    st.caption(f"This run is {run.status}: its best checkpoint is compared.")
dataset = workspace.run_dataset(run.path)
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

with st.spinner("Loading the run and computing the analytic attribution…"):
    try:
        cmp = cache.comparison(run.path, ts, planted)
    except (ValueError, RuntimeError) as exc:  # RunError: weights that do not load
        st.error(escape.escape_markdown(exc))
        st.stop()

kind_text = cache.attribution_description(cmp.attribution_kind, cmp.positive_class)
st.caption("Run and dataset:")
st.code(f"run {run.name}  ·  dataset {dataset}  ·  D = {ts.dim}  ·  attribution per dimension: {kind_text}",
        language=None, wrap_lines=True)
st.info(cmp.verdict, icon=":material/insights:")

def number(x: float, spec: str) -> str:
    """A metric's value, or "–" where it is undefined (NaN: a constant alpha or attribution)."""
    return format(x, spec) if np.isfinite(x) else "–"


m = st.columns(5)
m[0].metric("Spearman ρ", number(cmp.spearman, ".3f"))
m[1].metric("Pearson r", number(cmp.pearson, ".3f"))
m[2].metric("Permutation p-value", number(cmp.p_value, ".3g"),
            help=f"{cmp.n_permutations} permutations; the smallest value possible is {1 / (cmp.n_permutations + 1):.3g}.")
overlaps = overlap.topk_overlaps(cmp.alpha, cmp.attribution)
for slot, ov in zip(m[3:], overlaps):
    if ov.shared is None:
        slot.metric(f"Top-{ov.k} overlap (Jaccard)", "–", delta=f"chance {ov.chance:.2f}", delta_color="off",
                    delta_arrow="off", help="Alpha is constant (the attention never moved from its start), so it "
                    "ranks no dimension and there is no overlap to report.")
        continue
    slot.metric(f"Top-{ov.k} overlap (Jaccard)", f"{ov.jaccard:.2f}",
                delta=f"chance {ov.chance:.2f}", delta_color="off", delta_arrow="off",
                help=f"{ov.shared} of the {ov.k} highest-alpha dimensions are among the {ov.k} with the "
                     f"largest attribution. Two random rankings of D = {dim} would give "
                     f"{ov.chance:.3f} on average.")
if planted:
    p = st.columns(4)
    p[0].metric("Planted dims", len(planted))
    p[1].metric("Spearman(alpha, planted)", number(cmp.planted_spearman, ".3f"),
                help=f"The largest possible value is {cmp.planted_spearman_max:.3f}.")
    p[2].metric("Spearman(attribution, planted)", number(cmp.attribution_planted_spearman, ".3f"))
    k0 = len(planted)
    p[3].metric(f"Planted share of alpha's top {k0}", number(cmp.planted_topk_overlap.get(k0, float("nan")), ".2f"))

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
scatter = figures.attention_scatter(table, dim=ts.dim, spearman=cmp.spearman, planted=bool(planted))
left, right = st.columns([1, 1])
with left:
    st.plotly_chart(scatter, key="compare_scatter")
with right:
    st.markdown("**Top dimensions**")
    st.dataframe(
        top[["dimension", "alpha", "attribution", "alpha_rank", "attribution_rank", "planted"]]
        .rename(columns={"alpha_rank": "rank by alpha", "attribution_rank": "rank by attribution"}),
        hide_index=True, height=420,
    )

# ---- downloads ----------------------------------------------------------------------------------------
st.markdown("**Download**")
d1, d2, d3, _ = st.columns([1, 1, 1, 3])
d1.download_button("Comparison (CSV)", data=exports.comparison_csv(table, run=run.name),
                   file_name=f"{run.name}-comparison.csv", mime="text/csv", key="compare_dl_csv",
                   on_click="ignore", icon=":material/download:")
with d2:
    exports.png_button(bars, file_name=f"{run.name}-attention-bars.png", key="compare_dl_bars",
                       label="Bars (PNG)")
with d3:
    exports.png_button(scatter, file_name=f"{run.name}-attention-scatter.png", key="compare_dl_scatter",
                       label="Scatter (PNG)")
