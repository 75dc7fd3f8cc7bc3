"""Tests of cvx_core.analysis.narrative: plain-text change-point narratives."""

from __future__ import annotations

import numpy as np
import pytest

from cvx_core.analysis.changepoints import detect_changepoints
from cvx_core.analysis.narrative import (
    ChangePointNarrative,
    narrate_changepoints,
    severity_label,
)
from cvx_core.data.trajectory import Trajectory


def hand_made() -> Trajectory:
    """10 posts, D=4: a jump of 3 on dim 2 and 1 on dim 0 at post 5; hourly posts before,
    daily after; alternating +-0.1 noise on dim 3 (median step norm 0.2)."""
    emb = np.zeros((10, 4))
    emb[:, 3] = 0.1 * (-1) ** np.arange(10)
    emb[5:, 2] = 3.0
    emb[5:, 0] = 1.0
    hours = np.array([0, 1, 2, 3, 4, 28, 52, 76, 100, 124])
    dts = np.datetime64("2024-03-01T08:00", "us") + hours.astype("timedelta64[h]").astype("timedelta64[us]")
    return Trajectory("<b>evil</b> *user*", emb, dts)


def test_hand_made_narrative_has_date_severity_dims_and_rhythm():
    tr = hand_made()
    (nr,) = narrate_changepoints(tr, [5])
    assert isinstance(nr, ChangePointNarrative)
    assert nr.index == 5 and nr.datetime == tr.datetimes[5] and nr.day == pytest.approx(28 / 24)
    assert nr.n_before == 5 and nr.n_after == 5
    jump = np.linalg.norm([1.0, 0.0, 3.0, -0.04])  # dim 3 means: +0.02 before, -0.02 after
    assert nr.jump_norm == pytest.approx(jump, rel=1e-6)
    assert nr.median_step_norm == pytest.approx(0.2)
    # standardised shift: dim 3 alternates +-0.1 (segment means +-0.02): W = 2 * 0.048 / 8
    w = 2 * 0.048 / 8
    assert nr.severity == pytest.approx(np.sqrt((jump**2 - w * (1 / 5 + 1 / 5)) / w), rel=1e-6)
    assert nr.severity_label == "very strong"
    assert nr.top_dims[:2] == (2, 0)
    assert nr.top_shares[0] == pytest.approx(3.0 / 4.04, rel=1e-6)
    assert nr.gap_before_days == pytest.approx(1 / 24) and nr.gap_after_days == pytest.approx(1.0)
    assert "2024-03-02 12:00" in nr.text
    assert "dim 2 (74%)" in nr.text
    assert "slowed down" in nr.text


def test_text_is_plain_and_never_contains_the_user_id():
    (nr,) = narrate_changepoints(hand_made(), [5])
    assert nr.user_id == "<b>evil</b> *user*"
    assert "evil" not in nr.text
    assert not any(ch in nr.text for ch in "<>*#`[]_")


def test_dim_names_replace_dimension_numbers():
    names = ["joy", "sleep", "work", "noise"]
    (nr,) = narrate_changepoints(hand_made(), [5], dim_names=names)
    assert "work (74%)" in nr.text and "joy" in nr.text
    with pytest.raises(ValueError, match="dim_names"):
        narrate_changepoints(hand_made(), [5], dim_names=["a"])


def test_no_change_points_give_no_narratives_and_bad_index_raises():
    tr = hand_made()
    assert narrate_changepoints(tr, []) == ()
    with pytest.raises(ValueError, match="outside"):
        narrate_changepoints(tr, [0])


def test_severity_words_are_ordered():
    assert [severity_label(s) for s in (0.1, 0.7, 1.2, 9.0)] == ["subtle", "moderate", "strong", "very strong"]


def test_severity_is_the_standardised_shift_and_does_not_grow_with_the_number_of_posts():
    from cvx_core.analysis.narrative import standardised_shift

    rng = np.random.default_rng(4)
    for n in (5, 50, 500):
        shift = [standardised_shift(rng.normal(0, 1, (n, 32)), rng.normal(0, 1, (n, 32)) + 0.0)[0] for _ in range(20)]
        assert np.mean(shift) < 0.3, (n, np.mean(shift))  # no change: near 0 at any length
    # a shift of one within-segment spread (sqrt(32) per post in 32 dims) reads ~1 at any length
    for n in (10, 100, 1000):
        a = rng.normal(0, 1, (n, 32))
        b = rng.normal(0, 1, (n, 32)) + np.sqrt(32.0) / np.sqrt(32.0)  # |delta| = sqrt(32) = spread
        s, spread = standardised_shift(a, b)
        assert spread == pytest.approx(np.sqrt(32.0), rel=0.2)
        assert s == pytest.approx(1.0, abs=0.25), (n, s)
        assert severity_label(s) in ("moderate", "strong")


def test_every_detected_change_point_of_the_sample_gets_a_narrative(sample_set):
    count = 0
    for tr in sample_set:
        cps = detect_changepoints(tr)
        narratives = narrate_changepoints(tr, cps)
        assert [n.index for n in narratives] == list(cps.indices)
        assert all(n.text and np.isfinite(n.severity) for n in narratives)
        count += len(narratives)
    assert count >= len(sample_set) * 0.9


def test_narrative_matches_planted_truth_date_and_dimensions(sample_set, sample_truth):
    planted = set(sample_truth["planted_dims"])
    checked = 0
    for tr in sample_set:
        true_cp = sample_truth["change_points"][tr.user_id]
        if tr.label != sample_truth["positive_label"] or tr.n_posts < 30:
            continue
        narratives = narrate_changepoints(tr)
        match = [n for n in narratives if n.index == true_cp["index"]]
        if not match:
            continue
        nr = match[0]
        date = true_cp["datetime"][:16].replace("T", " ")
        assert date in nr.text
        assert set(nr.top_dims) <= planted
        assert f"dim {nr.top_dims[0]} (" in nr.text
        checked += 1
        if checked == 3:
            break
    assert checked == 3
