"""Train page: set up and run the temporal classifier with live curves, stop early keeping
the best checkpoint; list, rename, annotate and delete runs; read any run's test metrics
(with small-data warnings, confidence interval, cross-validation, ROC curve, confusion
matrix, early detection) and download its metrics, weights and figures, and the dataset's
features and change points."""

import math

import pandas as pd
import streamlit as st

from cvx_app import cache, escape, exports, figures, jobs, run_results, session, workspace
from cvx_app import run_store

session.bootstrap("Train")
st.title("Train")
name = session.dataset_picker("train_dataset", label="Dataset to train on")
ts = session.require_dataset(name)

from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.learn.config import TrainConfig

SCALE_CHOICES = [0.25, 1.0, 3.0, 7.0, 14.0, 30.0, 90.0]
FIELDS = set(TrainConfig.__dataclass_fields__)
defaults = TrainConfig()
fdefaults = TemporalFeaturesConfig()
SMALL_TEST_USERS, _ = run_results.small_data_thresholds()  # below this, a test metric is noisy


def _num(v, fmt: str = ".3f") -> str:
    return "–" if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) else format(v, fmt)


def _fmt(v):
    return None if not isinstance(v, (int, float)) or isinstance(v, bool) or math.isnan(v) else round(float(v), 3)


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
test_share = float(getattr(defaults, "test_fraction", 0.2))
n_test_planned = round(len(train_ts) * test_share)
st.markdown("**Set up a run**")
evaluation = st.radio(
    "Evaluation", ["split", "cv"], horizontal=True, key="train_eval",
    format_func=lambda v: "one split 60/20/20" if v == "split" else "K-fold cross-validation",
    help="Cross-validation reports mean ± sd over K stratified folds: use it on small data.",
)
with st.form("train_form", border=True):
    c0, cq = st.columns([2, 2])
    run_title = c0.text_input("Run name (optional)", max_chars=run_store.MAX_TITLE, key="train_name",
                              placeholder=f"{name}-<head>-<time>",
                              help="Empty: the dataset, the head and the time (UTC).")
    if evaluation == "cv":
        folds = cq.number_input("Folds (K)", min_value=2, max_value=20, value=5, step=1, key="train_folds",
                                help="Stratified folds of the cross-validation.")
    st.caption(f"{len(train_ts)} labelled users, D = {ts.dim}. The one split is 60/20/20 (train/validation/test), "
               f"stratified by label: about {n_test_planned} test users.")
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
    learn_temps = c9.toggle("Learn CP temperature", value=True, key="train_learn_temp",
                            help="Learn the change-point temperature. Off: it stays fixed at the value above.")
    learn_attention = c10.toggle("Learn dimension attention", value=True, key="train_learn_attention")
    learn_scales = c11.toggle("Learn scale weights", value=True, key="train_learn_scales")
    patience = c12.number_input("Early-stopping patience (epochs)", min_value=1, max_value=1000,
                                value=defaults.patience, step=1, key="train_patience",
                                help="Stop when the validation log-loss has not fallen by more than min_delta for this many epochs.")
    extra: dict = {}
    c13, c14, c15, c16 = st.columns(4)
    if "head" in FIELDS:
        extra["head"] = c13.selectbox("Head", ["auto", "linear", "mlp"], key="train_head",
                                      index=["auto", "linear", "mlp"].index(getattr(defaults, "head", "auto")),
                                      help="auto: chosen by validation (inner cross-validation on small data).")
    extra["cv"] = int(folds) if evaluation == "cv" else 0
    if ts.has_text:
        encoder = c15.selectbox(
            "Text encoder", ["none", "hashing", "minilm"], key="train_encoder",
            format_func={"none": "none: the stored embeddings", "hashing": "hashing (built in)",
                         "minilm": "all-MiniLM-L6-v2"}.get,
            help="Embed the posts' texts inside the model instead of using the stored embeddings.",
        )
        fine_tune = c16.toggle("Fine-tune the encoder", value=False, key="train_finetune",
                               help="Off: the encoder is frozen (posts are embedded once).")
        if encoder != "none":
            extra["text_encoder"] = encoder
            extra["freeze_encoder"] = not fine_tune
    # H-train (issue 22): group-aware splits, offered when the dataset has a per-user column
    group_choices = [str(c) for c in ts.metadata.columns] if "group_column" in FIELDS else []
    if group_choices:
        group = st.selectbox(
            "Keep groups apart (per-user column)", ["none", *group_choices], key="train_group",
            help="Each group (a subject, an author, ...) stays on one side of validation, test and every "
                 "CV fold, so the scores do not reward recognising people seen in training.",
        )
        if group != "none":
            extra["group_column"] = group
    ode_dim = st.number_input(
        "Latent ODE state (0 = off)", min_value=0, max_value=128, value=0, step=4, key="train_ode",
        help="Append the final state of a learned ODE-RNN over the real gaps between posts (docs/ode.md). "
             "Learned only, slower (a sequential pass over each user's posts); off by default.",
    )
    if evaluation == "split" and (n_test_planned < SMALL_TEST_USERS):
        st.caption(f"⚠ About {n_test_planned} test users: a test AUC on so few users is noisy"
                   + "; K-fold cross-validation gives a mean ± sd.")
    submitted = st.form_submit_button(
        "Start training", type="primary", disabled=busy is not None or problem is not None,
    )

