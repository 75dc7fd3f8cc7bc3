"""Data-parallel training (cvx_core.scale.ddp) on 2 CPU workers (gloo) against one process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("ray")

from cvx_core.learn.config import TrainConfig  # noqa: E402
from cvx_core.learn.runs import CHECKPOINT_FILE, CONFIG_FILE, DATA_FILE, HISTORY_FILE, METRICS_FILE  # noqa: E402
from cvx_core.learn.trainer import Trainer  # noqa: E402
from cvx_core.scale.ddp import _shared_state, epoch_snapshot, train_distributed  # noqa: E402


@pytest.mark.slow
def test_one_ddp_epoch_on_two_workers_gives_the_single_process_weights_and_files(ray_cluster, make_planted, tmp_path):
    ts = make_planted(48, dim=16, seed=3)
    # an odd global batch: the two shards differ in size and in class-weight sums
    cfg = TrainConfig(epochs=1, seed=5, batch_size=7, max_len=16, head="linear", head_c=1.0, bootstrap=0,
                      device="cpu", mixed_precision=False)
    single = Trainer(ts, cfg, run_dir=tmp_path / "single")
    last: dict[str, torch.Tensor] = {}
    single.add_callback("on_epoch_end", lambda p: last.update(epoch_snapshot(single)))
    single.run()
    dist = train_distributed(ts, cfg, run_dir=tmp_path / "ddp", workers=2)

    assert dist.backend == "gloo" and dist.workers == 2
    initial = _shared_state(ts, cfg)["state"]
    for name, w in last.items():
        torch.testing.assert_close(dist.last_state[name], w, rtol=1e-4, atol=1e-5, msg=name)
    # the epoch really moved the weights (far beyond the tolerance), so agreement means something
    assert (last["head.1.weight"] - initial["head.1.weight"]).abs().max() > 1e-3
    assert (last["extractor.attention.w"] - initial["extractor.attention.w"]).abs().max() > 1e-3
    s_dir, d_dir = tmp_path / "single", tmp_path / "ddp"
    for f in (CONFIG_FILE, DATA_FILE, CHECKPOINT_FILE, METRICS_FILE):
        a, b = json.loads((s_dir / f).read_text()), json.loads((d_dir / f).read_text())
        assert a.keys() == b.keys(), f
    assert json.loads((s_dir / DATA_FILE).read_text())["split"] == json.loads((d_dir / DATA_FILE).read_text())["split"]
    ha, hb = json.loads((s_dir / HISTORY_FILE).read_text()), json.loads((d_dir / HISTORY_FILE).read_text())
    assert len(ha) == len(hb) == 1
    np.testing.assert_allclose(hb[0]["train_loss"], ha[0]["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(hb[0]["val_loss"], ha[0]["val_loss"], rtol=1e-4)
    ma, mb = json.loads((s_dir / METRICS_FILE).read_text()), json.loads((d_dir / METRICS_FILE).read_text())
    assert mb["baseline_auc"] == ma["baseline_auc"]  # the driver's baseline, computed once
    assert mb["best_epoch"] == ma["best_epoch"]
    np.testing.assert_allclose(mb["test_auc"], ma["test_auc"], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("given", ["test_data", "split"])
def test_ddp_takes_a_given_test_set_or_split_and_writes_what_one_process_writes(ray_cluster, make_planted, tmp_path,
                                                                                given):
    full = make_planted(64, dim=16, seed=7)
    ids = list(full.user_ids)
    cfg = TrainConfig(epochs=1, seed=2, batch_size=8, max_len=16, head="linear", head_c=1.0, bootstrap=0,
                      device="cpu", mixed_precision=False)
    if given == "test_data":
        data, kw = full.subset(ids[:44]), {"test_data": full.subset(ids[44:])}
        expected_test = set(ids[44:])
    else:
        data, kw = full, {"split": {u: ("test" if k % 4 == 0 else "train") for k, u in enumerate(ids)}}
        expected_test = {u for k, u in enumerate(ids) if k % 4 == 0}
    Trainer(data, cfg, run_dir=tmp_path / "single", **kw).run()
    dist = train_distributed(data, cfg, run_dir=tmp_path / "ddp", workers=2, **kw)

    da, db = (json.loads((tmp_path / d / DATA_FILE).read_text()) for d in ("single", "ddp"))
    assert set(db["split"]["test"]) == expected_test
    assert db["split"] == da["split"]
    assert db["digest"] == da["digest"] and db["summary"] == da["summary"]  # the training data, not data + test
    ma, mb = (json.loads((tmp_path / d / METRICS_FILE).read_text()) for d in ("single", "ddp"))
    assert mb["baseline_auc"] == ma["baseline_auc"] and mb["best_epoch"] == ma["best_epoch"]
    np.testing.assert_allclose(dist.test_auc, ma["test_auc"], atol=1e-6)


@pytest.mark.slow
def test_cli_train_workers_takes_test_data_and_refuses_a_text_encoder(ray_cluster, make_planted, tmp_path, capsys):
    from cvx_core.cli import main
    from cvx_core.data.io import save_trajectories

    full = make_planted(56, dim=16, seed=11)
    ids = list(full.user_ids)
    save_trajectories(full.subset(ids[:40]), tmp_path / "train.parquet")
    save_trajectories(full.subset(ids[40:]), tmp_path / "test.parquet")
    common = ["train", str(tmp_path / "train.parquet"), "--epochs", "1", "--head", "linear", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "run"), "--workers", "2",
                 "--test-data", str(tmp_path / "test.parquet")]) == 0
    split = json.loads((tmp_path / "run" / DATA_FILE).read_text())["split"]
    assert set(split["test"]) == set(ids[40:])
    assert main([*common, "--out", str(tmp_path / "run2"), "--workers", "2", "--text-encoder", "hashing"]) == 2
    assert "--text-encoder runs in one process" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()
