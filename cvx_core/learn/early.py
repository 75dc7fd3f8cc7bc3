"""Early detection: how well a trained model classifies users from the start of their history.

Each evaluated user is cut to their first ``k`` posts (or to the posts of their first ``d``
days) and scored by the model; the curve is the AUC against posts (or days) seen. From the
same per-user scores, an alarm policy (the first cut at which the positive class's
probability reaches ``threshold``) gives one decision and one delay per user, scored with
eRisk's early-risk measures:

- ERDE_o (Losada & Crestani 2016, "A Test Collection for Research on Depression and
  Language Use", CLEF 2016): per user, a false positive costs ``c_fp`` (the share of
  positive users), a false negative ``c_fn = 1``, a true positive detected after ``k``
  posts ``lc_o(k) * c_tp`` with ``lc_o(k) = 1 - 1 / (1 + exp(k - o))`` and ``c_tp = 1``, a
  true negative 0; ERDE_o is the mean over users (lower is better), at o = 5 and 50.
- F_latency (Sadeque, Xu & Bethard 2018, "Measuring the Latency of Depression Detection
  in Social Media", WSDM 2018): ``F1 * speed``, ``speed = 1 - median over true positives
  of penalty(k)``, ``penalty(k) = -1 + 2 / (1 + exp(-p (k - 1)))``; ``p`` is set so that the
  penalty is 0.5 at the median number of posts of the evaluated users (eRisk's 0.0078 is
  that rule for its collection), or given.

Binary labels only for the decisions (the positive class is the larger label); the AUC
curve is macro one-vs-rest for more classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from cvx_core.data.trajectory import Trajectory, TrajectorySet
from cvx_core.learn.metrics import macro_auc
from cvx_core.learn.model import classifier_of, predict_proba

__all__ = ["EarlyDetection", "early_detection", "erde", "f_latency", "latency_penalty", "prefix_set", "post_grid"]


def prefix_set(ts: TrajectorySet, *, posts: int | None = None, days: float | None = None) -> TrajectorySet:
    """Each user's first ``posts`` posts, or the posts within ``days`` of their first post
    (every user keeps at least their first post). Give exactly one of the two."""
    if (posts is None) == (days is None):
        raise ValueError("give posts or days, not both or neither")
    out = []
    for tr in ts:
        if posts is not None:
            n = max(1, min(int(posts), tr.n_posts))
        else:
            n = max(1, int(np.searchsorted(tr.timestamps, float(days), side="right")))
        out.append(tr if n == tr.n_posts else Trajectory(
            tr.user_id, tr.embeddings[:n], tr.datetimes[:n], label=tr.label,
            texts=None if tr.texts is None else tr.texts[:n],
        ))
    return TrajectorySet(out, name=ts.name)


def post_grid(max_posts: int, *, dense: int = 50, extra: int = 20) -> list[int]:
    """Cuts 1, 2, ..., ``dense``, then ``extra`` geometric steps up to ``max_posts``."""
    m = max(1, int(max_posts))
    grid = list(range(1, min(m, dense) + 1))
    if m > dense:
        grid += [int(round(v)) for v in np.geomspace(dense + 1, m, extra)]
    return sorted(set(grid))


def latency_penalty(k: np.ndarray | float, p: float) -> np.ndarray:
    """``-1 + 2 / (1 + exp(-p (k - 1)))``: 0 at the first post, towards 1 later."""
    return -1.0 + 2.0 / (1.0 + np.exp(-p * (np.asarray(k, dtype=np.float64) - 1.0)))


def erde(decisions: np.ndarray, delays: np.ndarray, truth: np.ndarray, *, o: float, c_fp: float | None = None) -> float:
    """ERDE_o of binary ``decisions [N]`` made after ``delays [N]`` posts against ``truth [N]``
    (Losada & Crestani 2016). ``c_fp`` defaults to the share of positive users."""
    d = np.asarray(decisions, dtype=bool)
    y = np.asarray(truth, dtype=bool)
    k = np.asarray(delays, dtype=np.float64)
    if not (d.shape == y.shape == k.shape) or d.size == 0:
        raise ValueError("decisions, delays and truth need one entry per user")
    cfp = float(y.mean()) if c_fp is None else float(c_fp)
    lc = 1.0 - 1.0 / (1.0 + np.exp(np.clip(k - o, -700, 700)))
    cost = np.where(d & ~y, cfp, 0.0) + np.where(~d & y, 1.0, 0.0) + np.where(d & y, lc, 0.0)
    return float(cost.mean())


def f_latency(decisions: np.ndarray, delays: np.ndarray, truth: np.ndarray, *, p: float) -> float:
    """``F1 * (1 - median penalty of the true positives' delays)`` (Sadeque et al. 2018); 0 without a true positive."""
    d = np.asarray(decisions, dtype=bool)
    y = np.asarray(truth, dtype=bool)
    tp = d & y
    if not tp.any():
        return 0.0
    precision = tp.sum() / d.sum()
    recall = tp.sum() / y.sum()
    f1 = 2 * precision * recall / (precision + recall)
    speed = 1.0 - float(np.median(latency_penalty(np.asarray(delays)[tp], p)))
    return float(f1 * speed)


@dataclass(frozen=True)
class EarlyDetection:
    """The early-detection curve and eRisk's decision measures.

    Attributes:
        by: "posts" or "days".
        cuts: the cuts evaluated (posts, or days).
        posts_seen: mean posts seen per user at each cut.
        auc: AUC (macro one-vs-rest for more classes) at each cut.
        accuracy: accuracy at each cut.
        n_users: users evaluated.
        erde5, erde50, f_latency: eRisk measures of the alarm policy (binary only, else None).
        precision, recall, f1: of the final decisions (binary only).
        median_delay: median posts seen at a true positive's alarm (None without one).
        threshold: the alarm threshold on the positive class's probability.
        latency_p: the ``p`` of F_latency's penalty.
    """

    by: str
    cuts: tuple[float, ...]
    posts_seen: tuple[float, ...]
    auc: tuple[float, ...]
    accuracy: tuple[float, ...]
    n_users: int
    erde5: float | None
    erde50: float | None
    f_latency: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    median_delay: float | None
    threshold: float
    latency_p: float | None

    def to_dict(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and math.isnan(v) else v

        return {
            "by": self.by,
            "cuts": list(self.cuts),
            "posts_seen": list(self.posts_seen),
            "auc": [clean(a) for a in self.auc],
            "accuracy": list(self.accuracy),
            "n_users": self.n_users,
            "erde5": self.erde5,
            "erde50": self.erde50,
            "f_latency": self.f_latency,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "median_delay": self.median_delay,
            "threshold": self.threshold,
            "latency_p": self.latency_p,
        }


def early_detection(
    model: nn.Module,
    ts: TrajectorySet,
    *,
    by: str = "posts",
    classes: Sequence[int] | None = None,
    cuts: Sequence[float] | None = None,
    threshold: float = 0.5,
    latency_p: float | None = None,
    max_len: int | None = None,
    batch_size: int = 128,
    device: str = "cpu",
) -> EarlyDetection:
    """Score ``model`` on each user's history cut at ``cuts`` (posts, or days with
    ``by="days"``; default: every post count up to 50, then geometric steps to the longest
    history, or 12 day cuts up to the longest span) and the eRisk measures of the alarm
    policy "first cut where P(positive) >= threshold". Users need labels; ``classes`` are
    the model's classes in logit order (default: the sorted labels of ``ts``)."""
    if by not in ("posts", "days"):
        raise ValueError(f"by must be 'posts' or 'days', got {by!r}")
    if len(ts) == 0 or not ts.has_labels:
        raise ValueError("early detection needs labelled users")
    clf = classifier_of(model)
    n_classes = int(clf.n_classes)
    classes = sorted(set(int(v) for v in ts.labels)) if classes is None else [int(c) for c in classes]
    if len(classes) != n_classes:
        raise ValueError(f"the model has {n_classes} classes but {len(classes)} were given or found: pass classes=")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(int(v) for v in ts.labels) - set(index))
    if unknown:
        raise ValueError(f"the data has classes {unknown} the model was not trained on")
    y = np.array([index[int(v)] for v in ts.labels], dtype=np.int64)
    lengths = ts.lengths
    if cuts is None:
        if by == "posts":
            cuts = post_grid(int(lengths.max()))
        else:
            span = max(float(max(tr.span_days for tr in ts)), 1e-9)
            cuts = [float(v) for v in np.geomspace(min(1.0, span), span, 12)]
    cuts = [float(c) for c in cuts]
    probs, seen = [], []
    for c in cuts:
        sub = prefix_set(ts, posts=int(c)) if by == "posts" else prefix_set(ts, days=c)
        probs.append(predict_proba(model, sub, max_len=max_len, batch_size=batch_size, device=device))
        seen.append(sub.lengths.astype(np.float64))
    auc = tuple(macro_auc(y, p) for p in probs)
    acc = tuple(float((p.argmax(1) == y).mean()) for p in probs)
    posts_seen = tuple(float(s.mean()) for s in seen)
    out = dict(erde5=None, erde50=None, f_latency=None, precision=None, recall=None, f1=None, median_delay=None,
               latency_p=None)
    if n_classes == 2:
        pos = np.stack([p[:, 1] for p in probs])  # [C, N]
        fired = pos >= threshold
        any_fire = fired.any(axis=0)
        first = np.where(any_fire, fired.argmax(axis=0), len(cuts) - 1)
        seen_m = np.stack(seen)  # [C, N]
        delays = seen_m[first, np.arange(y.size)]
        delays = np.where(any_fire, delays, lengths.astype(np.float64))
        truth = y == 1
        if latency_p is None:
            med = float(np.median(lengths))
            latency_p = math.log(3.0) / max(med - 1.0, 1.0)
        tp = any_fire & truth
        out.update(
            erde5=erde(any_fire, delays, truth, o=5),
            erde50=erde(any_fire, delays, truth, o=50),
            f_latency=f_latency(any_fire, delays, truth, p=latency_p),
            precision=float(tp.sum() / any_fire.sum()) if any_fire.any() else 0.0,
            recall=float(tp.sum() / truth.sum()) if truth.any() else float("nan"),
            median_delay=float(np.median(delays[tp])) if tp.any() else None,
            latency_p=float(latency_p),
        )
        pr, rc = out["precision"], out["recall"]
        out["f1"] = float(2 * pr * rc / (pr + rc)) if pr and rc and (pr + rc) > 0 else 0.0
    return EarlyDetection(by=by, cuts=tuple(cuts), posts_seen=posts_seen, auc=auc, accuracy=acc, n_users=len(ts),
                          threshold=float(threshold), **out)
