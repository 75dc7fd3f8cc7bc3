"""Loaders and writers: every format round-trips exactly, every bad input names file/row/column."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cvx_core.data.io import load_trajectories, save_trajectories
from cvx_core.data.trajectory import TrajectoryError, TrajectorySet


# ------------------------------------------------------------------------------------------
# writing a TrajectorySet in each input format
# ------------------------------------------------------------------------------------------
def _long_frame(ts: TrajectorySet, *, shuffle: bool = True, seed: int = 0) -> pd.DataFrame:
    rows = []
    for tr in ts:
        for i in range(tr.n_posts):
            rows.append(
                {
                    "user_id": tr.user_id,
                    "timestamp": pd.Timestamp(tr.datetimes[i]).tz_localize("UTC"),
                    "label": tr.label,
                    "text": tr.texts[i] if tr.texts else f"t{i}",
                    "embedding": tr.embeddings[i],
                }
            )
    frame = pd.DataFrame(rows)
    # labels are written as integers (pandas would make a column with a missing label float64,
    # which the loader refuses: a float label is never rounded)
    frame["label"] = frame["label"].astype("Int64")
    if shuffle:  # loaders must sort posts by time within each user
        frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        # keep users' first-appearance order identical to the set's order
        order = {u: k for k, u in enumerate(ts.user_ids)}
        frame = frame.iloc[np.argsort(frame["user_id"].map(order).to_numpy(), kind="stable")]
    return frame


def write_format(ts: TrajectorySet, path: Path, fmt: str, *, wide: bool = False, shuffle: bool = True) -> Path:
    frame = _long_frame(ts, shuffle=shuffle)
    if fmt == "csv":
        out = frame.drop(columns=["embedding"]).copy()
        out["timestamp"] = frame["timestamp"].map(lambda x: x.isoformat())
        if wide:
            emb = np.stack(frame["embedding"].to_list())
            for j in range(emb.shape[1]):
                out[f"e{j}"] = [repr(float(v)) for v in emb[:, j]]
        else:
            out["embedding"] = frame["embedding"].map(lambda v: json.dumps([float(x) for x in v]))
        out.to_csv(path, index=False)
    elif fmt == "parquet":
        out = frame.copy()
        out["embedding"] = out["embedding"].map(list)
        out.to_parquet(path)
    elif fmt == "jsonl":
        with open(path, "w") as fh:
            for r in frame.itertuples(index=False):
                fh.write(
                    json.dumps(
                        {
                            "user_id": r.user_id,
                            "timestamp": r.timestamp.timestamp(),  # epoch seconds
                            "label": None if pd.isna(r.label) else int(r.label),
                            "text": r.text,
                            "embedding": [float(x) for x in r.embedding],
                        }
                    )
                    + "\n"
                )
    elif fmt == "npz":
        np.savez(
            path,
            embeddings=np.stack(frame["embedding"].to_list()).astype(np.float32),
            timestamps=np.array([t.to_datetime64() for t in frame["timestamp"].dt.tz_localize(None)], dtype="datetime64[us]"),
            user_ids=frame["user_id"].to_numpy().astype(str),
            labels=frame["label"].to_numpy().astype(np.int64),
            texts=frame["text"].to_numpy().astype(str),
        )
    else:
        raise AssertionError(fmt)
    return path


def assert_same_sets(a: TrajectorySet, b: TrajectorySet, *, texts: bool = True) -> None:
    assert a.user_ids == b.user_ids
    assert a.dim == b.dim
    for ta, tb in zip(a, b):
        assert ta.label == tb.label
        np.testing.assert_array_equal(ta.embeddings, tb.embeddings)
        np.testing.assert_array_equal(ta.datetimes, tb.datetimes)
        np.testing.assert_array_equal(ta.timestamps, tb.timestamps)
        if texts:
            assert ta.texts == tb.texts


@pytest.fixture(scope="module")
def planted_with_text():
    from cvx_core.data.synthetic import PlantedConfig, make_planted_trajectory_set

    cfg = PlantedConfig(n_users=12, dim=8, n_planted=2, mean_posts=8, max_posts=20)
    ts, _ = make_planted_trajectory_set(config=cfg, seed=3, with_text=True, name="t")
    return ts


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl", "npz"])
def test_every_format_round_trips_through_parquet_keeping_every_value(tmp_path, planted_with_text, fmt):
    src = write_format(planted_with_text, tmp_path / f"in.{fmt}", fmt)
    loaded = load_trajectories(src)
    assert_same_sets(planted_with_text, loaded)
    out = save_trajectories(loaded, tmp_path / "out.parquet")
    again = load_trajectories(out)
    assert_same_sets(planted_with_text, again)


def test_wide_csv_columns_e0_to_eD_load_like_a_list_column(tmp_path, planted_with_text):
    src = write_format(planted_with_text, tmp_path / "wide.csv", "csv", wide=True)
    assert_same_sets(planted_with_text, load_trajectories(src))


def test_open_binary_buffer_with_a_name_loads_like_the_file(tmp_path, planted_with_text):
    src = write_format(planted_with_text, tmp_path / "in.parquet", "parquet")
    buf = io.BytesIO(src.read_bytes())
    buf.name = "uploaded.parquet"
    ts = load_trajectories(buf)
    assert ts.name == "uploaded.parquet"
    assert_same_sets(planted_with_text, ts)


def test_unsorted_posts_are_sorted_stably_and_equal_timestamps_kept_in_file_order():
    csv = (
        "user_id,timestamp,e0\n"
        "a,2024-01-03T00:00:00Z,3\n"
        "a,2024-01-01T00:00:00Z,1\n"
        "a,2024-01-02T00:00:00Z,20\n"
        "a,2024-01-02T00:00:00Z,21\n"
        "b,2024-01-05T00:00:00Z,5\n"
    ).encode()
    ts = load_trajectories(csv, name="x.csv")
    assert ts.user_ids == ["a", "b"]
    np.testing.assert_array_equal(ts["a"].embeddings[:, 0], [1, 20, 21, 3])
    np.testing.assert_array_equal(ts["a"].timestamps, [0.0, 1.0, 1.0, 2.0])
    assert ts["b"].n_posts == 1 and ts["b"].timestamps.tolist() == [0.0]


def test_timestamps_accept_iso_with_offsets_and_epoch_seconds_as_json_numbers():
    csv = (
        "user_id,timestamp,e0\n"
        "a,2024-01-01T01:00:00+01:00,1\n"  # = 00:00Z
        "a,2024-01-01T01:00:00Z,2\n"
        "a,2024-01-01 12:00-00:00,3\n"
    ).encode()
    tr = load_trajectories(csv, name="x.csv")["a"]
    np.testing.assert_allclose(tr.timestamps, [0.0, 1 / 24, 0.5])
    assert tr.datetimes.dtype == np.dtype("datetime64[us]")
    assert str(tr.datetimes[0]) == "2024-01-01T00:00:00.000000"
    rows = [{"user_id": "a", "timestamp": 1704070800, "e0": 1}, {"user_id": "a", "timestamp": 1704070800.5, "e0": 2}]
    tr = load_trajectories("\n".join(json.dumps(r) for r in rows).encode(), name="x.jsonl")["a"]
    assert [str(d) for d in tr.datetimes] == ["2024-01-01T01:00:00.000000", "2024-01-01T01:00:00.500000"]


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, planted_with_text):
    target = tmp_path / "ds.parquet"
    save_trajectories(planted_with_text, target)
    before = target.read_bytes()
    # a failing write (bad object) must leave the existing file untouched
    class Broken(TrajectorySet):
        @property
        def has_text(self):  # type: ignore[override]
            raise RuntimeError("disk full")

    broken = Broken(list(planted_with_text))
    with pytest.raises(RuntimeError):
        save_trajectories(broken, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds.parquet"]


def test_saved_file_is_readable_by_others_not_private(tmp_path, planted_with_text):
    target = save_trajectories(planted_with_text, tmp_path / "ds.parquet")
    assert os.stat(target).st_mode & 0o044  # group/other read, like a normally created file


# ------------------------------------------------------------------------------------------
# bad input: one error class, message names file, row and column
# ------------------------------------------------------------------------------------------
GOOD_HEADER = "user_id,timestamp,label,e0,e1\n"


def _err(data: bytes, name: str) -> TrajectoryError:
    with pytest.raises(TrajectoryError) as info:
        load_trajectories(data, name=name)
    assert isinstance(info.value, ValueError)
    assert name in str(info.value)
    return info.value


def test_missing_required_column_is_named():
    e = _err(b"user_id,e0\nu,1\n", "nots.csv")
    assert e.column == "timestamp" and "missing required column 'timestamp'" in str(e)
    e = _err(b"timestamp,e0\n2024-01-01,1\n", "nouser.csv")
    assert e.column == "user_id"


def test_missing_embedding_columns_say_what_is_expected():
    e = _err(b"user_id,timestamp\nu,2024-01-01\n", "noemb.csv")
    assert e.column == "embedding" and "'e0'" in str(e)


def test_gap_in_wide_embedding_columns_names_the_missing_column():
    e = _err(b"user_id,timestamp,e0,e2\nu,2024-01-01,1,2\n", "gap.csv")
    assert e.column == "e1"


def test_empty_file_and_header_only_file_are_clear_errors():
    assert "empty" in str(_err(b"", "empty.csv"))
    assert "no rows" in str(_err(GOOD_HEADER.encode(), "header.csv"))
    assert "empty" in str(_err(b"", "empty.parquet"))
    assert "no records" in str(_err(b"\n\n", "empty.jsonl"))


def test_non_numeric_embedding_value_names_row_line_and_column():
    e = _err((GOOD_HEADER + "u,2024-01-01,1,0.5,0.1\nu,2024-01-02,1,0.5,oops\n").encode(), "text.csv")
    assert (e.row, e.column) == (2, "e1")
    assert "row 2 (line 3)" in str(e) and "'oops'" in str(e)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", ""])
def test_non_finite_or_empty_embedding_value_is_rejected_with_row_and_column(value):
    data = (GOOD_HEADER + f"u,2024-01-01,1,0.5,0.1\nv,2024-01-02,0,{value},0.1\n").encode()
    e = _err(data, "nonfinite.csv")
    assert (e.row, e.column) == (2, "e0")
    assert "not finite" in str(e)


def test_non_finite_value_inside_a_list_column_names_the_position():
    data = b'user_id,timestamp,embedding\nu,2024-01-01,"[1, 2]"\nu,2024-01-02,"[1, NaN]"\n'
    e = _err(data, "listnan.csv")
    assert (e.row, e.column) == (2, "embedding")
    assert "position 1" in str(e)


def test_embedding_length_differing_from_the_rest_is_rejected():
    rows = [
        {"user_id": "u", "timestamp": "2024-01-01", "embedding": [1.0, 2.0, 3.0]},
        {"user_id": "u", "timestamp": "2024-01-02", "embedding": [1.0, 2.0, 3.0]},
        {"user_id": "v", "timestamp": "2024-01-02", "embedding": [1.0, 2.0]},
    ]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    e = _err(data, "ragged.jsonl")
    assert (e.row, e.column) == (3, "embedding")
    assert "has 2 values, expected 3" in str(e) and "line 3" in str(e)


def test_embedding_list_with_text_inside_is_rejected():
    data = b'{"user_id": "u", "timestamp": "2024-01-01", "embedding": [1, "x"]}\n'
    e = _err(data, "textlist.jsonl")
    assert (e.row, e.column) == (1, "embedding")


@pytest.mark.parametrize("stamp", ["yesterday", "2024-13-45", "2024-01-01T25:00"])
def test_unparseable_timestamp_names_row_and_column(stamp):
    data = (GOOD_HEADER + f"u,2024-01-01,1,0.5,0.1\nu,{stamp},1,0.5,0.1\n").encode()
    e = _err(data, "time.csv")
    assert (e.row, e.column) == (2, "timestamp")
    assert repr(stamp) in str(e) and "ISO-8601" in str(e)


def test_missing_timestamp_is_rejected():
    e = _err((GOOD_HEADER + "u,,1,0.5,0.1\n").encode(), "notime.csv")
    assert (e.row, e.column) == (1, "timestamp")


def test_label_that_differs_between_posts_of_one_user_names_user_rows_and_column():
    data = (GOOD_HEADER + "u,2024-01-01,1,0,0\nv,2024-01-01,0,0,0\nu,2024-01-02,0,0,0\n").encode()
    e = _err(data, "labels.csv")
    assert e.column == "label" and e.user == "u" and e.row == 3
    assert "row 1" in str(e) and "row 3" in str(e)


def test_label_missing_on_some_posts_of_a_labelled_user_is_rejected():
    data = (GOOD_HEADER + "u,2024-01-01,1,0,0\nu,2024-01-02,,0,0\n").encode()
    e = _err(data, "partial.csv")
    assert e.row == 2 and "no label" in str(e)


def test_non_integer_label_is_rejected():
    e = _err((GOOD_HEADER + "u,2024-01-01,0.5,0,0\n").encode(), "frac.csv")
    assert (e.row, e.column) == (1, "label")
    e = _err((GOOD_HEADER + "u,2024-01-01,yes,0,0\n").encode(), "word.csv")
    assert (e.row, e.column) == (1, "label")


def test_unlabelled_users_are_allowed():
    ts = load_trajectories(b"user_id,timestamp,label,e0\nu,2024-01-01,,1\nv,2024-01-01,1,1\n", name="x.csv")
    assert ts["u"].label is None and ts["v"].label == 1
    assert ts.labels.tolist() == [-1, 1] and not ts.has_labels


def test_empty_user_id_is_rejected():
    e = _err(b"user_id,timestamp,e0\n,2024-01-01,1\n", "nouid.csv")
    assert (e.row, e.column) == (1, "user_id")


def test_file_that_is_not_the_format_its_name_says_is_rejected(tmp_path, planted_with_text):
    csv_bytes = (GOOD_HEADER + "u,2024-01-01,1,0,0\n").encode()
    assert "not a Parquet file" in str(_err(csv_bytes, "fake.parquet"))
    assert "not a NumPy .npz" in str(_err(csv_bytes, "fake.npz"))
    pq = write_format(planted_with_text, tmp_path / "real.parquet", "parquet").read_bytes()
    assert "not a CSV" in str(_err(pq, "fake.csv"))
    assert "not a JSON Lines" in str(_err(pq, "fake.jsonl"))
    assert "line 1 is not valid JSON" in str(_err(csv_bytes, "fake2.jsonl"))


def test_unknown_extension_is_rejected():
    assert "extension" in str(_err(b"abc", "data.xlsx"))


def test_npz_object_arrays_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(
        path,
        embeddings=np.zeros((2, 3)),
        timestamps=np.array([0.0, 1.0]),
        user_ids=np.array(["a", {"evil": 1}], dtype=object),
    )
    with pytest.raises(TrajectoryError) as info:
        load_trajectories(path)
    assert info.value.column == "user_ids" and "allow_pickle=False" in str(info.value)


def test_npz_missing_or_misshapen_arrays_are_named(tmp_path):
    path = tmp_path / "miss.npz"
    np.savez(path, embeddings=np.zeros((2, 3)), timestamps=np.array([0.0, 1.0]))
    with pytest.raises(TrajectoryError, match="user_ids"):
        load_trajectories(path)
    np.savez(path, embeddings=np.zeros((2, 3)), timestamps=np.array([0.0]), user_ids=np.array(["a", "b"]))
    with pytest.raises(TrajectoryError, match="'timestamps' must have shape"):
        load_trajectories(path)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(TrajectoryError, match="no such file"):
        load_trajectories(tmp_path / "nope.csv")


def test_sample_data_loads_with_planted_truth(sample_set, sample_truth):
    assert len(sample_set) == sample_truth["generator"]["n_users"]
    assert sample_set.dim == 384
    assert set(sample_set.labels.tolist()) == {0, 1}
    lengths = sample_set.lengths
    assert lengths.min() >= 5 and lengths.max() <= 300
    assert set(sample_truth["change_points"]) == set(sample_set.user_ids)
    for uid, cp in list(sample_truth["change_points"].items())[:20]:
        tr = sample_set[uid]
        assert str(tr.datetimes[cp["index"]]).startswith(cp["datetime"][:19])


# ------------------------------------------------------------------------------------------
# property test: random sets (single posts, equal timestamps, any D) survive every format
# ------------------------------------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cvx_core.data.trajectory import Trajectory  # noqa: E402


@st.composite
def trajectory_sets(draw):
    d = draw(st.integers(1, 5))
    n_users = draw(st.integers(1, 4))
    trajs = []
    for u in range(n_users):
        n = draw(st.integers(1, 6))
        secs = sorted(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))  # many equal stamps
        dts = np.datetime64("2024-02-29T23:59:00", "us") + (np.array(secs, dtype=np.int64) * 3600 * 10**6).astype(
            "timedelta64[us]"
        )
        values = draw(
            st.lists(
                st.floats(-1e6, 1e6, allow_nan=False, width=32, allow_subnormal=False), min_size=n * d, max_size=n * d
            )
        )
        label = draw(st.one_of(st.none(), st.integers(0, 3)))
        trajs.append(Trajectory(f"u{u}", np.array(values, dtype=np.float32).reshape(n, d), dts, label=label))
    return TrajectorySet(trajs, name="h")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ts=trajectory_sets(), fmt=st.sampled_from(["csv", "parquet", "jsonl", "npz"]))
def test_random_sets_round_trip_exactly_in_every_format(tmp_path, ts, fmt):
    if fmt == "npz" and not ts.has_labels:
        ts = TrajectorySet([Trajectory(t.user_id, t.embeddings, t.datetimes, label=0) for t in ts])
    texts_ts = TrajectorySet(
        [Trajectory(t.user_id, t.embeddings, t.datetimes, label=t.label, texts=tuple(f"t{i}" for i in range(t.n_posts))) for t in ts]
    )
    # no shuffling: with equal timestamps the file order is the order (stable sort)
    src = write_format(texts_ts, tmp_path / f"h.{fmt}", fmt, shuffle=False)
    loaded = load_trajectories(src)
    assert_same_sets(texts_ts, loaded)
    assert_same_sets(texts_ts, load_trajectories(save_trajectories(loaded, tmp_path / "h.parquet")))


def test_text_only_table_is_refused_with_how_to_embed_it():
    csv = b"user_id,timestamp,text\nu1,2024-01-01,hello there\nu1,2024-01-02,more words\n"
    with pytest.raises(TrajectoryError, match="embed") as exc:
        load_trajectories(csv, name="posts.csv")
    assert exc.value.file == "posts.csv" and exc.value.column == "embedding"


def test_read_posts_accepts_texts_without_embedding_and_keeps_extra_columns():
    from cvx_core.data.io import read_posts

    csv = b"user_id,timestamp,text,country\nu1,2024-01-02,b,fr\nu1,2024-01-01,a,fr\nu2,2024-01-01,c,de\n"
    posts = read_posts(csv, name="posts.csv", need_embeddings=False)
    assert posts.embeddings is None and list(posts.texts) == ["b", "a", "c"]
    assert list(posts.extra.columns) == ["country"]
    ts = posts.to_set(np.arange(6, dtype=np.float32).reshape(3, 2))
    assert ts["u1"].texts == ("a", "b") and ts["u1"].embeddings[0].tolist() == [2.0, 3.0]


# ------------------------------------------------------------------------------------------
# hostile input, by class (issue 12): nothing is guessed, coerced or wrapped around
# ------------------------------------------------------------------------------------------
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

FAR_DATES = ["0001-01-01T00:00:00", "1066-10-14T09:00:00", "1500-06-30T12:34:56.789012", "2263-01-01T00:00:00",
             "9999-12-31T23:59:59.999999"]


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_dates_outside_the_nanosecond_range_load_exactly_from_every_format():
    want = np.array(FAR_DATES, dtype="datetime64[us]")
    n = len(want)
    csv = "user_id,timestamp,e0\n" + "".join(f"u,{d}Z,{i}\n" for i, d in enumerate(FAR_DATES))
    jsonl = "\n".join(json.dumps({"user_id": "u", "timestamp": d, "e0": i}) for i, d in enumerate(FAR_DATES))
    us = want.astype(np.int64)
    pq_us = _parquet_bytes(pa.table({"user_id": ["u"] * n, "timestamp": pa.array(us, pa.int64()).cast(pa.timestamp("us", tz="UTC")), "e0": np.arange(n, dtype=np.float32)}))
    whole = want.astype("datetime64[ms]")  # ms unit: the same dates to the millisecond
    pq_ms = _parquet_bytes(pa.table({"user_id": ["u"] * n, "timestamp": pa.array(whole.astype(np.int64), pa.int64()).cast(pa.timestamp("ms")), "e0": np.arange(n, dtype=np.float32)}))
    days = want.astype("datetime64[D]")
    npz_d = _npz_bytes(embeddings=np.arange(n, dtype=np.float32)[:, None], timestamps=days, user_ids=np.array(["u"] * n))
    for data, name, expected in [
        (csv.encode(), "far.csv", want),
        (jsonl.encode(), "far.jsonl", want),
        (pq_us, "far.parquet", want),
        (pq_ms, "far_ms.parquet", whole.astype("datetime64[us]")),
        (npz_d, "far.npz", days.astype("datetime64[us]")),
    ]:
        tr = load_trajectories(data, name=name)["u"]
        assert tr.datetimes.dtype == np.dtype("datetime64[us]"), name
        np.testing.assert_array_equal(tr.datetimes, expected, err_msg=name)
        assert tr.timestamps.dtype == np.float64


def test_far_dates_survive_save_and_reload(tmp_path):
    csv = "user_id,timestamp,e0\n" + "".join(f"u,{d},{i}\n" for i, d in enumerate(FAR_DATES))
    ts = load_trajectories(csv.encode(), name="far.csv")
    again = load_trajectories(save_trajectories(ts, tmp_path / "far.parquet"))
    np.testing.assert_array_equal(again["u"].datetimes, np.array(FAR_DATES, dtype="datetime64[us]"))


@pytest.mark.parametrize(
    "stamp, why",
    [
        ("20240301", "digits only"),
        ("2023", "digits only"),
        ("1704070800", "digits only"),
        ("now", "ISO-8601"),
        ("today", "ISO-8601"),
        ("2024-01-01T00:00:00.123456789", "sub-microsecond"),
        ("10000-01-01", "ISO-8601"),
        ("0000-01-01", "not a valid date"),
        ("2024-03", "ISO-8601"),
    ],
)
def test_ambiguous_or_unrepresentable_timestamps_are_refused(stamp, why):
    e = _err((GOOD_HEADER + f"u,2024-01-01,1,0.5,0.1\nu,{stamp},1,0.5,0.1\n").encode(), "amb.csv")
    assert (e.row, e.column) == (2, "timestamp") and why in str(e)


def test_times_with_and_without_offsets_in_one_file_are_refused():
    e = _err((GOOD_HEADER + "u,2024-01-01T00:00Z,1,0,0\nu,2024-01-02T00:00,1,0,0\n").encode(), "mixed.csv")
    assert (e.row, e.column) == (2, "timestamp") and "offset" in str(e)


def test_numeric_epochs_out_of_range_and_nanosecond_parquet_with_sub_microseconds_are_refused():
    rows = [{"user_id": "u", "timestamp": 10**15, "e0": 1}]
    e = _err("\n".join(json.dumps(r) for r in rows).encode(), "huge.jsonl")
    assert e.column == "timestamp" and "1-9999" in str(e)
    table = pa.table({"user_id": ["u"], "timestamp": pa.array([1_000_000_001], pa.timestamp("ns")), "e0": [1.0]})
    e = _err(_parquet_bytes(table), "ns.parquet")
    assert e.column == "timestamp" and "sub-microsecond" in str(e)
    e = _err(_npz_bytes(embeddings=np.ones((1, 1)), timestamps=np.array([10**18], dtype="datetime64[s]"), user_ids=np.array(["u"])), "far.npz")
    assert e.column == "timestamp"


def test_json_ids_1_and_text_1_never_merge_and_floats_dicts_lists_are_refused():
    rows = [{"user_id": 1, "timestamp": "2024-01-01", "e0": 1}, {"user_id": "1", "timestamp": "2024-01-02", "e0": 2}]
    e = _err("\n".join(json.dumps(r) for r in rows).encode(), "ids.jsonl")
    assert (e.row, e.column) == (2, "user_id") and "same user" in str(e)
    for bad in (1.0, {"a": 1}, [1], True):
        rows = [{"user_id": bad, "timestamp": "2024-01-01", "e0": 1}]
        e = _err(json.dumps(rows[0]).encode(), "bad.jsonl")
        assert (e.row, e.column) == (1, "user_id"), bad


def test_64_bit_ids_keep_every_digit_in_json_parquet_and_npz():
    big = [2**63 - 1, 2**63 - 2, -(2**63)]
    jsonl = "\n".join(json.dumps({"user_id": u, "timestamp": "2024-01-01", "e0": 1}) for u in big)
    pqb = _parquet_bytes(pa.table({"user_id": pa.array(big, pa.int64()), "timestamp": ["2024-01-01"] * 3, "e0": [1.0] * 3}))
    npzb = _npz_bytes(embeddings=np.ones((3, 1)), timestamps=np.array(["2024-01-01"] * 3, dtype="datetime64[s]"), user_ids=np.array(big, dtype=np.int64))
    for data, name in ((jsonl.encode(), "big.jsonl"), (pqb, "big.parquet"), (npzb, "big.npz")):
        assert load_trajectories(data, name=name).user_ids == [str(u) for u in big], name


def test_invalid_utf8_names_its_row_and_distinct_ids_stay_distinct():
    data = b'{"user_id": "caf\xc3\xa9", "timestamp": "2024-01-01", "e0": 1}\n{"user_id": "caf\xe9", "timestamp": "2024-01-01", "e0": 2}\n'
    e = _err(data, "latin.jsonl")
    assert e.row == 2 and "UTF-8" in str(e)
    e = _err(b"user_id,timestamp,e0\ncaf\xc3\xa9,2024-01-01,1\ncaf\xe9,2024-01-01,1\n", "latin.csv")
    assert e.row == 2 and "line 3" in str(e)


def test_npz_float_ids_and_non_utf8_byte_ids_are_refused_with_the_row():
    e = _err(_npz_bytes(embeddings=np.ones((2, 1)), timestamps=np.zeros(2), user_ids=np.array([1.0, 2.0])), "f.npz")
    assert e.column == "user_id" and "float" in str(e)
    e = _err(_npz_bytes(embeddings=np.ones((2, 1)), timestamps=np.zeros(2), user_ids=np.array([b"ok", b"caf\xe9"])), "b.npz")
    assert (e.row, e.column) == (2, "user_id")


@pytest.mark.parametrize("label, why", [("-1", "negative"), ("1e20", "is a float"), ("99999999999999999999", "too large"), ("true", "not an integer")])
def test_negative_overflowing_or_boolean_labels_are_refused(label, why):
    e = _err((GOOD_HEADER + f"u,2024-01-01,{label},0,0\n").encode(), "lab.csv")
    assert (e.row, e.column) == (1, "label") and why in str(e)


def test_json_labels_1e20_and_booleans_are_refused_and_large_int64_labels_are_exact():
    e = _err(b'{"user_id": "u", "timestamp": "2024-01-01", "label": 1e20, "e0": 1}', "l.jsonl")
    assert e.column == "label"
    e = _err(b'{"user_id": "u", "timestamp": "2024-01-01", "label": true, "e0": 1}', "l.jsonl")
    assert e.column == "label"
    ts = load_trajectories(b'{"user_id": "u", "timestamp": "2024-01-01", "label": 9223372036854775807, "e0": 1}', name="l.jsonl")
    assert ts["u"].label == 2**63 - 1


def test_json_booleans_are_not_embedding_values():
    e = _err(b'{"user_id": "u", "timestamp": "2024-01-01", "embedding": [true, 0.5]}', "b.jsonl")
    assert (e.row, e.column) == (1, "embedding") and "boolean" in str(e)
    e = _err(b'{"user_id": "u", "timestamp": "2024-01-01", "e0": false}', "b.jsonl")
    assert (e.row, e.column) == (1, "e0")


def test_duplicated_and_ambiguous_columns_are_refused_in_every_text_format():
    e = _err(b"user_id,timestamp,e0,e0\nu,2024-01-01,1,2\n", "dup.csv")
    assert e.column == "e0" and "twice" in str(e)
    e = _err(b'{"user_id": "u", "timestamp": "2024-01-01", "e0": 1, "e0": 2}', "dup.jsonl")
    assert (e.row, e.column) == (1, "e0")
    e = _err(b'user_id,timestamp,embedding,e0\nu,2024-01-01,"[1]",1\n', "both.csv")
    assert "both" in str(e)
    e = _err(b"user_id,timestamp,e0,e1,e01\nu,2024-01-01,1,2,3\n", "e01.csv")
    assert e.column == "e01"
    t = pa.table([pa.array(["u"]), pa.array(["2024-01-01"]), pa.array([1.0]), pa.array([2.0])], names=["user_id", "timestamp", "e0", "e0"])
    e = _err(_parquet_bytes(t), "dup.parquet")
    assert e.column == "e0"


def test_a_parquet_decode_bomb_is_refused_before_decoding():
    n, d = 200_000, 64  # 51 MB of float32 that compresses to almost nothing
    flat = pa.array(np.zeros(n * d, dtype=np.float32))
    t = pa.table({"user_id": pa.array(["u"] * n).dictionary_encode(), "timestamp": pa.array(np.zeros(n, dtype="datetime64[us]")),
                  "embedding": pa.FixedSizeListArray.from_arrays(flat, d)})
    data = _parquet_bytes(t)
    assert len(data) < 1_000_000
    with pytest.raises(TrajectoryError, match="over the limit") as info:
        load_trajectories(data, name="bomb.parquet", max_decoded_bytes=10 * 2**20)
    assert info.value.file == "bomb.parquet"


def test_an_npz_header_claiming_80_terabytes_is_refused_without_allocating():
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        hdr = io.BytesIO()
        np.lib.format.write_array_header_1_0(hdr, {"descr": "<f8", "fortran_order": False, "shape": (10**7, 10**6)})
        zf.writestr("embeddings.npy", hdr.getvalue() + b"\0" * 16)
        for key, arr in (("timestamps", np.zeros(10**7 // 10**7)), ("user_ids", np.array(["u"]))):
            b = io.BytesIO()
            np.save(b, arr)
            zf.writestr(f"{key}.npy", b.getvalue())
    e = _err(buf.getvalue(), "bomb.npz")
    assert e.column == "embeddings" and "declares shape" in str(e)
    small = _npz_bytes(embeddings=np.zeros((1000, 100)), timestamps=np.zeros(1000), user_ids=np.array(["u"] * 1000))
    with pytest.raises(TrajectoryError, match="over the limit"):
        load_trajectories(small, name="s.npz", max_decoded_bytes=100_000)


def test_memory_error_while_decoding_becomes_a_trajectory_error(monkeypatch):
    import cvx_core.data.formats.dispatch as dispatch

    def boom(*a, **k):
        raise MemoryError

    monkeypatch.setattr(dispatch, "read_csv", boom)
    e = _err(b"user_id,timestamp,e0\nu,2024-01-01,1\n", "oom.csv")
    assert "out of memory" in str(e)


# ------------------------------------------------------------------------------------------
# per-user metadata: constant extra columns, kept through subset, save/load and digest
# ------------------------------------------------------------------------------------------
def test_constant_extra_columns_become_per_user_metadata_and_round_trip(tmp_path):
    csv = (
        "user_id,timestamp,e0,country,mood\n"
        "a,2024-01-01,1,fr,happy\n"
        "b,2024-01-01,2,de,sad\n"
        "a,2024-01-02,3,fr,sad\n"
    ).encode()
    ts = load_trajectories(csv, name="m.csv")
    meta = ts.metadata
    assert list(meta.columns) == ["country"]  # mood varies within user a: per-post data, not metadata
    assert meta.index.tolist() == ["a", "b"] and meta["country"].tolist() == ["fr", "de"]
    sub = ts.subset(["b"])
    assert sub.metadata["country"].tolist() == ["de"]
    again = load_trajectories(save_trajectories(ts, tmp_path / "m.parquet"))
    assert again.metadata.equals(meta) or again.metadata.astype(object).equals(meta.astype(object))
    assert again.digest() == ts.digest()
    other = load_trajectories(csv.replace(b"de", b"it"), name="m.csv")
    assert other.digest() != ts.digest()  # metadata is part of the content hash


def test_a_set_without_extra_columns_has_an_empty_metadata_frame(planted_with_text):
    meta = planted_with_text.metadata
    assert meta.shape == (len(planted_with_text), 0) and meta.index.tolist() == planted_with_text.user_ids
