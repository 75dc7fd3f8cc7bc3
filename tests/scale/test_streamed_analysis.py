"""cvx_core.scale.streamed_analysis: the streamed source of the one set-analysis interface
gives the same users and change-point counts as the in-memory source, read back from the
job's summary; the job summary's old name still works with a DeprecationWarning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvx_core.analysis.batch import SetAnalysis, SetAnalysisBase, analyze_set
from cvx_core.scale.stream import StreamSummary, analyze_stream
from cvx_core.scale.streamed_analysis import NotFinishedAnalysis, StreamedSetAnalysis, read_streamed_analysis

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "sample.parquet"


@pytest.fixture(scope="module")
def both(sample_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("streamed") / "analysis.parquet"
    summary = analyze_stream(SAMPLE, out=out, chunk_users=29)
    return analyze_set(sample_set), StreamedSetAnalysis.from_summary(summary, sample_set, chunk_users=29), summary


def _through_the_interface(analysis: SetAnalysisBase) -> tuple[list[str], list[int], np.ndarray, int]:
    """What the app asks of any set analysis, through the base type's interface only."""
    ids = [u.user_id for u in analysis]
    per_user = [analysis[uid].changepoints.n_changes for uid in ids]
    return ids, per_user, analysis.n_changepoints, len(analysis)


def test_in_memory_and_streamed_sources_give_the_same_users_and_changepoint_counts(both, sample_set):
    in_memory, streamed, summary = both
    assert isinstance(in_memory, SetAnalysis) and isinstance(in_memory, SetAnalysisBase)
    assert isinstance(streamed, SetAnalysisBase) and not isinstance(streamed, SetAnalysis)
    mem_ids, mem_ncp, mem_arr, mem_n = _through_the_interface(in_memory)
    st_ids, st_ncp, st_arr, st_n = _through_the_interface(streamed)
    assert st_ids == mem_ids == list(sample_set.user_ids)
    assert st_n == mem_n == len(sample_set)
    assert st_ncp == mem_ncp and sum(st_ncp) > 0  # the comparison covers change points
    np.testing.assert_array_equal(st_arr, mem_arr)
    assert st_arr.dtype == mem_arr.dtype == np.int64
    # the job summary's counts (in output order) agree with the read-back per user
    assert dict(zip(summary.user_ids, summary.n_changepoints.tolist())) == dict(zip(st_ids, st_ncp))
    assert streamed.elapsed_s == summary.elapsed_s and not streamed.reused and streamed.chunk_users == 29
    for source in (in_memory, streamed):
        with pytest.raises(KeyError, match="no user 'nobody'"):
            source["nobody"]


def test_reading_the_file_again_is_marked_reused_and_equal(both, sample_set):
    _, streamed, _ = both
    again = read_streamed_analysis(streamed.path, sample_set, chunk_users=29)
    assert again.reused and again.users == streamed.users


def test_a_file_of_other_data_is_not_a_finished_analysis(both, sample_set):
    _, streamed, _ = both
    fewer = sample_set.subset(list(sample_set.user_ids)[:-1])
    with pytest.raises(NotFinishedAnalysis, match="users, the dataset has"):
        read_streamed_analysis(streamed.path, fewer, chunk_users=29)


def test_a_summary_without_a_per_user_file_cannot_be_read_back(sample_set):
    summary = analyze_stream(SAMPLE, chunk_users=64)
    assert summary.users_file is None
    with pytest.raises(ValueError, match="no per-user file"):
        StreamedSetAnalysis.from_summary(summary, sample_set, chunk_users=64)


def test_the_old_name_of_the_job_summary_warns_and_is_stream_summary():
    import cvx_core
    from cvx_core.scale import stream

    with pytest.warns(DeprecationWarning, match="use StreamSummary"):
        assert stream.StreamAnalysis is StreamSummary
    with pytest.warns(DeprecationWarning, match="cvx_core.StreamAnalysis is deprecated"):
        assert cvx_core.StreamAnalysis is StreamSummary
