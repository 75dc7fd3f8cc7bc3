"""Change points of very long users: the search runs in overlapping windows of
``CVX_CHANGEPOINT_WINDOW`` moments (``cvx_core.data.budgets.changepoint_windows``), so its
work grows linearly with the posts; checked by counting the searches and their sizes, not
by wall time."""

from __future__ import annotations

import numpy as np
import pytest

import cvx_core.analysis.changepoints as cpmod
from cvx_core.analysis.changepoints import ChangePointConfig, detect_changepoints
from cvx_core.data.budgets import changepoint_windows


def _planted(n: int, cuts: list[int], *, dim: int = 4, jump: float = 3.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    for k, c in enumerate(cuts):
        x[c:] += jump * (1 if k % 2 == 0 else -1) * np.eye(dim)[k % dim]
    return x


def _count_searches(monkeypatch) -> list[int]:
    sizes: list[int] = []
    real = cpmod._search

    def counted(signal, **kw):
        sizes.append(int(signal.shape[0]))
        return real(signal, **kw)

    monkeypatch.setattr(cpmod, "_search", counted)
    return sizes


def test_a_20k_post_user_is_searched_in_bounded_windows_whose_total_work_is_linear(monkeypatch):
    monkeypatch.setenv("CVX_CHANGEPOINT_WINDOW", "500")
    sizes = _count_searches(monkeypatch)
    n, cuts = 20_000, [3_000, 9_020, 15_000]  # 9,020 lies in the overlap of two windows
    calls: list[tuple[int, int]] = []
    res = detect_changepoints(_planted(n, cuts), progress=lambda done, total: calls.append((done, total)))
    wins = changepoint_windows(n)
    assert res.n_windows == len(wins) == len(sizes)
    assert max(sizes) <= 500  # each exact (quadratic) search sees at most the budget
    assert sum(sizes) <= n * 500 / 450 + 500  # overlap a tenth: every post searched ~1.11 times
    assert len(wins) <= n / 450 + 1  # quadratic work per window, so linear in the posts
    assert calls == [(k, len(wins)) for k in range(1, len(wins) + 1)]
    assert list(res.indices) == cuts


def test_windowed_search_equals_the_whole_search_when_changes_are_far_apart(monkeypatch):
    x = _planted(3_000, [400, 1_190, 2_100], seed=3)
    whole = detect_changepoints(x)
    monkeypatch.setenv("CVX_CHANGEPOINT_WINDOW", "300")
    windowed = detect_changepoints(x)
    assert whole.n_windows == 1 and windowed.n_windows == len(changepoint_windows(3_000))
    assert windowed.indices == whole.indices
    assert [abs(i - c) <= 3 for i, c in zip(whole.indices, (400, 1_190, 2_100))] == [True] * 3
    assert windowed.penalty == whole.penalty  # one penalty for the whole user


def test_a_user_within_the_budget_is_searched_once_and_reports_progress_once(monkeypatch):
    sizes = _count_searches(monkeypatch)
    calls: list[tuple[int, int]] = []
    res = detect_changepoints(_planted(200, [100]), progress=lambda d, t: calls.append((d, t)))
    assert sizes == [200] and res.n_windows == 1 and calls == [(1, 1)]
    assert res.to_dict()["n_windows"] == 1


def test_windows_run_over_moments_so_posts_of_one_date_are_never_split(monkeypatch):
    monkeypatch.setenv("CVX_CHANGEPOINT_WINDOW", "100")
    n = 1_200  # 600 dates, two posts each
    x = _planted(n, [501, 901], seed=5)  # planted inside a date: the cut goes to a date's edge
    days = (np.arange(n) // 2).astype("timedelta64[D]") + np.datetime64("2020-01-01", "D")
    res = detect_changepoints(x, datetimes=days.astype("datetime64[us]"))
    assert res.n_windows == len(changepoint_windows(600))  # windows count dates, not posts
    assert all(i % 2 == 0 for i in res.indices)
    assert [min(abs(i - c) for i in res.indices) for c in (501, 901)] == [1, 1]


def test_windowed_noise_user_gets_no_change_point_at_the_default_sensitivity(monkeypatch):
    monkeypatch.setenv("CVX_CHANGEPOINT_WINDOW", "500")
    res = detect_changepoints(np.random.default_rng(11).normal(size=(6_000, 16)), config=ChangePointConfig())
    assert res.n_windows > 1 and res.indices == ()


@pytest.mark.parametrize("bad", ["0", "-3", "abc"])
def test_a_bad_window_budget_is_refused_naming_the_variable(monkeypatch, bad):
    monkeypatch.setenv("CVX_CHANGEPOINT_WINDOW", bad)
    with pytest.raises(ValueError, match="CVX_CHANGEPOINT_WINDOW"):
        detect_changepoints(_planted(50, [25]))


def test_planted_sample_recall_with_the_defaults_stays_at_least_0_95():
    """The shipped sample (240 users, D = 384): the planted change point is found within 2
    posts for >= 95% of users with ``analyze``'s defaults (windowing never triggers here)."""
    import json
    from pathlib import Path

    from cvx_core.data.io import load_trajectories

    root = Path(__file__).resolve().parents[2] / "sample_data"
    truth = json.loads((root / "truth.json").read_text(encoding="utf-8"))["change_points"]
    found = 0
    ts = load_trajectories(root / "sample.parquet")
    for tr in ts:
        res = detect_changepoints(tr)
        assert res.n_windows == 1
        found += any(abs(i - int(truth[tr.user_id]["index"])) <= 2 for i in res.indices)
    assert len(ts) == 240 and found / len(ts) >= 0.95
