"""``.npz`` streamed row by row (cvx_core.data.formats.npz.npz_batches through the chunk
reader): the loader's values and messages, memory that follows the batch, and the refusal
of the one layout that cannot be read in parts above ``CVX_MAX_NPZ_MB``."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvx_core.data.io import load_trajectories
from cvx_core.data.trajectory import TrajectoryError
from cvx_core.scale.stream import extract_stream, features_frame, iter_user_chunks


def _arrays(ts) -> dict[str, np.ndarray]:
    lengths = ts.lengths
    return {
        "embeddings": np.concatenate([tr.embeddings for tr in ts]),
        "timestamps": np.concatenate([tr.datetimes for tr in ts]).astype("datetime64[us]"),
        "user_ids": np.repeat(np.array(ts.user_ids), lengths),
        "labels": np.repeat(ts.labels.astype(np.int64), lengths),
        "texts": np.array([t for tr in ts for t in tr.texts]),
    }


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
def test_streamed_npz_chunks_equal_the_loader_in_file_order(save, make_planted, tmp_path):
    path = tmp_path / "posts.npz"
    save(path, **_arrays(make_planted(30)))
    whole = load_trajectories(path)
    got = [tr for c in iter_user_chunks(path, chunk_users=4, batch_rows=7) for tr in c.trajectories]
    assert [tr.user_id for tr in got] == whole.user_ids
    for a, b in zip(got, whole):
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
        np.testing.assert_array_equal(a.datetimes, b.datetimes)
        assert (a.label, a.texts) == (b.label, b.texts)
    res = extract_stream(path, tmp_path / "f.parquet", chunk_users=4)
    assert res.n_posts == whole.n_posts
    want = features_frame(whole)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "f.parquet"), want, check_exact=True, check_dtype=False)


def test_a_bad_value_in_a_streamed_npz_names_the_row_of_the_whole_archive(make_planted, tmp_path):
    arrays = _arrays(make_planted(20))
    bad = len(arrays["labels"]) - 4
    arrays["labels"][bad] = -2
    path = tmp_path / "bad.npz"
    np.savez_compressed(path, **arrays)
    with pytest.raises(TrajectoryError) as whole:
        load_trajectories(path)
    with pytest.raises(TrajectoryError) as got:
        for _ in iter_user_chunks(path, chunk_users=3, batch_rows=16):
            pass
    assert (got.value.file, got.value.row, got.value.column) == ("bad.npz", bad + 1, "label")
    assert str(got.value) == str(whole.value)


def test_a_compressed_npz_streams_in_memory_that_follows_the_batch_not_the_file(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 16_000, 128  # embeddings 8 MB as float32
    ids = np.repeat(np.array([f"u{k:04d}" for k in range(n // 40)]), 40)
    times = (np.datetime64("2024-01-01", "us") + np.tile(np.arange(40), n // 40) * np.timedelta64(3600, "s"))
    path = tmp_path / "big.npz"
    np.savez_compressed(path, embeddings=rng.standard_normal((n, d)).astype(np.float32), timestamps=times,
                        user_ids=ids)
    tracemalloc.start()
    try:
        users = sum(len(c.trajectories) for c in iter_user_chunks(path, chunk_users=8, batch_rows=512))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert users == n // 40
    assert peak < 4 * 2**20  # the whole embedding array alone is 8 MB


def test_a_compressed_fortran_order_npz_is_refused_above_the_budget_naming_file_and_variable(
        make_planted, tmp_path, monkeypatch):
    arrays = _arrays(make_planted(40, dim=64))
    rng = np.random.default_rng(1)
    arrays["embeddings"] = np.asfortranarray(rng.standard_normal((len(arrays["labels"]), 1024)).astype(np.float64))
    path = tmp_path / "fortran.npz"
    np.savez_compressed(path, **arrays)  # 464 posts x 1024 float64: 3.6 MB, column by column
    monkeypatch.setenv("CVX_MAX_NPZ_MB", "1")
    with pytest.raises(TrajectoryError) as got:
        next(iter_user_chunks(path, chunk_users=4))
    msg = str(got.value)
    assert got.value.file == "fortran.npz" and got.value.column == "embeddings"
    assert msg.startswith("fortran.npz: array 'embeddings' is compressed in Fortran (column) order")
    assert "1.0 MB" in msg and "CVX_MAX_NPZ_MB" in msg
    monkeypatch.setenv("CVX_MAX_NPZ_MB", "8")  # within the budget it is decoded whole, and read
    first = next(iter_user_chunks(path, chunk_users=4)).trajectories
    np.testing.assert_array_equal(first.at(0).embeddings, load_trajectories(path).at(0).embeddings)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_rows=st.integers(1, 40), chunk_users=st.integers(1, 9), compressed=st.booleans())
def test_any_batch_and_chunk_size_streams_an_npz_as_the_loader_reads_it(npz_pair, batch_rows, chunk_users, compressed):
    path, whole = npz_pair[compressed]
    got = [tr for c in iter_user_chunks(path, chunk_users=chunk_users, batch_rows=batch_rows) for tr in c.trajectories]
    assert [tr.user_id for tr in got] == whole.user_ids
    for a, b in zip(got, whole):
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
        np.testing.assert_array_equal(a.datetimes, b.datetimes)


@pytest.fixture(scope="module")
def npz_pair(tmp_path_factory, make_planted):
    folder = tmp_path_factory.mktemp("npz")
    arrays = _arrays(make_planted(12, seed=7))
    out = {}
    for compressed, save in ((False, np.savez), (True, np.savez_compressed)):
        path = folder / f"p{int(compressed)}.npz"
        save(path, **arrays)
        out[compressed] = (path, load_trajectories(path))
    return out


def test_an_npz_not_grouped_by_user_is_grouped_out_of_core_with_the_same_features(make_planted, tmp_path):
    arrays = _arrays(make_planted(15, seed=8))
    n = len(arrays["labels"])
    order = np.r_[np.arange(n)[1::2], np.arange(n)[::2]]
    path = tmp_path / "shuffled.npz"
    np.savez_compressed(path, **{k: v[order] for k, v in arrays.items()})
    res = extract_stream(path, tmp_path / "f.parquet", chunk_users=4)
    assert not res.grouped
    want = features_frame(load_trajectories(path)).set_index("user_id").sort_index()
    got = pd.read_parquet(tmp_path / "f.parquet").set_index("user_id").sort_index()
    pd.testing.assert_frame_equal(got, want, check_exact=True, check_dtype=False, check_index_type=False)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
def test_a_truncated_npz_is_refused_naming_the_file_not_a_traceback(save, make_planted, tmp_path):
    path = tmp_path / "cut.npz"
    save(path, **_arrays(make_planted(10)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(TrajectoryError) as got:
        for _ in iter_user_chunks(path, chunk_users=3):
            pass
    assert got.value.file == "cut.npz" and str(got.value).startswith("cut.npz: ")
