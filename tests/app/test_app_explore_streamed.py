"""AppTest of the Explore page on a dataset over the streaming threshold (forced low with
``CVX_STREAM_ANALYSIS_POSTS``): the analysis is streamed to the workspace's analysis folder,
the page says so, its users table equals the in-memory run's, and a later visit re-uses
the file."""

from __future__ import annotations

import re

import pandas as pd
import pytest

pytest.importorskip("streamlit")

from cvx_app import set_analysis_jobs as an
from cvx_app import cache

TIMEOUT = 120


def _users_table(at, n_users: int) -> pd.DataFrame:
    (table,) = [d.value for d in at.dataframe if len(d.value) == n_users and "dims for 80% of drift" in d.value]
    return table


def _captions(at) -> str:
    """Every caption's text, markdown escapes removed."""
    return re.sub(r"\\(.)", r"\1", "\n".join(c.value for c in at.caption))


def test_explore_streams_a_large_dataset_shows_it_and_matches_the_in_memory_table(app_workspace, open_app,
                                                                                   monkeypatch, sample_set):
    from cvx_core.analysis.batch import analyze_set

    cache.result_store().clear()
    monkeypatch.setenv(an.STREAM_ANALYSIS_ENV, "1000")  # the sample (6,424 posts) counts as large
    at = open_app("pages/2_explore.py", timeout=TIMEOUT)
    assert not at.exception, at.exception
    saved = app_workspace / "analysis" / f"{sample_set.digest()}.parquet"
    assert saved.is_file()
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]
    assert "streaming the dataset file in chunks of 512 users" in _captions(at)
    assert any("s to analyse" in e.label for e in at.expander)
    want = cache.users_frame(analyze_set(sample_set))
    pd.testing.assert_frame_equal(_users_table(at, len(sample_set)), want)

    # a new process (empty result store) re-uses the finished file: same bytes, no new run
    stamp = saved.stat().st_mtime_ns
    cache.result_store().clear()
    from cvx_core.scale import stream

    def no_streaming(*args, **kwargs):
        raise AssertionError("the saved analysis was recomputed")

    monkeypatch.setattr(stream, "analyze_stream", no_streaming)
    again = open_app("pages/2_explore.py", timeout=TIMEOUT)
    assert not again.exception, again.exception
    assert saved.stat().st_mtime_ns == stamp
    assert "Streamed analysis re-used" in _captions(again)
    assert any("s read back" in e.label for e in again.expander)
    pd.testing.assert_frame_equal(_users_table(again, len(sample_set)), want)


def test_explore_below_the_threshold_analyses_in_memory_and_writes_nothing(app_workspace, open_app, monkeypatch,
                                                                          sample_set):
    monkeypatch.setenv(an.STREAM_ANALYSIS_ENV, str(sample_set.n_posts + 1))
    at = open_app("pages/2_explore.py", timeout=TIMEOUT)
    assert not at.exception, at.exception
    assert not (app_workspace / "analysis").exists()
    assert "Analysed in memory" in _captions(at)
