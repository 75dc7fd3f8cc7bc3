"""Hostile inputs, issue 26 item 7: strict values.

Dates, labels and numbers are ASCII digits only (a Unicode digit such as '٣' is refused,
never read as 3); ``planted_dims`` must be integers (never rounded); finite embeddings whose
features would not be finite (subnormal values, rows so long that |v|^2 |v'|^2 overflows
float32) are refused at load with the row named. The same in the loader and the stream.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cvx_core.data.columns import MAX_EMBEDDING_NORM
from cvx_core.data.io import load_trajectories
from cvx_core.data.trajectory import TrajectoryError
from cvx_core.data.truth import read_planted_dims
from cvx_core.scale.chunks import iter_user_chunks

UNICODE_DIGITS = ["٣", "３", "३", "𝟑"]  # Arabic-Indic, fullwidth, Devanagari, mathematical bold


def _both_refuse(path) -> TrajectoryError:
    with pytest.raises(TrajectoryError) as whole:
        load_trajectories(path)
    with pytest.raises(TrajectoryError) as streamed:
        for _ in iter_user_chunks(path, batch_rows=1, chunk_users=1):
            pass
    assert str(streamed.value) == str(whole.value)
    return whole.value


@pytest.mark.parametrize("digit", UNICODE_DIGITS)
@pytest.mark.parametrize("column", ["timestamp", "label", "e0"])
def test_unicode_digits_in_csv_dates_labels_and_numbers_are_refused(tmp_path, digit, column):
    cells = {"timestamp": "2024-01-02", "label": "1", "e0": "2"}
    cells[column] = {"timestamp": f"2024-01-0{digit}", "label": digit, "e0": digit}[column]
    path = tmp_path / "u.csv"
    path.write_text(f"user_id,timestamp,label,e0\na,2024-01-01,1,1\na,{cells['timestamp']},{cells['label']},{cells['e0']}\n",
                    encoding="utf-8")
    e = _both_refuse(path)
    assert e.row == 2 and e.column == column and digit in str(e)


@pytest.mark.parametrize("digit", UNICODE_DIGITS)
def test_unicode_digits_in_json_text_cells_are_refused(tmp_path, digit):
    for key, value in [("timestamp", f"{digit}024-01-01"), ("label", digit), ("embedding", f"[{digit}, 1]")]:
        rec = {"user_id": "a", "timestamp": "2024-01-01", "label": 1, "embedding": [1.0, 2.0], key: value}
        path = tmp_path / f"{key}.jsonl"
        path.write_text(json.dumps({"user_id": "a", "timestamp": "2024-01-01", "label": 1, "embedding": [1.0, 2.0]})
                        + "\n" + json.dumps(rec, ensure_ascii=False) + "\n", encoding="utf-8")
        e = _both_refuse(path)
        assert e.row == 2 and e.column == key


def test_ascii_digits_with_ascii_spaces_still_load(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text("user_id,timestamp,label,e0\na, 2024-01-01 , 1 , 1.5 \n")
    tr = load_trajectories(path)["a"]
    assert tr.label == 1 and tr.embeddings.tolist() == [[1.5]]


@pytest.mark.parametrize("dims", [[0.9, 1.7], [1.0, 2.0], [True, 2], ["3"], [-1, 2], [], "3", None])
def test_planted_dims_must_be_integers_never_rounded(tmp_path, dims):
    path = tmp_path / "truth.json"
    path.write_text(json.dumps({"planted_dims": dims}))
    with pytest.raises(TrajectoryError) as e:
        read_planted_dims(path)
    assert "planted_dims" in str(e.value) and e.value.column == "planted_dims"


def test_planted_dims_of_integers_load_and_a_folder_or_missing_key_is_refused(tmp_path):
    path = tmp_path / "truth.json"
    path.write_text(json.dumps({"planted_dims": [3, 17, 0]}))
    assert read_planted_dims(path) == [3, 17, 0]
    with pytest.raises(TrajectoryError, match="not a regular file"):
        read_planted_dims(tmp_path)
    path.write_text(json.dumps({"dims": [1]}))
    with pytest.raises(TrajectoryError, match="no 'planted_dims' key"):
        read_planted_dims(path)


def test_the_cli_refuses_a_fractional_planted_dim_in_one_line(tmp_path, capsys):
    from cvx_core.cli import _planted

    path = tmp_path / "truth.json"
    path.write_text(json.dumps({"planted_dims": [0.9, 1.7]}))
    with pytest.raises(TrajectoryError, match="position 0 is 0.9"):
        _planted(str(path))


def _parquet(path, rows: np.ndarray, dtype) -> None:
    n, d = rows.shape
    table = pa.table({
        "user_id": ["a"] * n,
        "timestamp": pa.array(np.arange(n) * 86_400_000_000, type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1).astype(dtype)), d),
    })
    pq.write_table(table, path)


_MAGNITUDES = [
    (1e-40, "too small for float32"),  # subnormal in float32
    (1e-300, "too small for float32"),  # a float64 that would silently become 0
    (3e38, "Euclidean norm"),  # near float32's maximum: finite, its features are not
    (2 * MAX_EMBEDDING_NORM, "Euclidean norm"),
]


@pytest.mark.parametrize(
    "bad, what, fmt",
    [(b, w, f) for b, w in _MAGNITUDES for f in ("csv", "parquet64", "parquet32", "jsonl")
     if not (f == "parquet32" and b < 1e-45)],  # 1e-300 has no float32 form at all
)
def test_finite_values_whose_features_overflow_or_vanish_are_refused_naming_the_row(tmp_path, bad, what, fmt):
    rows = np.array([[0.5, 1.0], [0.25, -2.0], [bad, 1.0]])
    if fmt.startswith("parquet"):
        dtype = np.float32 if fmt == "parquet32" else np.float64
        path = tmp_path / "x.parquet"
        _parquet(path, rows, dtype)
    elif fmt == "csv":
        path = tmp_path / "x.csv"
        path.write_text("user_id,timestamp,e0,e1\n" + "".join(
            f"a,2024-01-0{i + 1},{r[0]!r},{r[1]!r}\n" for i, r in enumerate(rows.tolist())))
    else:
        path = tmp_path / "x.jsonl"
        path.write_text("".join(json.dumps({"user_id": "a", "timestamp": f"2024-01-0{i + 1}", "embedding": r}) + "\n"
                                for i, r in enumerate(rows.tolist())))
    e = _both_refuse(path)
    assert what in str(e) and e.row == 3


def test_zero_and_the_smallest_normal_float32_load(tmp_path):
    tiny = float(np.finfo(np.float32).tiny)
    path = tmp_path / "ok.csv"
    path.write_text(f"user_id,timestamp,e0,e1\na,2024-01-01,0,{tiny!r}\na,2024-01-02,-0.0,1e8\n")
    tr = load_trajectories(path)["a"]
    assert tr.embeddings[0, 1] == np.float32(tiny) and tr.embeddings[1, 1] == np.float32(1e8)
