"""Hostile inputs, issue 26 item 2: the streamed readers apply the loader's file-wide rules
across batch boundaries, with the loader's messages and row numbers.

Every case is a file whose problem sits at a batch boundary (batches of one or two rows);
the streamed reader (grouped, and the out-of-core grouping for unsorted input) must refuse
it exactly as :func:`load_trajectories` does: same message, same row and column.
"""

from __future__ import annotations

import json

import pytest

from cvx_core.data.io import load_trajectories
from cvx_core.data.trajectory import TrajectoryError
from cvx_core.scale.chunks import iter_user_chunks
from cvx_core.scale.stream import extract_stream


def _jsonl(rows: list[dict]) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def _post(uid, ts, **kw):
    return {"user_id": uid, "timestamp": ts, "embedding": [0.5, -1.0], **kw}


def _loader_error(path) -> TrajectoryError:
    with pytest.raises(TrajectoryError) as exc:
        load_trajectories(path)
    return exc.value


def _stream_error(path, *, grouped: bool, batch_rows: int = 1) -> TrajectoryError:
    with pytest.raises(TrajectoryError) as exc:
        for _ in iter_user_chunks(path, batch_rows=batch_rows, chunk_users=1, grouped=grouped, partition_bytes=64):
            pass
    return exc.value


CASES = {
    # the number 1 and the text "1" would be one user
    "id_kinds.jsonl": _jsonl([_post(1, "2024-01-01"), _post(1, "2024-01-02"), _post("1", "2024-01-03")]),
    # times with and without a UTC offset
    "offsets.jsonl": _jsonl([_post("a", "2024-01-01T00:00Z"), _post("a", "2024-01-02T00:00Z"), _post("b", "2024-01-03")]),
    "offsets.csv": b"user_id,timestamp,e0\na,2024-01-01T00:00:00Z,1\na,2024-01-02T00:00:00Z,1\nb,2024-01-03T00:00:00,2\n",
    # `embedding` first, then e0, e1
    "layouts.jsonl": _jsonl([_post("a", "2024-01-01"), _post("a", "2024-01-02"),
                             {"user_id": "b", "timestamp": "2024-01-03", "e0": 1.0, "e1": 2.0}]),
    # a later row with another D
    "width.jsonl": _jsonl([_post("a", "2024-01-01"), _post("a", "2024-01-02"),
                           {"user_id": "b", "timestamp": "2024-01-03", "embedding": [1.0]}]),
    # a label that vanishes mid-user (the key absent from the later records)
    "label_vanishes.jsonl": _jsonl([_post("a", "2024-01-01", label=1), _post("a", "2024-01-02", label=1),
                                    _post("a", "2024-01-03")]),
    # a label that appears only in a later batch
    "label_appears.jsonl": _jsonl([_post("a", "2024-01-01"), _post("a", "2024-01-02"), _post("a", "2024-01-03", label=0)]),
    "label_vanishes.csv": b"user_id,timestamp,label,e0\na,2024-01-01,1,1\na,2024-01-02,1,1\na,2024-01-03,,1\n",
    # a key that the first records lack entirely
    "late_user_id.jsonl": _jsonl([{"timestamp": "2024-01-01", "embedding": [1.0, 2.0]}, _post("a", "2024-01-02")]),
    # a first row both non-finite and of another D: its value is the file's first problem
    "width_and_nan.jsonl": _jsonl([{"user_id": 0, "timestamp": "1970-01-01", "embedding": [1e999]},
                                   {"user_id": 1, "timestamp": "1970-01-01", "embedding": [0.0, 0.0]},
                                   {"user_id": 1, "timestamp": "1970-01-02", "embedding": [0.0, 0.0]}]),
    # ragged CSV row
    "ragged.csv": b"user_id,timestamp,e0\na,2024-01-01,1\na,2024-01-02,1,9\n",
    # invalid UTF-8 in a later block
    "utf8.csv": b"user_id,timestamp,e0\na,2024-01-01,1\na,2024-01-0\xff2,1\n",
}


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_file_wide_rule_broken_at_a_batch_boundary_is_refused_as_the_loader_refuses_it(tmp_path, name, grouped):
    path = tmp_path / name
    path.write_bytes(CASES[name])
    whole = _loader_error(path)
    streamed = _stream_error(path, grouped=grouped)
    assert str(streamed) == str(whole)
    assert (streamed.row, streamed.column, streamed.file) == (whole.row, whole.column, whole.file)
    assert whole.row is not None or whole.column is not None, str(whole)


