"""Command line: ``python -m cvx_core train|extract|compare ...``.

- ``train DATA --out RUN_DIR [--test-data TEST | --split-column NAME] [--cv K] [--head auto|linear|mlp]
  [--config FEATURES.json] [--epochs N --lr X --device auto|cpu|cuda --seed S ...] [--encoder-backend B]``:
  trains the temporal-feature classifier, writes the run folder (see ``cvx_core.learn.runs``)
  and the attention-vs-attribution comparison (``comparison.json``), prints the metrics.
- ``extract DATA --out FEATURES.parquet``: analytic feature vector per user (columns
  ``user_id``, ``label``, then one column per feature name), written atomically.
- ``compare RUN_DIR DATA [--truth truth.json] [--permutations N] [--format text|json]``: learned
  attention vs analytic attribution of a saved run on its held-out users
  (``cvx_core.learn.compare``): Spearman, Pearson, label-permutation p-value, top-k overlap
  beside chance, planted share (with ``--truth``) and the graded verdict; ``json`` prints one object.
- ``extract``, ``analyze DATA --out USERS.parquet`` and ``embed DATA --out TRAJ.parquet`` read
  the input in user-grouped chunks and write incrementally (bounded memory); with
  ``--engine ray --workers N [--address ADDR]`` they run on Ray (``cvx_core.scale``).
  ``train ... --workers N`` trains data-parallel (Ray Train DDP).
- ``evaluate RUN DATA [--early [--by posts|days]]``: scores a saved run on labelled data
  (its own test users when DATA is the run's data), writes ``RUN/evaluation.json``; with
  ``--early``, AUC against posts (or days) seen, ERDE5, ERDE50 and latency-weighted F1.
- ``embed POSTS --out TRAJ.parquet [--model NAME_OR_PATH] [--batch-size N] [--max-tokens N]
  [--cache PATH | --no-cache] [--encoder-backend torch|onnx|onnx-int8]``: embeds the posts'
  texts (cvx_core.data.text), texts kept; by default through a per-user embedding cache.
- ``explain TRAJ --user USER [--format text|json]``: the user's change points in words
  (terms and example posts per side, cvx_core.analysis.explain; prose numbers posts from 1,
  JSON ``index`` fields from 0).
- ``analyze`` and ``explain`` take ``--sensitivity RATE``: the false-alarm rate per user on
  histories without a change that the calibrated change-point penalty holds (default 0.05).

Hostile input (issue 26, ``cvx_core.cli_support``): argparse checks option values; inputs are
regular files; an output never resolves to an input or a device; ``train`` into a used folder
needs ``--overwrite``; output escapes control characters; a failure is one stderr line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cvx_core.data import budgets as limits
from cvx_core.cli_support import features_config as _features_config
from cvx_core.cli_support import float_in, int_in
from cvx_core.cli_support import forecast_time as _forecast_time
from cvx_core.learn.runs import COMPARISON_FILE, EVALUATION_FILE, LOCK_FILE, RUN_FILES

__all__ = ["main", "build_parser", "COMPARISON_FILE", "EVALUATION_FILE"]

_SEED = int_in(0, 2**32 - 1)
_EPOCHS = int_in(1, 100_000)
_BIG = 10_000_000


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cvx_core", description="CVX: temporal ML on embedding trajectories.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train the temporal-feature classifier and write a run folder")
    t.add_argument("data", help="trajectory file (parquet, csv, jsonl, npz)")
    t.add_argument("--out", required=True, help="run folder to write (created if missing)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (every file of the old run is removed)")
    t.add_argument("--epochs", type=_EPOCHS, default=None, help="maximum epochs (default 40)")
    t.add_argument("--lr", type=float_in(0, 10), default=None, help="head learning rate (default 3e-3)")
    t.add_argument("--feature-lr", type=float_in(0, 10), default=None,
                   help="learning rate of attention / scales / temperature")
    t.add_argument("--batch-size", type=int_in(1, 65_536), default=None)
    t.add_argument("--patience", type=int_in(1, 100_000), default=None, help="early-stopping patience in epochs")
    t.add_argument("--hidden", type=int_in(0, 65_536), default=None, help="hidden units of the head (0: linear)")
    t.add_argument("--max-len", type=int_in(1, _BIG), default=None,
                   help=f"keep each user's last N posts (default: all, up to the budget of "
                        f"{limits.MAX_POSTS_PER_USER.default} posts per user, {limits.MAX_POSTS_PER_USER.env})")
    t.add_argument("--seed", type=_SEED, default=None)
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    t.add_argument("--text-encoder", default=None, metavar="minilm|hashing|PATH",
                   help="train from the posts' text with this encoder (a sentence-transformers folder for PATH); "
                        "DATA may then be a text-only table (user_id, timestamp, text, label)")
    t.add_argument("--finetune", action="store_true",
                   help="fine-tune the text encoder through the temporal features (default: frozen, posts embedded once)")
    t.add_argument("--freeze-encoder", action="store_true", help="keep the text encoder fixed (the default)")
    t.add_argument("--posts-with-grad", type=int_in(1, 65_536), default=None,
                   help="fine-tuning: posts per user per step that get gradients (default 8)")
    t.add_argument("--micro-batch-posts", type=int_in(1, 65_536), default=None,
                   help="fine-tuning: most posts per encoder pass with gradients (default 8)")
    t.add_argument("--max-tokens", type=int_in(1, 8192), default=None, help="text encoder's token window (default 128)")
    t.add_argument("--encoder-lr", type=float_in(0, 1), default=None,
                   help="fine-tuning: encoder learning rate (default 2e-5)")
    t.add_argument("--embedding-cache", default=None,
                   help="SQLite embedding cache for the posts (default: embeddings.sqlite in the run folder)")
    t.add_argument("--encoder-backend", choices=("torch", "onnx", "onnx-int8"), help="embed DATA's texts by MiniLM first")
    t.add_argument("--no-attention", action="store_true", help="do not learn DimensionAttention")
    t.add_argument("--truth", default=None, help="truth.json with planted_dims (synthetic data) for the comparison")
    t.add_argument("--quiet", action="store_true", help="print only the final metrics")
    t.add_argument("--test-data", default=None, metavar="TEST",
                   help="score this trajectory file as the test set (other users); validation comes from DATA")
    t.add_argument("--split-column", default=None, metavar="NAME",
                   help="per-user column of DATA holding train / val / test (no val: drawn from train)")
    t.add_argument("--cv", type=int_in(0, 100), default=None, metavar="K",
                   help="also run stratified, seeded K-fold cross-validation: mean and sd of model and baseline")
    t.add_argument("--group-column", default=None, metavar="NAME",
                   help="per-user column (subject, author, ...) whose groups stay on one side of every split")
    t.add_argument("--min-delta", type=float_in(0.0, 10.0, lo_open=False), default=None,
                   help="early stopping: the fall in validation log-loss that resets the patience (default 1e-3)")
    t.add_argument("--head", choices=("auto", "linear", "mlp"), default=None,
                   help="classifier head (default auto: chosen by validation, inner CV on small data)")
    t.add_argument("--config", default=None, help="JSON file with TemporalFeaturesConfig fields (as for extract)")
    t.add_argument("--workers", type=int_in(1, 4096), default=1,
                   help="data-parallel workers (Ray Train DDP; gloo on CPU, NCCL on GPU); 1: in this process")
    t.add_argument("--address", default=None, help="Ray cluster to train on (default: start a local one)")

    v = sub.add_parser("evaluate", help="score a saved run on labelled data (AUC with interval, per-class F1)")
    v.add_argument("run", help="run folder")
    v.add_argument("data", help="labelled trajectory file (the run's own data: its test users only)")
    v.add_argument("--early", action="store_true",
                   help="early detection: AUC against posts seen, ERDE5, ERDE50 and latency-weighted F1")
    v.add_argument("--by", choices=("posts", "days"), default="posts", help="cut histories by posts or by days")

    e = sub.add_parser("extract", help="analytic temporal features per user -> parquet")
    e.add_argument("data", help="trajectory file (parquet, csv, jsonl, npz)")
    e.add_argument("--out", required=True, help="output .parquet file")
    e.add_argument("--config", default=None, help="JSON file with TemporalFeaturesConfig fields")
    _add_engine_args(e)

    a = sub.add_parser("analyze", help="change points and drift attribution per user, streamed -> parquet")
    a.add_argument("data", help="trajectory file (parquet, csv, jsonl, npz)")
    a.add_argument("--out", required=True, help="output .parquet file, one row per user")
    a.add_argument("--bocpd", action="store_true", help="also run BOCPD (max change probability per user)")
    a.add_argument("--narratives", action="store_true", help="also write change-point narratives")
    _add_sensitivity_arg(a)
    _add_engine_args(a)

    m = sub.add_parser("embed", help="embed the posts' texts -> trajectory parquet (texts kept)")
    m.add_argument("data", help="table of posts with user_id, timestamp, text[, label]")
    m.add_argument("--out", required=True, help="output .parquet file (save_trajectories layout)")
    m.add_argument("--encoder", "--model", dest="encoder", default=None,
                   help="'minilm' (default, packaged) or a sentence-transformers / Hugging Face model folder")
    m.add_argument("--max-tokens", type=int_in(1, 8192), default=None,
                   help="encoder window in tokens (default 256); longer texts are truncated, with one warning")
    cache = m.add_mutually_exclusive_group()
    cache.add_argument("--cache", default=None, help="SQLite embedding cache file (default: embeddings.sqlite in the "
                       "per-user cache folder, CVX_CACHE_DIR or e.g. ~/.cache/cvx; a second run re-encodes nothing)")
    cache.add_argument("--no-cache", action="store_true", help="encode every text, store nothing")
    m.add_argument("--encoder-backend", choices=("torch", "onnx", "onnx-int8"), default=None,
                   help="how the packaged MiniLM runs (default: onnx-int8 on CPU, the fastest within cosine 0.99 of "
                        "torch fp32; torch on a GPU); other models run on torch")
    m.add_argument("--batch-size", type=int_in(1, 65_536), default=64, help="texts per encoder call")
    _add_engine_args(m)

    c = sub.add_parser("compare", help="learned attention vs analytic attribution of a saved run (held-out users)")
    c.add_argument("run", help="run folder")
    c.add_argument("data", help="the trajectory file the run was trained on (or its --test-data file)")
    c.add_argument("--truth", default=None, help="truth.json with planted_dims (adds planted_share)")
    c.add_argument("--permutations", type=int_in(99, limits.MAX_PERMUTATIONS.value), default=999,
                   help=f"label permutations of the significance test (99 to {limits.MAX_PERMUTATIONS.default:,}, "
                        f"{limits.MAX_PERMUTATIONS.env}; default 999)")
    c.add_argument("--format", choices=("text", "json"), default="text",
                   help="text (default) or one JSON object")

    x = sub.add_parser("explain", help="a user's change points in words: terms and example posts per side")
    x.add_argument("data", help="trajectory file with texts (e.g. written by `embed`)")
    x.add_argument("--user", required=True, help="the user to explain")
    x.add_argument("--format", choices=("text", "json"), default="text")
    from cvx_core.analysis.explain import N_POSTS, N_TERMS  # the app's rule too

    x.add_argument("--terms", type=int_in(1, 1000), default=N_TERMS, help=f"terms per side (default {N_TERMS})")
    x.add_argument("--posts", type=int_in(1, 1000), default=N_POSTS,
                   help=f"example posts per side (default {N_POSTS})")
    _add_sensitivity_arg(x)

    f = sub.add_parser("forecast", help="latent-ODE forecast of a user's embedding at a future time")
    f.add_argument("data", help="trajectory file (parquet, csv, jsonl, npz)")
    f.add_argument("--user", required=True, help="the user to forecast")
    f.add_argument("--at", required=True, type=_forecast_time,
                   help="target time (ISO-8601 date or date and time, years 1-9999, after the user's last post)")
    f.add_argument("--epochs", type=_EPOCHS, default=None, help="training epochs of the forecaster (default 150)")
    f.add_argument("--model", default=None, help="forecaster folder: loaded if it exists, else written after training")
    f.add_argument("--seed", type=_SEED, default=0)
    f.add_argument("--format", choices=("json", "text"), default="json",
                   help="json (default): one object with the predicted embedding; text: a short report without it")
    return p


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    """``--engine local|ray --workers N [--address ADDR] [--chunk-users N]`` (cvx_core.scale)."""
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: streamed in this process; ray: Ray Data on a cluster")
    p.add_argument("--workers", type=int_in(1, 4096), default=None,
                   help="parallel Ray workers (default and most: the cluster's CPUs)")
    p.add_argument("--address", default=None, help="existing Ray cluster ('auto', 'ray://host:10001'); "
                   "default: start a local one")
    p.add_argument("--chunk-users", type=int_in(1, _BIG), default=None,
                   help="users per chunk (bounds memory; default 512)")


def _engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from cvx_core.scale.stream import DEFAULT_CHUNK_USERS

    kw: dict[str, Any] = {"chunk_users": args.chunk_users or DEFAULT_CHUNK_USERS}
    if args.engine == "ray":
        kw.update(workers=args.workers, address=args.address)
    elif args.workers is not None or args.address is not None:
        raise ValueError("--workers and --address need --engine ray")
    return kw


def _train_config(args: argparse.Namespace) -> Any:
    from cvx_core.learn.config import TrainConfig

    mapping = {
        "epochs": args.epochs, "lr": args.lr, "feature_lr": args.feature_lr, "batch_size": args.batch_size,
        "patience": args.patience, "hidden": args.hidden, "max_len": args.max_len, "seed": args.seed,
        "device": args.device, "text_encoder": args.text_encoder, "encoder_backend": args.encoder_backend,
        "posts_with_grad": args.posts_with_grad, "micro_batch_posts": args.micro_batch_posts,
        "max_tokens": args.max_tokens, "encoder_lr": args.encoder_lr,
        "head": getattr(args, "head", None), "cv": getattr(args, "cv", None),
        "test_data": getattr(args, "test_data", None), "split_column": getattr(args, "split_column", None),
        "group_column": getattr(args, "group_column", None), "min_delta": getattr(args, "min_delta", None),
    }
    kw = {k: v for k, v in mapping.items() if v is not None}
    if args.finetune and args.freeze_encoder:
        raise ValueError("--finetune and --freeze-encoder contradict each other")
    if args.text_encoder is not None:  # a text encoder is frozen unless --finetune (issue 15)
        kw["freeze_encoder"] = not args.finetune
        kw["embedding_cache"] = str(Path(args.embedding_cache or Path(args.out) / "embeddings.sqlite"))
    elif args.finetune:
        raise ValueError("--finetune needs --text-encoder")
    if args.no_attention:
        kw["learn_attention"] = False
    if getattr(args, "config", None):
        kw["features"] = _features_config(args.config)
    return TrainConfig(**kw)


def _planted(truth_path: str | None) -> list[int] | None:
    if truth_path is None:
        return None
    from cvx_core.data.truth import read_planted_dims  # strict: integers only, never rounded

    return read_planted_dims(truth_path)


def _print_comparison(cmp: Any) -> None:
    """``AttentionComparison`` in plain lines (``train`` and ``compare``)."""
    print(cmp.to_text())


def _printable(text: str) -> str:
    """``text`` as is when it is printable, else repr-style (control characters escaped)."""
    return text if text.isprintable() else repr(text)


def _train_distributed(args: argparse.Namespace, ts: Any, config: Any, *, test_ts: Any = None,
                       assignments: Any = None) -> int:
    """``train --workers N``: Ray Train DDP; writes the run folder a single process writes
    (no attention comparison: run ``compare`` on the folder afterwards). ``--test-data`` and
    ``--split-column`` work as in one process; a text encoder trains in one process."""
    from cvx_core.scale.ddp import train_distributed

    print(f"{ts.name}: {len(ts)} users, {ts.n_posts} posts, D={ts.dim}; {args.workers} DDP workers", flush=True)
    res = train_distributed(ts, config, run_dir=args.out, workers=args.workers, address=args.address,
                            verbose=not args.quiet, test_data=test_ts, split=assignments)
    m = res.metrics
    print(f"test AUC {m['test_auc']:.3f}  (mean-embedding baseline {m['baseline_auc']:.3f})  "
          f"F1 {m['test_f1']:.3f}  accuracy {m['test_accuracy']:.3f}  best epoch {m['best_epoch']}/{m['epochs']}  "
          f"{res.seconds:.1f}s on {res.workers} workers ({res.backend})")
    print(f"run folder: {args.out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """Claims ``--out`` (a lock with this process id; a used folder needs ``--overwrite``)
    before anything is written into it, then trains."""
    from cvx_core.learn import runs

    config = _train_config(args)  # refuse bad settings before the folder is touched
    if getattr(args, "workers", 1) > 1 and config.text_encoder is not None:
        raise ValueError("--workers > 1 trains on stored embeddings; --text-encoder runs in one process (--workers 1)")
    out = Path(args.out)
    created = not out.exists()
    try:
        with runs.claim_run_folder(out, overwrite=bool(getattr(args, "overwrite", False)),
                                   delegate=getattr(args, "workers", 1) > 1):  # DDP workers write it
            return _train_claimed(args, config)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a failed start leaves no empty folder behind
        raise


def _posts_budget(ts: Any, config: Any) -> Any:
    """``config`` with ``max_len`` set to the posts-per-user budget when it is unset and a
    user has more posts (each user's last posts are kept), with a note."""
    from dataclasses import replace

    limits.check_dim(ts.dim, source=ts.name)
    longest = int(max(ts.lengths)) if len(ts) else 0
    budget = limits.MAX_POSTS_PER_USER.value()
    if config.max_len is None and longest > budget:
        n_long = int((ts.lengths > budget).sum())
        print(f"note: {n_long} users have more than {budget} posts (longest {longest}); training keeps each user's "
              f"last {budget} posts (--max-len N to change, or {limits.MAX_POSTS_PER_USER.env})", flush=True)
        return replace(config, max_len=budget)
    return config


def _train_claimed(args: argparse.Namespace, config: Any) -> int:
    from cvx_core.learn import runs
    from cvx_core.learn.compare import compare_run
    from cvx_core.data.io import load_trajectories
    from cvx_core.learn.trainer import TrainProgress, Trainer

    if config.text_encoder is not None:  # text-only or embedded-with-texts tables (issue 15)
        from cvx_core.learn.finetune import finetune_memory_breakdown, load_text_data

        ts = load_text_data(args.data, config)
        mode = "fine-tuned" if not config.freeze_encoder else "frozen"
        print(f"text encoder {config.text_encoder} ({mode}): {finetune_memory_breakdown(config, ts).describe()}", flush=True)
    elif config.encoder_backend:  # DATA's texts embedded by MiniLM on that backend first, as ``embed`` does
        from cvx_core.data.text import embed_posts, load_encoder
        enc = load_encoder("minilm", max_tokens=config.max_tokens, backend=config.encoder_backend)
        ts = embed_posts(args.data, encoder=enc, cache=args.embedding_cache or str(Path(args.out) / "embeddings.sqlite"),
                         max_tokens=config.max_tokens)
    else:
        ts = load_trajectories(args.data)
    config = _posts_budget(ts, config)
    planted = _planted(args.truth)
    test_ts = load_trajectories(args.test_data) if config.test_data else None
    assignments = None
    if config.split_column:
        from cvx_core.learn.splits import read_split_column

        assignments = read_split_column(args.data, config.split_column)
    if getattr(args, "workers", 1) > 1:  # data-parallel (cvx_core.scale.ddp)
        return _train_distributed(args, ts, config, test_ts=test_ts, assignments=assignments)
    trainer = Trainer(ts, config, run_dir=args.out, test_data=test_ts, split=assignments)
    if not args.quiet and config.text_encoder is not None and not config.freeze_encoder:
        def on_step(p: TrainProgress) -> None:
            print(f"  step {p.step:4d}  loss {p.loss:.4f}  grad norm {p.grad_norm:.3g}  "
                  f"encoder grad norm {p.encoder_grad_norm:.3g}", flush=True)

        trainer.add_callback("on_step_end", on_step)
    if not args.quiet:
        def on_epoch(p: TrainProgress) -> None:
            mark = " *" if p.is_best else ""
            print(f"epoch {p.epoch:3d}  train loss {p.train_loss:.4f}  val loss {p.val_loss:.4f}  "
                  f"val AUC {p.val_auc:.3f}  ({p.elapsed_s:.1f}s){mark}", flush=True)

        trainer.add_callback("on_epoch_end", on_epoch)
    print(f"{ts.name}: {len(ts)} users, {ts.n_posts} posts, D={ts.dim}; device {trainer.device.type}", flush=True)
    result = trainer.run()
    m = result.metrics_dict()
    print(f"test AUC {m['test_auc']:.3f}  (mean-embedding baseline {m['baseline_auc']:.3f})  "
          f"F1 {m['test_f1']:.3f}  accuracy {m['test_accuracy']:.3f}  "
          f"best epoch {m['best_epoch']}/{m['epochs']}  {m['seconds']:.1f}s")
    _print_evaluation(m)
    if result.features_add_nothing:
        print("no attention comparison: the run is the mean-embedding regression (no attention was learned)")
    elif config.learn_attention and config.text_encoder is None:  # on the held-out users (issue 23)
        cmp = compare_run(result.model, trainer.data, split=result.split.as_user_ids(trainer.data),
                          config=trainer.config.features, planted_dims=planted, seed=config.seed)
        runs.atomic_write_json(Path(args.out) / COMPARISON_FILE, cmp.to_dict())
        _print_comparison(cmp)
    print(f"run folder: {args.out}")
    return 0


def _print_evaluation(m: dict[str, Any]) -> None:
    """The metrics a small test set needs beside it: intervals, baseline accuracy, head and
    epoch choice, the verdict when the baseline won, CV, warnings."""
    iv = m.get("intervals") or {}
    if not iv and m.get("test_auc_ci"):
        iv = {"test_auc": m["test_auc_ci"]}
    parts = []
    for who in ("test", "baseline"):
        for what, name in (("auc", "AUC"), ("accuracy", "accuracy"), ("f1", "F1")):
            key = f"{who}_{what}"
            lo, hi = (iv.get(key) or [None, None])[:2]
            value = m.get(key)
            if lo is not None and hi is not None and lo == lo and value is not None:
                parts.append(f"{'model' if who == 'test' else 'baseline'} {name} {value:.3f} [{lo:.3f}, {hi:.3f}]")
    if parts:
        print(f"95% intervals on {m['n_test']} test users: " + "; ".join(parts))
    if m.get("head_choice"):
        print(f"head: {m['head_choice']}")
    if m.get("verdict"):
        print(m["verdict"])
    if (m.get("epoch_choice") or {}).get("reason"):
        print(f"kept: {m['epoch_choice']['reason']}")
    cv = m.get("cv")
    if cv:
        print(f"{cv['k']}-fold CV: model AUC {cv['test_auc_mean']:.3f} ± {cv['test_auc_sd']:.3f}, baseline "
              f"{cv['baseline_auc_mean']:.3f} ± {cv['baseline_auc_sd']:.3f}; accuracy {cv['test_accuracy_mean']:.3f} ± "
              f"{cv['test_accuracy_sd']:.3f} vs {cv['baseline_accuracy_mean']:.3f} ± {cv['baseline_accuracy_sd']:.3f}")
    early = m.get("early")
    if early and early.get("erde5") is not None:
        print(f"early detection: ERDE5 {early['erde5']:.3f}  ERDE50 {early['erde50']:.3f}  "
              f"F_latency {early['f_latency']:.3f}")
    for w in m.get("warnings") or []:
        print(f"warning: {w}")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from cvx_core.data.io import load_trajectories
    from cvx_core.learn.early import early_detection
    from cvx_core.learn.metrics import bootstrap_auc_ci, classification_metrics, small_data_warnings
    from cvx_core.learn.model import predict_proba
    from cvx_core.learn.runs import load_run, write_evaluation

    run = load_run(args.run)
    ts = load_trajectories(args.data)
    limits.check_dim(ts.dim, source=str(args.data))
    if run.spec.get("dim") not in (None, ts.dim) and not run.spec.get("encoder"):
        raise ValueError(f"{args.data}: embeddings have D={ts.dim}; the run {args.run} was trained on D={run.spec['dim']}")
    if not ts.has_labels:
        raise ValueError(f"{args.data}: evaluation needs a label on every user")
    classes = [int(c) for c in run.data.get("classes") or sorted(set(int(v) for v in ts.labels))]
    test_ids = (run.data.get("split") or {}).get("test") or []
    if test_ids and all(u in ts for u in test_ids) and run.data.get("digest") == ts.digest():
        ts = ts.subset(test_ids)  # the run's own data: score its test users only
        scope = f"the run's {len(ts)} test users"
    else:
        scope = f"all {len(ts)} users of {args.data}"
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(int(v) for v in ts.labels) - set(index))
    if unknown:
        raise ValueError(f"{args.data}: classes {unknown} are not among the run's classes {classes}")
    y = [index[int(v)] for v in ts.labels]
    proba = predict_proba(run.model, ts, max_len=run.config.max_len, device="cpu")
    m = classification_metrics(y, proba, classes)
    ci = bootstrap_auc_ci(y, proba, seed=run.config.seed)
    doc: dict[str, Any] = {
        "data": str(args.data), "scope": scope, "n": m.n, "auc": m.auc, "auc_ci": list(ci), "accuracy": m.accuracy,
        "f1_per_class": {str(c): float(f) for c, f in zip(classes, m.f1_per_class)},
        "confusion": {"classes": [str(c) for c in classes], "matrix": m.confusion.tolist()},
        "warnings": small_data_warnings(m.class_counts, [str(c) for c in classes], what="evaluated set"),
    }
    print(f"{scope}: AUC {m.auc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]  accuracy {m.accuracy:.3f}")
    if args.early:
        e = early_detection(run.model, ts, by=args.by, classes=classes, max_len=run.config.max_len)
        doc["early"] = e.to_dict()
        print("posts seen  AUC" if e.by == "posts" else "days  posts seen  AUC")
        for cut, seen, auc in zip(e.cuts, e.posts_seen, e.auc):
            print(f"{seen:10.1f}  {auc:.3f}" if e.by == "posts" else f"{cut:8.2f}  {seen:10.1f}  {auc:.3f}")
        if e.erde5 is not None:
            print(f"ERDE5 {e.erde5:.3f}  ERDE50 {e.erde50:.3f}  F_latency {e.f_latency:.3f}  "
                  f"(alarm at P >= {e.threshold}; median delay {e.median_delay} posts)")
    for w in doc["warnings"]:
        print(f"warning: {w}")
    write_evaluation(args.run, doc, digest=run.weights_sha256)  # records the scored weights' digest
    print(f"wrote {Path(args.run) / EVALUATION_FILE}")
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    config = _features_config(args.config)
    kw = _engine_kwargs(args)
    if args.engine == "ray":
        from cvx_core.scale.ray_engine import extract_ray as run
    else:
        from cvx_core.scale.stream import extract_stream as run
    res = run(args.data, args.out, config=config, **kw)
    print(f"{args.out}: {res.n_users} users from {res.n_posts} posts ({res.n_chunks} chunks, "
          f"{'grouped' if res.grouped else 'grouped out of core'}; {res.seconds:.1f}s)")
    return 0


