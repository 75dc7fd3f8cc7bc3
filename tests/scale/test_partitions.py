"""Planning user-aligned row ranges of a Parquet file and reading one range with the
loader's rules (cvx_core.scale.partitions): what a Ray worker runs, tested without Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from cvx_core.data.io import load_trajectories
from cvx_core.data.parse import FileRules
from cvx_core.data.trajectory import TrajectoryError
from cvx_core.scale.chunks import NotGroupedError
from cvx_core.scale.partitions import (
    Unplannable,
    check_against,
    plan_parquet,
    run_partition,
)
from cvx_core.scale.stream import features_frame, posts_table


def small_groups_file(ts, path: Path, *, row_group_size: int = 37, iso_times: bool = False) -> Path:
    """``ts`` as save_trajectories' table, in row groups of ``row_group_size`` rows, so
    users cross row-group boundaries; ``iso_times``: times as ISO text without offset."""
    table = posts_table(ts)
    if iso_times:
        text = pc.strftime(table.column("timestamp"), format="%Y-%m-%dT%H:%M:%S")
        table = table.set_column(1, "timestamp", text)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


@pytest.fixture(scope="module")
def crossing(tmp_path_factory, make_planted):
    path = tmp_path_factory.mktemp("parts") / "crossing.parquet"
    return small_groups_file(make_planted(60), path)


def test_plan_cuts_only_at_user_starts_and_covers_every_row_once(crossing):
    plan = plan_parquet(crossing, target_rows=100)
    ids = pq.read_table(crossing, columns=["user_id"]).column(0).to_pylist()
    assert len(plan.partitions) >= 5 and plan.n_rows == len(ids) and plan.n_users == 60
    assert [p.start for p in plan.partitions[1:]] == [p.stop for p in plan.partitions[:-1]]
    assert plan.partitions[0].start == 0 and plan.partitions[-1].stop == len(ids)
    for p in plan.partitions[1:]:
        assert ids[p.start] != ids[p.start - 1]  # no user spans two partitions
    assert sum(p.n_users for p in plan.partitions) == 60
    # users cross row-group boundaries (37-row groups), so some partitions start inside a group
    assert any(p.start != p.group_start for p in plan.partitions)
    md = pq.ParquetFile(crossing).metadata
    for p in plan.partitions:
        first = sum(md.row_group(g).num_rows for g in range(p.row_groups[0]))
        last = first + sum(md.row_group(g).num_rows for g in p.row_groups)
        assert first == p.group_start <= p.start < p.stop <= last


def test_partitions_read_separately_give_the_single_process_extract_exactly(crossing):
    plan = plan_parquet(crossing, target_rows=100)
    frames = []
    for part in plan.partitions:
        res = run_partition(crossing, part, features_frame, chunk_users=4)
        assert res.error is None and not res.not_grouped
        frames.extend(res.outputs)
    got = pd.concat(frames, ignore_index=True)
    pd.testing.assert_frame_equal(got, features_frame(load_trajectories(crossing)), check_exact=True)


def test_plan_refuses_an_input_not_grouped_by_user(tmp_path, make_planted):
    table = posts_table(make_planted(12))
    order = np.r_[np.arange(table.num_rows)[::2], np.arange(table.num_rows)[1::2]]
    pq.write_table(table.take(order), tmp_path / "shuffled.parquet", row_group_size=20)
    with pytest.raises(NotGroupedError):
        plan_parquet(tmp_path / "shuffled.parquet", target_rows=10)


def test_plan_leaves_a_file_without_user_id_or_rows_to_the_driver(tmp_path, make_planted):
    table = posts_table(make_planted(3))
    pq.write_table(table.rename_columns(["uid", *table.column_names[1:]]), tmp_path / "a.parquet")
    pq.write_table(table.slice(0, 0), tmp_path / "b.parquet")
    for name in ("a.parquet", "b.parquet"):
        with pytest.raises(Unplannable):
            plan_parquet(tmp_path / name, target_rows=10)


def test_a_bad_value_in_a_later_partition_names_file_row_and_column_as_the_loader(tmp_path, make_planted):
    table = posts_table(make_planted(40))
    labels = table.column("label").to_pylist()
    bad = table.num_rows - 5
    labels[bad] = -3
    path = tmp_path / "bad.parquet"
    pq.write_table(table.set_column(2, "label", pa.array(labels, pa.int64())), path, row_group_size=37)
    with pytest.raises(TrajectoryError) as whole:
        load_trajectories(path)
    plan = plan_parquet(path, target_rows=60)
    part = next(p for p in plan.partitions if p.start <= bad < p.stop)
    assert part.index > 0
    res = run_partition(path, part, features_frame, chunk_users=8)
    assert res.error is not None and res.outputs == ()
    with pytest.raises(TrajectoryError) as got:
        check_against(path, part, res, FileRules())
    assert (got.value.file, got.value.row, got.value.column) == ("bad.parquet", bad + 1, "label")
    assert str(got.value) == str(whole.value)


def test_a_rule_across_partitions_is_checked_under_the_earlier_partitions_facts(tmp_path, make_planted):
    """Times without offset in the first partitions and with one later: each partition alone
    is consistent; the fold re-reads the later one under the file's rule and raises the
    loader's message for the first time that breaks it."""
    path = small_groups_file(make_planted(30), tmp_path / "mixed.parquet", iso_times=True)
    table = pq.read_table(path)
    plan = plan_parquet(path, target_rows=80)
    last = plan.partitions[-1]
    times = table.column("timestamp").to_pylist()
    times[last.start:last.stop] = [t + "+00:00" for t in times[last.start:last.stop]]
    pq.write_table(table.set_column(1, "timestamp", pa.array(times, pa.string())), path, row_group_size=37)
    with pytest.raises(TrajectoryError) as whole:
        load_trajectories(path)
    rules = FileRules()
    for part in plan.partitions[:-1]:
        res = run_partition(path, part, features_frame, chunk_users=8)
        check_against(path, part, res, rules)
    res = run_partition(path, last, features_frame, chunk_users=8)
    assert res.error is None  # alone, the partition is consistent
    with pytest.raises(TrajectoryError) as got:
        check_against(path, last, res, rules)
    assert (got.value.row, got.value.column) == (last.start + 1, "timestamp")
    assert str(got.value) == str(whole.value)
