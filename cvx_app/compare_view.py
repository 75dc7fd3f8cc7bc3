"""Compare page plumbing: the core comparison of a run on its held-out users (cached), the runs
offered for a dataset, and the metrics the page draws, formatted from the same numbers the CLI
prints (``python -m cvx_core compare RUN DATA --format json``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from cvx_core.data.trajectory import TrajectorySet
from cvx_core.learn.compare import DEFAULT_PERMUTATIONS, AttentionComparison, compare_run


@st.cache_data(max_entries=8, show_spinner=False)
def _comparison(run_key: str, digest: str, planted: tuple[int, ...] | None, _run: Any,
                _ts: TrajectorySet) -> AttentionComparison:
    return compare_run(_run.model, _ts, split=_run.data.get("split"), config=_run.config.features,
                       planted_dims=list(planted) if planted else None,
                       n_permutations=DEFAULT_PERMUTATIONS, seed=_run.config.seed)


def comparison(run_dir: Path, ts: TrajectorySet, planted_dims: list[int] | None) -> AttentionComparison:
    """The CLI's comparison of a run on ``ts`` (its held-out users), cached per checkpoint and data."""
    from cvx_app import cache, workspace

    run = cache.load_run(run_dir)
    key = f"{run_dir}:{workspace.weights_stamp(run_dir)}"
    planted = tuple(int(d) for d in planted_dims) if planted_dims else None
    return _comparison(key, ts.digest(), planted, run, ts)


def runs_for_dataset(runs: list[Any], dataset_of: dict[str, str | None], dataset: str | None, *,
                     show_all: bool) -> tuple[list[Any], str | None]:
    """The runs trained on ``dataset`` (in the given order) and a note; with ``show_all``, or when
    none was trained on it, every run with ``dataset``'s first."""
    own = [r for r in runs if dataset is not None and dataset_of.get(r.name) == dataset]
    if own and not show_all:
        return own, None
    rest = [r for r in runs if r not in own]
    note = None if own or not rest else f"No run was trained on {dataset or 'the current dataset'} yet: runs of all datasets."
    return own + rest, note


def number(x: float | None, spec: str) -> str:
    """A value as shown, or "–" where it is undefined (None)."""
    return "–" if x is None else format(x, spec)


@dataclass(frozen=True)
class Metric:
    """One metric tile: label, value as shown, grey note under it (or None) and hover help."""

    label: str
    value: str
    note: str | None
    help: str


def statistic_metrics(cmp: AttentionComparison) -> list[Metric]:
    """Spearman, Pearson, the permutation p-value and the top-k overlaps beside chance."""
    out = [
        Metric("Spearman ρ", number(cmp.spearman, ".3f"), None, "Rank correlation of alpha and attribution."),
        Metric("Pearson r", number(cmp.pearson, ".3f"), None,
               "Correlation of alpha and attribution: does alpha's weight sit where the attribution is large?"),
        Metric("Permutation p-value", number(cmp.p_value, ".3g"), f"{cmp.n_permutations} permutations",
               f"One-sided: the held-out users' labels shuffled {cmp.n_permutations} times and Pearson r "
               f"recomputed; the smallest value possible is {1 / (cmp.n_permutations + 1):.3g}."),
    ]
    for ov in cmp.top_k:
        tip = ("Alpha or the attribution is constant, so it ranks no dimension." if ov.shared is None else
               f"{ov.shared} of the {ov.k} highest-alpha dimensions are among the {ov.k} with the largest "
               f"attribution (hypergeometric p = {ov.p_value:.3g}); two random rankings of D = "
               f"{cmp.alpha.size} give {ov.chance:.3f} on average.")
        out.append(Metric(f"Top-{ov.k} overlap (Jaccard)", number(ov.jaccard, ".2f"), f"chance {ov.chance:.2f}", tip))
    return out


def planted_metrics(cmp: AttentionComparison) -> list[Metric]:
    """The planted-truth tiles (empty without a truth file)."""
    if cmp.n_planted is None:
        return []
    return [
        Metric("Planted dims", str(cmp.n_planted), None, "Dimensions the sample's positive users drift along."),
        Metric(f"Planted share of alpha's top {cmp.n_planted}", number(cmp.planted_share, ".2f"), None,
               "Share of the highest-alpha dimensions that are planted (1 = all of them)."),
        Metric("Spearman(alpha, planted)", number(cmp.planted_spearman, ".3f"), None,
               f"The largest possible value is {number(cmp.planted_spearman_max, '.3f')}."),
        Metric("Spearman(attribution, planted)", number(cmp.attribution_planted_spearman, ".3f"), None,
               "How well the analytic attribution of the held-out users finds the planted dimensions."),
    ]


def verdict_caption(cmp: AttentionComparison) -> str:
    """Level, significance, cut-off and the reason, in one line."""
    sig = "significant" if cmp.significant else "not significant"
    return (f"Level: {cmp.level} ({sig} at the cut-off p < {cmp.verdict.cutoff:g}). Why: {cmp.verdict.reason}. "
            f"Compared on {cmp.users}.")
