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
