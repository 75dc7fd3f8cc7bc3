"""The Train page's set-up: the evaluation and scales choices, the form of training options,
the memory estimate of a text-encoder run, and the :class:`TrainConfig` they make.

``setup_form`` draws the widgets and returns a :class:`Setup`; ``build_config`` is the pure
step from the widgets' values to a config (tested without Streamlit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from cvx_app import escape, jobs, run_store
from cvx_core.data.trajectory import TrajectorySet
from cvx_core.features.config import TemporalFeaturesConfig
from cvx_core.learn.config import TrainConfig

SCALE_CHOICES = (0.25, 1.0, 3.0, 7.0, 14.0, 30.0, 90.0)  # days, for explicit scales
AUTO, EXPLICIT = "auto", "explicit"  # the scales radio (the multiselect keeps its numeric options)
HEADS = ("auto", "linear", "mlp")
ENCODERS = {"none": "none: the stored embeddings", "hashing": "hashing (built in)", "minilm": "all-MiniLM-L6-v2"}


@dataclass(frozen=True)
class Setup:
    """What the set-up form gave: ``submitted`` once Start was pressed, then either the
    ``config`` to train with or the ``error`` to show; ``title`` is the run name ('' : default)."""

    submitted: bool
    title: str = ""
    config: TrainConfig | None = None
    error: str | None = None


def build_config(values: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of the form's ``values`` (keys as the widgets' keys without
    ``train_``). Scales "auto" resolves time unit, scales and silence threshold from the data
    at training time (the library default); "explicit" needs at least one scale. Raises
    ``ValueError`` with a sentence for the page."""
    v = values
    if v["scale_mode"] == AUTO:
        features = TemporalFeaturesConfig.auto(temperature=float(v["temp"]), ode_latent_dim=int(v["ode"]))
    else:
        if not v["scales"]:
            raise ValueError("Choose at least one scale, or let the scales be chosen from the data (auto).")
        features = TemporalFeaturesConfig(
            scales=tuple(sorted(float(s) for s in v["scales"])), temperature=float(v["temp"]),
            silence_temperature=float(v["silence_temp"]), ode_latent_dim=int(v["ode"]))
    extra: dict[str, Any] = {"head": v["head"], "cv": int(v["folds"]) if v["evaluation"] == "cv" else 0}
    if v.get("encoder", "none") != "none":
        extra.update(text_encoder=v["encoder"], freeze_encoder=not v.get("finetune", False))
    if v.get("group", "none") != "none":
        extra["group_column"] = v["group"]
    return TrainConfig(
        epochs=int(v["epochs"]), lr=float(v["lr"]), batch_size=int(v["batch"]), device=v["device"],
        seed=int(v["seed"]), patience=int(v["patience"]), learn_temperatures=bool(v["learn_temp"]),
        learn_attention=bool(v["learn_attention"]), learn_scales=bool(v["learn_scales"]), features=features,
        **extra)


@st.cache_data(max_entries=16, show_spinner=False)
def _scale_choice(digest: str, _ts: TrajectorySet) -> tuple[Any, str | None]:
    from cvx_core.features.scales import resolve_scales

    try:
        return resolve_scales(_ts), None
    except ValueError as exc:
        return None, str(exc)


def auto_scales_text(ts: TrajectorySet) -> tuple[str, str | None]:
    """``(sentence, reason)``: what ``scales="auto"`` chooses on ``ts`` and the rule with its
    numbers (training resolves it again on its training users, so the run's own values, shown
    with its results, can differ a little)."""
    choice, problem = _scale_choice(ts.digest(), ts)
    if choice is None:
        return "Auto cannot choose scales on this dataset (" + problem + "); choose them explicitly.", None
    unit = choice.time_unit
    return (f"On this dataset auto chooses time unit {unit}, scales {', '.join(f'{s:g}' for s in choice.scales)} "
            f"{unit} and a silence gap of {choice.silence_gap:g} {unit}.", choice.reason)


def planned_split_text(n_users: int, evaluation: str) -> str | None:
    """The library's advice for a single split of ``n_users`` (cvx_core.learn.metrics, the
    thresholds the trainer uses), as a sentence; ``None`` under cross-validation or enough users."""
    from cvx_core.learn.metrics import split_size_warnings

    warnings = split_size_warnings(n_users, cv=5 if evaluation == "cv" else 0)
    return ("⚠ " + warnings[0][0].upper() + warnings[0][1:] + ".") if warnings else None


