"""Issue 26, points 2 and 7, round three: a hypothesis fuzzer of strict values at batch
boundaries. Each example is a small user-grouped file in CSV, JSON Lines or Parquet with one
hostile value planted in a drawn row: Unicode digits in a date, a label or an embedding
number (Arabic-Indic, Devanagari, full-width, superscript), a subnormal or a near-maximum
float, a D above its budget, or (accepted) control characters in a user id. The streamed
reader, in batches of 1-3 rows, must accept and refuse exactly as the loader does: same
message, same row and column, and the row named must be the planted row.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cvx_core.data.io import load_trajectories
from cvx_core.data.trajectory import TrajectoryError
from cvx_core.scale.chunks import iter_user_chunks

UNICODE_DIGITS = ["٣", "३", "３", "²", "𝟓", "߃"]  # Arabic-Indic, Devanagari, full-width, superscript, math, NKo
MUTATIONS = ["none", "control_id", "date_digit", "label_digit", "number_digit", "subnormal", "near_max", "wide_d"]


@st.composite
def _case(draw):
    fmt = draw(st.sampled_from(["csv", "jsonl", "parquet"]))
    sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    rows = []
    for u, n in enumerate(sizes):
        label = draw(st.integers(0, 2))
        for i in range(n):
            rows.append({"user_id": f"user{u}", "timestamp": f"2024-0{u + 1}-1{i}T00:00:00Z", "label": str(label),
                         "e0": repr(float(draw(st.integers(-5, 5)))), "e1": "0.5"})
    kind = draw(st.sampled_from(MUTATIONS))
    k = draw(st.integers(0, len(rows) - 1))
    digit = draw(st.sampled_from(UNICODE_DIGITS))
    r = rows[k]
    if kind == "control_id":
        for row in rows:
            if row["user_id"] == r["user_id"]:
                row["user_id"] = "\x1b[2J" + row["user_id"] + "\x07"
    elif kind == "date_digit":
        r["timestamp"] = r["timestamp"].replace("4", digit, 1)
    elif kind == "label_digit":
        r["label"] = digit
    elif kind == "number_digit":
        r["e0"] = digit + ".5"
    elif kind == "subnormal":
        r["e0"] = draw(st.sampled_from(["1e-310", "-4e-320", "5e-324", "1e-40"]))
    elif kind == "near_max":
        r["e0"] = draw(st.sampled_from(["1.7e308", "3.4e38", "-1e300"]))
    return fmt, rows, kind, k, draw(st.integers(1, 3)), draw(st.booleans())


def _write(path, fmt, rows, list_layout):
    if fmt == "csv":
        lines = ["user_id,timestamp,label,e0,e1"] + [",".join(r[c] for c in ("user_id", "timestamp", "label", "e0", "e1"))
                                                     for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return
    if fmt == "jsonl":
        out = []
        for r in rows:
            label = int(r["label"]) if r["label"].isascii() and r["label"].isdigit() else r["label"]
            vals = [float(r["e0"]) if _ascii_float(r["e0"]) else r["e0"], float(r["e1"])]
            doc = {"user_id": r["user_id"], "timestamp": r["timestamp"], "label": label}
            doc.update({"embedding": vals} if list_layout else {"e0": vals[0], "e1": vals[1]})
            out.append(json.dumps(doc))
        path.write_text("\n".join(out) + "\n", encoding="utf-8")
        return
    labels = [r["label"] for r in rows]
    e0 = [r["e0"] for r in rows]
    cols = {
        "user_id": pa.array([r["user_id"] for r in rows]),
        "timestamp": pa.array([r["timestamp"] for r in rows]),
        "label": pa.array([int(x) for x in labels]) if all(x.isascii() for x in labels) else pa.array(labels),
        "e0": pa.array([float(x) for x in e0]) if all(_ascii_float(x) for x in e0) else pa.array(e0),
        "e1": pa.array([float(r["e1"]) for r in rows]),
    }
    pq.write_table(pa.table(cols), path, row_group_size=2)


def _ascii_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.isascii()


def _stream(path, batch_rows):
    return [tr for c in iter_user_chunks(path, batch_rows=batch_rows, chunk_users=1) for tr in c.trajectories]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=_case())
def test_strict_values_are_refused_alike_by_loader_and_stream_naming_the_planted_row(case, tmp_path_factory):
    fmt, rows, kind, k, batch_rows, list_layout = case
    event(f"{fmt} {kind}")
    path = tmp_path_factory.mktemp("values") / f"f.{fmt}"
    _write(path, fmt, rows, list_layout)
    old = os.environ.get("CVX_MAX_DIM")
    if kind == "wide_d":
        os.environ["CVX_MAX_DIM"] = "1"
    try:
        try:
            whole = load_trajectories(path)
        except TrajectoryError as exc:
            assert kind not in ("none", "control_id"), str(exc)
            with pytest.raises(TrajectoryError) as streamed:
                _stream(path, batch_rows)
            assert str(streamed.value) == str(exc)
            assert (streamed.value.row, streamed.value.column) == (exc.row, exc.column)
            assert "\n" not in str(exc) and str(exc).startswith(path.name)
            if kind == "wide_d":
                assert "CVX_MAX_DIM" in str(exc)
            else:
                assert exc.row == k + 1, (kind, k, str(exc))  # rows count from 1, as the file does
            return
        assert kind in ("none", "control_id"), f"{kind} at row {k + 1} was accepted"
        got = {tr.user_id: tr for tr in _stream(path, batch_rows)}
        assert sorted(got) == sorted(whole.user_ids)
        for tr in whole:
            assert got[tr.user_id].embeddings.tobytes() == tr.embeddings.tobytes()
            assert got[tr.user_id].label == tr.label
        if kind == "control_id":
            assert any("\x1b" in u for u in whole.user_ids)  # kept exactly; escaped only when printed
    finally:
        if old is None:
            os.environ.pop("CVX_MAX_DIM", None)
        else:
            os.environ["CVX_MAX_DIM"] = old


def test_a_float32_overflowing_value_is_refused_not_turned_into_inf(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("user_id,timestamp,e0\nu,2024-01-01,1e39\nu,2024-01-02,1\n")
    with pytest.raises(TrajectoryError) as e:
        load_trajectories(path)
    assert e.value.row == 1 and e.value.column == "e0"
    assert np.isfinite(np.float32(3.0e38))  # below the float32 maximum: refused for the norm budget instead
