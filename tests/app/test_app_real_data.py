"""The analyst's app on real data (issue 25): both shipped samples listed, training on the
labelled users only, runs listed per dataset, readable excerpts with highlighted terms,
Explore opening on the strongest change point, labels that convert to Arrow, multi-class
results (per-class F1, eRisk reason)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from cvx_app import excerpts, explore, jobs, run_results, workspace
from cvx_app import run_store
from cvx_core.data.trajectory import Trajectory, TrajectorySet


def _set(labels: list[int], *, n: int = 12, dim: int = 4, jump_user: int | None = None) -> TrajectorySet:
    rng = np.random.default_rng(0)
    trs = []
    for u, y in enumerate(labels):
        x = rng.normal(0, 0.01, size=(n, dim))
        if u == jump_user:
            x[n // 2:] += 5.0
        trs.append(Trajectory(f"u{u}", x, np.arange(n, dtype=np.float64) * 86400.0, label=None if y < 0 else y))
    return TrajectorySet(trs, name="t")


def test_both_shipped_samples_are_listed_first_and_cannot_be_deleted(app_workspace):
    entries = workspace.list_datasets()
    assert [e.name for e in entries[:2]] == ["sample", "real_text"] and all(e.is_sample for e in entries[:2])
    with pytest.raises(ValueError, match="real_text"):
        workspace.delete_dataset("real_text")


def test_an_upload_named_like_a_shipped_sample_gets_another_name(app_workspace, small_planted):
    assert workspace.save_new_dataset(small_planted[0], "real_text.csv") == "real_text-2"


def test_training_keeps_the_labelled_users_and_counts_the_others():
    ts = _set([0, 1, -1, 0, 1, -1, -1])
    kept, left_out = jobs.labelled_users(ts)
    assert left_out == 3 and kept.user_ids == ["u0", "u1", "u3", "u4"]
    assert jobs.trainable_problem(ts) is None
    assert jobs.unlabelled_note(3, 7) == "3 of 7 users have no label and are left out of training (it uses the 4 labelled users)"
    full, none_out = jobs.labelled_users(_set([0, 1]))
    assert none_out == 0 and len(full) == 2 and jobs.unlabelled_note(0, 2) is None


def test_fewer_than_two_classes_among_labelled_users_is_refused_with_that_reason():
    assert "all 2 labelled users have label 1" in jobs.trainable_problem(_set([1, -1, 1]))
    assert "none of its 2 users has a label" in jobs.trainable_problem(_set([-1, -1]))
    assert "every user has label 0" in jobs.trainable_problem(_set([0, 0]))


def test_the_real_text_sample_trains_on_its_35_labelled_users():
    from cvx_core.data.io import load_trajectories

    ts = load_trajectories(workspace.SHIPPED["real_text"])
    kept, left_out = jobs.labelled_users(ts)
    assert (len(ts), len(kept), left_out) == (45, 35, 10)
    assert jobs.trainable_problem(ts) is None and set(np.unique(kept.labels)) == {0, 1}


def test_runs_of_a_dataset_come_first_or_alone(tmp_path):
    from datetime import datetime, timezone

    def view(name: str, dataset: str) -> run_store.RunView:
        return run_store.RunView(name=name, title=name, path=tmp_path, status="finished", problem=None, dataset=dataset,
                                metrics=None, history=[], has_weights=False, modified=datetime.now(timezone.utc), notes="")

    views = [view("a", "x"), view("b", "y"), view("c", "x")]
    assert [v.name for v in run_store.runs_of_dataset(views, "x")] == ["a", "c"]
    assert [v.name for v in run_store.runs_of_dataset(views, "x", show_all=True)] == ["a", "c", "b"]
    assert run_store.runs_of_dataset(views, "z") == []
    assert run_store.other_dataset_run(views, "x", "b") and not run_store.other_dataset_run(views, "x", "a")
    assert not run_store.other_dataset_run(views, "x", None)


def test_excerpt_starts_at_the_sentence_with_a_term_and_stays_short():
    text = ("The weather was fine. " * 30) + "Then the war began in earnest. " + ("Peace talks stalled. " * 30)
    out = excerpts.excerpt(text, ["war"], max_chars=120)
    assert out.startswith("… Then the war began") and len(out) <= 130 and out.endswith("…")
    assert excerpts.excerpt("Short post.", ["war"]) == "Short post."


def test_highlight_escapes_user_text_and_marks_whole_words_only():
    md = excerpts.highlight_markdown("War <b>is</b> [x](javascript:1) warfare *war*", ["war"])
    assert md.startswith(":orange-background[War]")
    assert "<b>" not in md and "\\<b\\>" in md and "\\[x\\]\\(javascript\\:1\\)" in md
    assert "warfare" in md and md.count(":orange-background[") == 2  # "War" and "*war*"'s war, not warfare


def test_highlight_of_a_term_with_brackets_cannot_close_the_directive_early():
    md = excerpts.highlight_markdown("a ]b[ c", ["]b["])
    assert ":orange-background[\\]b\\[]" in md


def test_explore_opens_on_the_user_with_the_strongest_change_point():
    ts = _set([0, 1, 0, 1], jump_user=2)

    class CP:
        def __init__(self, idx):
            self.indices = tuple(idx)

    class U:
        def __init__(self, uid, idx):
            self.user_id, self.changepoints = uid, CP(idx)

    analysis = [U("u0", [3]), U("u1", []), U("u2", [6]), U("u3", [9])]
    user, size = explore.strongest_change(ts, analysis)
    assert user == "u2" and size > 10
    assert explore.strongest_change(ts, [U(u, []) for u in ts.user_ids]) is None


def test_tables_with_unlabelled_users_convert_to_arrow():
    labels = explore.nullable_labels([0, None, 1, -1])
    assert labels.isna().tolist() == [False, True, False, True]
    pa.Table.from_pandas(pd.DataFrame({"label": labels}))  # raised ArrowInvalid 'none' before


def test_per_class_f1_and_the_reason_multi_class_runs_have_no_erisk():
    metrics = {"classes": [0, 1, 2], "f1_per_class": {"0": 0.5, "1": 0.25, "2": float("nan")},
               "confusion": {"classes": ["0", "1", "2"], "matrix": [[2, 0, 0], [1, 3, 0], [0, 0, 4]]},
               "early": {"erde5": None, "erde50": None, "f_latency": None}}
    table = run_results.per_class_f1(metrics)
    assert table["class"].tolist() == ["0", "1", "2"] and table["test users"].tolist() == [2, 4, 4]
    assert table["F1"].tolist()[:2] == [0.5, 0.25] and pd.isna(table["F1"].iloc[2])
    values, why = run_results.early_risk(metrics)
    assert values == [] and "defined for two classes; this run has 3" in why
    values, why = run_results.early_risk({"classes": [0, 1], "early": {"erde5": 0.3}})
    assert values[0][:2] == ("ERDE (o = 5)", 0.3) and why is None
    assert "no early-detection block" in run_results.early_risk({"classes": [0, 1]})[1]


def test_nearest_posts_are_ranked_by_cosine_in_the_original_space():
    ts = _set([0, 1, 0], n=5)
    x = np.concatenate([tr.embeddings for tr in ts])
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit @ unit[5 + 2]  # user u1, post 3
    sims[5 + 2] = -np.inf
    near = explore.nearest_posts(ts, "u1", 2, k=4)
    assert list(near["similarity"]) == [round(float(v), 4) for v in np.sort(sims)[::-1][:4]]
    assert "text" not in near.columns and near["post"].min() >= 1
    assert not ((near["user_id"] == "u1") & (near["post"] == 3)).any()  # never the post itself


def test_the_open_users_path_has_start_and_end_markers():
    from cvx_app import figures
    from cvx_app.escape import escape_hover

    proj = pd.DataFrame({"x": [0.0, 1.0, 2.0, 5.0], "y": [0.0, 1.0, 0.0, 5.0], "user_id": ["a", "a", "a", "b"],
                         "post": [0, 1, 2, 0], "days_since_start": [0.0, 1.0, 2.0, 0.0], "label": [0, 0, 0, 1],
                         "user_id_safe": ["a", "a", "a", "b"], "when": ["d"] * 4, "words": [""] * 4})
    fig = figures.explore_figure(proj, method="PCA", colour=None, colour_title="label", categorical=True,
                                 paths=["a", "b"], changepoints={}, escape=escape_hover)
    ends = [t for t in fig.data if t.name.startswith("start / end ")]
    assert len(ends) == 1 and ends[0].name == "start / end a"  # only the open user's path
    assert list(ends[0].x) == [0.0, 2.0] and list(ends[0].text) == ["start", "end"]


def test_cohort_drift_bins_posts_and_finds_the_planted_shift_of_the_mean():
    from cvx_app import cohort_drift as cd

    rng = np.random.default_rng(1)
    trs = []
    for u in range(6):
        days = np.arange(0, 120, 3)
        x = rng.normal(0, 0.01, size=(days.size, 3))
        x[days >= 60, 0] += 1.0  # every user's posts move after day 60
        when = np.datetime64("2024-01-01T00:00:00", "us") + days.astype("timedelta64[D]")
        trs.append(Trajectory(f"u{u}", x, when, label=u % 2))
    drift = cd.cohort_drift(TrajectorySet(trs, name="c"), period="W")
    f = drift.frame
    assert drift.period == "week" and f["posts"].sum() == 6 * 40 and (f["users"] <= 6).all()
    assert np.isnan(f["step"].iloc[0]) and f["from_start"].iloc[0] == 0.0
    assert f["from_start"].iloc[-1] > 0.9
    assert len(drift.change_points) >= 1
    shift = pd.Timestamp("2024-01-01") + pd.Timedelta(days=60)
    assert min(abs(c - shift) for c in drift.change_points) <= pd.Timedelta(days=7)


def test_choose_period_keeps_at_most_200_bins():
    from cvx_app import cohort_drift as cd

    assert cd.choose_period(pd.Timestamp("2024-01-01"), pd.Timestamp("2024-03-01"))[1] == "day"
    assert cd.choose_period(pd.Timestamp("2020-01-01"), pd.Timestamp("2023-01-01"))[1] == "week"
    assert cd.choose_period(pd.Timestamp("1900-01-01"), pd.Timestamp("2000-01-01"))[1] == "year"


def test_window_drift_finds_the_dimension_users_and_cluster_that_moved():
    from cvx_app import window_drift as wd

    rng = np.random.default_rng(2)
    trs = []
    start = np.datetime64("2024-01-01T00:00:00", "us")
    for u in range(12):
        days = np.arange(0, 40, 2)
        x = rng.normal(0, 0.05, size=(days.size, 5)) + np.array([1.0, 0, 0, 0, 0])
        if u < 6:  # half the users move along dimension 3 in the second half
            x[days >= 20, 3] += 2.0
        trs.append(Trajectory(f"u{u}", x, start + days.astype("timedelta64[D]"), label=u % 2))
    ts = TrajectorySet(trs, name="w")
    ref, cur = wd.default_windows(ts)
    out = wd.window_drift(ts, ref, cur)
    assert out.n_reference + out.n_current == 12 * 20
    assert out.dimensions["dimension"].iloc[0] == 3 and out.dimensions["p_adjusted"].iloc[0] < 1e-6
    assert set(out.users["user_id"].head(6)) == {f"u{u}" for u in range(6)}
    assert out.clusters["change"].abs().max() > 0.3  # the moved posts form a cluster of the current window
    with pytest.raises(ValueError, match="reference window holds no post"):
        wd.window_drift(ts, ("2020-01-01", "2020-02-01"), cur)


def test_a_user_with_many_change_points_shows_three_and_the_rest_in_one_expander():
    from streamlit.testing.v1 import AppTest

    def page():
        import streamlit as st

        from cvx_app import explore_panels

        explore_panels._in_groups([f"cp {k}" for k in range(7)], lambda k, item: st.text(item))

    at = AppTest.from_function(page).run()
    assert not at.exception
    assert [t.value for t in at.main.text[:3]] == ["cp 0", "cp 1", "cp 2"]
    (more,) = at.expander
    assert more.label == "4 more change point(s)" and [t.value for t in more.text] == ["cp 3", "cp 4", "cp 5", "cp 6"]


def test_cohort_drift_change_points_follow_the_sensitivity_and_are_cached_per_value(sample_set):
    from cvx_app import cohort_drift as cd
    from cvx_core.analysis.penalty import DEFAULT_SENSITIVITY, SENSITIVITIES

    lo, hi = min(SENSITIVITIES), max(SENSITIVITIES)
    at_lo, at_hi = cd.cohort_drift(sample_set, sensitivity=lo), cd.cohort_drift(sample_set, sensitivity=hi)
    assert (at_lo.sensitivity, at_hi.sensitivity) == (lo, hi)
    assert len(at_hi.change_points) > len(at_lo.change_points)  # more false alarms allowed: more found
    assert cd.cohort_drift(sample_set).change_points == cd.cohort_drift(
        sample_set, sensitivity=DEFAULT_SENSITIVITY).change_points
    digest = sample_set.digest()  # the cache key holds the sensitivity: each value gets its own result
    assert cd.cached_cohort_drift(digest, lo, sample_set).change_points == at_lo.change_points
    assert cd.cached_cohort_drift(digest, hi, sample_set).change_points == at_hi.change_points
