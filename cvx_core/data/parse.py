"""Parsing: a table of columns as read (a whole file or one batch of it) -> a validated
:class:`PostTable`; grouping a :class:`PostTable` into a :class:`TrajectorySet`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cvx_core.data.columns import (
    KNOWN_COLUMNS,
    Column,
    FileRules,
    RawTable,
    RowIndex,
    check_dim_budget,
    check_user_label,
    e_columns,
    embedding_matrix,
    finite_float32,
    parse_labels,
    parse_texts,
    parse_user_ids,
)
from cvx_core.data.times import parse_timestamps
from cvx_core.data.trajectory import DATETIME_DTYPE, Trajectory, TrajectoryError, TrajectorySet

__all__ = ["PostTable", "FileRules", "RowIndex", "parse_posts", "parse_table", "group_posts"]


@dataclass(frozen=True, eq=False)
class PostTable:
    """A validated long table of posts, one row per post, in file order.

    ``user_ids`` ``[N]`` (str objects), ``datetimes`` ``[N]`` (``datetime64[us]``, UTC),
    ``labels`` ``[N]`` int64 (or ``None`` without a label column) with ``label_present``
    ``[N]`` bool (False = no label on that row), ``texts`` ``[N]`` (str objects, or
    ``None``), ``embeddings`` ``[N, D]`` float32 (or ``None`` for a table of texts),
    ``extra`` the remaining columns (candidates for per-user metadata). ``where(i)``
    describes 0-based row ``i`` for messages.
    """

    file: str
    user_ids: np.ndarray
    datetimes: np.ndarray
    labels: np.ndarray | None
    texts: np.ndarray | None
    embeddings: np.ndarray | None
    extra: pd.DataFrame
    rows: RowIndex
    label_present: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    def where(self, i: int) -> str:
        return self.rows.where(i)

    def slice(self, a: int, b: int) -> "PostTable":
        """Rows ``a:b`` (their row numbers in the file kept)."""

        def cut(v: np.ndarray | None) -> np.ndarray | None:
            return None if v is None else v[a:b]

        return PostTable(
            file=self.file,
            user_ids=self.user_ids[a:b],
            datetimes=self.datetimes[a:b],
            labels=cut(self.labels),
            texts=cut(self.texts),
            embeddings=cut(self.embeddings),
            extra=self.extra.iloc[a:b],
            rows=self.rows.slice(a, b),
            label_present=cut(self.label_present),
        )

    @staticmethod
    def concat(parts: list["PostTable"]) -> "PostTable":
        """Batches of one file, one after the other. A batch without labels (or texts)
        next to one with them has no label on its rows (empty texts), as in the whole file."""
        if len(parts) == 1:
            return parts[0]
        sizes = [len(p) for p in parts]
        labels = present = texts = None
        if any(p.labels is not None for p in parts):
            labels = np.concatenate([p.labels if p.labels is not None else np.zeros(n, np.int64) for p, n in zip(parts, sizes)])
            present = np.concatenate(
                [
                    (p.label_present if p.label_present is not None else np.ones(n, bool))
                    if p.labels is not None
                    else np.zeros(n, bool)
                    for p, n in zip(parts, sizes)
                ]
            )
        if any(p.texts is not None for p in parts):
            texts = np.concatenate([p.texts if p.texts is not None else np.full(n, "", dtype=object) for p, n in zip(parts, sizes)])
        embeddings = None
        if all(p.embeddings is not None for p in parts):
            embeddings = np.concatenate([p.embeddings for p in parts])
        return PostTable(
            file=parts[0].file,
            user_ids=np.concatenate([p.user_ids for p in parts]),
            datetimes=np.concatenate([p.datetimes for p in parts]),
            labels=labels,
            texts=texts,
            embeddings=embeddings,
            extra=pd.concat([p.extra for p in parts], ignore_index=True),
            rows=RowIndex.concat([p.rows for p in parts], sizes),
            label_present=present,
        )

    def to_set(self, embeddings: np.ndarray | None = None) -> TrajectorySet:
        """Group the rows into trajectories (users in order of first row, posts stably by
        time). ``embeddings`` ``[N, D]`` (row order of this table) replaces the table's own,
        e.g. after embedding ``texts``."""
        matrix = self.embeddings if embeddings is None else np.asarray(embeddings, dtype=np.float32)
        if matrix is None:
            raise TrajectoryError(
                f"{self.file}: this table has no embedding; expected a list column 'embedding' or columns "
                "'e0', 'e1', …",
                file=self.file,
                column="embedding",
            )
        if matrix.ndim != 2 or matrix.shape[0] != len(self):
            raise ValueError(f"embeddings must be [N={len(self)}, D]; got {tuple(matrix.shape)}")
        return group_posts(self, matrix)

def parse_posts(
    data: Any,
    *,
    source: str,
    row_offset: int = 0,
    rows: RowIndex | None = None,
    rules: FileRules | None = None,
    format: str | None = None,
    need_embeddings: bool = True,
) -> PostTable:
    """Validate one table of posts, or one batch of a larger file, into a :class:`PostTable`.

    Args:
        data: a ``pyarrow.Table`` or ``RecordBatch``, a :class:`RawTable` from a format
            reader (its own row numbers are kept unless ``row_offset``/``rows`` is given), or
            the bytes of a whole file in ``format`` (``"csv" | "jsonl" | "parquet" | "npz"``).
        source: the file name used in messages and in :class:`TrajectoryError` ``.file``.
        row_offset: rows of the file before this batch (its first row is ``row_offset + 1``).
        rows: instead, each row's 0-based row (and line) in the file, for a regrouped piece.
        rules: the file's :class:`FileRules`; pass the same object for every batch of one
            file, in file order, so that file-wide rules hold across batches (id kinds,
            with/without UTC offset, the embedding's layout and D, JSON Lines keys).
        need_embeddings: ``False`` accepts a table of texts with no embedding.

    Every message names the row as the whole file counts it. Raises :class:`TrajectoryError`.
    """
    import pyarrow as pa

    from cvx_core.data.formats.arrow import arrow_table

    index = rows if rows is not None else RowIndex(offset=row_offset)
    if isinstance(data, (bytes, bytearray, memoryview)):
        from cvx_core.data.formats.base import detect_format
        from cvx_core.data.formats.dispatch import read_table

        try:
            data = read_table(bytes(data), source, detect_format(source, format))
        except MemoryError:
            raise _out_of_memory(source) from None
    if isinstance(data, (pa.Table, pa.RecordBatch)):
        table = arrow_table(data, source, index)
    elif isinstance(data, RawTable):
        table = data if rows is None and row_offset == 0 else RawTable(data.columns, data.n, index, data.rules)
    else:
        raise TypeError(f"parse_posts: expected a pyarrow Table or RecordBatch, a RawTable or bytes; got {type(data).__name__}")
    table.rules = rules if rules is not None else FileRules()
    table = _agree_on_columns(table, source, need_embeddings)
    try:
        posts = parse_table(table, source, need_embeddings=need_embeddings)
    except MemoryError:
        raise _out_of_memory(source) from None
    table.rules.rows += table.n
    return posts


def _out_of_memory(fname: str) -> TrajectoryError:
    return TrajectoryError(
        f"{fname}: ran out of memory decoding this file; it is larger than this machine can load "
        "(split it, or load it on a machine with more memory)",
        file=fname,
    )


def _agree_on_columns(table: RawTable, fname: str, need_embeddings: bool) -> RawTable:
    """A batch with the file's columns so far (JSON Lines records may lack keys: absent
    cells). A column first seen in a later batch was absent from every earlier row, so the
    file's first row is checked again with it, as the whole-file loader would see that row."""
    rules = table.rules
    if rules.columns is None:
        rules.columns = list(table.columns)
        if table.n and all(c.kind in ("text", "json", "array", "datetime") for c in table.columns.values()):
            rules.first = table.take(np.arange(1))
        return table
    new = [c for c in table.columns if c not in rules.columns]
    if new:
        rules.columns = rules.columns + new
        if rules.first is not None:
            probe = rules.first.with_columns(rules.columns)
            probe.rules = FileRules()
            parse_table(probe, fname, need_embeddings=need_embeddings)
    return table if list(table.columns) == rules.columns else table.with_columns(rules.columns)


