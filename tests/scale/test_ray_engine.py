"""Ray Data engine (cvx_core.scale.ray_engine): the same output as the local streamed path,
on a local 2-CPU cluster shared by the session."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ray")

from cvx_core.data.io import load_trajectories  # noqa: E402
from cvx_core.scale.ray_engine import analyze_ray, embed_ray, extract_ray  # noqa: E402
from cvx_core.scale.stream import analyze_stream, embed_stream, extract_stream  # noqa: E402


def test_extract_on_ray_writes_the_local_file_exactly(ray_cluster, small_file, tmp_path):
    local = extract_stream(small_file, tmp_path / "l.parquet", chunk_users=16)
    remote = extract_ray(small_file, tmp_path / "r.parquet", chunk_users=16, workers=2)
    assert (remote.n_users, remote.n_posts, remote.n_chunks) == (local.n_users, local.n_posts, local.n_chunks) == (
        60, local.n_posts, 4)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "r.parquet"), pd.read_parquet(tmp_path / "l.parquet"),
                                  check_exact=True)


def test_embed_on_ray_encoder_actors_equal_local_to_float32_rounding(ray_cluster, small_file, tmp_path):
    def encoder(texts: list[str]) -> np.ndarray:  # nested: shipped to the actors by value
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for i, t in enumerate(texts):
            for j, ch in enumerate(t.encode()):
                out[i, (ch * 7 + j) % 8] += 0.1
        return out

    embed_stream(small_file, tmp_path / "l.parquet", encoder=encoder, chunk_users=20)
    res = embed_ray(small_file, tmp_path / "r.parquet", encoder=encoder, chunk_users=20, workers=2)
    a, b = load_trajectories(tmp_path / "l.parquet"), load_trajectories(tmp_path / "r.parquet")
    assert res.n_users == 60 and a.user_ids == b.user_ids
    for x, y in zip(a, b):
        np.testing.assert_allclose(y.embeddings, x.embeddings, rtol=1e-6, atol=1e-7)
        assert x.texts == y.texts and x.label == y.label


def test_cli_analyze_on_the_running_cluster_equals_local_rows_and_cohort(ray_cluster, small_file, tmp_path, capsys):
    from cvx_core.cli import main

    local = analyze_stream(small_file, out=tmp_path / "l.parquet", chunk_users=25)
    assert main(["analyze", str(small_file), "--out", str(tmp_path / "r.parquet"), "--engine", "ray",
                 "--workers", "2", "--chunk-users", "25"]) == 0
    assert "60 users" in capsys.readouterr().out
    assert ray_cluster.is_initialized()  # the session's cluster was reused, not shut down
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "r.parquet"), pd.read_parquet(tmp_path / "l.parquet"))
    remote = analyze_ray(small_file, chunk_users=60, workers=1)  # library call, no output file, one block
    np.testing.assert_allclose(remote.cohort.mean_shares, local.cohort.mean_shares, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(remote.n_changepoints, local.n_changepoints)
    assert main(["extract", str(small_file), "--out", str(tmp_path / "x.parquet"), "--workers", "2"]) == 2


# ---- workers that read their own partition -------------------------------------------------
@pytest.fixture(scope="module")
def crossing_file(tmp_path_factory, make_planted):
    """80 users in 37-row row groups: users cross row-group boundaries."""
    from tests.scale.test_partitions import small_groups_file

    return small_groups_file(make_planted(80, seed=3), tmp_path_factory.mktemp("ray") / "crossing.parquet")


@pytest.fixture()
def plans(monkeypatch):
    """The plans the driver made (a list, in call order)."""
    from cvx_core.scale import ray_engine

    made: list = []
    real = ray_engine._plan

    def spy(*args, **kwargs):
        plan = real(*args, **kwargs)
        made.append(plan)
        return plan

    monkeypatch.setattr(ray_engine, "_plan", spy)
    return made


def test_workers_reading_row_ranges_write_the_single_process_extract_exactly(ray_cluster, crossing_file, tmp_path,
                                                                              plans):
    from cvx_core.scale.stream import features_frame

    res = extract_ray(crossing_file, tmp_path / "r.parquet", chunk_users=5, workers=2, partition_rows=90)
    assert len(plans) == 1 and len(plans[0].partitions) >= 5  # the driver only planned
    got = pd.read_parquet(tmp_path / "r.parquet")
    local = extract_stream(crossing_file, tmp_path / "l.parquet", chunk_users=16)
    assert (res.n_users, res.n_posts, res.grouped) == (local.n_users, local.n_posts, True) == (80, local.n_posts, True)
    pd.testing.assert_frame_equal(got, pd.read_parquet(tmp_path / "l.parquet"), check_exact=True)
    pd.testing.assert_frame_equal(got, features_frame(load_trajectories(crossing_file)), check_exact=True,
                                  check_dtype=False)  # object ids in memory, strings read back


def test_workers_reading_row_ranges_analyse_as_the_local_stream(ray_cluster, crossing_file, tmp_path, plans):
    local = analyze_stream(crossing_file, out=tmp_path / "l.parquet", chunk_users=25)
    remote = analyze_ray(crossing_file, out=tmp_path / "r.parquet", chunk_users=7, workers=2, partition_rows=120)
    assert plans[0] is not None and len(plans[0].partitions) >= 4
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "r.parquet"), pd.read_parquet(tmp_path / "l.parquet"))
    np.testing.assert_allclose(remote.cohort.mean_shares, local.cohort.mean_shares, rtol=0, atol=1e-15)
    for k in local.cohort.class_shares:
        np.testing.assert_allclose(remote.cohort.class_shares[k], local.cohort.class_shares[k], rtol=0, atol=1e-15)
    assert remote.user_ids == local.user_ids


def test_an_error_in_a_worker_names_file_row_and_column_as_the_loader(ray_cluster, make_planted, tmp_path, plans):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cvx_core.data.trajectory import TrajectoryError
    from cvx_core.scale.stream import posts_table

    table = posts_table(make_planted(50, seed=4))
    labels = table.column("label").to_pylist()
    bad = table.num_rows - 3
    labels[bad] = -1
    path = tmp_path / "bad.parquet"
    pq.write_table(table.set_column(2, "label", pa.array(labels, pa.int64())), path, row_group_size=40)
    with pytest.raises(TrajectoryError) as whole:
        load_trajectories(path)
    with pytest.raises(TrajectoryError) as got:
        extract_ray(path, tmp_path / "r.parquet", workers=2, partition_rows=60)
    assert plans[0] is not None and len(plans[0].partitions) >= 3
    assert (got.value.file, got.value.row, got.value.column) == ("bad.parquet", bad + 1, "label")
    assert str(got.value) == str(whole.value)
    assert not (tmp_path / "r.parquet").exists()


def test_an_input_not_grouped_by_user_falls_back_to_the_driver_and_gives_the_same_features(
        ray_cluster, make_planted, tmp_path, plans):
    import pyarrow.parquet as pq

    from cvx_core.scale.stream import features_frame, posts_table

    table = posts_table(make_planted(20, seed=5))
    order = np.r_[np.arange(table.num_rows)[1::2], np.arange(table.num_rows)[::2]]
    path = tmp_path / "shuffled.parquet"
    pq.write_table(table.take(order), path)
    res = extract_ray(path, tmp_path / "r.parquet", workers=2, partition_rows=30)
    assert not res.grouped and plans == []  # the planning pass raised before a plan existed
    want = features_frame(load_trajectories(path)).set_index("user_id").sort_index()
    got = pd.read_parquet(tmp_path / "r.parquet").set_index("user_id").sort_index()
    pd.testing.assert_frame_equal(got, want, check_exact=True, check_dtype=False, check_index_type=False)
