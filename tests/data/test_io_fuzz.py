"""Fuzzing the loaders with malformed tables in all four formats (hypothesis).

Each example draws a valid table (text and integer ids up to 64 bits, times anywhere in
years 1-9999 with microseconds, labels, D = 1..3 float32 values), writes it in one format
(with a random choice of the format's own encodings: list column or e-columns, ISO text or
epoch numbers, Parquet time units, .npz datetime units) and then, most of the time, applies
one hostile mutation: a renamed, dropped or duplicated column, a cell of the wrong type, an
ambiguous timestamp, a colliding id, a negative or overflowing label, invalid UTF-8 or
UTF-16 text, both embedding layouts at once.

The invariant: an unmutated table loads and every value round-trips exactly (ids, order,
times to the microsecond, labels, embeddings bit for bit); a mutated one raises
:class:`TrajectoryError` naming the file and the row or column. Never another exception,
never a silent change. The number of cases and outcomes is printed at the end of the module
(``pytest -s``) and written to ``tests/artifacts/io_fuzz_counts.json``.
"""

from __future__ import annotations

import collections
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cvx_core.data.io import load_trajectories
from cvx_core.data.trajectory import TrajectoryError

FORMATS = ["csv", "jsonl", "parquet", "npz"]
EXAMPLES = 120  # per format; CI replays the same examples (derandomized profile)
COUNTS: collections.Counter = collections.Counter()

MIN_US = int(np.datetime64("0001-01-01T00:00:00", "us").astype(np.int64))
MAX_US = int(np.datetime64("9999-12-31T23:59:59.999999", "us").astype(np.int64))


# ------------------------------------------------------------------------------------------
# a valid table
# ------------------------------------------------------------------------------------------
ids_text = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), exclude_characters=",\"'\\"),
    min_size=1,
    max_size=8,
).filter(lambda s: s.strip() == s and not s.lstrip("+-").replace(".", "").isdigit())
ids_int = st.integers(-(2**63), 2**63 - 1)


