"""Train page: set up and run the temporal classifier with live curves, stop early keeping
the best checkpoint; list, rename, annotate and delete runs; read any run's test metrics
(with small-data warnings, confidence interval, cross-validation, ROC curve, confusion
matrix, early detection) and download its metrics, weights and figures, and the dataset's
features and change points. The widgets and panels live in cvx_app (train_setup,
train_runs, train_results); this page composes them."""

import streamlit as st

from cvx_app import escape, figures, jobs, run_store, session, train_results, train_runs, train_setup

session.bootstrap("Train")
st.title("Train")
name = session.dataset_picker("train_dataset", label="Dataset to train on")
ts = session.require_dataset(name)

# ---- set-up form ---------------------------------------------------------------------------
job = jobs.training_jobs().get(st.session_state.get("train_run", ""))
busy = jobs.running_job()
problem = jobs.trainable_problem(ts)
if problem is not None:
    st.warning("This dataset cannot be trained on: " + escape.escape_markdown(problem) + ".")
train_ts, n_left_out = jobs.labelled_users(ts)
left_out_note = jobs.unlabelled_note(n_left_out, len(ts))
if problem is None and left_out_note:
    st.info(escape.escape_markdown(left_out_note[0].upper() + left_out_note[1:]) + ".", icon=":material/info:")
setup = train_setup.setup_form(name, ts, train_ts, disabled=busy is not None or problem is not None)

if busy is not None and (job is None or busy is not job):
    st.info(f"A training run ({busy.run_name}) is in progress on this server; wait for it to finish.")

if setup.error:
    st.error(escape.escape_markdown(setup.error))
elif setup.submitted:
    try:
        job = jobs.start_training(name, ts, setup.config, name=setup.title or None)
    except (ValueError, RuntimeError) as exc:
        st.error(escape.escape_markdown(exc))
    else:
        # the page follows the new run: in this session, and in the address (?run=)
        st.session_state["train_run"] = job.run_name
        st.session_state[run_store.SELECTED_KEY] = job.run_name
        st.query_params["run"] = job.run_name
        st.rerun()


@st.fragment(run_every=1.0)
def live_panel(job: "jobs.TrainJob") -> None:
    snap = job.snapshot()
    if snap["status"] != "running":
        st.rerun()  # full rerun: show the finished run below
    st.progress(snap["fraction"], text=(
        f"Training {job.run_name}: epoch {snap['epoch']}/{job.config.epochs}, step {snap['step']} "
        f"· {snap['elapsed']:.0f} s" + (" · stopping after this step…" if snap["stopping"] else "")
    ))
    if st.button("Stop (keep the best checkpoint)", key="train_stop", disabled=snap["stopping"]):
        job.stop.set()
    if not snap["steps"]:  # no empty axes: the curves appear with the first step
        st.caption("Preparing: choosing the head, building batches and the fixed feature normalisation…")
        return
    loss, auc = figures.loss_auc_figures(snap["steps"], snap["epochs"])
    cols = st.columns(3 if snap.get("grad_norms") else 2)
    cols[0].plotly_chart(loss, key="train_live_loss")
    if snap["epochs"]:
        cols[1].plotly_chart(auc, key="train_live_auc")
    else:  # no empty axes before the first epoch's validation
        cols[1].caption(f"Validation ROC AUC: drawn when epoch 1 ends (step {snap['step']} of "
                        f"{job.steps_per_epoch or '?'} in it).")
    if snap.get("grad_norms"):
        cols[2].plotly_chart(figures.grad_norm_figure(snap["grad_norms"]), key="train_live_grad")


if job is not None and job.snapshot()["status"] == "running":
    st.subheader("Training")
    live_panel(job)
elif job is not None and job.status == "error":
    st.error("Training failed: " + escape.escape_markdown(job.error))

# ---- runs --------------------------------------------------------------------------------------
st.subheader("Runs in the workspace")
views, all_views, running = train_runs.listed_runs(name)
if not views:
    st.info(f"No runs on {name} yet. Set one up above"
            + (f", or show the {len(all_views)} run(s) of other datasets with the switch." if all_views else "."))
    st.stop()
st.dataframe(train_runs.runs_table(views), hide_index=True)
run = train_runs.pick_run(views)
st.code(f"run {run.name}  ·  {run.title}  ·  dataset {run.dataset or '?'}  ·  {run.status}"
        + (f"  ·  {run.left_out} unlabelled users left out" if run.left_out else ""), language=None,
        wrap_lines=True)
train_runs.manage_run(run, {v.name for v in views}, running)

unfinished = train_runs.unfinished_text(run)
if unfinished is not None:
    kind, text = unfinished
    (st.error if kind == "error" else st.info)(text)
    if run.status not in (run_store.RUNNING, run_store.DAMAGED) and run.history:
        st.plotly_chart(figures.loss_auc_figures([], run.history)[1], key="train_hist_auc")
    st.stop()

# ---- the run's results, its downloads and the dataset's ---------------------------------------
train_results.show_run(run, name, ts)
train_results.dataset_downloads(name, ts)
