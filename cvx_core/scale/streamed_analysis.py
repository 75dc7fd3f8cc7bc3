"""The streamed source of the one set-analysis interface
(:class:`cvx_core.analysis.batch.SetAnalysisBase`): the per-user Parquet file that
:func:`cvx_core.scale.stream.analyze_stream` writes, read back, checked against the dataset
and put in its user order.

:class:`StreamedSetAnalysis` answers what an in-memory ``SetAnalysis`` answers (iteration in
the dataset's order, ``analysis[user_id]``, ``n_changepoints``, ``u.changepoints.indices`` /
``n_changes``, ``u.attribution.drift_norm`` / ``pareto_size`` / ``order``, ``elapsed_s``) with
equal values. It keeps only the top dimensions of each user's drift (``order`` holds
:data:`TOP_DIMS`, not all D) and no cohort attribution (that is in the run's
:class:`cvx_core.scale.stream.StreamSummary`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cvx_core.analysis.batch import SetAnalysisBase
from cvx_core.data.trajectory import TrajectorySet
from cvx_core.scale.stream import StreamSummary

__all__ = [
    "REQUIRED_COLUMNS",
    "TOP_DIMS",
    "NotFinishedAnalysis",
    "StreamedAttribution",
    "StreamedChangePoints",
    "StreamedSetAnalysis",
    "StreamedUser",
    "read_streamed_analysis",
]

TOP_DIMS = 10
REQUIRED_COLUMNS = ("user_id", "label", "n_posts", "changepoint_index", "changepoint_day", "top_dims",
                    "top_shares", "drift_norm", "pareto_size")


@dataclass(frozen=True)
class StreamedChangePoints:
    """A user's PELT change points: post ``indices`` and their ``days`` since the first post."""

    indices: tuple[int, ...]
    days: tuple[float, ...]

    @property
    def n_changes(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class StreamedAttribution:
    """A user's drift ``v_T - v_1``: its norm, how many dimensions reach the Pareto fraction
    of it, and the :data:`TOP_DIMS` dimensions with the largest share (``order``, ranked as
    ``DriftAttribution.order`` ranks them) with those shares (``top_shares``)."""

    drift_norm: float
    pareto_size: int
    order: tuple[int, ...]
    top_shares: tuple[float, ...]


@dataclass(frozen=True)
class StreamedUser:
    """One row of the streamed analysis, shaped like ``cvx_core.analysis.batch.UserAnalysis``."""

    user_id: str
    label: int | None
    n_posts: int
    changepoints: StreamedChangePoints
    attribution: StreamedAttribution


@dataclass(frozen=True)
class StreamedSetAnalysis(SetAnalysisBase):
    """The streamed source of :class:`SetAnalysisBase`, read back from its Parquet file, in
    the dataset's user order.

    Attributes:
        users: one :class:`StreamedUser` per user.
        path: the analysis file.
        chunk_users: users per chunk of the streamed run.
        elapsed_s: seconds the streamed run took, or, when ``reused``, seconds to read the
            saved file back.
        reused: the file was already there (a finished analysis of this dataset).
    """

    users: tuple[StreamedUser, ...]
    path: Path
    chunk_users: int
    elapsed_s: float
    reused: bool
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __iter__(self) -> Iterator[StreamedUser]:
        return iter(self.users)

    def __getitem__(self, user_id: str) -> StreamedUser:
        return super().__getitem__(user_id)

    @classmethod
    def from_summary(cls, summary: StreamSummary, ts: TrajectorySet, *, chunk_users: int) -> StreamedSetAnalysis:
        """The analysis a finished streamed run (``summary``, run with ``out``) wrote, read
        back and checked against ``ts``; ``elapsed_s`` is the run's."""
        if summary.users_file is None:
            raise ValueError("this streamed run wrote no per-user file (analyze_stream without out=)")
        return read_streamed_analysis(summary.users_file, ts, chunk_users=chunk_users, elapsed_s=summary.elapsed_s)


class NotFinishedAnalysis(Exception):
    """The file is not a finished streamed analysis of the dataset (why: the message)."""


def _read_columns(path: Path) -> tuple[dict[str, list], int]:
    import pyarrow.parquet as pq

    try:
        names = pq.ParquetFile(path).schema_arrow.names
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise NotFinishedAnalysis(f"{path.name}: no column(s) {', '.join(missing)}")
        table = pq.read_table(path, columns=list(REQUIRED_COLUMNS))
    except NotFinishedAnalysis:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is simply not a finished analysis
        raise NotFinishedAnalysis(f"{path.name}: unreadable ({type(exc).__name__}: {exc})") from None
    return {c: table.column(c).to_pylist() for c in REQUIRED_COLUMNS}, table.num_rows


def read_streamed_analysis(path: Path, ts: TrajectorySet, *, chunk_users: int,
                           elapsed_s: float | None = None) -> StreamedSetAnalysis:
    """The analysis in ``path``, checked against ``ts`` and put in ``ts``' user order.

    Raises :class:`NotFinishedAnalysis` if the file cannot be read as Parquet, lacks a
    column of :data:`REQUIRED_COLUMNS`, or does not list exactly ``ts``' users with their
    labels and post counts. ``elapsed_s`` None: the file was there already (``reused``)."""
    t0 = time.perf_counter()
    path = Path(path)
    cols, n = _read_columns(path)
    if n != len(ts):
        raise NotFinishedAnalysis(f"{path.name}: {n} users, the dataset has {len(ts)}")
    by_id: dict[str, StreamedUser] = {}
    for i in range(n):
        uid = str(cols["user_id"][i])
        label = cols["label"][i]
        by_id[uid] = StreamedUser(
            user_id=uid,
            label=None if label is None else int(label),
            n_posts=int(cols["n_posts"][i]),
            changepoints=StreamedChangePoints(tuple(int(v) for v in cols["changepoint_index"][i]),
                                              tuple(float(v) for v in cols["changepoint_day"][i])),
            attribution=StreamedAttribution(
                drift_norm=float(cols["drift_norm"][i]), pareto_size=int(cols["pareto_size"][i]),
                order=tuple(int(v) for v in cols["top_dims"][i]),
                top_shares=tuple(float(v) for v in cols["top_shares"][i])),
        )
    users = []
    for tr in ts:
        u = by_id.get(tr.user_id)
        if u is None:
            raise NotFinishedAnalysis(f"{path.name}: a user of the dataset is missing")
        if u.n_posts != tr.n_posts or u.label != tr.label:
            raise NotFinishedAnalysis(f"{path.name}: a user's posts or label differ from the dataset's")
        users.append(u)
    reused = elapsed_s is None
    return StreamedSetAnalysis(users=tuple(users), path=path, chunk_users=int(chunk_users),
                               elapsed_s=time.perf_counter() - t0 if reused else float(elapsed_s), reused=reused)
