"""Data-parallel training of the trajectory classifier with Ray Train (PyTorch DDP).

``train_distributed(data, config, run_dir=..., workers=N)`` trains the same model as
:class:`cvx_core.learn.trainer.Trainer` on ``N`` workers: Ray Train's ``TorchTrainer``,
process group on **gloo** on CPU and **NCCL** when the workers have GPUs.

What is shared, computed once on the driver: the split, the class weights, the initial
model (head choice, the fixed feature standardisation, the linear head's warm start) and
the torch RNG state after building it; the mean-embedding baseline. Each worker runs the
very same :meth:`Trainer.run` loop (so ``config.json``, ``data.json``, ``weights``,
``checkpoint.json``, ``history.json`` and ``metrics.json`` are written by rank 0 exactly as a
single-process run writes them, into ``run_dir``, which must be storage every node sees)
with two hooks replaced:

- the batch loss: every worker draws the same global batch (same seeded order), computes
  its interleaved shard ``b[rank::N]`` and returns ``N * sum_i w_{y_i} nll_i / sum_{global} w_y``;
  DDP averages the gradients, so the update equals the single process's weighted mean
  cross-entropy gradient on the whole batch (to float rounding: padding differs per
  shard). The logged loss value is the global one (one all-reduce of a scalar per step).
- the baseline: the driver's.

Validation, test metrics and early stopping are computed by every worker on the same data,
so their decisions agree without communication; ``cv`` folds and bootstrap intervals run on
rank 0 only. Text-encoder training is not distributed here.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from cvx_core.data.trajectory import TrajectorySet
from cvx_core.learn.config import TrainConfig
from cvx_core.learn.model import classifier_of
from cvx_core.learn.steps import inputs_to
from cvx_core.learn.trainer import Trainer

__all__ = ["train_distributed", "DistributedResult", "ShardedTrainer", "epoch_snapshot"]


@dataclass(frozen=True, eq=False)
class DistributedResult:
    """A data-parallel run: ``metrics`` (the content of ``metrics.json``), the model with the
    best weights (eval mode), the run folder, the number of workers, the process-group
    backend, the wall time, and ``last_state``: the classifier's weights at the end of the
    last epoch (before the best checkpoint was restored)."""

    metrics: dict[str, Any]
    model: torch.nn.Module
    run_dir: Path | None
    workers: int
    backend: str
    seconds: float
    last_state: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    @property
    def test_auc(self) -> float:
        return float(self.metrics["test_auc"])

    @property
    def baseline_auc(self) -> float:
        return float(self.metrics["baseline_auc"])


class ShardedTrainer(Trainer):
    """The trainer of one DDP worker: the shared initial model and baseline, the worker's
    shard of every global batch, gradients all-reduced by DDP (see module doc)."""

    def __init__(self, data: TrajectorySet, config: TrainConfig, *, shared: dict[str, Any], rank: int,
                 world: int, run_dir: str | Path | None) -> None:
        super().__init__(data, config, run_dir=run_dir, split=shared["split"])
        n_train = int(shared.get("n_train_users", len(data)))
        if n_train < len(data):  # a given test set was appended to the training users: keep what was given
            self.train_data = TrajectorySet(list(data)[:n_train], name=data.name)
        self._shared = shared
        self._rank = rank
        self._world = world
        self._ddp: torch.nn.Module | None = None

    def prepare_model(self, split: Any) -> torch.nn.Module:
        """The driver's initial model (head choice, normalisation, warm start), wrapped in DDP."""
        from cvx_core.learn.model import build_model_from_spec

        self.head = self._shared["head"]
        model = build_model_from_spec(self._shared["spec"]).to(self.device)
        model.load_state_dict(self._shared["state"])
        self.classifier = classifier_of(model)
        torch.set_rng_state(self._shared["rng_state"])
        if self._world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index or 0] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
        else:
            self._ddp = model
        return model

    def batch_loss(self, model: torch.nn.Module, indices: np.ndarray, weights: torch.Tensor) -> torch.Tensor:
        assert self._ddp is not None
        w = self._world
        y_all = torch.as_tensor(self.targets(indices), device=self.device)
        denom = weights[y_all].sum()
        shard = np.asarray(indices)[self._rank::w]
        scale = 1.0
        if shard.size == 0:  # fewer users than workers: take part in the all-reduce with zero weight
            shard, scale = np.asarray(indices)[:1], 0.0
        inputs, y = self.batch(shard)
        logits = self._ddp(*inputs_to(inputs, self.device))
        local = F.cross_entropy(logits.float(), y.to(self.device), weight=weights, reduction="sum") * scale
        value = local.detach().clone()
        if w > 1:
            torch.distributed.all_reduce(value)
        part = local * (w / denom)
        # gradient of ``part`` (DDP averages it over workers), value of the global loss
        return part + (value / denom - part).detach()

    def baseline(self, split: Any) -> Any:
        """The driver's baseline (computed once)."""
        return self._shared["baseline"]

    def baseline_selection(self, split: Any) -> Any:
        """The driver's baseline's choice of ``C``."""
        return self._shared["baseline"].selection