def _core_inputs(defaults: TrainConfig, fdefaults: TemporalFeaturesConfig, scale_mode: str,
                 train_ts: TrajectorySet) -> dict[str, Any]:
    """Epochs, learning rate, batch, device; scales (or what auto chooses), temperatures, seed;
    what is learned."""
    c1, c2, c3, c4 = st.columns(4)
    v: dict[str, Any] = {
        "epochs": c1.number_input("Epochs", min_value=1, max_value=500, value=defaults.epochs, step=1,
                                  key="train_epochs", help="The most epochs; early stopping may end sooner."),
        "lr": c2.number_input("Learning rate", min_value=1e-5, max_value=1.0, value=defaults.lr, step=1e-3,
                              format="%.4f", key="train_lr"),
        "batch": c3.number_input("Batch size", min_value=1, max_value=1024, value=defaults.batch_size, step=1,
                                 key="train_batch"),
    }
    devices = ["cpu"] + (["cuda"] if jobs.cuda_available() else [])
    v["device"] = c4.selectbox("Device", devices, index=len(devices) - 1, key="train_device",
                               format_func=lambda d: f"CUDA ({jobs.cuda_name()})" if d == "cuda" else "CPU",
                               help="CUDA appears when a GPU is available.")
    row = iter(st.columns(4))  # explicit: scales, temperature, silence temperature, seed; auto: the two numbers
    v["scales"], v["silence_temp"] = [], fdefaults.silence_temperature
    if scale_mode == EXPLICIT:
        v["scales"] = next(row).multiselect("Scales (days)", list(SCALE_CHOICES), default=[1.0, 7.0, 30.0],
                                            key="train_scales", help="Resampling widths of the multi-scale features.")
    v["temp"] = next(row).number_input("Change-point temperature", min_value=1e-3, max_value=10.0,
                                       value=fdefaults.temperature, step=0.01, format="%.3f", key="train_temp")
    if scale_mode == EXPLICIT:
        v["silence_temp"] = next(row).number_input("Silence temperature (days)", min_value=1e-3, max_value=30.0,
                                                   value=fdefaults.silence_temperature, step=0.1, format="%.3f",
                                                   key="train_silence_temp")
    v["seed"] = next(row).number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="train_seed")
    if scale_mode == AUTO and len(train_ts):
        text, reason = auto_scales_text(train_ts)
        st.caption(escape.escape_markdown(text), help=reason)
    c9, c10, c11, c12 = st.columns(4)
    v["learn_temp"] = c9.toggle("Learn CP temperature", value=True, key="train_learn_temp",
                                help="Learn the change-point temperature. Off: it stays fixed at the value above.")
    v["learn_attention"] = c10.toggle("Learn dimension attention", value=True, key="train_learn_attention")
    v["learn_scales"] = c11.toggle("Learn scale weights", value=True, key="train_learn_scales")
    v["patience"] = c12.number_input(
        "Early-stopping patience (epochs)", min_value=1, max_value=1000, value=defaults.patience, step=1,
        key="train_patience",
        help="Stop when the validation log-loss has not fallen by more than min_delta for this many epochs.")
    return v


def _model_inputs(ts: TrajectorySet, defaults: TrainConfig) -> dict[str, Any]:
    """Head, text encoder, group column and the latent ODE."""
    c13, _, c15, c16 = st.columns(4)
    v: dict[str, Any] = {"head": c13.selectbox(
        "Head", list(HEADS), key="train_head", index=HEADS.index(defaults.head),
        help="auto: chosen by validation (inner cross-validation on small data).")}
    if ts.has_text:
        v["encoder"] = c15.selectbox("Text encoder", list(ENCODERS), key="train_encoder", format_func=ENCODERS.get,
                                     help="Embed the posts' texts inside the model instead of using the stored "
                                          "embeddings.")
        v["finetune"] = c16.toggle("Fine-tune the encoder", value=False, key="train_finetune",
                                   help="Off: the encoder is frozen (posts are embedded once).")
    group_choices = [str(c) for c in ts.metadata.columns]
    if group_choices:
        v["group"] = st.selectbox(
            "Keep groups apart (per-user column)", ["none", *group_choices], key="train_group",
            help="Each group (a subject, an author, ...) stays on one side of validation, test and every "
                 "CV fold, so the scores do not reward recognising people seen in training.")
    v["ode"] = st.number_input(
        "Latent ODE state (0 = off)", min_value=0, max_value=128, value=0, step=4, key="train_ode",
        help="Append the final state of a learned ODE-RNN over the real gaps between posts (docs/ode.md). "
             "Learned only, slower (a sequential pass over each user's posts); off by default.")
    return v


