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
    RawTable,
    RowIndex,
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

__all__ = ["PostTable", "parse_table", "group_posts"]


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
