"""Command line: ``python -m cvx_core train|extract|compare ...``.

- ``train DATA --out RUN_DIR [--test-data TEST | --split-column NAME] [--cv K] [--head auto|linear|mlp]
  [--config FEATURES.json] [--epochs N --lr X --device auto|cpu|cuda --seed S ...]``:
  trains the temporal-feature classifier, writes the run folder (see ``cvx_core.learn.runs``)
  and the attention-vs-attribution comparison (``comparison.json``), prints the metrics.
- ``extract DATA --out FEATURES.parquet``: analytic feature vector per user (columns
  ``user_id``, ``label``, then one column per feature name), written atomically.
- ``compare RUN_DIR DATA [--truth truth.json]``: learned attention vs analytic attribution
  of a saved run.
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
  (terms and example posts per side, cvx_core.analysis.explain).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cvx_core.learn.runs import COMPARISON_FILE

#: what ``evaluate`` writes into the run folder
EVALUATION_FILE = "evaluation.json"

__all__ = ["main", "build_parser", "COMPARISON_FILE"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cvx_core", description="CVX: temporal ML on embedding trajectories.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train the temporal-feature classifier and write a run folder")
    t.add_argument("data", help="trajectory file (parquet, csv, jsonl, npz)")
    t.add_argument("--out", required=True, help="run folder to write (created if missing)")
    t.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 40)")
    t.add_argument("--lr", type=float, default=None, help="head learning rate (default 3e-3)")
    t.add_argument("--feature-lr", type=float, default=None, help="learning rate of attention / scales / temperature")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs")
    t.add_argument("--hidden", type=int, default=None, help="hidden units of the head (0: linear)")
    t.add_argument("--max-len", type=int, default=None, help="keep each user's last N posts")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    t.add_argument("--text-encoder", default=None, metavar="minilm|hashing|PATH",
                   help="train from the posts' text with this encoder (a sentence-transformers folder for PATH); "
                        "DATA may then be a text-only table (user_id, timestamp, text, label)")
    t.add_argument("--finetune", action="store_true",
                   help="fine-tune the text encoder through the temporal features (default: frozen, posts embedded once)")
    t.add_argument("--freeze-encoder", action="store_true", help="keep the text encoder fixed (the default)")
    t.add_argument("--posts-with-grad", type=int, default=None,
                   help="fine-tuning: posts per user per step that get gradients (default 8)")
    t.add_argument("--micro-batch-posts", type=int, default=None,
                   help="fine-tuning: most posts per encoder pass with gradients (default 8)")
    t.add_argument("--max-tokens", type=int, default=None, help="text encoder's token window (default 128)")
    t.add_argument("--encoder-lr", type=float, default=None, help="fine-tuning: encoder learning rate (default 2e-5)")
    t.add_argument("--embedding-cache", default=None,
                   help="SQLite embedding cache for the posts (default: embeddings.sqlite in the run folder)")
    t.add_argument("--no-attention", action="store_true", help="do not learn DimensionAttention")
    t.add_argument("--truth", default=None, help="truth.json with planted_dims (synthetic data) for the comparison")
    t.add_argument("--quiet", action="store_true", help="print only the final metrics")
    t.add_argument("--test-data", default=None, metavar="TEST",
                   help="score this trajectory file as the test set (other users); validation comes from DATA")
    t.add_argument("--split-column", default=None, metavar="NAME",
                   help="per-user column of DATA holding train / val / test (no val: drawn from train)")
    t.add_argument("--cv", type=int, default=None, metavar="K",
                   help="also run stratified, seeded K-fold cross-validation: mean and sd of model and baseline")
    t.add_argument("--head", choices=("auto", "linear", "mlp"), default=None,
                   help="classifier head (default auto: chosen by validation, inner CV on small data)")
    t.add_argument("--config", default=None, help="JSON file with TemporalFeaturesConfig fields (as for extract)")
    t.add_argument("--workers", type=int, default=1,
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
    _add_engine_args(a)

    m = sub.add_parser("embed", help="embed the posts' texts -> trajectory parquet (texts kept)")
    m.add_argument("data", help="table of posts with user_id, timestamp, text[, label]")
    m.add_argument("--out", required=True, help="output .parquet file (save_trajectories layout)")
    m.add_argument("--encoder", "--model", dest="encoder", default=None,
                   help="'minilm' (default, packaged) or a sentence-transformers / Hugging Face model folder")
    m.add_argument("--max-tokens", type=int, default=None,
                   help="encoder window in tokens (default 256); longer texts are truncated, with one warning")
    cache = m.add_mutually_exclusive_group()
    cache.add_argument("--cache", default=None, help="SQLite embedding cache file (default: embeddings.sqlite in the "
                       "per-user cache folder, CVX_CACHE_DIR or e.g. ~/.cache/cvx; a second run re-encodes nothing)")
    cache.add_argument("--no-cache", action="store_true", help="encode every text, store nothing")
    m.add_argument("--encoder-backend", choices=("torch", "onnx", "onnx-int8"), default=None,
                   help="how the packaged MiniLM runs (default: onnx-int8 on CPU, the fastest within cosine 0.99 of "
                        "torch fp32; torch on a GPU); other models run on torch")
    m.add_argument("--batch-size", type=int, default=64, help="texts per encoder call")
    _add_engine_args(m)

    c = sub.add_parser("compare", help="learned attention vs analytic attribution of a saved run")
    c.add_argument("run", help="run folder")
    c.add_argument("data", help="the trajectory file the run was trained on")
    c.add_argument("--truth", default=None, help="truth.json with planted_dims")
    c.add_argument("--permutations", type=int, default=1000)

    x = sub.add_parser("explain", help="a user's change points in words: terms and example posts per side")
    x.add_argument("data", help="trajectory file with texts (e.g. written by `embed`)")
    x.add_argument("--user", required=True, help="the user to explain")
    x.add_argument("--format", choices=("text", "json"), default="text")
    x.add_argument("--terms", type=int, default=8, help="terms per side")
    x.add_argument("--posts", type=int, default=3, help="example posts per side")

    f = sub.add_parser("forecast", help="latent-ODE forecast of a user's embedding at a future time")
    f.add_argument("data", help="trajectory file (parquet, csv, jsonl, npz)")
    f.add_argument("--user", required=True, help="the user to forecast")
    f.add_argument("--at", required=True, help="target time (ISO-8601, after the user's last post)")
    f.add_argument("--epochs", type=int, default=None, help="training epochs of the forecaster (default 150)")
    f.add_argument("--model", default=None, help="forecaster folder: loaded if it exists, else written after training")
    f.add_argument("--seed", type=int, default=0)
    return p


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    """``--engine local|ray --workers N [--address ADDR] [--chunk-users N]`` (cvx_core.scale)."""
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: streamed in this process; ray: Ray Data on a cluster")
    p.add_argument("--workers", type=int, default=None, help="parallel Ray workers (default: the cluster's CPUs)")
    p.add_argument("--address", default=None, help="existing Ray cluster ('auto', 'ray://host:10001'); "
                   "default: start a local one")
    p.add_argument("--chunk-users", type=int, default=None, help="users per chunk (bounds memory; default 512)")


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
        "device": args.device, "text_encoder": args.text_encoder,
        "posts_with_grad": args.posts_with_grad, "micro_batch_posts": args.micro_batch_posts,
        "max_tokens": args.max_tokens, "encoder_lr": args.encoder_lr,
        "head": getattr(args, "head", None), "cv": getattr(args, "cv", None),
        "test_data": getattr(args, "test_data", None), "split_column": getattr(args, "split_column", None),
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
        from cvx_core.features.config import TemporalFeaturesConfig

        kw["features"] = TemporalFeaturesConfig.from_dict(json.loads(Path(args.config).read_text(encoding="utf-8")))
    return TrainConfig(**kw)


def _planted(truth_path: str | None) -> list[int] | None:
    if truth_path is None:
        return None
    doc = json.loads(Path(truth_path).read_text(encoding="utf-8"))
    if "planted_dims" not in doc:
        raise ValueError(f"{truth_path}: no 'planted_dims' key")
    return [int(d) for d in doc["planted_dims"]]


def _print_comparison(cmp: Any) -> None:
    print(f"attention vs {cmp.attribution_kind}: Spearman {cmp.spearman:.3f} (p={cmp.p_value:.3g}), "
          f"Pearson {cmp.pearson:.3f}, top-10 Jaccard {cmp.topk_jaccard.get(10, float('nan')):.2f}, "
          f"top-50 Jaccard {cmp.topk_jaccard.get(50, float('nan')):.2f}")
    if cmp.planted_spearman is not None:
        overlap = ", ".join(f"top-{k} {v:.2f}" for k, v in cmp.planted_topk_overlap.items())
        print(f"planted dims: Spearman {cmp.planted_spearman:.3f} (max attainable {cmp.planted_spearman_max:.3f}); "
              f"share planted in {overlap}")
    print(cmp.verdict)


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
    from cvx_core.learn import runs
    from cvx_core.learn.compare import compare_attention
    from cvx_core.data.io import load_trajectories
    from cvx_core.learn.trainer import TrainProgress, Trainer

    config = _train_config(args)
    if getattr(args, "workers", 1) > 1 and config.text_encoder is not None:
        raise ValueError("--workers > 1 trains on stored embeddings; --text-encoder runs in one process (--workers 1)")
    if config.text_encoder is not None:  # text-only or embedded-with-texts tables (issue 15)
        from cvx_core.learn.finetune import finetune_memory_breakdown, load_text_data

        ts = load_text_data(args.data, config)
        mode = "fine-tuned" if not config.freeze_encoder else "frozen"
        print(f"text encoder {config.text_encoder} ({mode}): {finetune_memory_breakdown(config, ts).describe()}", flush=True)
    else:
        ts = load_trajectories(args.data)
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
    if config.learn_attention and config.text_encoder is None:
        train_ts = trainer.data.subset([trainer.data.user_ids[i] for i in result.split.train])
        cmp = compare_attention(result.model, train_ts, config=config.features, planted_dims=planted, seed=config.seed)
        runs.atomic_write_json(Path(args.out) / COMPARISON_FILE, cmp.to_dict())
        _print_comparison(cmp)
    print(f"run folder: {args.out}")
    return 0


def _print_evaluation(m: dict[str, Any]) -> None:
    """The metrics a small test set needs beside it: interval, baseline accuracy, head, CV, warnings."""
    lo, hi = (m.get("test_auc_ci") or [None, None])[:2]
    if lo is not None and hi is not None and lo == lo:
        print(f"test AUC 95% bootstrap interval [{lo:.3f}, {hi:.3f}] on {m['n_test']} users; "
              f"baseline accuracy {m['baseline_accuracy']:.3f}")
    if m.get("head_choice"):
        print(f"head: {m['head_choice']}")
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
    from cvx_core.learn.runs import atomic_write_json, load_run

    run = load_run(args.run)
    ts = load_trajectories(args.data)
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
    atomic_write_json(Path(args.run) / EVALUATION_FILE, doc)
    print(f"wrote {Path(args.run) / EVALUATION_FILE}")
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from cvx_core.features.config import TemporalFeaturesConfig

    config = None
    if args.config:
        config = TemporalFeaturesConfig.from_dict(json.loads(Path(args.config).read_text(encoding="utf-8")))
    kw = _engine_kwargs(args)
    if args.engine == "ray":
        from cvx_core.scale.ray_engine import extract_ray as run
    else:
        from cvx_core.scale.stream import extract_stream as run
    res = run(args.data, args.out, config=config, **kw)
    print(f"{args.out}: {res.n_users} users from {res.n_posts} posts ({res.n_chunks} chunks, "
          f"{'grouped' if res.grouped else 'grouped out of core'}; {res.seconds:.1f}s)")
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    kw = _engine_kwargs(args)
    if args.engine == "ray":
        from cvx_core.scale.ray_engine import analyze_ray as run
    else:
        from cvx_core.scale.stream import analyze_stream as run
    res = run(args.data, out=args.out, bocpd=args.bocpd, narratives=args.narratives, **kw)
    top = ", ".join(str(d) for d in res.cohort.pareto_dims()[:10])
    print(f"{args.out}: {res.n_users} users from {res.n_posts} posts, {int(res.n_changepoints.sum())} change points "
          f"({res.elapsed_s:.1f}s); cohort drift led by dimensions {top}")
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
        if getattr(encoder, "exported", True) is False:
            print(f"note: exporting MiniLM for ONNX Runtime ({encoder.backend}) on first use, once per machine, "
                  "into the cache folder; this takes tens of seconds", file=sys.stderr)
    res = run(args.data, args.out, encoder=encoder, cache=cache, batch_size=args.batch_size, **kw)
    print(f"{args.out}: {res.n_users} users, {res.n_posts} posts embedded ({res.seconds:.1f}s)")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from cvx_core.analysis.explain import explain_changepoints
    from cvx_core.data.io import load_trajectories

    ts = load_trajectories(args.data)
    if args.user not in ts:
        known = ", ".join(repr(u) for u in ts.user_ids[:5])
        raise ValueError(f"{args.data}: no user {args.user!r}; users include {known}")
    exp = explain_changepoints(ts[args.user], n_terms=args.terms, n_posts=args.posts)
    if args.format == "json":
        print(json.dumps(exp.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(exp.to_text())
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from cvx_core.learn.compare import compare_attention
    from cvx_core.data.io import load_trajectories
    from cvx_core.learn.runs import atomic_write_json, load_run

    run = load_run(args.run)
    ts = load_trajectories(args.data)
    split = run.data.get("split", {})
    if split.get("train"):
        ts = ts.subset([u for u in split["train"] if u in ts])
    cmp = compare_attention(run.model, ts, config=run.config.features, planted_dims=_planted(args.truth),
                            n_permutations=args.permutations, seed=run.config.seed)
    atomic_write_json(Path(args.run) / COMPARISON_FILE, cmp.to_dict())
    _print_comparison(cmp)
    return 0


def _cmd_forecast(args: argparse.Namespace) -> int:
    import numpy as np

    from cvx_core.data.io import load_trajectories
    from cvx_core.learn.forecast import (
        ForecastConfig,
        evaluate_forecaster,
        fit_forecaster,
        forecast,
        load_forecaster,
        save_forecaster,
    )

    ts = load_trajectories(args.data)
    if args.user not in ts:
        raise ValueError(f"{args.data}: no user {args.user!r}")
    try:
        at = np.datetime64(args.at, "us")
    except ValueError as exc:
        raise ValueError(f"--at {args.at!r} is not an ISO-8601 date/time") from exc
    folder = Path(args.model) if args.model else None
    if folder is not None and (folder / "forecaster.json").is_file():
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
        "held_out_last_posts": None if held_out is None else held_out.as_dict(),
    }
    print(json.dumps(doc))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad input, with a one-line message)."""
    from cvx_core.learn.runs import RunError
    from cvx_core.learn.config import DeviceUnavailableError
    from cvx_core.data.trajectory import TrajectoryError

    args = build_parser().parse_args(argv)
    handlers = {"evaluate": _cmd_evaluate, "train": _cmd_train, "extract": _cmd_extract, "compare": _cmd_compare, "forecast": _cmd_forecast,
                "analyze": _cmd_analyze, "embed": _cmd_embed, "explain": _cmd_explain}
    try:
        return handlers[args.command](args)
    except (TrajectoryError, RunError, DeviceUnavailableError, ValueError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