# memory estimate of a text-encoder run (issue 15), when the library offers one
if ts.has_text and st.session_state.get("train_encoder", "none") != "none":
    try:
        from cvx_core.learn.finetune import estimate_finetune_memory

        planned = TrainConfig(
            text_encoder=st.session_state["train_encoder"],
            freeze_encoder=not st.session_state.get("train_finetune", False),
            batch_size=int(st.session_state.get("train_batch", defaults.batch_size)),
        )
        st.caption(f"Estimated peak memory of this run: {estimate_finetune_memory(planned, ts) / 2**30:.1f} GB "
                   "(cvx_core.learn.finetune; bounded by design whatever the batch size).")
    except Exception as exc:  # noqa: BLE001 - an estimate must never block the page
        st.caption("No memory estimate: " + escape.escape_markdown(exc))

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
                    ode_latent_dim=int(ode_dim),
                ),
                **extra,
            )
            job = jobs.start_training(name, ts, config, name=run_title.strip() or None)
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
    cols[1].plotly_chart(auc, key="train_live_auc")
    if snap.get("grad_norms"):
        cols[2].plotly_chart(figures.grad_norm_figure(snap["grad_norms"]), key="train_live_grad")


if job is not None and job.snapshot()["status"] == "running":
    st.subheader("Training")
    live_panel(job)
elif job is not None and job.status == "error":
    st.error("Training failed: " + escape.escape_markdown(job.error))

# ---- runs --------------------------------------------------------------------------------------
st.subheader("Runs in the workspace")
all_jobs = jobs.training_jobs()
running = {n for n, j in all_jobs.items() if j.status == "running"}
failed = {n: j.error or "" for n, j in all_jobs.items() if j.status == "error"}
all_views = run_store.list_run_views(running=running, failed=failed)
if run_store.other_dataset_run(all_views, name, st.query_params.get("run")) and not st.session_state.get(
        run_store.SELECTED_KEY):  # an address names another dataset's run: list every run, so it shows
    st.session_state["train_show_all_runs"] = True
show_all = st.toggle("Show the runs of every dataset", key="train_show_all_runs",
                     help=f"Off: only the runs trained on {name}. On: every run, {name}'s first.")
views = run_store.runs_of_dataset(all_views, name, show_all=show_all)
if not views:
    st.info(f"No runs on {name} yet. Set one up above"
            + (f", or show the {len(all_views)} run(s) of other datasets with the switch." if all_views else "."))
    st.stop()