@st.composite
def tables(draw):
    d = draw(st.integers(1, 3))
    n_users = draw(st.integers(1, 4))
    int_ids = draw(st.booleans())
    raw_ids = draw(st.lists(ids_int if int_ids else ids_text, min_size=n_users, max_size=n_users, unique_by=str))
    whole_seconds = draw(st.booleans())  # lets epoch-second and coarse-unit encodings be exact
    users = []
    for uid in raw_ids:
        n = draw(st.integers(1, 4))
        if whole_seconds:
            base = draw(st.integers(MIN_US // 10**6 + 86_400, MAX_US // 10**6 - 3 * 86_400))  # + up to 1.2 days
            us = sorted(base * 10**6 + draw(st.integers(0, 10**5)) * 10**6 for _ in range(n))
        else:
            base = draw(st.integers(MIN_US + 86_400 * 10**6, MAX_US - 3 * 86_400 * 10**6))
            us = sorted(base + draw(st.integers(0, 10**11)) for _ in range(n))
        # every finite float32 the loader keeps: 0 or normal, rows no longer than MAX_EMBEDDING_NORM
        values = draw(st.lists(st.floats(-5e8, 5e8, width=32, allow_subnormal=False), min_size=n * d, max_size=n * d))
        label = draw(st.one_of(st.none(), st.integers(0, 2**63 - 1), st.integers(0, 3)))
        users.append(
            {
                "id": uid,
                "us": us,
                "emb": np.array(values, dtype=np.float32).reshape(n, d),
                "label": label,
            }
        )
    return {"d": d, "users": users, "int_ids": int_ids, "whole_seconds": whole_seconds}


def rows_of(table):
    for u in table["users"]:
        for k, us in enumerate(u["us"]):
            yield u, us, u["emb"][k]


def iso(us: int, *, z: bool) -> str:
    text = str(np.datetime64(us, "us"))  # YYYY-MM-DDTHH:MM:SS.ffffff
    return text + ("Z" if z else "")


# ------------------------------------------------------------------------------------------
# writers: a table -> a list of rows (dicts of cells) -> bytes of one format
# ------------------------------------------------------------------------------------------
def cells(table, fmt: str, opts) -> tuple[list[str], list[dict]]:
    d = table["d"]
    wide = opts["wide"]
    header = ["user_id", "timestamp", "label"] + ([f"e{j}" for j in range(d)] if wide else ["embedding"])
    out = []
    for u, us, emb in rows_of(table):
        row = {"user_id": u["id"], "label": u["label"]}
        if fmt == "jsonl" and opts["epoch"] and table["whole_seconds"]:
            row["timestamp"] = us // 10**6
        else:
            row["timestamp"] = iso(us, z=opts["z"])
        vals = [float(v) for v in emb]
        if wide:
            row.update({f"e{j}": vals[j] for j in range(d)})
        else:
            row["embedding"] = vals
        out.append(row)
    return header, out


def csv_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return '"' + json.dumps(v).replace('"', '""') + '"'
    if isinstance(v, float):
        return repr(v)
    return str(v)


def to_bytes(fmt: str, header: list[str], rows: list[dict], table, opts) -> bytes:
    if fmt == "csv":
        lines = [",".join(header)]
        for r in rows:
            lines.append(",".join(csv_cell(r.get(h)) for h in header))
        return ("\n".join(lines) + "\n").encode("utf-8")
    if fmt == "jsonl":
        return "\n".join(json.dumps({h: r.get(h) for h in header}, ensure_ascii=False) for r in rows).encode("utf-8")
    if fmt == "parquet":
        cols = {}
        for h in header:
            vals = [r.get(h) for r in rows]
            if h == "user_id":
                cols[h] = pa.array(vals, type=pa.int64() if table["int_ids"] else pa.string())
            elif h == "timestamp":
                us = np.array([np.datetime64(v.rstrip("Z"), "us").astype(np.int64) for v in vals], dtype=np.int64)
                unit = opts["unit"] if table["whole_seconds"] else "us"
                div = {"s": 10**6, "ms": 10**3, "us": 1}[unit]
                cols[h] = pa.array(us // div, type=pa.int64()).cast(pa.timestamp(unit, tz="UTC" if opts["z"] else None))
            elif h == "label":
                cols[h] = pa.array(vals, type=pa.int64())
            elif h == "embedding":
                cols[h] = pa.array(vals, type=pa.list_(pa.float32()))
            elif h.startswith("e") and h[1:].isdigit():
                cols[h] = pa.array(vals, type=pa.float32())
            else:
                cols[h] = pa.array(vals)
        buf = io.BytesIO()
        pq.write_table(pa.table(cols), buf)
        return buf.getvalue()
    if fmt == "npz":
        buf = io.BytesIO()
        ids = [r["user_id"] for r in rows]
        us = np.array([np.datetime64(r["timestamp"].rstrip("Z"), "us") for r in rows])
        unit = opts["unit"] if table["whole_seconds"] else "us"
        arrays = {
            "embeddings": np.array([r.get("embedding") or [r[f"e{j}"] for j in range(table["d"])] for r in rows], dtype=np.float32),
            "timestamps": us.astype(f"datetime64[{unit}]"),
            "user_ids": np.array(ids, dtype=np.int64) if table["int_ids"] else np.array(ids, dtype=str),
        }
        labels = [r["label"] for r in rows]
        if all(v is not None for v in labels):
            arrays["labels"] = np.array(labels, dtype=np.int64)
        for k in opts.get("drop_arrays", ()):
            arrays.pop(k, None)
        arrays.update(opts.get("extra_arrays", {}))
        np.savez(buf, **arrays)
        return buf.getvalue()
    raise AssertionError(fmt)


# ------------------------------------------------------------------------------------------
# mutations: each must be refused with the row or column named
# ------------------------------------------------------------------------------------------
ROW_MUTATIONS = {
    # column -> hostile cell values (JSON/CSV/Parquet-object cells)
    "user_id": [1.0, 2.5, True, None, "", "  ", {"a": 1}, [1]],
    "timestamp": ["20240301", "2023", "now", "today", "yesterday", True, None, "", "10000-01-01", "2024-02-30",
                  "2024-01-01T00:00:00.123456789", "2024-01-01T24:00", "0000-12-31", "12/03/2024"],
    "label": [-1, 1e20, 0.5, True, "x", 2**64, "-3", "1e3"],
    "embedding": [[True], ["x"], [1.0, [2.0]], "abc", None, [float("nan")], [1e39], {"x": 1}, [1e-40], [1e-300],
                  [3e38], [2e9]],
}


@st.composite
def cases(draw, fmt: str):
    table = draw(tables())
    opts = {
        "wide": draw(st.booleans()) if fmt != "npz" else False,
        "z": draw(st.booleans()),
        "epoch": draw(st.booleans()),
        "unit": draw(st.sampled_from(["s", "ms", "us"] if fmt == "parquet" else ["s", "us", "D"])),
    }
    if fmt == "npz" and opts["unit"] == "D":
        opts["unit"] = "s"  # days would need whole-day times; seconds cover coarse units
    header, rows = cells(table, fmt, opts)
    kinds = ["none", "header", "cell", "mix_offsets", "id_collision", "duplicate", "both_layouts", "e01",
             "encoding", "utf16", "label_vanish"]
    kinds += ["stray_quote"] if fmt == "csv" else ["layout_switch"] if fmt == "jsonl" else []
    if fmt in ("parquet", "npz"):
        kinds = ["none", "header", "duplicate_npz" if fmt == "npz" else "duplicate", "both_layouts",
                 "npz_bad_header" if fmt == "npz" else "parquet_nulls"] + (["label_vanish"] if fmt == "parquet" else [])
    kind = draw(st.sampled_from(kinds))
    return table, opts, header, rows, kind


def mutate(draw, fmt, table, opts, header, rows, kind):
    """Apply ``kind``; returns the bytes to load, or raises hypothesis' reject for no-ops."""
    rows = [dict(r) for r in rows]
    header = list(header)
    if kind == "none":
        return to_bytes(fmt, header, rows, table, opts)
    if kind == "header":
        col = draw(st.sampled_from(["user_id", "timestamp"]))
        how = draw(st.sampled_from(["drop", "upper", "space"]))
        new = {"drop": None, "upper": col.upper(), "space": col + " "}[how]
        if fmt == "npz":
            key = {"user_id": "user_ids", "timestamp": "timestamps"}[col]
            opts = dict(opts, drop_arrays=[key])
            return to_bytes(fmt, header, rows, table, opts)
        header = [h if h != col else new for h in header if not (h == col and new is None)]
        for r in rows:
            v = r.pop(col)
            if new is not None:
                r[new] = v
        return to_bytes(fmt, header, rows, table, opts)
    if kind == "cell":
        col = draw(st.sampled_from(sorted(ROW_MUTATIONS)))
        value = draw(st.sampled_from(ROW_MUTATIONS[col]))
        if fmt == "csv" and col == "user_id":
            value = draw(st.sampled_from(["", "  "]))  # any other CSV text is a valid id
        elif fmt == "csv" and (isinstance(value, (bool, dict)) or (value is None and col == "label")):
            value = "true" if value is True else "{x}" if isinstance(value, dict) else "-1"
        if col == "embedding" and opts["wide"]:
            first = value[0] if isinstance(value, list) and value else None
            ok_number = isinstance(first, float) and np.isfinite(first) and (first == 0 or 1.2e-38 <= abs(first) <= 5e8)
            col, value = "e0", (first if first is not None and not isinstance(first, list) and not ok_number else "abc")
        i = draw(st.integers(0, len(rows) - 1))
        if col == "label" and isinstance(value, str) and fmt == "jsonl":
            value = "x"
        rows[i][col] = value
        return to_bytes(fmt, header, rows, table, opts)
    if kind == "label_vanish":  # a user's later row without the label its earlier rows have
        rows.append(dict(rows[-1]))
        rows[-1]["label"] = None
        if rows[-2]["label"] is None:
            rows[-2]["label"] = 1
        return to_bytes(fmt, header, rows, table, opts)
    if kind == "layout_switch":  # JSON Lines: the last record gives its embedding the other way
        d = table["d"]
        if len(rows) < 2:  # one record alone may give its embedding either way
            rows.append(dict(rows[0]))
        last = rows[-1]
        vals = last.pop("embedding", None) or [last.pop(f"e{j}") for j in range(d)]
        if opts["wide"]:
            last["embedding"] = vals
        else:
            last.update({f"e{j}": vals[j] for j in range(d)})
        return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode("utf-8")
    if kind == "stray_quote":  # a literal quote inside an unquoted CSV cell is text, not quoting
        header = header + ["note"]
        for k, r in enumerate(rows):
            r["note"] = f'he said "hi{k}'
        return to_bytes(fmt, header, rows, table, opts)
    if kind == "mix_offsets":
        if len(rows) < 2:
            rows.append(dict(rows[0]))
        rows[0]["timestamp"] = iso(table["users"][0]["us"][0], z=True)
        rows[-1]["timestamp"] = iso(table["users"][-1]["us"][-1], z=False)
        return to_bytes(fmt, header, rows, table, opts)
    if kind == "id_collision":
        extra = dict(rows[0])
        if fmt == "csv":  # CSV ids are text; collide through a float id written by JSON only
            extra["user_id"] = ""
        else:
            extra["user_id"] = 7 if isinstance(rows[0]["user_id"], str) else str(rows[0]["user_id"])
            rows[0]["user_id"] = "7" if isinstance(rows[0]["user_id"], str) else rows[0]["user_id"]
        rows.append(extra)
        return to_bytes(fmt, header, rows, table, opts)
    if kind == "duplicate":
        col = draw(st.sampled_from(header))
        if fmt == "csv":
            text = to_bytes(fmt, header, rows, table, opts).decode()
            first, rest = text.split("\n", 1)
            names = first.split(",")
            j = names.index(col)
            lines = [first + "," + col] + [
                line + "," + _quote(_csv_fields(line)[j]) for line in rest.split("\n") if line
            ]
            return ("\n".join(lines) + "\n").encode()
        if fmt == "jsonl":
            out = []
            for r in rows:
                body = json.dumps(r, ensure_ascii=False)
                out.append(body[:-1] + f", {json.dumps(col)}: {json.dumps(r.get(col))}" + "}")
            return "\n".join(out).encode()
        data = to_bytes(fmt, header, rows, table, opts)
        t = pq.read_table(io.BytesIO(data))
        t = t.append_column(col, t.column(col))
        buf = io.BytesIO()
        pq.write_table(t, buf)
        return buf.getvalue()
    if kind == "duplicate_npz":
        data = to_bytes(fmt, header, rows, table, opts)
        import zipfile

        buf = io.BytesIO(data)
        with zipfile.ZipFile(buf, "a") as zf:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                zf.writestr("user_ids.npy", zf.read("user_ids.npy"))
        return buf.getvalue()
    if kind == "both_layouts":
        if fmt == "npz":
            opts = dict(opts, extra_arrays={})
            header = header  # npz has one layout; use a forged header instead
            return _npz_forged(to_bytes(fmt, header, rows, table, opts))
        d = table["d"]
        for r in rows:
            vals = r.get("embedding") or [r[f"e{j}"] for j in range(d)]
            r["embedding"] = vals
            r.update({f"e{j}": vals[j] for j in range(d)})
        header = [h for h in header if h != "embedding" and not h.startswith("e")] + ["embedding"] + [f"e{j}" for j in range(d)]
        if fmt == "parquet":
            opts = dict(opts, wide=True)
        return to_bytes(fmt, header, rows, table, opts)
    if kind == "e01":
        d = table["d"]
        header = [h for h in header if h != "embedding" and not h.startswith("e")] + ["e0", "e01"] + [f"e{j}" for j in range(2, d + 1)]
        for r in rows:
            vals = r.pop("embedding", None) or [r.pop(f"e{j}") for j in range(d)]
            vals = vals + [0.0]
            r.update({"e0": vals[0], "e01": vals[1]})
            r.update({f"e{j}": vals[j] for j in range(2, d + 1)})
        return to_bytes(fmt, header, rows, table, opts)
    if kind == "encoding":
        data = to_bytes(fmt, header, rows, table, opts)
        i = draw(st.integers(0, len(rows) - 1))
        marker = json.dumps(rows[i]["timestamp"]).strip('"').encode()
        pos = data.find(marker)
        return data[:pos] + b"\xff\xfe" + data[pos:]
    if kind == "utf16":
        return to_bytes(fmt, header, rows, table, opts).decode("utf-8").encode("utf-16")
    if kind == "parquet_nulls":
        col = draw(st.sampled_from(["user_id", "timestamp", "e0" if opts["wide"] else "embedding"]))
        data = to_bytes(fmt, header, rows, table, opts)
        t = pq.read_table(io.BytesIO(data))
        arr = t.column(col).to_pylist()
        arr[draw(st.integers(0, len(arr) - 1))] = None
        t = t.set_column(t.schema.get_field_index(col), col, pa.array(arr, type=t.schema.field(col).type))
        buf = io.BytesIO()
        pq.write_table(t, buf)
        return buf.getvalue()
    if kind == "npz_bad_header":
        return _npz_forged(to_bytes(fmt, header, rows, table, opts))
    raise AssertionError(kind)


def _npz_forged(data: bytes) -> bytes:
    """The archive with 'embeddings' replaced by a header claiming ~80 TB and a few bytes."""
    import zipfile

    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "embeddings.npy":
                hdr = io.BytesIO()
                np.lib.format.write_array_header_1_0(hdr, {"descr": "<f8", "fortran_order": False, "shape": (10**7, 10**6)})
                body = hdr.getvalue() + b"\0" * 64
            zf.writestr(info.filename, body)
    return out.getvalue()


def _csv_fields(line: str) -> list[str]:
    import csv

    return next(csv.reader([line]))


def _quote(field: str) -> str:
    return '"' + field.replace('"', '""') + '"' if any(c in field for c in ',"\n') else field


# ------------------------------------------------------------------------------------------
# the invariant
# ------------------------------------------------------------------------------------------
def expected_users(table):
    """(id text, [us], emb, label) per user in first-row order (the writer's order)."""
    return [(str(u["id"]), u["us"], u["emb"], u["label"]) for u in table["users"]]


def check(fmt, table, opts, data, kind):
    name = f"fuzz.{fmt}"
    try:
        ts = load_trajectories(data, name=name)
    except TrajectoryError as exc:
        assert kind not in ("none", "stray_quote"), f"a valid table was refused: {exc}"
        assert exc.file == name and name in str(exc)
        if kind not in ("utf16", "npz_bad_header", "duplicate_npz"):
            assert exc.row is not None or exc.column is not None, f"{kind}: no row or column named: {exc}"
        COUNTS[(fmt, kind, "refused")] += 1
        return
    assert kind in ("none", "stray_quote"), f"mutation {kind!r} was accepted silently"
    want = expected_users(table)
    assert ts.user_ids == [w[0] for w in want]
    for tr, (uid, us, emb, label) in zip(ts, want):
        assert tr.datetimes.dtype == np.dtype("datetime64[us]")
        assert tr.datetimes.astype(np.int64).tolist() == us, uid
        assert tr.embeddings.tobytes() == emb.tobytes(), uid
        npz_label = None if (fmt == "npz" and any(w[3] is None for w in want)) else label
        assert tr.label == (npz_label if fmt == "npz" else label), uid
    COUNTS[(fmt, kind, "loaded exactly")] += 1


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    total = sum(COUNTS.values())
    lines = [f"io fuzz: {total} cases"] + [f"  {f:8s} {k:16s} {o:15s} {n}" for (f, k, o), n in sorted(COUNTS.items())]
    print("\n" + "\n".join(lines))
    out = Path(__file__).resolve().parents[1] / "artifacts" / "io_fuzz_counts.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"total": total, "by_case": {"|".join(k): n for k, n in sorted(COUNTS.items())}}, indent=1))


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_malformed_tables_are_refused_naming_row_or_column_and_valid_ones_round_trip_exactly(fmt, data):
    table, opts, header, rows, kind = data.draw(cases(fmt))
    raw = mutate(data.draw, fmt, table, opts, header, rows, kind)
    check(fmt, table, opts, raw, kind)


# ------------------------------------------------------------------------------------------
# the streamed readers against the loader
# ------------------------------------------------------------------------------------------
STREAM_EXAMPLES = 100  # per format


def _stream_all(path, batch_rows: int, chunk_users: int):
    """Every trajectory the streamed reader yields (grouped pass, or out-of-core grouping
    when the file turns out not to be grouped by user, as the streamed commands do)."""
    from cvx_core.scale.chunks import NotGroupedError, iter_user_chunks

    try:
        return [tr for c in iter_user_chunks(path, batch_rows=batch_rows, chunk_users=chunk_users) for tr in c.trajectories]
    except NotGroupedError:
        return [
            tr
            for c in iter_user_chunks(path, batch_rows=batch_rows, chunk_users=chunk_users, grouped=False, partition_bytes=64)
            for tr in c.trajectories
        ]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@settings(max_examples=STREAM_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_streamed_readers_accept_and_refuse_as_the_loader_with_the_same_message(fmt, data, tmp_path_factory):
    """Batches of 1-3 rows put every problem next to a batch boundary: the streamed reader
    must still refuse what the loader refuses, with the loader's message (rows and lines of
    the whole file), and load what it loads, value for value."""
    table, opts, header, rows, kind = data.draw(cases(fmt))
    raw = mutate(data.draw, fmt, table, opts, header, rows, kind)
    path = tmp_path_factory.mktemp("stream") / f"fuzz.{fmt}"
    path.write_bytes(raw)
    batch_rows = data.draw(st.integers(1, 3))
    chunk_users = data.draw(st.integers(1, 2))
    try:
        whole = load_trajectories(path)
    except TrajectoryError as exc:
        with pytest.raises(TrajectoryError) as streamed:
            _stream_all(path, batch_rows, chunk_users)
        assert str(streamed.value) == str(exc), f"{kind}: the stream says\n{streamed.value}\nthe loader\n{exc}"
        assert (streamed.value.row, streamed.value.column) == (exc.row, exc.column)
        COUNTS[(fmt, kind, "stream refused alike")] += 1
        return
    got = {tr.user_id: tr for tr in _stream_all(path, batch_rows, chunk_users)}
    assert sorted(got) == sorted(whole.user_ids)
    for tr in whole:
        s = got[tr.user_id]
        assert s.datetimes.tolist() == tr.datetimes.tolist() and s.label == tr.label
        assert s.embeddings.tobytes() == tr.embeddings.tobytes()
    COUNTS[(fmt, kind, "stream loaded alike")] += 1
