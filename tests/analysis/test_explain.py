"""Change points in words: c-TF-IDF terms per side, example posts, narratives with words,
and the cohort view. The main property runs on the shipped real-text sample."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cvx_core.analysis.explain import cohort_terms, explain_changepoints
from cvx_core.analysis.narrative import narrate_changepoints
from cvx_core.analysis.terms import count_terms, distinctive_terms
from cvx_core.data.trajectory import Trajectory, TrajectoryError, TrajectorySet

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "sample_data" / "real_text.parquet"

WAR = ["the army and the navy fought the war", "our soldiers won battles in the war",
       "the navy and army defend the nation in war"]
ECON = ["taxes and jobs grow the economy", "the economy needs lower taxes and more jobs",
        "inflation hurts jobs and the economy"]


def _stop_tokens(text: str) -> list[str]:
    """Independent re-implementation of the term tokenizer: letters only, >= 2 chars,
    lower-case, English stop words removed."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return [t for t in re.findall(r"[a-z][a-z]+", text.lower()) if t not in ENGLISH_STOP_WORDS]


def _rate(term: str, texts) -> float:
    count = total = 0
    n = len(term.split())
    for text in texts:
        toks = _stop_tokens(text)
        total += len(toks)
        grams = [" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        count += sum(g == term for g in grams)
    return count / max(total, 1)


def two_topic_trajectory(n_each: int = 9, seed: int = 0) -> Trajectory:
    rng = np.random.default_rng(seed)
    texts = [WAR[i % 3] for i in range(n_each)] + [ECON[i % 3] for i in range(n_each)]
    emb = rng.normal(0, 0.05, (2 * n_each, 8))
    emb[n_each:] += 1.0
    dts = np.datetime64("2020-01-01", "ns") + (np.arange(2 * n_each) * 86_400e9 * 30).astype("timedelta64[ns]")
    return Trajectory("u1", emb, dts, label=1, texts=tuple(texts))


def test_terms_and_examples_on_a_two_topic_trajectory():
    tr = two_topic_trajectory()
    exp = explain_changepoints(tr)
    assert [c.index for c in exp.change_points] == [9]
    cp = exp.change_points[0]
    before = {t for t, _ in cp.terms_before}
    after = {t for t, _ in cp.terms_after}
    assert {"war", "army", "navy"} <= before and {"economy", "jobs", "taxes"} <= after
    assert not before & after
    assert "the" not in before | after  # stop words removed
    assert any(" " in t for t in before | after)  # bigrams present
    assert all(p.index < 9 and p.text == tr.texts[p.index] for p in cp.posts_before)
    assert all(p.index >= 9 and p.text == tr.texts[p.index] for p in cp.posts_after)
    assert 2 <= len(cp.posts_before) <= 3 and 2 <= len(cp.posts_after) <= 3
    assert "war" in cp.narrative and "economy" in cp.narrative and "dim " not in cp.narrative


def test_example_posts_are_nearest_to_the_segment_centroid():
    tr = two_topic_trajectory()
    emb = np.array(tr.embeddings, dtype=np.float64)
    emb[[2, 5]] = emb[:9].mean(axis=0)  # two posts exactly at the centroid of the first segment
    tr2 = Trajectory("u", emb, tr.datetimes, texts=tr.texts)
    cp = explain_changepoints(tr2, changepoints=[9], n_posts=2).change_points[0]
    assert [p.index for p in cp.posts_before] == [2, 5]


def test_json_shape_is_exactly_the_documented_one():
    doc = explain_changepoints(two_topic_trajectory()).to_dict()
    assert set(doc) == {"user_id", "change_points"}
    cp = doc["change_points"][0]
    assert set(cp) == {"index", "datetime", "severity", "dimensions", "terms_before", "terms_after",
                       "posts_before", "posts_after", "narrative"}
    assert cp["index"] == 9 and cp["datetime"].startswith("2020-")
    assert isinstance(cp["terms_before"][0]["term"], str) and isinstance(cp["posts_after"][0]["text"], str)
    json.dumps(doc)  # JSON-ready


def test_narrative_names_dimensions_only_without_texts():
    tr = two_topic_trajectory()
    bare = Trajectory("u", tr.embeddings, tr.datetimes)
    (with_words,) = narrate_changepoints(tr, [9])
    (with_dims,) = narrate_changepoints(bare, [9])
    assert "dim " in with_dims.text and "dim " not in with_words.text
    assert with_words.terms_after and with_dims.terms_after == ()


def test_no_texts_is_a_trajectory_error():
    tr = two_topic_trajectory()
    with pytest.raises(TrajectoryError, match="no texts"):
        explain_changepoints(Trajectory("u", tr.embeddings, tr.datetimes))


def test_no_change_points_gives_an_empty_explanation():
    tr = two_topic_trajectory()
    assert explain_changepoints(tr, changepoints=[]).change_points == ()


def test_distinctive_terms_only_where_more_frequent_than_on_the_other_side():
    tc = count_terms([["apple apple banana", "cherry"], ["banana banana banana cherry"]])
    left = dict(distinctive_terms(tc, 0, 1, n_terms=10, min_count=1))
    right = dict(distinctive_terms(tc, 1, 0, n_terms=10, min_count=1))
    assert "apple" in left and "banana" in right and "banana" not in left
    assert count_terms([[""], ["the of and"]]).vocabulary == ()


def test_cohort_terms_find_each_labels_own_drift():
    rng = np.random.default_rng(1)
    users = []
    for u in range(6):
        label = u % 2
        late = ECON if label == 1 else ["space rockets reach the moon", "the moon landing and space travel",
                                        "rockets and space exploration"]
        texts = [WAR[i % 3] for i in range(8)] + [late[i % 3] for i in range(8)]
        emb = rng.normal(0, 0.05, (16, 8))
        emb[8:] += 1.0
        dts = np.datetime64("2020-01-01", "ns") + (np.arange(16) * 86_400e9 * 30).astype("timedelta64[ns]")
        users.append(Trajectory(f"u{u}", emb, dts, label=label, texts=tuple(texts)))
    res = cohort_terms(TrajectorySet(users))
    assert res.n_users == {0: 3, 1: 3}
    assert {"economy", "jobs"} <= {t for t, _ in res.rising[1]}
    assert {"space", "moon"} <= {t for t, _ in res.rising[0]}
    assert "war" not in {t for t, _ in res.rising[0] + res.rising[1]}  # fell for both alike
    json.dumps(res.to_dict())


# ------------------------------------------------------------------------------------------
# the shipped real-text sample (State of the Union addresses)
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_set():
    from cvx_core.data.io import load_trajectories

    return load_trajectories(REAL)


@pytest.mark.parametrize("penalty_scale,at_least", [(1.0, 3), (0.5, 30)])
def test_real_sample_terms_are_more_frequent_on_their_own_side(real_set, penalty_scale, at_least):
    from cvx_core.analysis.changepoints import ChangePointConfig

    checked = 0
    for tr in real_set:
        exp = explain_changepoints(tr, config=ChangePointConfig(penalty_scale=penalty_scale))
        for cp in exp.change_points:
            (lo, c), (_, hi) = cp.segment_before, cp.segment_after
            before, after = tr.texts[lo:c], tr.texts[c:hi]
            assert cp.terms_before and cp.terms_after, (tr.user_id, cp.index)
            for term, _ in cp.terms_before:
                assert _rate(term, before) > _rate(term, after), (tr.user_id, cp.index, term)
            for term, _ in cp.terms_after:
                assert _rate(term, after) > _rate(term, before), (tr.user_id, cp.index, term)
            assert all(lo <= p.index < c and p.text == tr.texts[p.index] for p in cp.posts_before)
            assert all(c <= p.index < hi and p.text == tr.texts[p.index] for p in cp.posts_after)
            assert 2 <= len(cp.posts_before) + len(cp.posts_after)
            checked += 1
    assert checked >= at_least, checked  # the sample has change points to explain


def test_real_sample_cohort_terms_by_party(real_set):
    res = cohort_terms(real_set)
    assert res.labels == (0, 1) and min(res.n_users.values()) >= 5
    assert res.rising[0] and res.rising[1]
