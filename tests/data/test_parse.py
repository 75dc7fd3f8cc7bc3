"""The public chunk-aware parser (cvx_core.data.parse.parse_posts): Arrow tables, record
batches and bytes in; rows numbered in the whole file by construction; file-wide rules kept
across batches by one FileRules."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cvx_core.data.io import FileRules, load_trajectories, parse_posts
from cvx_core.data.trajectory import TrajectoryError


def _batch(ids, times, emb=None, **extra) -> pa.RecordBatch:
    emb = emb if emb is not None else [[1.0, 2.0]] * len(ids)
    cols = {"user_id": pa.array(ids), "timestamp": pa.array(times), "embedding": pa.array(emb, type=pa.list_(pa.float32()))}
    cols.update({k: pa.array(v) for k, v in extra.items()})
    return pa.RecordBatch.from_pydict(cols)


def test_a_record_batch_and_a_table_parse_to_the_same_posts():
    b = _batch(["a", "a", "b"], ["2024-01-02", "2024-01-01", "2024-01-03"], label=[1, 1, None])
    from_batch = parse_posts(b, source="x")
    from_table = parse_posts(pa.Table.from_batches([b, b.slice(0, 0)]), source="x")
    for got in (from_batch, from_table):
        assert got.user_ids.tolist() == ["a", "a", "b"]
        assert got.labels.tolist()[:2] == [1, 1] and got.label_present.tolist() == [True, True, False]
    ts = from_batch.to_set()
    assert ts["a"].datetimes.astype(str).tolist() == ["2024-01-01T00:00:00.000000", "2024-01-02T00:00:00.000000"]


def test_row_offset_numbers_rows_in_the_whole_file():
    b = _batch(["a", "a"], ["2024-01-01", "tomorrow"])
    with pytest.raises(TrajectoryError) as e:
        parse_posts(b, source="big.parquet", row_offset=4096)
    assert e.value.row == 4098 and "row 4098, column 'timestamp'" in str(e.value)


def test_one_file_rules_object_carries_id_kinds_offsets_and_width_across_batches():
    rules = FileRules()
    parse_posts(_batch(["1"], ["2024-01-01T00:00:00Z"]), source="f", rules=rules)
    assert rules.offset_kind[0] is True and rules.width == 2 and rules.rows == 1
    with pytest.raises(TrajectoryError, match="has no UTC offset but row 1 has"):
        parse_posts(_batch(["2"], ["2024-01-02"]), source="f", row_offset=1, rules=rules)
    with pytest.raises(TrajectoryError, match="has 3 values, expected 2 like the rows before it"):
        parse_posts(_batch(["2"], ["2024-01-02T00:00Z"], [[1.0, 2.0, 3.0]]), source="f", row_offset=1, rules=rules)
    # without the shared rules, each batch alone would pass
    parse_posts(_batch(["2"], ["2024-01-02"]), source="f", row_offset=1)


def test_bytes_are_read_in_their_format_and_give_the_loaders_result():
    data = b"user_id,timestamp,e0\na,2024-01-01,0.5\nb,2024-01-02,1.5\n"
    posts = parse_posts(data, source="p.csv")
    assert posts.user_ids.tolist() == ["a", "b"] and posts.embeddings.tolist() == [[0.5], [1.5]]
    assert posts.to_set().user_ids == load_trajectories(data, name="p.csv").user_ids
    assert posts.where(1) == "row 2 (line 3)"


def test_a_batch_slice_and_concat_keep_row_numbers():
    posts = parse_posts(_batch(["a", "b", "c"], ["2024-01-01"] * 3), source="f", row_offset=10)
    tail = posts.slice(1, 3)
    assert tail.where(0) == "row 12" and tail.rows.number(1) == 13
    from cvx_core.data.parse import PostTable

    joined = PostTable.concat([posts.slice(0, 1), parse_posts(_batch(["d"], ["2024-01-01"], label=[3]), source="f", row_offset=40)])
    assert joined.where(1) == "row 41" and joined.labels.tolist() == [0, 3] and joined.label_present.tolist() == [False, True]


def test_other_inputs_are_a_type_error():
    with pytest.raises(TypeError, match="pyarrow Table or RecordBatch"):
        parse_posts({"user_id": ["a"]}, source="f")


def test_a_duplicated_arrow_column_is_refused_naming_it():
    t = pa.table([pa.array(["a"]), pa.array(["2024-01-01"]), pa.array(["b"])], names=["user_id", "timestamp", "user_id"])
    with pytest.raises(TrajectoryError, match="column 'user_id' appears twice"):
        parse_posts(t, source="f")
