"""Train page: set up and run the temporal classifier with live curves, stop early keeping
the best checkpoint, and read test metrics, ROC curve and confusion matrix of any run."""

import math

import pandas as pd
import streamlit as st

from cvx_app import escape, figures, jobs, session, workspace

session.bootstrap("Train")
st.title("Train")
name = session.dataset_picker("train_dataset", label="Dataset to train on")
ts = session.require_dataset(name)

from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.learn.config import TrainConfig

SCALE_CHOICES = [0.25, 1.0, 3.0, 7.0, 14.0, 30.0, 90.0]
defaults = TrainConfig()
fdefaults = TemporalFeaturesConfig()

# ---- set-up form ---------------------------------------------------------------------------
job = jobs.training_jobs().get(st.session_state.get("train_run", ""))
busy = jobs.running_job()
if not ts.has_labels:
    st.warning("Training needs a label on every user; this dataset has unlabelled users.")
with st.form("train_form", border=True):
    st.markdown("**Set up a run**")
    st.caption(f"{len(ts)} users, D = {ts.dim}. Split 60/20/20 (train/validation/test), stratified by label.")
    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input("Epochs", min_value=1, max_value=500, value=defaults.epochs, step=1,
                             key="train_epochs", help="The most epochs; early stopping may end sooner.")
    lr = c2.number_input("Learning rate", min_value=1e-5, max_value=1.0, value=defaults.lr,
                         step=1e-3, format="%.4f", key="train_lr")
    batch = c3.number_input("Batch size", min_value=1, max_value=1024, value=defaults.batch_size,
                            step=1, key="train_batch")
    devices = ["cpu"] + (["cuda"] if jobs.cuda_available() else [])
    device = c4.selectbox(
        "Device", devices, index=len(devices) - 1, key="train_device",
        format_func=lambda d: f"CUDA ({jobs.cuda_name()})" if d == "cuda" else "CPU",
        help="CUDA appears when a GPU is available.",
    )
    c5, c6, c7, c8 = st.columns(4)
    scales = c5.multiselect("Scales (days)", SCALE_CHOICES, default=list(fdefaults.scales),
                            key="train_scales", help="Resampling widths of the multi-scale features.")
    temperature = c6.number_input("Change-point temperature", min_value=1e-3, max_value=10.0,
                                  value=fdefaults.temperature, step=0.01, format="%.3f", key="train_temp")
    silence_temp = c7.number_input("Silence temperature (days)", min_value=1e-3, max_value=30.0,
                                   value=fdefaults.silence_temperature, step=0.1, format="%.3f",
                                   key="train_silence_temp")
    seed = c8.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="train_seed")
    c9, c10, c11, c12 = st.columns(4)
    learn_temps = c9.toggle("Learn the change-point temperature", value=True, key="train_learn_temp",
                            help="Off: the temperature stays fixed at the value above.")
    learn_attention = c10.toggle("Learn dimension attention", value=True, key="train_learn_attention")
    learn_scales = c11.toggle("Learn scale weights", value=True, key="train_learn_scales")
    patience = c12.number_input("Early-stopping patience (epochs)", min_value=1, max_value=1000,
                                value=defaults.patience, step=1, key="train_patience",
                                help="Stop when validation AUC has not improved for this many epochs.")
    submitted = st.form_submit_button(
        "Start training", type="primary", disabled=busy is not None or not ts.has_labels,
    )
if busy is not None and (job is None or busy is not job):
    st.info(f"A training run ({busy.run_name}) is in progress on this server; wait for it to finish.")