def parse_table(table: RawTable, fname: str, *, need_embeddings: bool) -> PostTable:
    if table.n == 0:
        raise TrajectoryError(f"{fname}: the table has a header but no rows; expected one row per post", file=fname)
    cols = list(table.columns)
    for required in ("user_id", "timestamp"):
        if required not in cols:
            raise TrajectoryError(
                f"{fname}: missing required column '{required}'; found columns {cols[:12]}"
                + (" …" if len(cols) > 12 else ""),
                file=fname,
                column=required,
            )
    ecols = e_columns(cols, fname)
    has_matrix = "embeddings" in table.columns and table.columns["embeddings"].kind == "matrix"
    if "embedding" in cols and ecols:
        raise TrajectoryError(
            f"{fname}: both a list column 'embedding' and columns {ecols[0]!r}, … are present; expected the "
            "embedding once (one or the other)",
            file=fname,
            column="embedding",
        )
    matrix: np.ndarray | None
    if has_matrix:
        matrix, emb_desc = table.columns["embeddings"].values, "embeddings"
        check_dim_budget(int(matrix.shape[1]) if matrix.ndim == 2 else 0, fname, "embeddings")
    elif "embedding" in cols or ecols:
        matrix, emb_desc = embedding_matrix(table, ecols, fname)
    elif need_embeddings and "text" in cols:
        raise TrajectoryError(
            f"{fname}: the table has texts but no embedding (no 'embedding' or 'e0', 'e1', … columns); "
            "embed the posts first: `python -m cvx_core embed "
            f"{fname} --out TRAJ.parquet` or `cvx_core.embed_posts(...)` (the app's Data page embeds "
            "text uploads itself)",
            file=fname,
            column="embedding",
        )
    elif need_embeddings:
        raise TrajectoryError(
            f"{fname}: missing the embedding: expected a list column 'embedding' or numeric columns "
            f"'e0', 'e1', … 'e{{D-1}}'; found columns {cols[:12]}",
            file=fname,
            column="embedding",
        )
    else:
        matrix, emb_desc = None, ""
    matrix32 = None if matrix is None else finite_float32(matrix, table, fname, emb_desc)
    del matrix

    user_ids = parse_user_ids(table.columns["user_id"], table, fname)
    times = parse_timestamps(table.columns["timestamp"], table, fname)
    labels = present = None
    if "label" in cols:
        labels, present = parse_labels(table.columns["label"], table, fname)
    texts = None
    if "text" in cols:
        texts = parse_texts(table.columns["text"], table, fname)
    elif matrix32 is None:
        raise TrajectoryError(
            f"{fname}: missing column 'text'; a table without an embedding needs the posts' texts",
            file=fname,
            column="text",
        )
    extra_cols = [c for c in cols if c not in KNOWN_COLUMNS and c not in ecols and c != "embeddings"]
    extra = pd.DataFrame({c: extra_values(table.columns[c]) for c in extra_cols}, index=pd.RangeIndex(table.n))
    return PostTable(
        file=fname,
        user_ids=user_ids,
        datetimes=times,
        labels=labels,
        texts=texts,
        embeddings=matrix32,
        extra=extra,
        rows=table.rows,
        label_present=present,
    )