def _add_sensitivity_arg(parser: argparse.ArgumentParser) -> None:
    from cvx_core.analysis.penalty import DEFAULT_SENSITIVITY

    parser.add_argument(
        "--sensitivity", type=float_in(0.0, 1.0), default=DEFAULT_SENSITIVITY,
        help="change-point sensitivity = the false-alarm rate per user on histories without a change that "
             f"the calibrated penalty holds, in (0, 1); default {DEFAULT_SENSITIVITY} (calibrated 0.01-0.3)")


def _cp_config(args: argparse.Namespace) -> Any:
    from cvx_core.analysis.changepoints import ChangePointConfig

    if not 0.0 < args.sensitivity < 1.0:
        raise ValueError(f"--sensitivity must be a false-alarm rate in (0, 1), got {args.sensitivity!r}")
    return ChangePointConfig(sensitivity=args.sensitivity)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from cvx_core.analysis.penalty import real_histories_text

    kw = _engine_kwargs(args)
    cp_config = _cp_config(args)
    if args.engine == "ray":
        from cvx_core.scale.ray_engine import analyze_ray as run
    else:
        from cvx_core.scale.stream import analyze_stream as run
    res = run(args.data, out=args.out, cp_config=cp_config, bocpd=args.bocpd, narratives=args.narratives, **kw)
    top = ", ".join(str(d) for d in res.cohort.pareto_dims()[:10])
    print(f"{args.out}: {res.n_users} users from {res.n_posts} posts, {int(res.n_changepoints.sum())} change points "
          f"at sensitivity {cp_config.sensitivity:g} (false-alarm rate per user without a change) "
          f"({res.elapsed_s:.1f}s); cohort drift led by dimensions {top}")
    print(real_histories_text(cp_config.sensitivity))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    kw = _engine_kwargs(args)
    if args.engine == "ray":
        from cvx_core.scale.ray_engine import embed_ray as run
    else:
        from cvx_core.scale.stream import embed_stream as run
    from cvx_core.data.cachedir import default_embedding_cache

    encoder: Any = args.encoder
    cache = None if args.no_cache else (args.cache or str(default_embedding_cache()))
    if args.engine == "ray":
        if args.max_tokens is not None:
            raise ValueError("--max-tokens needs --engine local")
        kw["encoder_backend"] = args.encoder_backend
    else:
        from cvx_core.data.text import DEFAULT_MAX_TOKENS, load_encoder

        encoder = load_encoder(args.encoder, max_tokens=args.max_tokens or DEFAULT_MAX_TOKENS,
                               backend=args.encoder_backend)
        if getattr(encoder, "exported", True) is False and callable(getattr(encoder, "prepare", None)):
            print(f"note: exporting MiniLM for ONNX Runtime ({encoder.backend}) on first use, once per machine, "
                  "into the cache folder; this takes tens of seconds", file=sys.stderr)
            t0 = time.perf_counter()
            encoder.prepare(stage=lambda step: print(f"  {time.perf_counter() - t0:5.1f}s  {step}", file=sys.stderr))
    res = run(args.data, args.out, encoder=encoder, cache=cache, batch_size=args.batch_size, **kw)
    print(f"{args.out}: {res.n_users} users, {res.n_posts} posts embedded ({res.seconds:.1f}s)")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from cvx_core.analysis.explain import explain_changepoints
    from cvx_core.analysis.penalty import sensitivity_text
    from cvx_core.data.io import load_trajectories

    from cvx_core.data.atomic import jsonable
    from cvx_core.data.terminal import escape_control, json_safe

    ts = load_trajectories(args.data)
    if args.user not in ts:
        known = ", ".join(repr(u) for u in ts.user_ids[:5])
        raise ValueError(f"{args.data}: no user {args.user!r}; users include {known}")
    exp = explain_changepoints(ts[args.user], config=_cp_config(args), n_terms=args.terms, n_posts=args.posts)
    if args.format == "json":  # control characters as \uXXXX escapes: the same JSON value, safe to print
        print(json_safe(json.dumps(jsonable(exp.to_dict()), ensure_ascii=False, indent=2, allow_nan=False)))
    else:  # ids and texts with control characters escaped as repr does (newlines included)
        print("\n".join(escape_control(line) for line in _explain_lines(exp)))
        print(f"\nSensitivity {args.sensitivity:g}. {sensitivity_text(args.sensitivity)}")
    return 0