if submitted:
    if not scales:
        st.error("Choose at least one scale.")
    else:
        try:
            config = TrainConfig(
                epochs=int(epochs), lr=float(lr), batch_size=int(batch), device=device, seed=int(seed),
                patience=int(patience),
                learn_temperatures=learn_temps, learn_attention=learn_attention, learn_scales=learn_scales,
                features=TemporalFeaturesConfig(
                    scales=tuple(sorted(float(s) for s in scales)),
                    temperature=float(temperature), silence_temperature=float(silence_temp),
                ),
            )
            job = jobs.start_training(name, ts, config)
        except (ValueError, RuntimeError) as exc:
            st.error(escape.escape_markdown(exc))
        else:
            st.session_state["train_run"] = job.run_name
            st.session_state["train_show"] = job.run_name
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
    if not snap["steps"]:
        st.caption("Preparing: building batches and the fixed feature normalisation of the training set…")
    loss, auc = figures.loss_auc_figures(snap["steps"], snap["epochs"])
    a, b = st.columns(2)
    a.plotly_chart(loss, key="train_live_loss")
    b.plotly_chart(auc, key="train_live_auc")


if job is not None and job.snapshot()["status"] == "running":
    st.subheader("Training")
    live_panel(job)
elif job is not None and job.status == "error":
    st.error("Training failed: " + escape.escape_markdown(job.error))

# ---- runs --------------------------------------------------------------------------------------
st.subheader("Runs in the workspace")
runs = workspace.list_runs()
if not runs:
    if job is not None and job.status == "running":
        st.info("The run is listed here once its first files are written.")
    else:
        st.info("No runs yet. Set one up above.")
    st.stop()


def _fmt(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 3)


table = pd.DataFrame([
    {
        "run": r.name,
        "dataset": workspace.run_dataset(r.path) or "?",
        "status": "finished" if r.complete else ("running" if r.name in jobs.training_jobs()
                                                 and jobs.training_jobs()[r.name].status == "running"
                                                 else "interrupted"),
        "test AUC": _fmt(r.test_auc),
        "baseline AUC": _fmt(r.baseline_auc),
        "test F1": _fmt(r.test_f1),
        "epochs": r.epochs,
        "device": r.device,
        "modified (UTC)": r.modified.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for r in runs
])
st.dataframe(table, hide_index=True)

names = [r.name for r in runs]
if st.session_state.get("train_show") not in names:
    st.session_state["train_show"] = names[0]
show = st.selectbox("Show run", names, key="train_show")
docs = workspace.run_documents(next(r.path for r in runs if r.name == show))
metrics = docs["metrics"]
if metrics is None:
    st.info("This run has not finished (it is running or was interrupted); its best checkpoint "
            "so far is kept in the run folder.")
    if docs["history"]:
        loss, auc = figures.loss_auc_figures([], docs["history"])
        st.plotly_chart(auc, key="train_hist_auc")
    st.stop()

m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Test ROC AUC", f"{metrics['test_auc']:.3f}")
m2.metric("Baseline AUC (mean embedding)", f"{metrics['baseline_auc']:.3f}",
          delta=f"{metrics['test_auc'] - metrics['baseline_auc']:+.3f} model − baseline", delta_color="off")
m3.metric("Test F1", f"{metrics['test_f1']:.3f}")
m4.metric("Test accuracy", f"{metrics.get('test_accuracy', float('nan')):.3f}")
m5.metric("Epochs (best)", f"{metrics['epochs']} ({metrics.get('best_epoch', '?')})")
note = []
if metrics.get("interrupted"):
    note.append("stopped by the user; the best checkpoint was evaluated")
if metrics.get("stopped_early"):
    note.append("early stopping (validation AUC stopped improving)")
st.caption(f"Device {metrics.get('device')} · {metrics.get('n_train')}/{metrics.get('n_val')}/"
           f"{metrics.get('n_test')} users train/val/test · {metrics.get('seconds', 0):.1f} s"
           + (" · " + "; ".join(note) if note else ""))

left, mid, right = st.columns(3)
with left:
    st.plotly_chart(figures.roc_figure(metrics), key="train_roc")
with mid:
    st.plotly_chart(figures.confusion_figure(metrics), key="train_confusion")
with right:
    _, auc = figures.loss_auc_figures([], docs["history"] or [])
    auc.update_layout(height=360)
    st.plotly_chart(auc, key="train_hist_auc")
st.page_link("pages/4_compare.py", label="Compare this run's attention with the analytics",
             icon=":material/compare_arrows:")
