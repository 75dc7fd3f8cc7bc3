"""Streamed reading and processing (cvx_core.scale.stream) equals the in-memory path."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvx_core.data.io import load_trajectories, save_trajectories
from cvx_core.data.trajectory import Trajectory, TrajectoryError, TrajectorySet
from cvx_core.scale.stream import (
    analyze_stream,
    embed_stream,
    extract_stream,
    features_frame,
    iter_user_chunks,
)


def _frames_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    got = got.set_index("user_id").sort_index()
    want = want.set_index("user_id").sort_index()
    assert list(got.index) == list(want.index)
    assert got["label"].tolist() == want["label"].tolist()
    np.testing.assert_array_equal(got.drop(columns="label").to_numpy(float), want.drop(columns="label").to_numpy(float))


def test_streamed_extract_equals_in_memory_features_in_file_order(small_file, tmp_path):
    res = extract_stream(small_file, tmp_path / "f.parquet", chunk_users=7)
    want = features_frame(load_trajectories(small_file))
    got = pd.read_parquet(tmp_path / "f.parquet")
    assert res.grouped and res.n_users == 60 and res.n_chunks == 9
    assert got["user_id"].tolist() == want["user_id"].tolist()  # file order kept
    _frames_equal(got, want)


def _shuffled_copies(src, tmp_path):
    """The same posts, rows shuffled (users not grouped), as Parquet, CSV and JSON Lines."""
    raw = pd.read_parquet(src).sample(frac=1.0, random_state=1).reset_index(drop=True)
    emb = np.stack(raw["embedding"].to_numpy())
    paths = {}
    paths["parquet"] = tmp_path / "sh.parquet"
    raw.to_parquet(paths["parquet"])
    flat = pd.DataFrame(emb, columns=[f"e{i}" for i in range(emb.shape[1])])
    times = raw["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    csv = pd.concat([raw[["user_id", "label", "text"]].assign(timestamp=times), flat], axis=1)
    paths["csv"] = tmp_path / "sh.csv"
    csv.to_csv(paths["csv"], index=False)
    paths["jsonl"] = tmp_path / "sh.jsonl"
    with open(paths["jsonl"], "w", encoding="utf-8") as fh:
        for i in range(len(raw)):
            fh.write(json.dumps({"user_id": raw["user_id"][i], "timestamp": times[i], "label": int(raw["label"][i]),
                                 "text": raw["text"][i], "embedding": emb[i].tolist()}) + "\n")
    return paths


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_ungrouped_input_is_grouped_out_of_core_with_the_same_features(small_file, tmp_path, fmt):
    path = _shuffled_copies(small_file, tmp_path)[fmt]
    res = extract_stream(path, tmp_path / "f.parquet", chunk_users=9)
    assert not res.grouped and res.n_users == 60
    _frames_equal(pd.read_parquet(tmp_path / "f.parquet"), features_frame(load_trajectories(path)))


def test_partitioned_grouping_uses_several_partitions_and_keeps_every_user_once(small_file, tmp_path):
    path = _shuffled_copies(small_file, tmp_path)["csv"]
    seen = []
    for chunk in iter_user_chunks(path, chunk_users=5, grouped=False, partition_bytes=20_000, batch_rows=50):
        seen.extend(chunk.trajectories.user_ids)
    assert sorted(seen) == sorted(load_trajectories(path).user_ids)


def _bad_csv(tmp_path, bad_row: int, grouped: bool):
    rng = np.random.default_rng(0)
    rows = []
    for u in range(30):
        for k in range(int(rng.integers(3, 12))):
            rows.append({"user_id": f"u{u:02d}", "timestamp": f"2024-01-{k + 1:02d}T00:00:00Z", "label": u % 2,
                         **{f"e{j}": float(rng.normal()) for j in range(3)}})
    frame = pd.DataFrame(rows)
    if not grouped:
        frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    frame.loc[bad_row - 1, "timestamp"] = "not a time"
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("grouped", [True, False])
def test_errors_name_the_row_and_line_of_the_whole_file(tmp_path, grouped):
    path = _bad_csv(tmp_path, bad_row=150, grouped=grouped)
    with pytest.raises(TrajectoryError) as streamed:
        for _ in iter_user_chunks(path, chunk_users=4, batch_rows=32, grouped=grouped, partition_bytes=4_000):
            pass
    with pytest.raises(TrajectoryError) as whole:
        load_trajectories(path)
    assert "row 150 (line 151)" in str(whole.value)
    assert "row 150 (line 151)" in str(streamed.value)
    assert "'timestamp'" in str(streamed.value)


def test_analyze_stream_cohort_and_changepoints_equal_analyze_set_with_progress(small_file, tmp_path):
    from cvx_core.analysis.batch import analyze_set

    calls = []
    res = analyze_stream(small_file, out=tmp_path / "a.parquet", chunk_users=11,
                         progress=lambda done, total: calls.append((done, total)))
    ref = analyze_set(load_trajectories(small_file))
    np.testing.assert_allclose(res.cohort.mean_shares, ref.cohort.mean_shares, rtol=0, atol=1e-15)
    np.testing.assert_allclose(res.cohort.class_difference, ref.cohort.class_difference, rtol=0, atol=1e-15)
    assert res.cohort.class_counts == ref.cohort.class_counts
    np.testing.assert_array_equal(res.n_changepoints, ref.n_changepoints)
    table = pd.read_parquet(tmp_path / "a.parquet")
    assert table["user_id"].tolist() == [u.user_id for u in ref.users]
    assert [list(v) for v in table["changepoint_index"]] == [list(u.changepoints.indices) for u in ref.users]
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] > 0


def _toy_encoder(texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), 8), dtype=np.float32)
    for i, t in enumerate(texts):
        for j, ch in enumerate(t.encode()):
            out[i, (ch + j) % 8] += 1.0
    return out


def test_embed_stream_equals_embed_posts_and_keeps_texts(small_file, tmp_path):
    from cvx_core.data.text import embed_posts

    res = embed_stream(small_file, tmp_path / "e.parquet", encoder=_toy_encoder, chunk_users=13)
    got = load_trajectories(tmp_path / "e.parquet")
    want = embed_posts(small_file, encoder=_toy_encoder)
    assert res.n_users == len(want) == len(got) and got.user_ids == want.user_ids
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
        assert a.texts == b.texts and a.label == b.label
        np.testing.assert_array_equal(a.datetimes, b.datetimes)


def test_missing_file_and_bad_chunk_size_are_refused(tmp_path):
    with pytest.raises(TrajectoryError, match="no such file"):
        list(iter_user_chunks(tmp_path / "none.parquet"))
    with pytest.raises(ValueError, match="chunk_users"):
        list(iter_user_chunks(tmp_path / "none.parquet", chunk_users=0))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=14),
    chunk_users=st.integers(1, 6),
    batch_rows=st.integers(1, 17),
    shuffle=st.booleans(),
)
def test_any_chunking_gives_every_user_once_with_the_in_memory_features(tmp_path_factory, lengths, chunk_users,
                                                                       batch_rows, shuffle):
    rng = np.random.default_rng(len(lengths) * 31 + chunk_users)
    trajs = []
    for u, n in enumerate(lengths):
        days = np.sort(rng.integers(0, 50, size=n)).astype("timedelta64[D]")
        trajs.append(Trajectory(f"u{u}", rng.normal(size=(n, 3)).astype(np.float32),
                                np.datetime64("2024-01-01") + days, label=u % 2))
    path = tmp_path_factory.mktemp("prop") / "p.parquet"
    save_trajectories(TrajectorySet(trajs), path)
    if shuffle:
        pd.read_parquet(path).sample(frac=1.0, random_state=0).to_parquet(path)
    chunks = list(iter_user_chunks(path, chunk_users=chunk_users, batch_rows=batch_rows, grouped=not shuffle))
    assert all(len(c.trajectories) <= chunk_users for c in chunks)
    got = pd.concat([features_frame(c.trajectories) for c in chunks])
    _frames_equal(got, features_frame(load_trajectories(path)))


def test_csv_cells_with_line_breaks_and_quotes_are_read_as_one_record(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(
        'user_id,timestamp,label,text,e0,e1\n'
        'a,2024-01-01T00:00:00Z,1,"two\nlines, one ""quoted"" word",0.5,1.0\n'
        'a,2024-01-02T00:00:00Z,1,plain,0.25,2.0\n'
        'b,2024-01-01T00:00:00Z,0,"x\n\ny",1.5,-1.0\n', encoding="utf-8")
    chunks = list(iter_user_chunks(path, chunk_users=1, batch_rows=1))
    got = [tr for c in chunks for tr in c.trajectories]
    want = list(load_trajectories(path))
    assert [t.user_id for t in got] == ["a", "b"] and [c.rows_done for c in chunks] == [3, 3]
    for x, y in zip(got, want):
        assert x.texts == y.texts and x.label == y.label
        np.testing.assert_array_equal(x.embeddings, y.embeddings)
