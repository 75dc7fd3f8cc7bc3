"""Group-aware splits (cvx_core.learn.splits): with a group column no group is on two sides
of validation, test or a CV fold; bad group columns are clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cvx_core.data.trajectory import Trajectory, TrajectorySet
from cvx_core.learn.config import TrainConfig
from cvx_core.learn.metrics import split_size_warnings
from cvx_core.learn.splits import (
    Split,
    check_groups,
    kfold_splits,
    split_from_assignments,
    stratified_split,
    user_groups,
    validation_split,
)
from cvx_core.learn.trainer import Trainer


def _grouped_set(n_groups: int = 12, per_group: int = 5, d: int = 4, seed: int = 0, prefix: str = "") -> TrajectorySet:
    """Users in groups (a subject with several recordings); the label is the group's."""
    rng = np.random.default_rng(seed)
    trajs, subjects = [], []
    for g in range(n_groups):
        y = g % 2
        for k in range(per_group):
            e = rng.normal(size=(5, d)).astype(np.float32) * 0.3
            e[:, 0] += y
            dts = np.datetime64("2024-01-01", "us") + (np.arange(5) * 86_400e6).astype("timedelta64[us]")
            trajs.append(Trajectory(f"{prefix}g{g}u{k}", e, dts, label=y))
            subjects.append(f"{prefix}s{g}")
    meta = pd.DataFrame({"subject": subjects}, index=[t.user_id for t in trajs])
    return TrajectorySet(trajs, name="grouped", metadata=meta)


def _groups_cross(split: Split, groups: np.ndarray) -> set[str]:
    parts = [set(groups[getattr(split, n)].tolist()) for n in ("train", "val", "test")]
    return (parts[0] & parts[1]) | (parts[0] & parts[2]) | (parts[1] & parts[2])


def test_grouped_split_keeps_every_group_on_one_side_and_every_class_in_each_part():
    ts = _grouped_set()
    groups = user_groups(ts, "subject")
    for seed in range(5):
        split = stratified_split(ts.labels, seed=seed, groups=groups)
        assert not _groups_cross(split, groups)
        assert sorted(np.concatenate([split.train, split.val, split.test]).tolist()) == list(range(len(ts)))
        for part in (split.train, split.val, split.test):
            assert set(ts.labels[part].tolist()) == {0, 1}
    ungrouped = [stratified_split(ts.labels, seed=s) for s in range(5)]
    assert any(_groups_cross(s, groups) for s in ungrouped)  # without groups they do cross


def test_grouped_kfold_tests_each_user_once_and_no_group_crosses_a_fold():
    ts = _grouped_set(n_groups=15)
    groups = user_groups(ts, "subject")
    folds = kfold_splits(ts.labels, 5, seed=1, groups=groups)
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(len(ts)))
    for f in folds:
        assert not _groups_cross(f, groups)
    with pytest.raises(ValueError, match="there are 15 groups"):
        kfold_splits(ts.labels, 20, groups=groups)


def test_validation_from_a_given_pool_and_a_given_split_respect_groups():
    ts = _grouped_set()
    groups = user_groups(ts, "subject")
    test = np.arange(10)
    split = validation_split(ts.labels, np.arange(10, len(ts)), test, val_fraction=0.25, seed=0, groups=groups)
    assert not _groups_cross(split, groups)
    bad = {uid: ("test" if i == 0 else "train") for i, uid in enumerate(ts.user_ids)}  # u0 tested, its group trains
    with pytest.raises(ValueError, match="group 's0' has users in"):
        split_from_assignments(ts, bad, val_fraction=0.2, seed=0, groups=groups)
    with pytest.raises(ValueError, match="keeps each group on one side"):
        check_groups(Split(np.array([0]), np.array([1]), np.array([2])), np.array(["a", "a", "b"], dtype=object))


def test_trainer_group_column_splits_by_group_and_bad_columns_are_named():
    ts = _grouped_set()
    trainer = Trainer(ts, TrainConfig(device="cpu", group_column="subject"))
    split = trainer.make_split()
    assert not _groups_cross(split, user_groups(ts, "subject"))
    with pytest.raises(ValueError, match="no per-user column 'person'.*subject"):
        Trainer(ts, TrainConfig(device="cpu", group_column="person"))
    other = _grouped_set(seed=1, prefix="t")  # other users, other subjects: fine
    assert Trainer(ts, TrainConfig(device="cpu", group_column="subject"), test_data=other).make_split().test.size == 60
    clash = TrajectorySet(list(other), name="clash",
                          metadata=pd.DataFrame({"subject": ["s0"] * len(other)}, index=other.user_ids))
    with pytest.raises(ValueError, match="group 's0'.*training data and in the test data"):
        Trainer(ts, TrainConfig(device="cpu", group_column="subject"), test_data=clash)


def test_a_user_without_a_group_is_an_error_naming_the_user():
    ts = _grouped_set(n_groups=4)
    meta = ts.metadata
    meta.loc[ts.user_ids[3], "subject"] = None
    broken = TrajectorySet(list(ts), name="broken", metadata=meta)
    with pytest.raises(ValueError, match="user 'g0u3' has no value in the group column 'subject'"):
        user_groups(broken, "subject")


def test_a_single_split_on_fewer_than_100_users_suggests_cv():
    assert any("--cv 5" in w for w in split_size_warnings(99, cv=0))
    assert split_size_warnings(100, cv=0) == [] and split_size_warnings(40, cv=5) == []
    assert split_size_warnings(40, cv=0, given=True) == []


def test_cli_train_group_column_keeps_groups_apart_and_names_a_missing_column(tmp_path, capsys):
    import json

    from cvx_core.cli import main
    from cvx_core.data.io import save_trajectories

    ts = _grouped_set(n_groups=12, per_group=4)
    path = save_trajectories(ts, tmp_path / "grouped.parquet")
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run), "--epochs", "2", "--group-column", "subject",
                 "--quiet"]) == 0
    split = json.loads((run / "data.json").read_text())["split"]
    subject = {u: s for u, s in zip(ts.user_ids, user_groups(ts, "subject"))}
    sides = [{subject[u] for u in split[p]} for p in ("train", "val", "test")]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    out = capsys.readouterr().out
    assert "95% intervals on" in out and "head: auto:" in out and "--cv 5" in out
    assert json.loads((run / "metrics.json").read_text())["group_column"] == "subject"
    assert main(["train", str(path), "--out", str(tmp_path / "r2"), "--group-column", "person"]) == 2
    assert "no per-user column 'person'" in capsys.readouterr().err
