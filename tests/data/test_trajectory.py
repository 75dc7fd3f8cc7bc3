"""The data model: validation, summaries, lookups, padded batches and content digests."""

from __future__ import annotations

import numpy as np
import pytest

from cvx_core.data.trajectory import (
    Trajectory,
    TrajectoryError,
    TrajectorySet,
    days_since_first,
)


def _traj(uid: str, n: int, d: int = 3, label: int | None = 0, seed: int = 0) -> Trajectory:
    rng = np.random.default_rng(seed)
    start = np.datetime64("2024-01-01T00:00:00", "us")
    offsets = np.sort(rng.integers(0, 10 * 86_400, size=n)) * 1_000_000_000
    return Trajectory(uid, rng.normal(size=(n, d)), start + offsets.astype("timedelta64[ns]"), label=label)


def test_timestamps_are_float64_days_since_the_first_post():
    dts = np.array(["2024-01-01T00:00", "2024-01-01T12:00", "2024-01-03T00:00"], dtype="datetime64[us]")
    tr = Trajectory("u", np.zeros((3, 2)), dts)
    assert tr.timestamps.dtype == np.float64
    np.testing.assert_array_equal(tr.timestamps, [0.0, 0.5, 2.0])
    np.testing.assert_array_equal(days_since_first(dts), tr.timestamps)


def test_embeddings_are_stored_float32_and_read_only():
    tr = _traj("u", 4)
    assert tr.embeddings.dtype == np.float32 and tr.embeddings.shape == (4, 3)
    with pytest.raises(ValueError):
        tr.embeddings[0, 0] = 1.0


def test_single_post_trajectory_is_allowed():
    tr = _traj("u", 1)
    assert tr.n_posts == 1 and tr.span_days == 0.0


@pytest.mark.parametrize(
    "embeddings, dts, match",
    [
        (np.zeros((2,)), np.zeros(2, dtype="datetime64[us]"), r"\[T, D\]"),
        (np.zeros((2, 3)), np.zeros(3, dtype="datetime64[us]"), "datetimes"),
        (np.array([[0.0], [np.nan]]), np.zeros(2, dtype="datetime64[us]"), "finite"),
        (np.zeros((2, 1)), np.array([5, 1], dtype="datetime64[us]"), "sorted"),
    ],
)
def test_invalid_trajectories_raise_trajectory_error(embeddings, dts, match):
    with pytest.raises(TrajectoryError, match=match):
        Trajectory("u", embeddings, dts)


def test_set_rejects_duplicate_users_and_mixed_dimensions():
    with pytest.raises(TrajectoryError, match="twice"):
        TrajectorySet([_traj("a", 2), _traj("a", 3)])
    with pytest.raises(TrajectoryError, match="one dimension"):
        TrajectorySet([_traj("a", 2, d=3), _traj("b", 2, d=4)])
    with pytest.raises(TrajectoryError, match="no trajectories"):
        TrajectorySet([])


def test_set_supports_len_iteration_lookup_and_labels():
    ts = TrajectorySet([_traj("a", 2, label=1), _traj("b", 5, label=0), _traj("c", 1, label=None)])
    assert len(ts) == 3 and [t.user_id for t in ts] == ["a", "b", "c"]
    assert ts["b"].n_posts == 5 and ts.at(0).user_id == "a" and "c" in ts and "z" not in ts
    with pytest.raises(KeyError):
        ts["z"]
    assert ts.labels.tolist() == [1, 0, -1] and not ts.has_labels
    assert ts.subset(["c", "a"]).user_ids == ["c", "a"]


def test_summary_counts_users_posts_span_dimension_and_labels():
    ts = TrajectorySet([_traj("a", 2, label=1), _traj("b", 5, label=0), _traj("c", 3, label=0)])
    s = ts.summary()
    assert (s.n_users, s.n_posts, s.dim) == (3, 10, 3)
    assert (s.posts_per_user_min, s.posts_per_user_median, s.posts_per_user_max) == (2, 3.0, 5)
    assert s.label_counts == {"0": 2, "1": 1}
    assert s.start <= s.end
    assert "users" in s.as_dict()


def test_padded_batch_holds_values_timestamps_lengths_and_labels():
    a, b = _traj("a", 2, label=1, seed=1), _traj("b", 4, label=0, seed=2)
    batch = TrajectorySet([a, b]).padded()
    assert batch.values.shape == (2, 4, 3) and batch.timestamps.shape == (2, 4)
    assert batch.lengths.tolist() == [2, 4] and batch.labels.tolist() == [1, 0]
    np.testing.assert_array_equal(batch.values[0, :2], a.embeddings)
    assert not batch.values[0, 2:].any()
    np.testing.assert_array_equal(batch.timestamps[0, :2], a.timestamps)
    assert (batch.timestamps[0, 2:] == a.timestamps[-1]).all()
    np.testing.assert_array_equal(batch.mask, [[True, True, False, False], [True] * 4])


def test_padded_max_len_keeps_the_most_recent_posts_rebased_to_zero():
    b = _traj("b", 6, seed=3)
    batch = TrajectorySet([b]).padded(max_len=3)
    np.testing.assert_array_equal(batch.values[0], b.embeddings[3:])
    np.testing.assert_allclose(batch.timestamps[0], b.timestamps[3:] - b.timestamps[3])


def test_padded_batch_converts_to_torch_with_float64_timestamps():
    torch = pytest.importorskip("torch")
    v, t, n = TrajectorySet([_traj("a", 3)]).padded().to_torch(dtype=torch.float64)
    assert v.dtype == torch.float64 and t.dtype == torch.float64 and n.dtype == torch.int64


def test_digest_changes_with_any_value_and_is_stable():
    a = TrajectorySet([_traj("a", 3, seed=1)])
    same = TrajectorySet([_traj("a", 3, seed=1)])
    other = TrajectorySet([_traj("a", 3, seed=2)])
    relabelled = TrajectorySet([_traj("a", 3, seed=1, label=1)])
    assert a.digest() == same.digest()
    assert len({a.digest(), other.digest(), relabelled.digest()}) == 3
