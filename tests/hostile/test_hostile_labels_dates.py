"""Hostile cells in the label and date columns, in every input format (CSV, JSON Lines,
Parquet, NPZ; TSV is not one: ``.tsv`` is refused by its extension), through the loader and
the streamed reader alike.

Labels: one rule, "a label is a class index written as an integer". A float is refused even
when it is whole (JSON ``1.0``, CSV ``1.0`` / ``1e0``, a Parquet/NPZ float64 column of 0.0/1.0
as pandas writes a label column with a gap, a DataFrame, ``Trajectory(label=1.0)``, the
scikit-learn adapter's ``y``): never rounded, one error naming file, row and column, the same
from the loader and the stream. Missing labels (empty, null, NaN, a float column of NaN only)
stay "no label"; integer columns with nulls (pandas ``Int64``) load.

Dates: only ASCII whitespace may surround a cell. A non-breaking, figure, narrow, em or
ideographic space, a line or paragraph separator, NEL, a zero-width character, a word joiner
or a BOM next to a date (before, after, between date and time, before the offset) is refused
naming file, row and column and the character; ASCII spaces and tabs around a date still load.
The same Unicode characters around a label or an embedding number are refused too.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cvx_core.data.io import load_trajectories
from cvx_core.data.trajectory import Trajectory, TrajectoryError
from cvx_core.scale.chunks import iter_user_chunks

UNICODE_SPACES = ["\u00a0", "\u2007", "\u202f", "\u2003", "\u3000", "\u2028", "\u2029", "\u0085", "\u1680"]
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u180e"]
HOSTILE_CHARS = UNICODE_SPACES + INVISIBLE


def _both(path):
    """(loaded set, None) or (None, error): the loader's and the streamed reader's, which must agree."""
    try:
        ts, whole = load_trajectories(path), None
    except TrajectoryError as e:
        ts, whole = None, e
    try:
        users = [tr for chunk in iter_user_chunks(path, batch_rows=1, chunk_users=1) for tr in chunk.trajectories]
        streamed = None
    except TrajectoryError as e:
        users, streamed = None, e
    assert (whole is None) == (streamed is None), (whole, streamed)
    if whole is not None:
        assert str(streamed) == str(whole) and (streamed.row, streamed.column) == (whole.row, whole.column)
        return None, whole
    assert [(t.user_id, t.label) for t in users] == [(t.user_id, t.label) for t in ts]
    return ts, None


def _refused(path) -> TrajectoryError:
    ts, err = _both(path)
    assert err is not None, f"{path.name} loaded: {[(t.user_id, t.label) for t in ts]}"
    assert err.file == path.name
    return err


def _rows(label_cells, times=None):
    times = times or [f"2024-01-0{k + 1}T00:00:00" for k in range(len(label_cells))]
    return [{"user_id": "a", "timestamp": t, "label": v, "e0": float(k)}
            for k, (t, v) in enumerate(zip(times, label_cells))]


def _write(path, rows, fmt):
    """``rows`` (dicts with user_id, timestamp, label, e0) in format ``fmt``; CSV cells are written verbatim."""
    cols = list(rows[0])
    if fmt == "csv":
        cell = lambda v: "" if v is None else str(v)  # noqa: E731
        path.write_text("\n".join([",".join(cols)] + [",".join(cell(r[c]) for c in cols) for r in rows]) + "\n",
                        encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    else:
        raise AssertionError(fmt)
    return path


# ---- labels ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, cell", [("jsonl", 1.0), ("jsonl", 0.0), ("jsonl", 1e0), ("csv", "1.0"), ("csv", "1."),
                                       ("csv", "1.000"), ("csv", "1e0"), ("jsonl", "1.0"),
                                       ("csv", " 2.0 ")])
def test_a_whole_float_label_in_a_text_format_is_refused_not_rounded(tmp_path, fmt, cell):
    path = _write(tmp_path / f"l.{fmt}", _rows([1, cell]), fmt)
    e = _refused(path)
    assert (e.row, e.column) == (2, "label")
    assert "is a float" in str(e) and "never rounded" in str(e) and "expected an integer label >= 0" in str(e)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_typed_float_label_column_is_refused_in_parquet_as_pandas_writes_it(tmp_path, dtype):
    frame = pd.DataFrame({"user_id": ["a", "a", "b"], "timestamp": pd.date_range("2024-01-01", periods=3),
                          "label": np.array([np.nan, np.nan, 1.0], dtype=dtype), "e0": [0.0, 1.0, 2.0]})
    path = tmp_path / "pandas.parquet"
    frame.to_parquet(path)  # pandas' float label column: the gaps are NaN, the labels floats
    e = _refused(path)
    assert (e.row, e.column) == (3, "label") and f"column type {dtype}" in str(e) and ".astype('Int64')" in str(e)
    frame["label"] = frame["label"].astype("Int64")  # the documented fix: integers with gaps
    frame.to_parquet(path)
    ts, _ = _both(path)
    assert ts["a"].label is None and ts["b"].label == 1


def test_a_float_label_array_in_npz_is_refused_and_an_integer_one_loads(tmp_path):
    arrays = dict(embeddings=np.ones((2, 1), np.float32), timestamps=np.array(["2024-01-01", "2024-01-02"], "datetime64[us]"),
                  user_ids=np.array(["a", "b"]))
    np.savez(tmp_path / "f.npz", labels=np.array([0.0, 1.0]), **arrays)
    e = _refused(tmp_path / "f.npz")
    assert (e.row, e.column) == (1, "label") and "is a float (column type float64)" in str(e)
    np.savez(tmp_path / "i.npz", labels=np.array([0, 1]), **arrays)
    assert [t.label for t in _both(tmp_path / "i.npz")[0]] == [0, 1]


def test_missing_labels_stay_missing_in_every_spelling_and_integers_load(tmp_path):
    jl = _write(tmp_path / "m.jsonl", _rows([None, None]) + [dict(_rows([3])[0], user_id="b")], "jsonl")
    jl.write_text(jl.read_text().replace("null", "NaN", 1))  # Python's json writes a float NaN so
    ts, _ = _both(jl)
    assert ts["a"].label is None and ts["b"].label == 3
    csv = _write(tmp_path / "m.csv", _rows(["", " "]) + [dict(_rows([" 2 "])[0], user_id="b")], "csv")
    ts, _ = _both(csv)
    assert ts["a"].label is None and ts["b"].label == 2  # ASCII spaces around digits: allowed
    table = pa.table({"user_id": ["a", "b"], "timestamp": pa.array([0, 1], pa.timestamp("s")),
                      "label": pa.array([None, None], pa.float64()), "e0": [0.0, 1.0]})
    pq.write_table(table, tmp_path / "nan.parquet")  # a float column of gaps only holds no float label
    assert [t.label for t in _both(tmp_path / "nan.parquet")[0]] == [None, None]


@pytest.mark.parametrize("char", HOSTILE_CHARS)
def test_a_unicode_space_or_invisible_character_in_a_label_is_refused_not_stripped(tmp_path, char):
    for cell in (f"1{char}", f"{char}1", char):  # the last: it looks empty, but is not "no label"
        path = _write(tmp_path / "s.csv", _rows([1, cell]), "csv")
        e = _refused(path)
        assert (e.row, e.column) == (2, "label"), cell


def test_the_library_constructors_refuse_float_labels_too():
    dts = np.array(["2024-01-01"], "datetime64[us]")
    with pytest.raises(TrajectoryError, match="never rounded"):
        Trajectory("a", np.ones((1, 2), np.float32), dts, label=1.0)
    with pytest.raises(TrajectoryError):
        Trajectory("a", np.ones((1, 2), np.float32), dts, label=np.float64(0.0))
    assert Trajectory("a", np.ones((1, 2), np.float32), dts, label=np.int64(3)).label == 3


def test_the_sklearn_adapter_refuses_float_y_and_a_float_dataframe_label():
    from cvx_core.sklearn import as_trajectory_set

    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match="integer class indices"):
        as_trajectory_set(x, np.array([0.0, 1.0, 1.5]))  # was silently 0, 1, 1
    with pytest.raises(ValueError, match="integer class indices"):
        as_trajectory_set(x, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="negative"):
        as_trajectory_set(x, np.array([0, -1, 1]))
    assert as_trajectory_set(x, np.array([0, 1, 1])).labels.tolist() == [0, 1, 1]
    frame = pd.DataFrame({"user_id": ["a", "b"], "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"]),
                          "label": [0.0, np.nan], "e0": [1.0, 2.0]})
    with pytest.raises(TrajectoryError) as e:
        as_trajectory_set(frame)
    assert (e.value.file, e.value.row, e.value.column) == ("DataFrame", 1, "label")


# ---- dates ----------------------------------------------------------------------------------
def _date_file(tmp_path, fmt, stamp):
    rows = _rows([1, 1], times=["2024-01-01T00:00:00", stamp])
    if fmt == "parquet":
        path = tmp_path / "d.parquet"
        pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), path)
        return path
    if fmt == "npz":
        path = tmp_path / "d.npz"
        np.savez(path, embeddings=np.array([[0.0], [1.0]], np.float32), timestamps=np.array([r["timestamp"] for r in rows]),
                 user_ids=np.array(["a", "a"]), labels=np.array([1, 1]))
        return path
    return _write(tmp_path / f"d.{fmt}", rows, fmt)


def _placements(char):
    return [f"2024-01-02T00:00:00{char}", f"{char}2024-01-02", f"2024-01-02{char}", f"2024-01-02{char}12:00",
            f"2024-01-02T12:00{char}Z", f"2024-01-02T12:00:00{char}+01:00"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "npz"])
@pytest.mark.parametrize("char", HOSTILE_CHARS)
def test_a_unicode_space_or_invisible_character_in_a_date_is_refused_naming_it(tmp_path, fmt, char):
    for stamp in _placements(char):
        e = _refused(_date_file(tmp_path, fmt, stamp))
        assert (e.row, e.column) == (2, "timestamp"), stamp
        assert f"U+{ord(char):04X}" in str(e) or "is missing" in str(e) or "offset" in str(e), str(e)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "npz"])
@pytest.mark.parametrize("stamp", [" 2024-01-02", "2024-01-02 ", "\t2024-01-02T00:00:00\t", "  2024-01-02 12:00  "])
def test_ascii_spaces_and_tabs_around_a_date_still_load(tmp_path, fmt, stamp):
    ts, _ = _both(_date_file(tmp_path, fmt, stamp))
    assert len(ts["a"].datetimes) == 2


def test_a_bom_in_a_later_csv_cell_is_refused_but_a_bom_at_the_start_of_the_file_is_the_encoding_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffuser_id,timestamp,label,e0\na,2024-01-01,1,0\na,\ufeff2024-01-02,1,1\n".encode())
    e = _refused(path)
    assert (e.row, e.column) == (2, "timestamp") and "U+FEFF" in str(e)
    path.write_bytes("\ufeffuser_id,timestamp,label,e0\na,2024-01-01,1,0\n".encode())
    assert _both(path)[0]["a"].label == 1


@pytest.mark.parametrize("char", UNICODE_SPACES[:3] + ["\u200b"])
def test_a_unicode_space_around_an_embedding_number_or_list_is_refused(tmp_path, char):
    csv = tmp_path / "e.csv"
    csv.write_text(f"user_id,timestamp,e0\na,2024-01-01,1.5{char}\n", encoding="utf-8")
    assert (_refused(csv).row, _refused(csv).column) == (1, "e0")
    listed = tmp_path / "l.csv"
    listed.write_text(f'user_id,timestamp,embedding\na,2024-01-01,"[1.5, 2]{char}"\n', encoding="utf-8")
    assert (_refused(listed).row, _refused(listed).column) == (1, "embedding")


# ---- the same class outside the loader: forecast --at and the split column ---------------------
@pytest.mark.parametrize("char", ["\u00a0", "\u3000", "\u200b", "\ufeff"])
def test_forecast_at_refuses_a_unicode_space_around_its_date_and_keeps_ascii_spaces(char):
    from cvx_core.learn.forecast import parse_forecast_time

    with pytest.raises(ValueError, match="--at"):
        parse_forecast_time(f"2031-05-01{char}")
    assert parse_forecast_time(" 2031-05-01 ") == np.datetime64("2031-05-01", "us")


@pytest.mark.parametrize("char", ["\u00a0", "\u2003", "\u200b"])
def test_a_split_column_cell_with_a_unicode_space_is_refused_naming_row_and_column(tmp_path, char):
    from cvx_core.learn.splits import read_split_column

    path = tmp_path / "split.csv"
    path.write_text(f"user_id,timestamp,e0,part\na,2024-01-01,1,train\nb,2024-01-01,1,test{char}\nc,2024-01-01,1, val \n",
                    encoding="utf-8")
    with pytest.raises(TrajectoryError) as e:
        read_split_column(path, "part")
    assert (e.value.row, e.value.column) == (2, "part")
    path.write_text("user_id,timestamp,e0,part\na,2024-01-01,1,train\nc,2024-01-01,1, val \n", encoding="utf-8")
    assert read_split_column(path, "part") == {"a": "train", "c": "val"}


# ---- the same class in settings read from the environment -------------------------------------
@pytest.mark.parametrize("raw", ["500\u00a0", "\u2003500", "٥٠٠", "５００"])
def test_a_budget_variable_with_a_unicode_space_or_digit_is_refused_not_read(monkeypatch, raw):
    from cvx_core.data.budgets import MAX_POSTS_PER_USER, BudgetError

    monkeypatch.setenv(MAX_POSTS_PER_USER.env, raw)
    with pytest.raises(BudgetError, match=MAX_POSTS_PER_USER.env):
        MAX_POSTS_PER_USER.value()
    monkeypatch.setenv(MAX_POSTS_PER_USER.env, " 500 ")
    assert MAX_POSTS_PER_USER.value() == 500


@pytest.mark.parametrize("raw", ["100\u00a0", "١٠٠", "１００"])
def test_the_apps_size_and_stream_settings_do_not_read_unicode_digits_or_spaces(monkeypatch, raw):
    from cvx_app import set_analysis_jobs, workspace

    monkeypatch.setenv(workspace.MAX_DECODED_ENV, raw)
    with pytest.raises(ValueError, match=workspace.MAX_DECODED_ENV):
        workspace.max_decoded_bytes()
    monkeypatch.setenv(set_analysis_jobs.STREAM_ANALYSIS_ENV, raw)  # logged and ignored: the default
    assert set_analysis_jobs.stream_threshold() == set_analysis_jobs.STREAM_ANALYSIS_POSTS
    monkeypatch.setenv(workspace.MAX_DECODED_ENV, " 100 ")
    assert workspace.max_decoded_bytes() == 100 * 2**20


@pytest.mark.parametrize("uid, says", [("", "empty user id"), ("   ", "empty user id"),
                                       ("\u00a0\u3000", "holds only spaces (some not ASCII): an invisible user id")])
def test_a_blank_user_id_is_refused_saying_whether_it_is_empty_or_only_invisible_spaces(tmp_path, uid, says):
    path = tmp_path / "ids.csv"
    pd.DataFrame({"user_id": ["a", uid], "timestamp": ["2024-01-01", "2024-01-02"], "e0": [0.1, 0.2]}).to_csv(path, index=False)
    _, error = _both(path)  # the loader and the streamed reader agree
    err = str(error)
    assert says in err and "row 2 (line 3), column 'user_id'" in err and path.name in err and "\n" not in err
