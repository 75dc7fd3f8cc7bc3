"""The Train page's runs in the workspace: listed for the chosen dataset first (a switch shows
every dataset's), the table, the run to show (kept in the session and the address), and its
rename, notes and delete-with-confirmation.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import streamlit as st

from cvx_app import escape, jobs, run_store

SHOW_ALL_KEY = "train_show_all_runs"
DELETE_KEY = "train_delete_pending"  # the run whose deletion waits for confirmation


def rounded(v: Any) -> float | None:
    """A finite number rounded to 3 places for a table cell, else ``None`` (an empty cell)."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return round(float(v), 3) if ok else None


def runs_table(views: list[run_store.RunView]) -> pd.DataFrame:
    """One row per run: names, dataset, status, test and baseline scores, epochs, device, notes."""
    return pd.DataFrame([{
        "name": v.title, "run": v.name, "dataset": v.dataset or "?", "status": v.status,
        "test AUC": rounded((v.metrics or {}).get("test_auc")),
        "baseline AUC": rounded((v.metrics or {}).get("baseline_auc")),
        "test F1": rounded((v.metrics or {}).get("test_f1")),
        "epochs": v.epochs, "device": v.device,
        "notes": (v.notes[:60] + "…") if len(v.notes) > 60 else v.notes,
        "modified (UTC)": v.modified.strftime("%Y-%m-%d %H:%M:%S"),
    } for v in views])


def listed_runs(dataset: str) -> tuple[list[run_store.RunView], list[run_store.RunView], set[str]]:
    """``(shown, every run, running names)``: ``dataset``'s runs, or every run with the
    switch on (``dataset``'s first). An address naming another dataset's run turns it on."""
    all_jobs = jobs.training_jobs()
    running = {n for n, j in all_jobs.items() if j.status == "running"}
    failed = {n: j.error or "" for n, j in all_jobs.items() if j.status == "error"}
    every = run_store.list_run_views(running=running, failed=failed)
    if (run_store.other_dataset_run(every, dataset, st.query_params.get("run"))
            and not st.session_state.get(run_store.SELECTED_KEY)):
        st.session_state[SHOW_ALL_KEY] = True
    show_all = st.toggle("Show the runs of every dataset", key=SHOW_ALL_KEY,
                         help=f"Off: only the runs trained on {dataset}. On: every run, {dataset}'s first.")
    return run_store.runs_of_dataset(every, dataset, show_all=show_all), every, running


def pick_run(views: list[run_store.RunView]) -> run_store.RunView:
    """The "Show run" choice among ``views``. The run shown is kept under a session key of its
    own (a widget's key is dropped when its page is left) and in the address, so a run that is
    training is shown from its first second and the choice never falls back to an older run."""
    by_name = {v.name: v for v in views}
    wanted = st.session_state.get(run_store.SELECTED_KEY) or st.query_params.get("run")
    if wanted not in by_name:
        wanted = views[0].name
    st.session_state[run_store.SELECTED_KEY] = st.session_state["train_show"] = wanted
    st.query_params["run"] = wanted

    def on_show() -> None:
        chosen = st.session_state.get("train_show")
        if chosen in by_name:
            st.session_state[run_store.SELECTED_KEY] = chosen
            st.query_params["run"] = chosen

    # labels stay fixed while a run changes status (a changing label would change the choice)
    show = st.selectbox("Show run", list(by_name), key="train_show", on_change=on_show,
                        format_func=lambda n: by_name[n].title + ("" if by_name[n].title == n else f" ({n})"))
    return by_name.get(show, by_name[wanted])


def _forget_delete() -> None:
    st.session_state.pop(DELETE_KEY, None)


@st.dialog("Delete this run?", on_dismiss=_forget_delete)
def _confirm_delete(run_name: str, running: set[str]) -> None:
    st.write("The run folder, its weights and its metrics are removed from the workspace. This cannot be undone.")
    st.code(run_name, language=None)
    a, b = st.columns(2)
    if a.button("Delete", type="primary", key="train_delete_confirm"):
        try:
            run_store.delete_run(run_name, running=running)
        except (ValueError, KeyError, OSError) as exc:
            st.error(escape.escape_markdown(exc))
        else:
            _forget_delete()
            st.session_state.pop(run_store.SELECTED_KEY, None)
            st.query_params.pop("run", None)
            st.rerun()
    if b.button("Cancel", key="train_delete_cancel"):
        _forget_delete()
        st.rerun()


def _try(action: Any, *args: Any) -> None:
    """Run a store action; its error is shown in plain text, success reruns the page."""
    try:
        action(*args)
    except (ValueError, KeyError, OSError) as exc:
        st.error(escape.escape_markdown(exc))
    else:
        st.rerun()


def manage_run(run: run_store.RunView, shown: set[str], running: set[str]) -> None:
    """Rename, notes and delete (with a confirmation dialog) of ``run``; ``shown``: the listed names."""
    with st.expander("Rename, notes, delete", icon=":material/edit_note:"):
        r1, r2 = st.columns([3, 1], vertical_alignment="bottom")
        title = r1.text_input("Name", value=run.title, max_chars=run_store.MAX_TITLE, key=f"train_title_{run.name}")
        if r2.button("Rename", key="train_rename"):
            _try(run_store.rename_run, run.name, title)
        notes = st.text_area("Notes", value=run.notes, max_chars=run_store.MAX_NOTES, key=f"train_notes_{run.name}",
                             help="Plain text kept with the run (in its app.json).")
        n1, n2 = st.columns(2)
        if n1.button("Save notes", key="train_save_notes"):
            _try(run_store.set_notes, run.name, notes)
        busy = run.status == run_store.RUNNING
        if n2.button("Delete run…", key="train_delete", disabled=busy, help="Stop a running run first." if busy else None):
            st.session_state[DELETE_KEY] = run.name
    if st.session_state.get(DELETE_KEY) in shown:
        _confirm_delete(st.session_state[DELETE_KEY], running)


def unfinished_text(run: run_store.RunView) -> tuple[str, str] | None:
    """``(kind, sentence)`` for a run without results to show ("info" or "error"), else ``None``."""
    if run.status == run_store.RUNNING:
        return "info", "This run is training: its live curves are above, and its results appear here when it ends."
    if run.status == run_store.DAMAGED:
        return "error", ("This run is damaged and cannot be shown: " + escape.escape_markdown(run.problem)
                         + ". The other runs are not affected; delete this one above.")
    if run.metrics is None:
        why = ("Training failed before it finished" if run.status == run_store.FAILED
               else "This run did not finish (the server stopped while it trained)")
        return "info", why + "; its best checkpoint so far, if any, is kept in the run folder."
    return None