def _explain_lines(exp: Any) -> list[str]:
    """The lines of ``exp.to_text()``, with the user id's own line breaks kept inside its line."""
    from dataclasses import is_dataclass, replace

    from cvx_core.data.terminal import escape_control

    uid = getattr(exp, "user_id", None)
    if isinstance(uid, str) and is_dataclass(exp) and not uid.isprintable():
        try:
            exp = replace(exp, user_id=escape_control(uid))
        except (TypeError, ValueError):
            pass
    return exp.to_text().split("\n")


def _cmd_compare(args: argparse.Namespace) -> int:
    """Attention vs attribution of a saved run on its held-out users; writes RUN/comparison.json."""
    from cvx_core.data.io import load_trajectories
    from cvx_core.learn.compare import check_permutations, compare_run
    from cvx_core.data.atomic import jsonable
    from cvx_core.learn.runs import atomic_write_json, load_run

    check_permutations(args.permutations)  # before the slow loading
    run = load_run(args.run)
    ts = load_trajectories(args.data)
    limits.check_dim(ts.dim, source=str(args.data))
    cmp = compare_run(run.model, ts, split=run.data.get("split"), config=run.config.features,
                      planted_dims=_planted(args.truth), n_permutations=args.permutations, seed=run.config.seed)
    doc = {"run": str(args.run), "data": str(args.data), **cmp.to_dict()}
    atomic_write_json(Path(args.run) / COMPARISON_FILE, doc)
    if args.format == "json":
        print(json.dumps(jsonable(doc), allow_nan=False))  # an undefined statistic (NaN) is null
    else:
        print(f"run {_printable(str(args.run))}  data {_printable(str(args.data))}")
        _print_comparison(cmp)
    return 0