table = pd.DataFrame([
    {
        "name": v.title,
        "run": v.name,
        "dataset": v.dataset or "?",
        "status": v.status,
        "test AUC": _fmt(v.metrics.get("test_auc")) if v.metrics else None,
        "baseline AUC": _fmt(v.metrics.get("baseline_auc")) if v.metrics else None,
        "test F1": _fmt(v.metrics.get("test_f1")) if v.metrics else None,
        "epochs": v.epochs,
        "device": v.device,
        "notes": (v.notes[:60] + "…") if len(v.notes) > 60 else v.notes,
        "modified (UTC)": v.modified.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for v in views
])
st.dataframe(table, hide_index=True)

by_name = {v.name: v for v in views}
names = list(by_name)
# The run to show is kept under a session key of its own (a widget's key is dropped when its
# page is left) and in the address. A run that is training is listed from its first second,
# so the selection never falls back to an older run while the new one has no files yet.
wanted = st.session_state.get(run_store.SELECTED_KEY) or st.query_params.get("run")
if wanted not in by_name:
    wanted = names[0]
st.session_state[run_store.SELECTED_KEY] = wanted
st.session_state["train_show"] = wanted
st.query_params["run"] = wanted


def _on_show() -> None:
    chosen = st.session_state.get("train_show")
    if chosen in by_name:
        st.session_state[run_store.SELECTED_KEY] = chosen
        st.query_params["run"] = chosen


# labels stay fixed while a run changes status (a changing label would change the choice)
show = st.selectbox(
    "Show run", names, key="train_show", on_change=_on_show,
    format_func=lambda n: by_name[n].title + ("" if by_name[n].title == n else f" ({n})"),
)
if show not in by_name:
    show = wanted
run = by_name[show]
st.code(f"run {run.name}  ·  {run.title}  ·  dataset {run.dataset or '?'}  ·  {run.status}"
        + (f"  ·  {run.left_out} unlabelled users left out" if run.left_out else ""), language=None,
        wrap_lines=True)


# ---- manage the run: rename, notes, delete ----------------------------------------------------
DELETE_KEY = "train_delete_pending"  # the run whose deletion waits for confirmation


def _forget_delete() -> None:
    st.session_state.pop(DELETE_KEY, None)


@st.dialog("Delete this run?", on_dismiss=_forget_delete)
def confirm_delete(run_name: str) -> None:
    st.write("The run folder, its weights and its metrics are removed from the workspace. "
             "This cannot be undone.")
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


with st.expander("Rename, notes, delete", icon=":material/edit_note:"):
    r1, r2 = st.columns([3, 1], vertical_alignment="bottom")
    new_title = r1.text_input("Name", value=run.title, max_chars=run_store.MAX_TITLE, key=f"train_title_{run.name}")
    if r2.button("Rename", key="train_rename"):
        try:
            run_store.rename_run(run.name, new_title)
        except (ValueError, KeyError, OSError) as exc:
            st.error(escape.escape_markdown(exc))
        else:
            st.rerun()
    notes = st.text_area("Notes", value=run.notes, max_chars=run_store.MAX_NOTES, key=f"train_notes_{run.name}",
                         help="Plain text kept with the run (in its app.json).")
    n1, n2 = st.columns([1, 1])
    if n1.button("Save notes", key="train_save_notes"):
        try:
            run_store.set_notes(run.name, notes)
        except (KeyError, OSError) as exc:
            st.error(escape.escape_markdown(exc))
        else:
            st.rerun()
    if n2.button("Delete run…", key="train_delete", disabled=run.status == run_store.RUNNING,
                 help="Stop a running run first." if run.status == run_store.RUNNING else None):
        st.session_state[DELETE_KEY] = run.name
if st.session_state.get(DELETE_KEY) in by_name:
    confirm_delete(st.session_state[DELETE_KEY])

if run.status == run_store.RUNNING:
    st.info("This run is training: its live curves are above, and its results appear here when it ends.")
    st.stop()
if run.status == run_store.DAMAGED:
    st.error("This run is damaged and cannot be shown: " + escape.escape_markdown(run.problem)
             + ". The other runs are not affected; delete this one above.")
    st.stop()
if run.metrics is None:
    why = ("Training failed before it finished" if run.status == run_store.FAILED
           else "This run did not finish (the server stopped while it trained)")
    st.info(why + "; its best checkpoint so far, if any, is kept in the run folder.")
    if run.history:
        _, auc = figures.loss_auc_figures([], run.history)
        st.plotly_chart(auc, key="train_hist_auc")
    st.stop()

# ---- the run's results --------------------------------------------------------------------------
metrics = run.metrics
warnings = run_results.run_warnings(metrics)
ci_text = run_results.auc_interval_text(metrics)

m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Test ROC AUC" + (" ⚠" if warnings else ""), _num(metrics.get("test_auc")),
          delta=ci_text, delta_color="off", delta_arrow="off",
          help=("; ".join(warnings) if warnings else "ROC AUC on the held-out test users.")
          + (" The interval is a bootstrap over test users." if ci_text else ""))
