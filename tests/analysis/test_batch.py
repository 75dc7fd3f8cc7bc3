"""Tests of cvx_core.analysis.batch: batch analysis of a TrajectorySet with progress reports."""

from __future__ import annotations

import numpy as np
import pytest

from cvx_core.analysis.attribution import cohort_attribution
from cvx_core.analysis.batch import SetAnalysis, analyze_set
from cvx_core.analysis.changepoints import (
    BOCPDConfig,
    ChangePointConfig,
    detect_changepoints,
)


def test_progress_is_called_with_increasing_counts_ending_at_total(small_planted):
    ts, _ = small_planted
    calls: list[tuple[int, int]] = []
    analyze_set(ts, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, len(ts)) and calls[-1] == (len(ts), len(ts))
    dones = [d for d, _ in calls]
    assert dones == sorted(set(dones))
    assert all(t == len(ts) for _, t in calls)


def test_progress_calls_are_bounded_for_large_sets():
    from cvx_core.analysis.batch import _MAX_PROGRESS_CALLS
    from cvx_core.data.trajectory import Trajectory, TrajectorySet

    rng = np.random.default_rng(0)
    dts = np.array(["2024-01-01", "2024-01-02", "2024-01-03"], dtype="datetime64[us]")
    ts = TrajectorySet([Trajectory(f"u{i}", rng.normal(size=(3, 2)), dts) for i in range(450)])
    calls: list[int] = []
    analyze_set(ts, progress=lambda d, t: calls.append(d))
    assert len(calls) <= _MAX_PROGRESS_CALLS + 1
    assert calls[0] == 0 and calls[-1] == 450 and calls == sorted(set(calls))


def test_per_user_results_match_the_single_user_functions(small_planted):
    ts, _ = small_planted
    cfg = ChangePointConfig(penalty_scale=0.8)
    res = analyze_set(ts, cp_config=cfg)
    assert isinstance(res, SetAnalysis) and len(res) == len(ts)
    assert [u.user_id for u in res] == ts.user_ids
    for tr in ts:
        u = res[tr.user_id]
        assert u.changepoints.indices == detect_changepoints(tr, config=cfg).indices
        np.testing.assert_allclose(u.attribution.drift, tr.embeddings[-1].astype(float) - tr.embeddings[0])
        assert u.bocpd is None and u.narratives is None
    np.testing.assert_allclose(res.cohort.mean_shares, cohort_attribution(ts).mean_shares)
    assert res.n_changepoints.shape == (len(ts),)
    with pytest.raises(KeyError):
        res["nobody"]


def test_planted_change_points_are_found_in_most_users(small_planted):
    ts, truth = small_planted
    res = analyze_set(ts)
    hits = sum(
        any(abs(i - truth["change_points"][u.user_id]["index"]) <= 2 for i in u.changepoints.indices)
        for u in res
    )
    # 31 / 40 at the default sensitivity 0.05 (D = 32, ~15 posts: the calibrated penalty
    # holds its false-alarm rate at the cost of some power on short histories; 0.8 before)
    assert hits >= 0.75 * len(ts)


def test_optional_bocpd_and_narratives_and_changepoint_frame(small_planted):
    ts, _ = small_planted
    sub = ts.subset(ts.user_ids[:6])
    res = analyze_set(sub, bocpd=BOCPDConfig(max_run_length=30), narratives=True)
    for u, tr in zip(res, sub):
        assert u.bocpd is not None and u.bocpd.change_probability.shape == (tr.n_posts,)
        assert u.narratives is not None and len(u.narratives) == u.changepoints.n_changes
    frame = res.changepoint_frame()
    assert len(frame) == int(res.n_changepoints.sum())
    assert list(frame.columns) == ["user_id", "label", "index", "datetime", "day", "n_posts"]
    for row in frame.itertuples():
        assert row.datetime == sub[row.user_id].datetimes[row.index]
    assert res.bocpd_config is not None and res.elapsed_s > 0