def test_a_label_that_vanishes_mid_user_names_both_rows_not_a_numpy_error(tmp_path):
    path = tmp_path / "v.jsonl"
    path.write_bytes(CASES["label_vanishes.jsonl"])
    e = _stream_error(path, grouped=True)
    assert "row 3 (line 3)" in str(e) and "label 1 at row 1 (line 1)" in str(e) and e.user == "a"


def test_a_literal_quote_in_an_unquoted_csv_field_is_text_for_loader_and_stream_alike(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(
        b'user_id,timestamp,text,e0\na,2024-01-01,he said "hi,1\na,2024-01-02,5" tall,2\n'
        b'b,2024-01-01,"quoted ""x"", fine",3\nb,2024-01-02,"two\nlines",4\n'
    )
    whole = load_trajectories(path)
    got = [tr for c in iter_user_chunks(path, batch_rows=1, chunk_users=1) for tr in c.trajectories]
    assert [t.texts for t in got] == [t.texts for t in whole]
    assert whole["a"].texts == ('he said "hi', '5" tall') and whole["b"].texts == ('quoted "x", fine', "two\nlines")


def test_a_streamed_command_refuses_with_the_loaders_message_and_writes_nothing(tmp_path):
    path = tmp_path / "id_kinds.jsonl"
    path.write_bytes(CASES["id_kinds.jsonl"])
    out = tmp_path / "features.parquet"
    with pytest.raises(TrajectoryError) as e:
        extract_stream(path, out, chunk_users=1)
    assert str(e.value) == str(_loader_error(path))
    assert not out.exists()


def test_row_numbers_in_a_regrouped_file_are_the_original_rows(tmp_path):
    rows = [_post(u, f"2024-01-0{d}") for d in range(1, 4) for u in ("a", "b", "c")]  # not grouped by user
    rows[7]["embedding"] = [1.0, float("inf")]
    path = tmp_path / "unsorted.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows).replace("Infinity", "1e999") + "\n")
    whole = _loader_error(path)
    assert "row 8 (line 8)" in str(whole)
    assert str(_stream_error(path, grouped=False)) == str(whole)


def test_a_csv_row_longer_than_the_readers_block_loads_in_loader_and_stream(tmp_path):
    big = "x" * 3_000_000  # pyarrow reads 1 MB blocks: the reader reopens with larger ones
    path = tmp_path / "long.csv"
    path.write_text("user_id,timestamp,text,e0\n" + "a,2024-01-01,s,0\n" * 1000 + f"a,2024-01-02,{big},1\n"
                    f'b,2024-01-03,"q{big}\nz",2\nb,2024-01-04,y,3\n')
    whole = load_trajectories(path)
    got = {t.user_id: t for c in iter_user_chunks(path, batch_rows=100, chunk_users=1) for t in c.trajectories}
    assert whole["a"].n_posts == 1001 and len(whole["b"].texts[0]) == 3_000_003
    for tr in whole:
        assert got[tr.user_id].texts == tr.texts


@pytest.mark.parametrize("batch_rows", [1, 2, 3])
def test_a_bad_value_before_a_row_of_another_d_is_reported_first_in_parquet_too(tmp_path, batch_rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "w.parquet"
    emb = pa.array([[1.0, 1.0], [float("nan"), 2.0], [0.0]])
    pq.write_table(pa.table({"user_id": ["a", "a", "b"], "timestamp": ["2024-01-01", "2024-01-02", "2024-01-01"],
                             "embedding": emb}), path, row_group_size=2)
    whole = _loader_error(path)
    assert whole.row == 2 and "not finite" in str(whole)
    streamed = _stream_error(path, grouped=True, batch_rows=batch_rows)
    assert str(streamed) == str(whole) and streamed.row == whole.row
