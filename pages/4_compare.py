"""Compare page: a trained run's learned DimensionAttention weights beside the analytic
drift attribution, with correlation statistics, the verdict, and planted truth if known."""

import pandas as pd
import streamlit as st

from cvx_app import cache, escape, figures, session, workspace

name = session.bootstrap("Compare")
st.title("Compare")
st.caption("A trained run's learned DimensionAttention weights (alpha) beside the analytic drift "
           "attribution of the same data: does the model weight the dimensions the analytics single out?")

runs = [r for r in workspace.list_runs() if r.has_weights]
if not runs:
    st.info("No trained run yet. Train one on the Train page first.")
    st.page_link("pages/3_train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

names = [r.name for r in runs]
if st.session_state.get("compare_run") not in names:
    preferred = st.session_state.get("train_show")
    st.session_state["compare_run"] = preferred if preferred in names else names[0]
c1, c2, c3 = st.columns([2, 1, 1])
run_name = c1.selectbox("Run", names, key="compare_run",
                        format_func=lambda n: n + ("" if next(r for r in runs if r.name == n).complete
                                                   else " (interrupted: best checkpoint)"))
top_n = c2.slider("Top dimensions shown", min_value=10, max_value=80, value=30, step=5, key="compare_top")
order_by = c3.radio("Order by", ["learned alpha", "attribution"], key="compare_order", horizontal=True)
run = next(r for r in runs if r.name == run_name)

dataset = workspace.run_dataset(run.path)
if dataset is None:
    dataset = name
    st.warning("The dataset this run was trained on is not in the workspace any more; "
               "comparing on the current dataset instead.")
ts = session.require_dataset(dataset)
truth = workspace.load_truth(dataset)
planted = list(truth.get("planted_dims", [])) if truth else None

with st.spinner("Loading the run and computing the analytic attribution…"):
    try:
        cmp = cache.comparison(run.path, ts, planted)
    except ValueError as exc:
        st.error(escape.escape_markdown(exc))
        st.stop()

kind_text = cache.attribution_description(cmp.attribution_kind, cmp.positive_class)
st.caption("Run and dataset:")
st.code(f"run {run.name}  ·  dataset {dataset}  ·  D = {ts.dim}  ·  attribution per dimension: {kind_text}",
        language=None, wrap_lines=True)
st.info(cmp.verdict, icon=":material/insights:")

m = st.columns(5)
m[0].metric("Spearman ρ", f"{cmp.spearman:.3f}")
m[1].metric("Pearson r", f"{cmp.pearson:.3f}")
m[2].metric("Permutation p-value", f"{cmp.p_value:.3g}",
            help=f"{cmp.n_permutations} permutations; the smallest value possible is {1 / (cmp.n_permutations + 1):.3g}.")
ks = sorted(cmp.topk_jaccard)
for slot, k in zip(m[3:], ks):
    slot.metric(f"Top-{k} overlap (Jaccard)", f"{cmp.topk_jaccard[k]:.2f}")
if planted:
    p = st.columns(4)
    p[0].metric("Planted dims", len(planted))
    p[1].metric("Spearman(alpha, planted)", f"{cmp.planted_spearman:.3f}",
                help=f"The largest possible value is {cmp.planted_spearman_max:.3f}.")
    p[2].metric("Spearman(attribution, planted)", f"{cmp.attribution_planted_spearman:.3f}")
    k0 = len(planted)
    p[3].metric(f"Planted share of alpha's top {k0}", f"{cmp.planted_topk_overlap.get(k0, float('nan')):.2f}")

# ---- two aligned bar charts over the top dimensions ------------------------------------------
table = pd.DataFrame(cmp.table())
table["planted"] = table["dimension"].isin(planted or [])
key = "alpha" if order_by == "learned alpha" else "attribution"
top = table.sort_values([key, "dimension"], ascending=[False, True]).head(top_n)
bars = figures.attention_bars(top, order_by=order_by)
st.plotly_chart(bars, key="compare_bars")
st.caption("Both panels share one x axis: the same dimensions in the same order."
           + (" ★ and red bars: planted dimensions of the sample data." if planted else ""))

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