def _worker_loop(cfg: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    data = ray.get(cfg["data"])
    shared = ray.get(cfg["shared"])
    config: TrainConfig = cfg["config"]
    if rank != 0:  # folds and bootstrap intervals once, on rank 0
        config = dataclasses.replace(config, cv=0, bootstrap=0)
    trainer = ShardedTrainer(data, config, shared=shared, rank=rank, world=world,
                             run_dir=cfg["run_dir"] if rank == 0 else None)
    if rank == 0 and cfg.get("verbose"):
        def on_epoch(p: Any) -> None:
            mark = " *" if p.is_best else ""
            print(f"epoch {p.epoch:3d}  train loss {p.train_loss:.4f}  val loss {p.val_loss:.4f}  "
                  f"val AUC {p.val_auc:.3f}  ({p.elapsed_s:.1f}s){mark}", flush=True)

        trainer.add_callback("on_epoch_end", on_epoch)
    last: dict[str, torch.Tensor] = {}
    trainer.add_callback("on_epoch_end", lambda p: last.update(epoch_snapshot(trainer)))
    result = trainer.run()
    if rank == 0:
        tmp = tempfile.mkdtemp(prefix="cvx-ddp-ckpt-")
        torch.save({k: v.detach().cpu() for k, v in result.model.state_dict().items()}, os.path.join(tmp, "model.pt"))
        torch.save(last, os.path.join(tmp, "last.pt"))
        ray.train.report({"metrics": result.metrics_dict()}, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report({})


def epoch_snapshot(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The model's weights now (at the end of an epoch, before any checkpoint is restored)."""
    model = trainer.classifier
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _shared_state(data: TrajectorySet, config: TrainConfig, *, test_data: TrajectorySet | None = None,
                  split: Any = None) -> dict[str, Any]:
    """What the driver computes once: split, initial model (head choice, standardisation,
    warm start), the RNG state after it, the baseline; ``data`` is the set the workers
    index (the training users, then a given test set's), ``n_train_users`` how many of
    them are training users."""
    trainer = Trainer(data, config, test_data=test_data, split=split)
    torch.manual_seed(config.seed)
    split = trainer.make_split()
    model = trainer.prepare_model(split)
    rng_state = torch.get_rng_state()
    return {
        "split": split,
        "head": trainer.head,
        "spec": trainer.model_spec(),
        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "rng_state": rng_state,
        "baseline": trainer.baseline(split),
        "data": trainer.data,
        "n_train_users": len(trainer.train_data),
    }


def train_distributed(
    data: TrajectorySet,
    config: TrainConfig | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    workers: int = 2,
    address: str | None = None,
    use_gpu: bool | None = None,
    verbose: bool = False,
    test_data: TrajectorySet | None = None,
    split: Any = None,
) -> DistributedResult:
    """Train on ``workers`` DDP workers (Ray Train) and return the metrics and best model.

    ``test_data`` and ``split`` mean what they mean to :class:`~cvx_core.learn.trainer.Trainer`
    (a separate test set of other users; a :class:`Split` or ``{user_id: "train" | "val" |
    "test"}``, e.g. from a split column); the driver resolves them once.

    ``use_gpu``: one GPU per worker and NCCL (default: when the cluster has at least
    ``workers`` GPUs); otherwise gloo on CPU. Without ``address`` a local Ray cluster is
    started (if Ray is not initialised already); ``run_dir`` gets the same files a
    single-process :class:`Trainer` writes.
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from cvx_core.learn.model import build_model_from_spec
    from cvx_core.scale.ray_engine import ray_session

    config = config or TrainConfig()
    if config.text_encoder is not None:
        raise ValueError("train --workers > 1 trains on embeddings; text-encoder training runs in one process")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    t0 = time.perf_counter()
    out_dir = None if run_dir is None else Path(run_dir).resolve()
    with ray_session(workers=workers, address=address) as ray:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        gpu = bool(gpus >= workers) if use_gpu is None else bool(use_gpu)
        backend = "nccl" if gpu else "gloo"
        shared = _shared_state(data, config, test_data=test_data, split=split)
        data = shared.pop("data")  # put once on its own, not inside the shared state
        storage = tempfile.mkdtemp(prefix="cvx-ddp-")
        try:
            trainer = TorchTrainer(
                _worker_loop,
                train_loop_config={"data": ray.put(data), "shared": ray.put(shared), "config": config,
                                   "run_dir": None if out_dir is None else str(out_dir), "verbose": verbose},
                torch_config=TorchConfig(backend=backend),
                scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu),
                run_config=RunConfig(storage_path=storage, name="cvx-ddp"),
            )
            result = trainer.fit()
            if result.error is not None:  # pragma: no cover - surfaced by fit() in current Ray
                raise result.error
            metrics = dict(result.metrics["metrics"])
            with result.checkpoint.as_directory() as d:
                state = torch.load(os.path.join(d, "model.pt"), weights_only=True)
                last = torch.load(os.path.join(d, "last.pt"), weights_only=True)
        finally:
            shutil.rmtree(storage, ignore_errors=True)
    model = build_model_from_spec(shared["spec"])
    model.load_state_dict(state)
    model.eval()
    metrics["workers"] = workers
    return DistributedResult(metrics=metrics, model=model, run_dir=out_dir, workers=workers, backend=backend,
                             seconds=time.perf_counter() - t0, last_state=last)