m2.metric("Baseline AUC (mean embedding)", _num(metrics.get("baseline_auc")),
          delta=f"{metrics['test_auc'] - metrics['baseline_auc']:+.3f} model − baseline", delta_color="off")
m3.metric("Test F1", _num(metrics.get("test_f1")))
m4.metric("Test accuracy", _num(metrics.get("test_accuracy")))
m5.metric("Epochs (best)", f"{metrics.get('epochs', '?')} ({metrics.get('best_epoch', '?')})")
for w in warnings:
    st.warning(escape.escape_markdown(w[0].upper() + w[1:]), icon=":material/warning:")
note = []
if metrics.get("interrupted"):
    note.append("stopped by the user; the best checkpoint was evaluated")
if metrics.get("stopped_early"):
    note.append("early stopping (validation log-loss stopped falling)")
head = metrics.get("head") or metrics.get("head_chosen")
if isinstance(head, (str, dict)):
    note.append("head " + (head if isinstance(head, str) else str(head.get("name", head))))
seconds = metrics.get("seconds")
st.caption(f"Device {metrics.get('device')} · {metrics.get('n_train')}/{metrics.get('n_val')}/"
           f"{metrics.get('n_test')} users train/val/test · "
           + (f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "")
           + (" · " + "; ".join(escape.escape_markdown(n) for n in note) if note else ""))

# H-train (issue 22): why this head won, and the verdict when the plain baseline did
if metrics.get("head_choice"):
    st.caption("Head choice: " + escape.escape_markdown(metrics["head_choice"]))
if metrics.get("verdict"):
    st.info(escape.escape_markdown(metrics["verdict"]))

cv = metrics.get("cv")
if isinstance(cv, dict) and cv:
    st.markdown(f"**Cross-validation, {len(cv.get('folds', []) or [])} folds** (mean ± sd)")
    rows = []
    for what in ("auc", "accuracy"):
        row = {"metric": f"test {what}"}
        for who, prefix in (("model", "test"), ("baseline", "baseline")):
            mean, sd = cv.get(f"{prefix}_{what}_mean"), cv.get(f"{prefix}_{what}_sd")
            row[who] = f"{_num(mean)} ± {_num(sd)}" if mean is not None else "–"
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    folds = cv.get("folds")
    if isinstance(folds, list) and folds and all(isinstance(f, dict) for f in folds):
        with st.expander("Per fold"):
            st.dataframe(pd.DataFrame(folds).select_dtypes(exclude="object"), hide_index=True)

curves = run_results.roc_curves(metrics, run.path, ts if run.dataset == name else run_results.run_data(run.dataset),
                                stamp=workspace.weights_stamp(run.path))
