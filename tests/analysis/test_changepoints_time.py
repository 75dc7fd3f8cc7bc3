"""Time-aware change-point search: real gaps count (issue: eleven posts three days apart
inside a history of yearly posts must not produce change points of their own)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvx_core.analysis.changepoints import (
    ChangePointConfig,
    constrained_optimum,
    default_penalty,
    detect_changepoints,
    mean_gap_days,
    segment_cost,
    time_bins,
)
from cvx_core.data.trajectory import Trajectory


def yearly_with_burst(seed: int = 0, *, dim: int = 32, burst: int = 11, burst_gap_days: float = 3.0):
    """20 yearly posts on one subject, then ``burst`` posts ``burst_gap_days`` apart, each
    on a different subject, then 10 more yearly posts on the first subject."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1, dim)
    sigma = 0.1
    days: list[float] = []
    emb: list[np.ndarray] = []
    for y in range(20):
        days.append(365.0 * y)
        emb.append(base + rng.normal(0, sigma, dim))
    start = days[-1] + 200.0
    for k in range(burst):
        days.append(start + burst_gap_days * k)
        topic = rng.normal(0, 1, dim)
        emb.append(base + 3.0 * sigma * np.sqrt(dim) * topic / np.linalg.norm(topic) + rng.normal(0, sigma, dim))
    for y in range(10):
        days.append(start + 200.0 + 365.0 * y)
        emb.append(base + rng.normal(0, sigma, dim))
    dts = np.datetime64("1950-01-01", "ns") + (np.asarray(days) * 86_400e9).astype("timedelta64[ns]")
    return Trajectory("president", np.asarray(emb), dts), (20, 20 + burst)


@pytest.mark.parametrize("seed", range(4))
def test_a_burst_of_posts_days_apart_inside_yearly_posts_holds_no_change_points(seed):
    tr, (a, b) = yearly_with_burst(seed)
    # the former default penalty (BIC-like, uncalibrated) on post order shows the defect
    pen = default_penalty(np.asarray(tr.embeddings, dtype=np.float64))
    post_order = detect_changepoints(tr, config=ChangePointConfig(time_aware="none", penalty=pen)).indices
    inside_before = [c for c in post_order if a < c < b]
    assert len(inside_before) >= 3, post_order  # the defect: the burst is cut into pieces
    res = detect_changepoints(tr)  # default: time-aware
    assert res.config.time_aware == "bins"
    inside = [c for c in res.indices if a < c < b]
    assert inside == [], res.indices
    assert len(res.indices) <= 2  # at most: into the burst and out of it


def test_merge_option_also_keeps_the_burst_whole():
    tr, (a, b) = yearly_with_burst(1)
    res = detect_changepoints(tr, config=ChangePointConfig(time_aware="merge"))
    assert [c for c in res.indices if a < c < b] == []
    assert res.n_bins < tr.n_posts