# ------------------------------------------------------------------------------------------
# user_timeline: what the app's timeline draws, computed in the library
# ------------------------------------------------------------------------------------------
def test_user_timeline_aligns_posts_steps_silences_and_narratives(sample_set, sample_truth):
    from cvx_core.analysis.batch import user_timeline
    from cvx_core.features.analytic import AnalyticBackend
    from cvx_core.features.config import TemporalFeaturesConfig

    cfg = TemporalFeaturesConfig()
    tr = max(sample_set, key=lambda t: t.n_posts)
    tl = user_timeline(tr, features_config=cfg)
    T = tr.n_posts
    assert tl.drift.shape == tl.change_probability.shape == (T,)
    assert tl.velocity_norm.shape == tl.cosine_distance.shape == (T - 1,)
    np.testing.assert_allclose(tl.drift[-1], np.linalg.norm(AnalyticBackend.drift(tr.embeddings.astype(np.float64))))
    exact = AnalyticBackend.discrete_summary(tr.embeddings, tr.timestamps, cfg)
    assert [i for i, _ in tl.silences] == list(exact.silence_steps) and exact.n_silences > 0
    assert all(tr.timestamps[j] - tr.timestamps[i] > cfg.silence_gap for i, j in tl.silences)
    assert len(tl.narratives) == len(tl.changepoints.indices) >= 1
    planted = sample_truth["change_points"][tr.user_id]["index"]
    assert min(abs(i - planted) for i in tl.changepoints.indices) <= 2


def test_user_timeline_of_a_single_post_user_is_empty_but_valid():
    from cvx_core.analysis.batch import user_timeline
    from cvx_core.data.trajectory import Trajectory

    tr = Trajectory("solo", np.ones((1, 4)), np.array(["2024-01-01"], dtype="datetime64[us]"))
    tl = user_timeline(tr)
    assert tl.n_posts == 1 and tl.drift.tolist() == [0.0]
    assert tl.velocity_norm.shape == (0,) and tl.silences == () and tl.narratives == ()


def test_user_timeline_silences_index_posts_even_with_burst_aggregation():
    from cvx_core.analysis.batch import user_timeline
    from cvx_core.data.trajectory import Trajectory
    from cvx_core.features.config import TemporalFeaturesConfig

    # a burst of three posts, then a 10-day silence, then two posts
    days = np.array([0.0, 0.001, 0.002, 10.0, 11.0])
    dts = np.datetime64("2024-01-01", "us") + (days * 86_400e6).astype("timedelta64[us]")
    tr = Trajectory("u", np.random.default_rng(0).normal(size=(5, 3)), dts)
    tl = user_timeline(tr, features_config=TemporalFeaturesConfig(burst_window=0.01))
    assert tl.silences == ((2, 3),)


def test_moment_series_pools_same_date_posts_at_day_resolution():
    from cvx_core.analysis.batch import moment_series, timestamp_resolution_days, user_timeline
    from cvx_core.data.trajectory import Trajectory

    rng = np.random.default_rng(1)
    days = np.repeat([0, 0, 365, 730], [1, 3, 4, 2])[1:]  # 3 + 4 + 2 posts on three dates
    dts = (np.datetime64("1790-01-08", "D") + days.astype("timedelta64[D]")).astype("datetime64[us]")
    x = rng.normal(0, 1, (9, 8))
    tr = Trajectory("u", x, dts)
    ms = moment_series(tr)
    assert ms.starts.tolist() == [0, 3, 7] and ms.counts.tolist() == [3, 4, 2]
    assert ms.resolution_days == 1.0 and timestamp_resolution_days(dts + np.timedelta64(1, "h")) == 1 / 24
    means = [x[0:3].mean(0), x[3:7].mean(0), x[7:].mean(0)]
    assert ms.velocity_norm == pytest.approx([np.linalg.norm(means[1] - means[0]) / 365,
                                              np.linalg.norm(means[2] - means[1]) / 365])
    assert ms.velocity_norm.max() < 1.0  # no 1,440x spike: same-date posts are one moment
    assert user_timeline(tr).moments.starts.tolist() == [0, 3, 7]


def test_analyze_set_runs_its_users_with_one_blas_thread_and_restores_the_default_after():
    from threadpoolctl import threadpool_info

    from cvx_core.analysis.batch import BLAS_THREADS, analyze_set
    from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set

    def blas_threads() -> set[int]:
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}

    before = blas_threads()
    if not before:
        pytest.skip("no BLAS library is loaded")
    seen: list[set[int]] = []
    ts, _ = make_planted_trajectory_set(config=PlantedConfig(n_users=6, dim=8, n_planted=2, mean_posts=12, max_posts=20), seed=2)
    analyze_set(ts, progress=lambda done, total: seen.append(blas_threads()) if done else None)
    assert BLAS_THREADS == 1 and seen and all(s == {1} for s in seen)
    assert blas_threads() == before
