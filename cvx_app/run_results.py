"""A finished run's results as the Train page shows them: the small-data warnings (also for
older metrics formats), the AUC interval, the run's caption (device, users, time, head), its
time scales, the cross-validation table, one ROC curve per class (one-vs-rest, recomputed
from the saved model on the run's own test users when metrics.json holds no curve), the
per-class F1 table, the early-detection curve and the early-risk values or the reason there
are none.

No widgets here; Streamlit only for caching the recomputed curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from cvx_core.data.trajectory import TrajectorySet


def run_warnings(metrics: dict[str, Any]) -> list[str]:
    """The run's small-data warnings: ``metrics["warnings"]``, or for older runs without that
    list the library's own checks (``cvx_core.learn.metrics.small_data_warnings``, the same
    thresholds) on the test classes of the confusion matrix, else on the test count alone."""
    from cvx_app.run_store import confusion_of
    from cvx_core.learn.metrics import MIN_TEST_USERS, small_data_warnings

    warnings = metrics.get("warnings")
    if not isinstance(warnings, list):
        conf = confusion_of(metrics)
        n_test = metrics.get("n_test")
        if conf is not None:
            warnings = small_data_warnings([sum(row) for row in conf[0]], conf[1])
        elif isinstance(n_test, int) and not isinstance(n_test, bool) and n_test < MIN_TEST_USERS:
            warnings = small_data_warnings([n_test], ["all"])[:1]  # no classes known: the count's warning
        else:
            warnings = []
    return [str(w) for w in warnings if w]


def number_text(v: Any, fmt: str = ".3f") -> str:
    """A finite number formatted for a tile, else "–"."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return format(v, fmt) if ok else "–"


def run_caption(metrics: dict[str, Any]) -> str:
    """Device, users train/val/test, seconds, and how the run ended and which head it used
    (``head`` or the older ``head_chosen``, a name or a ``{name: ...}`` record)."""
    note = []
    if metrics.get("interrupted"):
        note.append("stopped by the user; the best checkpoint was evaluated")
    if metrics.get("stopped_early"):
        note.append("early stopping (validation log-loss stopped falling)")
    head = metrics.get("head") or metrics.get("head_chosen")
    if isinstance(head, (str, dict)):
        note.append("head " + (head if isinstance(head, str) else str(head.get("name", head))))
    seconds = metrics.get("seconds")
    return (f"Device {metrics.get('device')} · {metrics.get('n_train')}/{metrics.get('n_val')}/"
            f"{metrics.get('n_test')} users train/val/test · "
            + (f"{seconds:.1f} s" if isinstance(seconds, (int, float)) else "")
            + (" · " + "; ".join(note) if note else ""))


def run_scales_text(run_dir: Path) -> tuple[str, str | None] | None:
    """``(sentence, reason)``: the run's time unit, scales and silence gap as it trained
    (config.json, resolved when the scales were "auto") and, for auto, the rule and numbers of
    the choice (data.json; ``None`` for explicit scales); ``None`` when the files do not say."""
    from cvx_core.learn.runs import CONFIG_FILE, DATA_FILE, RunError, read_json

    try:
        features = read_json(run_dir / CONFIG_FILE)["train_config"]["features"]
        unit, scales, gap = features.get("time_unit", "days"), features["scales"], features["silence_gap"]
        text = (f"Time scales of this run: {', '.join(f'{float(s):g}' for s in scales)} {unit}, silence gap "
                f"{float(gap):g} {unit}")
    except (RunError, OSError, KeyError, TypeError, ValueError, AttributeError):
        return None
    try:
        choice = read_json(run_dir / DATA_FILE).get("scales")
    except (RunError, OSError, AttributeError):
        choice = None
    if isinstance(choice, dict) and isinstance(choice.get("reason"), str):
        return text + ", chosen from the training users' gaps between posts.", choice["reason"]
    return text + " (given explicitly).", None


