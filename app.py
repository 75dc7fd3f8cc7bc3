"""CVX app: the landing page. Run with ``streamlit run app.py`` (or ``make run``).

Pages live in ``pages/`` (Streamlit's pages folder); every page, this one included, starts
with ``cvx_app.session.bootstrap`` so any page URL works as the first request to a fresh server.
"""

import streamlit as st

from cvx_app import session

name = session.bootstrap("Home")

st.title("CVX: temporal ML on embedding trajectories")
st.markdown(
    "CVX treats each user's posts as a **trajectory** of embeddings in time and measures how it "
    "moves: velocity, drift, volatility, silences and change points, computed over real time "
    "gaps. It explains where a trajectory changed (PELT and Bayesian online change points, "
    "per-dimension drift attribution, plain-language narratives) and trains a differentiable "
    "classifier whose learned per-dimension attention can be checked against that analysis. "
    "Start with a dataset, explore it, train a model, then compare what the model learned "
    "with what the analytics show."
)

cols = st.columns(4)
cards = [
    ("pages/1_data.py", "Data", ":material/dataset:", "Upload posts as text or as embeddings, or use the sample."),
    ("pages/2_explore.py", "Explore", ":material/scatter_plot:", "Projection, paths through time, change points in words."),
    ("pages/3_train.py", "Train", ":material/model_training:", "Train the temporal classifier."),
    ("pages/4_compare.py", "Compare", ":material/compare_arrows:", "Learned attention vs analytics."),
]
for col, (path, label, icon, blurb) in zip(cols, cards):
    with col.container(border=True):
        st.page_link(path, label=label, icon=icon)
        st.caption(blurb)

st.caption(
    "First time here? The shipped sample is already loaded: open Explore and pick a user, "
    "then Train with the default settings, then Compare. A default training on the sample stops early "
    "after 10 to 22 epochs: 2.3 s of CPU time (1.7 s wall) on an idle 2-core CPU machine, 7.5 s when the "
    "machine is shared by other busy processes (load 7-14) (median of seeds 0-2, "
    "benchmarks/bench_default_training.py, measured 2026-12-05); the page's evaluation of the run adds a "
    "few seconds."
)

if name is None:
    st.info("No dataset is available yet: upload one on the Data page.")
else:
    st.caption("Current dataset:")
    st.code(name, language=None)