def group_posts(posts: PostTable, matrix32: np.ndarray) -> TrajectorySet:
    """Rows -> trajectories: users in order of first row, posts sorted stably by time."""
    fname = posts.file
    user_ids, times = posts.user_ids, posts.datetimes
    codes, uniques = pd.factorize(pd.Series(user_ids, dtype=object), sort=False)
    order = np.lexsort((np.arange(len(codes)), times.astype(np.int64), codes))
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    # one gather, then each user's rows are a contiguous view; none when the file is already
    # grouped by user and in time order (as save_trajectories writes it)
    sorted_emb = matrix32 if np.array_equal(order, np.arange(len(order))) else matrix32[order]
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(order)]])
    trajs: list[Trajectory] = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        rows = order[a:b]
        uid = str(uniques[codes[rows[0]]])
        label = None
        if posts.labels is not None:
            label = check_user_label(posts.labels, posts.label_present, rows, uid, posts.rows, fname)
        trajs.append(
            Trajectory(
                user_id=uid,
                embeddings=sorted_emb[a:b],
                datetimes=times[rows],
                label=label,
                texts=None if posts.texts is None else tuple(posts.texts[rows]),
            )
        )
    metadata = _metadata(posts.extra, codes, [str(u) for u in uniques])
    return TrajectorySet(trajs, name=fname, metadata=metadata)


def _metadata(extra: pd.DataFrame, codes: np.ndarray, uniques: list[str]) -> pd.DataFrame | None:
    """Extra columns constant within every user (one scalar type each) -> ``[users, columns]``."""
    if extra.shape[1] == 0:
        return None
    first_row = np.zeros(len(uniques), dtype=np.int64)
    first_row[codes[::-1]] = np.arange(len(codes))[::-1]
    keep: dict[str, pd.Series] = {}
    for c in extra.columns:
        col = extra[c]
        if col.dtype == object:
            kinds = {type(v) for v in col.tolist() if v is not None}
            if len(kinds) > 1 or kinds & {list, dict, tuple, bytes}:
                continue  # no single scalar type: not metadata
        try:
            per_user = col.groupby(codes, sort=False).nunique(dropna=False)
        except TypeError:  # unhashable values
            continue
        if (per_user > 1).any():
            continue  # varies within a user: per-post data, not metadata
        keep[str(c)] = col.iloc[first_row].reset_index(drop=True)
    if not keep:
        return None
    return pd.DataFrame(keep).set_axis(pd.Index(uniques, name="user_id", dtype=object), axis=0)


def extra_values(col: Column) -> Any:
    if col.kind in ("text", "json"):
        return pd.Series(col.values, dtype=object)
    if col.kind == "datetime":
        s = pd.Series(col.values.view(DATETIME_DTYPE))
        return s.where(~col.mask) if col.mask is not None else s
    if col.kind == "list":
        values = np.empty(len(col.values), dtype=object)
        values[:] = col.values.to_pylist()
        return pd.Series(values, dtype=object)
    arr = col.values
    if arr.dtype.kind in "US":
        return pd.Series(arr.astype(object), dtype=object)
    if col.mask is not None:
        if arr.dtype.kind in "iub":
            objs = np.where(col.mask, None, arr.astype(object)).tolist()
            return pd.Series(pd.array(objs, dtype="boolean" if arr.dtype.kind == "b" else "Int64"))
        return pd.Series(np.where(col.mask, np.nan, arr))
    return pd.Series(arr)