def cv_tables(metrics: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame | None] | None:
    """Cross-validation as ``(mean ± sd of model and baseline, per-fold numbers or None)``,
    or ``None`` when the run was not cross-validated."""
    cv = metrics.get("cv")
    if not isinstance(cv, dict) or not cv:
        return None
    rows = []
    for what in ("auc", "accuracy"):
        row = {"metric": f"test {what}"}
        for who, prefix in (("model", "test"), ("baseline", "baseline")):
            mean, sd = cv.get(f"{prefix}_{what}_mean"), cv.get(f"{prefix}_{what}_sd")
            row[who] = f"{number_text(mean)} ± {number_text(sd)}" if mean is not None else "–"
        rows.append(row)
    folds = cv.get("folds")
    per_fold = (pd.DataFrame(folds).select_dtypes(exclude="object")
                if isinstance(folds, list) and folds and all(isinstance(f, dict) for f in folds) else None)
    return pd.DataFrame(rows), per_fold


def n_folds(metrics: dict[str, Any]) -> int:
    """How many cross-validation folds the run records (0 without cross-validation)."""
    folds = (metrics.get("cv") or {}).get("folds") if isinstance(metrics.get("cv"), dict) else None
    return len(folds) if isinstance(folds, list) else 0


def early_curve(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The early-detection curve's ``{xs, ys, x_title, baseline}`` (AUC against the first k
    posts or d days of each test user), or ``None`` when the run has none."""
    early = metrics.get("early")
    if not isinstance(early, dict):
        return None
    xs, ys = early.get("cuts"), early.get("auc")
    if not (isinstance(xs, list) and isinstance(ys, list) and xs and len(xs) == len(ys)):
        return None
    x_title = ("first d days of each test user's history" if early.get("by") == "days"
               else "first k posts of each test user")
    base = early.get("baseline_auc") if isinstance(early.get("baseline_auc"), list) else None
    return {"xs": xs, "ys": [y if isinstance(y, (int, float)) else None for y in ys], "x_title": x_title,
            "baseline": base}


def auc_interval_text(metrics: dict[str, Any]) -> str | None:
    """``"95% CI lo–hi"`` from ``test_auc_ci`` (a pair or ``{low, high}``), else ``None``."""
    ci = metrics.get("test_auc_ci")
    if isinstance(ci, dict):
        ci = [ci.get("low", ci.get("lo")), ci.get("high", ci.get("hi"))]
    if (isinstance(ci, (list, tuple)) and len(ci) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x == x for x in ci)):
        return f"95% CI {ci[0]:.3f}–{ci[1]:.3f}"
    return None


@dataclass(frozen=True)
class RocCurve:
    """One ROC curve of a run's test users: ``name`` ("model" for a binary run, else
    "class c vs rest"), false/true positive rates and the curve's AUC."""

    name: str
    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    auc: float


@st.cache_data(max_entries=16, show_spinner="Scoring the run's test users for one ROC curve per class…")
def _one_vs_rest(run_key: str, digest: str, _run_dir: str, _ts: TrajectorySet) -> tuple[RocCurve, ...]:
    from sklearn.metrics import roc_auc_score, roc_curve

    from cvx_app.cache import load_run
    from cvx_core.learn.model import predict_proba

    run = load_run(Path(_run_dir))
    test_ids = [u for u in (run.data.get("split") or {}).get("test", []) if u in _ts]
    classes = [int(c) for c in run.data.get("classes") or run.spec.get("classes") or []]
    if not test_ids or len(classes) < 3:
        return ()
    test = _ts.subset(test_ids)
    proba = predict_proba(run.model, test, device="cpu")  # [N, K], columns in class order
    y = np.asarray(test.labels)
    out = []
    for k, c in enumerate(classes):
        truth = y == c
        if truth.all() or not truth.any():
            continue  # a class absent from the test users has no curve
        fpr, tpr, _ = roc_curve(truth, proba[:, k])
        out.append(RocCurve(f"class {c} vs rest", tuple(map(float, fpr)), tuple(map(float, tpr)),
                            float(roc_auc_score(truth, proba[:, k]))))
    return tuple(out)