def test_same_timestamp_posts_are_never_split():
    rng = np.random.default_rng(3)
    # 6 "speeches" a year apart, 5 paragraphs each at the speech's time; subject changes
    # in the middle of speech 3 (paragraph level) would be a split inside one timestamp
    emb = rng.normal(0, 0.05, (30, 16))
    emb[13:] += 2.0
    days = np.repeat(np.arange(6) * 365.0, 5)
    dts = np.datetime64("2000-01-01", "ns") + (days * 86_400e9).astype("timedelta64[ns]")
    tr = Trajectory("u", emb, dts)
    assert 13 in detect_changepoints(tr, config=ChangePointConfig(time_aware="none")).indices
    res = detect_changepoints(tr)
    assert res.indices and all(c % 5 == 0 for c in res.indices), res.indices


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(8, 40), st.sampled_from([1, 2, 3]))
def test_unconstrained_dynamic_programme_matches_the_penalised_optimum_of_ruptures(seed, n, min_size):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 3))
    x[n // 2 :] += rng.uniform(0, 3)
    pen = default_penalty(x)
    ours = constrained_optimum(x, np.ones(n, dtype=bool), pen=pen, min_size=min_size)
    ref = detect_changepoints(x, config=ChangePointConfig(min_size=min_size, min_moments=1, penalty=pen)).indices
    obj = lambda idx: segment_cost(x, idx) + pen * len(idx)  # noqa: E731
    assert obj(ours) == pytest.approx(obj(list(ref)), rel=1e-9, abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(6, 14))
def test_constrained_optimum_is_the_best_allowed_segmentation_by_brute_force(seed, n):
    from itertools import combinations

    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 2))
    x[n // 3 :] += 2.0
    allowed = rng.random(n) < 0.5
    pen, min_size = 1.5, 2
    ours = constrained_optimum(x, allowed, pen=pen, min_size=min_size)
    assert all(allowed[c] for c in ours)
    obj = lambda idx: segment_cost(x, list(idx)) + pen * len(idx)  # noqa: E731
    cands = [c for c in range(1, n) if allowed[c]]
    best = min(
        obj(idx)
        for k in range(len(cands) + 1)
        for idx in combinations(cands, k)
        if all(b - a >= min_size for a, b in zip((0, *idx), (*idx, n)))
    )
    assert obj(ours) == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_time_helpers():
    dts = np.array(["2000-01-01", "2000-01-01", "2000-01-03", "2001-01-01"], dtype="datetime64[ns]")
    assert mean_gap_days(dts) == pytest.approx(366.0 / 2)
    assert time_bins(dts, time_scale=0.25).tolist() == [0, 3]
    assert time_bins(dts, time_scale=0.0).tolist() == [0, 2, 3]
    assert mean_gap_days(dts[:1]) == 0.0


def test_time_aware_options_are_validated_and_round_trip():
    with pytest.raises(ValueError, match="time_aware"):
        ChangePointConfig(time_aware="resample")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time_scale"):
        ChangePointConfig(time_scale=-1.0)
    cfg = ChangePointConfig(time_aware="merge", time_scale=0.5)
    assert ChangePointConfig.from_dict(cfg.to_dict()) == cfg


def test_bare_matrix_searches_post_order():
    tr, _ = yearly_with_burst(0)
    a = detect_changepoints(np.asarray(tr.embeddings)).indices
    b = detect_changepoints(tr, config=ChangePointConfig(time_aware="none")).indices
    assert a == b


def test_real_sample_nixon_1973_burst_is_not_cut_by_the_time_aware_search():
    """Nixon sent eleven written State of the Union messages between 2 Feb and 14 Mar 1973,
    inside yearly addresses (shipped real-text sample). At a lower penalty the post-order
    search cuts that burst three times; the time-aware search does not cut it."""
    from pathlib import Path

    from cvx_core.data.io import load_trajectories

    ts = load_trajectories(Path(__file__).resolve().parents[2] / "sample_data" / "real_text.parquet")
    nix = ts["nixon"]
    lo, hi = np.datetime64("1973-02-01"), np.datetime64("1973-03-31")

    def inside(cfg: ChangePointConfig) -> list[int]:
        idx = detect_changepoints(nix, config=cfg).indices
        return [c for c in idx if lo <= nix.datetimes[c - 1] and nix.datetimes[c] <= hi]

    # the former (uncalibrated) default penalty at 0.7x, as when the defect was found
    pen = 0.7 * default_penalty(np.asarray(nix.embeddings, dtype=np.float64))
    assert len(inside(ChangePointConfig(time_aware="none", penalty=pen))) >= 3
    assert inside(ChangePointConfig(penalty=pen, min_moments=1)) == []
    assert inside(ChangePointConfig()) == []  # the calibrated default (at sensitivity 0.3 it cuts at 14 Feb, after the 12-day gap)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(6, 12), st.sampled_from([1, 2]), st.sampled_from([1, 2]))
def test_moment_optimum_is_the_best_segmentation_between_moments_by_brute_force(seed, m, min_size, min_moments):
    from itertools import combinations

    from cvx_core.analysis.changepoints import moment_optimum
    from cvx_core.analysis.penalty import moment_sums

    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 4, m)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    x = rng.normal(0, 1, (int(counts.sum()), 5))
    x[int(starts[m // 2]):] += 1.5
    pen = 4.0
    cuts = moment_optimum(moment_sums(x, starts), pen=pen, min_size=min_size, min_moments=min_moments)
    obj = lambda ks: segment_cost(x, [int(starts[k]) for k in ks]) + pen * len(ks)  # noqa: E731

    def ok(ks: tuple[int, ...]) -> bool:
        b = (0, *ks, m)
        post = [0, *[int(starts[k]) for k in ks], int(counts.sum())]
        return all(b[i + 1] - b[i] >= min_moments and post[i + 1] - post[i] >= min_size for i in range(len(b) - 1))

    best = min(obj(ks) for r in range(m) for ks in combinations(range(1, m), r) if ok(ks))
    assert ok(tuple(cuts)) and obj(cuts) == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_posts_of_one_date_are_one_moment_and_the_search_cuts_only_between_dates():
    """Four posts per date (a date-only column): the change sits at a date boundary, the
    posts of a date are never separated, and each segment spans at least two dates."""
    rng = np.random.default_rng(7)
    dates = np.repeat(np.arange(12), 4)
    x = rng.normal(0, 0.3, (48, 16))
    x[22:] += 1.0  # the shift starts inside date 5 (posts 20-23)
    dts = np.datetime64("2001-01-01", "D") + (dates * 30).astype("timedelta64[D]")
    tr = Trajectory("u", x, dts.astype("datetime64[us]"))
    res = detect_changepoints(tr)
    assert res.n_bins == 12
    assert res.indices and all(c % 4 == 0 for c in res.indices), res.indices
    assert any(abs(c - 22) <= 4 for c in res.indices)
    bounds = [0, *res.indices, 48]
    assert all(b - a >= 8 for a, b in zip(bounds[:-1], bounds[1:]))


@pytest.mark.parametrize("dim", [16, 384])
def test_twenty_posts_of_noise_get_no_change_point_with_probability_at_least_0_9(dim):
    rng = np.random.default_rng(20 + dim)
    dts = np.datetime64("2020-01-01", "us") + np.arange(20).astype("timedelta64[D]").astype("timedelta64[us]")
    clean = [not detect_changepoints(Trajectory("u", rng.normal(0, 1, (20, dim)), dts)).indices for _ in range(100)]
    assert np.mean(clean) >= 0.9, np.mean(clean)


def test_higher_sensitivity_finds_at_least_as_many_change_points_on_the_same_scale():
    from cvx_core.analysis.penalty import SENSITIVITIES, calibrated_scale

    scales = [calibrated_scale(s, 40, 50.0) for s in SENSITIVITIES]
    assert all(a >= b for a, b in zip(scales[:-1], scales[1:]))
    tr, _ = yearly_with_burst(2)
    pens = [detect_changepoints(tr, config=ChangePointConfig(sensitivity=s)).penalty for s in SENSITIVITIES]
    assert all(a >= b for a, b in zip(pens[:-1], pens[1:]))
    with pytest.raises(ValueError, match="sensitivity"):
        ChangePointConfig(sensitivity=0.0)
    with pytest.raises(ValueError, match="min_moments"):
        ChangePointConfig(min_moments=0)