def _cmd_forecast(args: argparse.Namespace) -> int:
    import numpy as np

    from cvx_core.data.atomic import jsonable
    from cvx_core.data.io import load_trajectories
    from cvx_core.learn.forecast import (
        ForecastConfig,
        evaluate_forecaster,
        fit_forecaster,
        forecast,
        load_forecaster,
        parse_forecast_time,
        save_forecaster,
    )

    ts = load_trajectories(args.data)
    limits.check_dim(ts.dim, source=str(args.data))
    if args.user not in ts:
        raise ValueError(f"{args.data}: no user {args.user!r}")
    at = args.at if isinstance(args.at, np.datetime64) else parse_forecast_time(str(args.at))
    last_post = ts[args.user].datetimes[-1].astype("datetime64[us]")
    if at < last_post:
        raise ValueError(f"--at {at}: before the last post of user {args.user!r} ({last_post}); a forecast looks ahead")
    folder = Path(args.model) if args.model else None
    if folder is not None and folder.exists() and not folder.is_dir():
        raise ValueError(f"--model {folder}: is a file, expected a forecaster folder")
    if folder is not None and (folder / "forecaster.json").exists():
        model, cfg = load_forecaster(folder)
        if model.dim != ts.dim:
            raise ValueError(f"{folder}: forecaster for D={model.dim}, data has D={ts.dim}")
        held_out = None
    else:
        cfg = ForecastConfig(seed=args.seed, **({"epochs": args.epochs} if args.epochs else {}))
        model = fit_forecaster(ts, config=cfg, exclude_last=1)
        held_out = evaluate_forecaster(model, ts)
        if folder is not None:
            save_forecaster(model, cfg, folder)
    tr = ts[args.user]
    pred = forecast(model, tr, at)
    last = np.asarray(tr.embeddings[-1], dtype=np.float64)
    doc = {
        "user_id": tr.user_id,
        "at": str(at),
        "last_post": str(tr.datetimes[-1]),
        "horizon_days": float((at - tr.datetimes[-1].astype("datetime64[us]")) / np.timedelta64(1, "us")) / 86_400e6,
        "moved_from_last_post": float(np.linalg.norm(pred - last)),
        "embedding": [float(x) for x in pred],
        "held_out_last_posts": None if held_out is None else jsonable(held_out.as_dict()),  # NaN -> null
    }
    if not np.isfinite(pred).all():
        raise ValueError(f"the forecast for user {args.user!r} at {at} is not finite (the horizon is too far for "
                         "this model)")
    if args.format == "text":
        from cvx_core.cli_support import forecast_lines
        from cvx_core.data.terminal import escape_control

        print("\n".join(escape_control(line) for line in forecast_lines(doc)))
    else:
        print(json.dumps(doc, allow_nan=False))
    return 0


