"""The Streamlit app's plumbing: the workspace on disk (datasets and run folders), training
jobs in background threads, session state and pickers, digest-keyed cached wrappers and the
Plotly figure builders. It sits on top: it may import ``cvx_core`` and Streamlit; nothing in
``cvx_core`` imports it. Pages import ``cvx_app`` and ``cvx_core`` only.
"""
