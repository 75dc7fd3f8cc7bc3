"""cvx_app.set_analysis_jobs: the streamed analysis of a dataset equals the in-memory one user by
user, is written under the workspace's analysis folder, is re-used only when it is a
finished analysis of the same data, and the threshold comes from the environment."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("streamlit")

from cvx_app import set_analysis_jobs as an
from cvx_app import cache
from cvx_app.workspace import SAMPLE_PATH as SAMPLE  # the shipped sample file


@pytest.fixture(scope="module")
def in_memory(sample_set):
    from cvx_core.analysis.batch import analyze_set

    return analyze_set(sample_set)


@pytest.fixture
def fresh_store():
    cache.result_store().clear()
    yield
    cache.result_store().clear()


def test_streamed_adapter_equals_analyze_set_for_every_user_of_the_sample(app_workspace, sample_set, in_memory):
    got = an.run_streamed_analysis(sample_set, SAMPLE, chunk_users=37)  # several chunks, one ragged
    assert got.path == app_workspace.resolve() / "analysis" / f"{sample_set.digest()}.parquet"
    assert got.path.is_file() and not got.reused
    assert [u.user_id for u in got] == [u.user_id for u in in_memory] == sample_set.user_ids
    assert len(got) == len(in_memory)
    for want in in_memory:
        u = got[want.user_id]
        assert u.label == want.label and u.n_posts == want.n_posts
        assert list(u.changepoints.indices) == [int(i) for i in want.changepoints.indices]
        assert u.changepoints.n_changes == want.changepoints.n_changes
        assert list(u.changepoints.days) == [float(d) for d in want.changepoints.days]
        assert u.attribution.drift_norm == want.attribution.drift_norm
        assert u.attribution.pareto_size == want.attribution.pareto_size
        assert list(u.attribution.order) == [int(d) for d in want.attribution.order[: an.TOP_DIMS]]
        assert list(u.attribution.top_shares) == [float(want.attribution.shares[d])
                                                  for d in want.attribution.order[: an.TOP_DIMS]]
    assert list(got.n_changepoints) == list(in_memory.n_changepoints)
    assert sum(u.changepoints.n_changes for u in got) > 0  # the comparison covered change points
    with pytest.raises(KeyError, match="no user"):
        got["nobody"]


def test_users_table_of_the_streamed_analysis_equals_the_in_memory_table(app_workspace, sample_set, in_memory):
    import pandas as pd

    got = an.run_streamed_analysis(sample_set, SAMPLE)
    pd.testing.assert_frame_equal(cache.users_frame(got), cache.users_frame(in_memory))


def test_large_dataset_is_streamed_and_small_one_analysed_in_memory(app_workspace, sample_set, monkeypatch,
                                                                     fresh_store):
    monkeypatch.setenv(an.STREAM_ANALYSIS_ENV, str(sample_set.n_posts))  # exactly at the threshold: streamed
    streamed = an.dataset_analysis("sample", sample_set)
    assert isinstance(streamed, an.StreamedSetAnalysis)
    assert an.analysis_path(sample_set).is_file()
    assert "chunks of 512 users" in an.describe(streamed)
    monkeypatch.setenv(an.STREAM_ANALYSIS_ENV, str(sample_set.n_posts + 1))
    in_mem = an.dataset_analysis("sample", sample_set)
    assert not isinstance(in_mem, an.StreamedSetAnalysis)
    assert an.describe(in_mem).startswith("Analysed in memory")


def test_second_visit_reuses_the_finished_file_without_streaming(app_workspace, sample_set, monkeypatch,
                                                                 fresh_store):
    from cvx_core.scale import stream

    monkeypatch.setenv(an.STREAM_ANALYSIS_ENV, "0")
    first = an.dataset_analysis("sample", sample_set)
    stamp = first.path.stat().st_mtime_ns
    cache.result_store().clear()  # a new process: only the file remains

    def no_streaming(*args, **kwargs):
        raise AssertionError("the finished analysis was recomputed")

    monkeypatch.setattr(stream, "analyze_stream", no_streaming)
    again = an.dataset_analysis("sample", sample_set)
    assert again.reused and again.path == first.path
    assert again.path.stat().st_mtime_ns == stamp
    assert again.users == first.users
    assert "re-used" in an.describe(again)


@pytest.mark.parametrize("damage", ["truncated", "old_layout", "other_users"])
def test_a_file_that_is_not_a_finished_analysis_of_this_data_is_recomputed(app_workspace, sample_set, monkeypatch,
                                                                          fresh_store, in_memory, damage):
    import pyarrow.parquet as pq

    monkeypatch.setenv(an.STREAM_ANALYSIS_ENV, "0")
    good = an.run_streamed_analysis(sample_set, SAMPLE)
    data = good.path.read_bytes()
    if damage == "truncated":  # e.g. a copy cut short
        good.path.write_bytes(data[: len(data) // 2])
    elif damage == "old_layout":  # written before pareto_size was a column
        pq.write_table(pq.read_table(good.path).drop(["pareto_size"]), good.path)
    else:  # a finished file, but of fewer users
        pq.write_table(pq.read_table(good.path).slice(0, len(sample_set) - 1), good.path)
    with pytest.raises(an.NotFinishedAnalysis):
        an.read_streamed_analysis(good.path, sample_set)
    redone = an.dataset_analysis("sample", sample_set)
    assert isinstance(redone, an.StreamedSetAnalysis) and not redone.reused
    assert [u.attribution.pareto_size for u in redone] == [u.attribution.pareto_size for u in in_memory]
    assert an.read_streamed_analysis(redone.path, sample_set).users == redone.users


def test_a_failed_stream_leaves_no_file_under_the_analysis_name(app_workspace, sample_set, monkeypatch, fresh_store):
    from cvx_core.scale import stream

    monkeypatch.setenv(an.STREAM_ANALYSIS_ENV, "0")
    real = stream.analyze_chunk
    calls = {"n": 0}

    def fail_on_second_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # an interruption mid-stream
        return real(*args, **kwargs)

    monkeypatch.setattr(stream, "analyze_chunk", fail_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        an.run_streamed_analysis(sample_set, SAMPLE, chunk_users=100)
    folder = an.analysis_path(sample_set).parent
    assert calls["n"] == 2
    assert not an.analysis_path(sample_set).exists()
    assert os.listdir(folder) == []  # no temporary file left either


def test_stream_threshold_reads_the_environment(monkeypatch):
    monkeypatch.delenv(an.STREAM_ANALYSIS_ENV, raising=False)
    assert an.stream_threshold() == an.STREAM_ANALYSIS_POSTS == 200_000
    monkeypatch.setenv(an.STREAM_ANALYSIS_ENV, "1_000")
    assert an.stream_threshold() == 1000
    monkeypatch.setenv(an.STREAM_ANALYSIS_ENV, "0")
    assert an.stream_threshold() == 0
    for bad in ("-5", "lots", "1e3"):
        monkeypatch.setenv(an.STREAM_ANALYSIS_ENV, bad)
        assert an.stream_threshold() == an.STREAM_ANALYSIS_POSTS


def test_the_streamed_run_drives_a_progress_bar_to_every_post(app_workspace, sample_set, monkeypatch, fresh_store):
    import streamlit as st

    seen: list[tuple[float, str]] = []

    class Bar:
        def progress(self, value: float, text: str = "") -> None:
            seen.append((value, text))

        def empty(self) -> None:
            seen.append((-1.0, "emptied"))

    def fake_progress(value: float, text: str = "") -> Bar:
        seen.append((value, text))
        return Bar()

    monkeypatch.setattr(st, "progress", fake_progress)
    monkeypatch.setenv(an.STREAM_ANALYSIS_ENV, "0")
    an.dataset_analysis("sample", sample_set)
    assert seen[0] == (0.0, an.STREAM_LABEL)
    assert an.STREAM_LABEL.startswith("Finding change points (PELT) for every user, streamed in chunks")
    assert seen[-2] == (1.0, f"{an.STREAM_LABEL} {sample_set.n_posts:,} of {sample_set.n_posts:,} posts")
    assert seen[-1] == (-1.0, "emptied")


def test_an_interrupted_writes_temporary_file_in_the_analysis_folder_is_swept(tmp_path):
    from cvx_app.workspace import clean_orphan_temp_files

    folder = tmp_path / "analysis"
    folder.mkdir()
    old = folder / ".abc.parquet.x1y2.tmp"  # the name cvx_core.data.atomic gives a temporary file
    old.write_bytes(b"half")
    os.utime(old, (1, 1))
    fresh = folder / ".abc.parquet.z3w4.tmp"  # a write that may still be going on
    fresh.write_bytes(b"half")
    finished = folder / "abc.parquet"
    finished.write_bytes(b"kept")
    assert clean_orphan_temp_files(tmp_path) == [old]
    assert sorted(p.name for p in folder.iterdir()) == [fresh.name, finished.name]


def test_a_streamed_analysis_at_another_sensitivity_has_its_own_file_and_counts(app_workspace, sample_set, monkeypatch,
                                                                                fresh_store):
    from cvx_core.analysis.batch import analyze_set
    from cvx_core.analysis.changepoints import ChangePointConfig
    from cvx_core.analysis.penalty import DEFAULT_SENSITIVITY, SENSITIVITIES

    monkeypatch.setenv(an.STREAM_ANALYSIS_ENV, "0")
    rate = max(SENSITIVITIES)
    default = an.dataset_analysis("sample", sample_set)
    other = an.dataset_analysis("sample", sample_set, sensitivity=rate)
    assert isinstance(other, an.StreamedSetAnalysis) and other.path != default.path
    assert default.path == an.analysis_path(sample_set, DEFAULT_SENSITIVITY) and other.path.is_file()
    want = analyze_set(sample_set, cp_config=ChangePointConfig(sensitivity=rate))
    assert [u.changepoints.indices for u in other] == [tuple(u.changepoints.indices) for u in want]
    assert sum(u.changepoints.n_changes for u in other) > sum(u.changepoints.n_changes for u in default)