def memory_estimate_text(ts: TrajectorySet) -> str | None:
    """The estimated peak memory of the text-encoder run the form describes, or why there is none;
    ``None`` when no text encoder is chosen. Never raises: an estimate must not block the page."""
    encoder = st.session_state.get("train_encoder", "none")
    if not ts.has_text or encoder == "none":
        return None
    try:
        from cvx_core.learn.finetune import estimate_finetune_memory

        planned = TrainConfig(text_encoder=encoder, freeze_encoder=not st.session_state.get("train_finetune", False),
                              batch_size=int(st.session_state.get("train_batch", TrainConfig().batch_size)))
        return (f"Estimated peak memory of this run: {estimate_finetune_memory(planned, ts) / 2**30:.1f} GB "
                "(cvx_core.learn.finetune; bounded by design whatever the batch size).")
    except Exception as exc:  # noqa: BLE001 - an estimate must never block the page
        return "No memory estimate: " + escape.escape_markdown(exc)


def setup_form(name: str, ts: TrajectorySet, train_ts: TrajectorySet, *, disabled: bool) -> Setup:
    """Draw the set-up (evaluation and scales radios, the form) for ``train_ts``, the labelled
    users of dataset ``name``; ``disabled`` greys Start (a run in progress, an untrainable set)."""
    defaults, fdefaults = TrainConfig(), TemporalFeaturesConfig()
    n_test_planned = round(len(train_ts) * float(defaults.test_fraction))
    st.markdown("**Set up a run**")
    r1, r2 = st.columns(2)
    evaluation = r1.radio(
        "Evaluation", ["split", "cv"], horizontal=True, key="train_eval",
        format_func=lambda v: "one split 60/20/20" if v == "split" else "K-fold cross-validation",
        help="Cross-validation reports mean ± sd over K stratified folds: use it on small data.")
    scale_mode = r2.radio(
        "Time scales", [AUTO, EXPLICIT], horizontal=True, key="train_scale_mode",
        format_func=lambda v: "auto from the data" if v == AUTO else "explicit (days)",
        help="auto (the library's default): the time unit, scales and silence gap are chosen from the "
             "training users' gaps between posts and recorded in the run.")
    with st.form("train_form", border=True):
        c0, cq = st.columns(2)
        title = c0.text_input("Run name (optional)", max_chars=run_store.MAX_TITLE, key="train_name",
                              placeholder=f"{name}-<head>-<time>", help="Empty: the dataset, the head and the time (UTC).")
        folds = 0
        if evaluation == "cv":
            folds = cq.number_input("Folds (K)", min_value=2, max_value=20, value=5, step=1, key="train_folds",
                                    help="Stratified folds of the cross-validation.")
        st.caption(f"{len(train_ts)} labelled users, D = {ts.dim}. The one split is 60/20/20 (train/validation/"
                   f"test), stratified by label: about {n_test_planned} test users.")
        values = {"evaluation": evaluation, "folds": folds, "scale_mode": scale_mode,
                  **_core_inputs(defaults, fdefaults, scale_mode, train_ts), **_model_inputs(ts, defaults)}
        advice = planned_split_text(len(train_ts), evaluation)
        if advice:
            st.caption(escape.escape_markdown(advice))
        submitted = st.form_submit_button("Start training", type="primary", disabled=disabled)
    estimate = memory_estimate_text(ts)
    if estimate:
        st.caption(estimate)
    if not submitted:
        return Setup(False)
    try:
        return Setup(True, title=title.strip(), config=build_config(values))
    except ValueError as exc:
        return Setup(True, title=title.strip(), error=str(exc))