_HANDLERS = {"evaluate": "_cmd_evaluate", "train": "_cmd_train", "extract": "_cmd_extract",
             "compare": "_cmd_compare", "forecast": "_cmd_forecast", "analyze": "_cmd_analyze",
             "embed": "_cmd_embed", "explain": "_cmd_explain"}


def _check_paths(args: argparse.Namespace) -> None:
    """Inputs are regular files; no output resolves to an input (or to another output)."""
    from cvx_core.cli_support import check_input_file, check_outputs

    cmd = args.command
    inputs = [getattr(args, k, None) for k in ("data", "test_data", "config", "truth")]
    for path in inputs:
        check_input_file(path)
    if cmd == "train":
        outs = [(args.out, "--out", True), (getattr(args, "embedding_cache", None), "--embedding-cache", False),
                *((Path(args.out) / f, f"--out's {f}", False) for f in (*RUN_FILES, LOCK_FILE))]  # run files too
    elif cmd in ("extract", "analyze"):
        outs = [(args.out, "--out", False)]
    elif cmd == "embed":
        outs = [(args.out, "--out", False), (args.cache, "--cache", False)]
    elif cmd in ("evaluate", "compare"):
        check_input_file(args.run, what="run folder")
        name = EVALUATION_FILE if cmd == "evaluate" else COMPARISON_FILE
        outs = [(Path(args.run) / name, "the run's " + name, False)]
    elif cmd == "forecast" and args.model:
        outs = [(args.model, "--model", True), (Path(args.model) / "forecaster.json", "forecaster.json", False),
                (Path(args.model) / "forecaster.pt", "forecaster.pt", False)]
    else:
        outs = []
    check_outputs(outs, inputs)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status: 2 on bad input, with a one-line message (bad
    option values exit 2 through argparse), 1 on an internal error (one line too;
    ``CVX_DEBUG=1`` shows its traceback), 130 when interrupted. Everything printed has its
    control characters escaped."""
    from cvx_core.cli_support import one_line_warnings, refuse_bare_separators, run_command, terminal_safe_output

    with terminal_safe_output(), one_line_warnings():
        parser = build_parser()
        args = parser.parse_args(argv)
        refuse_bare_separators(parser, args)
        handler = globals()[_HANDLERS[args.command]]
        return run_command(handler, args, _check_paths)
