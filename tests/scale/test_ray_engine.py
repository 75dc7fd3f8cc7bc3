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