roc_fig = figures.roc_figure(metrics, curves)
confusion = run_store.confusion_of(metrics)
conf_fig = None if confusion is None else figures.confusion_figure({"confusion": confusion[0], "classes": confusion[1]})
_, auc_fig = figures.loss_auc_figures([], run.history or [])
auc_fig.update_layout(height=380)
left, mid, right = st.columns(3)
with left:
    st.plotly_chart(roc_fig, key="train_roc")
with mid:
    if conf_fig is not None:
        st.plotly_chart(conf_fig, key="train_confusion")
    f1_table = run_results.per_class_f1(metrics)
    if f1_table is not None:
        st.caption("F1 per class (one-vs-rest) on the test users")
        st.dataframe(f1_table, hide_index=True, height=38 + 35 * len(f1_table))
with right:
    st.plotly_chart(auc_fig, key="train_hist_auc")

early_fig = None
early = metrics.get("early")
e1, e2 = st.columns([2, 1])
if isinstance(early, dict):
    xs, ys = early.get("cuts"), early.get("auc")
    if isinstance(xs, list) and isinstance(ys, list) and xs and len(xs) == len(ys):
        x_title = ("first d days of each test user's history" if early.get("by") == "days"
                   else "first k posts of each test user")
        ys = [y if isinstance(y, (int, float)) else None for y in ys]
        base = early.get("baseline_auc") if isinstance(early.get("baseline_auc"), list) else None
        early_fig = figures.early_detection_figure(xs, ys, x_title=x_title, baseline=base)
        e1.plotly_chart(early_fig, key="train_early")
with e2:
    st.markdown("**Early risk (eRisk)**")
    values, why_none = run_results.early_risk(metrics)
    for label, value, hint in values:
        st.metric(label, _num(value), help=hint + " Definitions: docs/training.md.")
    if why_none:
        st.caption("No eRisk values: " + escape.escape_markdown(why_none) + ".")

st.page_link("pages/4_compare.py", label="Compare this run's attention with the analytics",
             icon=":material/compare_arrows:", query_params={"run": run.name})

# ---- downloads of the run ----------------------------------------------------------------------
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
g = st.columns(4)
for col, fig, stem, label in ((g[0], roc_fig, "roc", "ROC"), (g[1], conf_fig, "confusion", "Confusion"),
                              (g[2], auc_fig, "validation-auc", "Validation AUC"), (g[3], early_fig, "early", "Early")):
    if fig is not None:
        with col:
            exports.image_buttons(fig, file_stem=f"{run.name}-{stem}", key=f"train_dl_{stem}", label=label,
                                  stacked=True)

# ---- downloads of the dataset ------------------------------------------------------------------
with st.expander(f"Download the dataset's features and change points ({name})", icon=":material/download:"):
    st.caption("Features: one row per user, the SPEC feature vector (as `python -m cvx_core extract`). "
               "Change points: one row per PELT change point with its narrative"
               + (" and the words that rose and fell across it." if ts.has_text else
                  " (this dataset has no texts, so no words)."))
    f = st.columns(4)
    f[0].download_button("Features (Parquet)", data=lambda: exports.features_parquet(cache.features_frame(ts)),
                         file_name=f"{name}-features.parquet", mime="application/vnd.apache.parquet",
                         key="train_dl_features_parquet", on_click="ignore")
    f[1].download_button("Features (CSV)", data=lambda: exports.features_csv(cache.features_frame(ts)),
                         file_name=f"{name}-features.csv", mime="text/csv", key="train_dl_features_csv",
                         on_click="ignore")
    f[2].download_button("Change points (CSV)", data=lambda: exports.changepoints_csv(cache.changepoints_frame(ts)),
                         file_name=f"{name}-changepoints.csv", mime="text/csv", key="train_dl_cp_csv",
                         on_click="ignore")
    f[3].download_button("Change points (JSON)", data=lambda: exports.changepoints_json(cache.changepoints_frame(ts)),
                         file_name=f"{name}-changepoints.json", mime="application/json",
                         key="train_dl_cp_json", on_click="ignore")