def run_data(dataset: str | None) -> TrajectorySet | None:
    """The dataset a run was trained on, or ``None`` when it is unknown or cannot be opened."""
    from cvx_app.cache import load_dataset

    if dataset is None:
        return None
    try:
        return load_dataset(dataset)
    except (KeyError, OSError, ValueError):
        return None


def roc_curves(metrics: dict[str, Any], run_dir: Path, ts: TrajectorySet | None, *,
               stamp: int) -> tuple[RocCurve, ...]:
    """The run's test ROC curves: the binary curve saved in metrics.json, or for a run with
    three or more classes one curve per class (one-vs-rest) from the saved model on the run's
    test users of ``ts``, its dataset (empty when ``ts`` is ``None`` or lacks those users)."""
    roc = metrics.get("roc")
    if isinstance(roc, dict) and roc.get("fpr") and roc.get("tpr"):
        auc = metrics.get("test_auc")
        return (RocCurve("model", tuple(roc["fpr"]), tuple(roc["tpr"]),
                         float(auc) if isinstance(auc, (int, float)) else float("nan")),)
    classes = metrics.get("classes")
    if not (isinstance(classes, list) and len(classes) >= 3) or stamp == 0 or ts is None:
        return ()
    try:
        return _one_vs_rest(f"{run_dir}:{stamp}", ts.digest(), str(run_dir), ts)
    except Exception:  # noqa: BLE001 - a run that no longer fits the data: no curves, said on the page
        return ()


def per_class_f1(metrics: dict[str, Any]) -> pd.DataFrame | None:
    """One row per class: class, F1 (one-vs-rest) and test users (from the confusion matrix),
    or ``None`` when the metrics hold no per-class F1."""
    from cvx_app.run_store import confusion_of

    f1 = metrics.get("f1_per_class")
    if isinstance(f1, list):
        names = [str(c) for c in metrics.get("classes") or range(len(f1))]
        f1 = dict(zip(names, f1))
    if not isinstance(f1, dict) or not f1:
        return None
    conf = confusion_of(metrics)
    support = {name: int(sum(row)) for row, name in zip(*conf)} if conf else {}
    rows = [{"class": str(c), "F1": None if not isinstance(v, (int, float)) or v != v else round(float(v), 3),
             "test users": support.get(str(c))} for c, v in f1.items()]
    return pd.DataFrame(rows, columns=["class", "F1", "test users"])


EARLY_RISK_KEYS = (
    ("erde5", "ERDE (o = 5)", "Early risk detection error with deadline o = 5 posts; lower is better."),
    ("erde50", "ERDE (o = 50)", "The same with o = 50 posts; lower is better."),
    ("f_latency", "Latency-weighted F1", "F1 times a penalty for late decisions; higher is better."),
)


def early_risk(metrics: dict[str, Any]) -> tuple[list[tuple[str, float, str]], str | None]:
    """``(values, reason)``: the eRisk measures present as ``(label, value, hint)``, and when
    there are none, the sentence that says why (never an empty section)."""
    early = metrics.get("early")
    if not isinstance(early, dict):
        return [], ("this run has no early-detection block (runs with a text encoder, and runs made "
                    "before early detection existed, have none)")
    values = [(label, float(early[key]), hint) for key, label, hint in EARLY_RISK_KEYS
              if isinstance(early.get(key), (int, float)) and early[key] == early[key]]
    if values:
        return values, None
    classes = metrics.get("classes")
    if isinstance(classes, list) and len(classes) != 2:
        return [], (f"ERDE and latency-weighted F1 score an alarm for one positive class, so they are "
                    f"defined for two classes; this run has {len(classes)}")
    return [], "the early-detection block holds no eRisk values (no test user of the positive class?)"
