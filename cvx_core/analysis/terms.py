"""Distinctive terms of groups of posts: class-based TF-IDF (c-TF-IDF, as in BERTopic).

Each group of posts (e.g. the segments of a trajectory between its change points) is one
class: its texts are concatenated and counted with scikit-learn's ``CountVectorizer``
(lower-cased words of two or more letters, English stop words removed, unigrams and
bigrams). For term ``t`` and class ``c``::

    tf(t, c)  = count(t, c) / words(c)              (L1-normalised counts)
    idf(t)    = log(1 + A / f(t))                   A = mean words per class, f(t) = total count
    score     = tf(t, c) * idf(t)

A term is *distinctive* of class ``c`` against class ``o`` when its relative frequency in
``c`` is higher than in ``o`` (``count(t, c) / words(c) > count(t, o) / words(o)``); the
terms reported for a side of a change point are the distinctive ones with the highest
scores. Terms contain only lower-case ASCII letters and spaces, never markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TermCounts", "count_terms", "distinctive_terms", "TOKEN_PATTERN"]

TOKEN_PATTERN = r"(?u)\b[a-zA-Z][a-zA-Z]+\b"


@dataclass(frozen=True, eq=False)
class TermCounts:
    """Counts of ``V`` terms in ``K`` classes: ``counts [K, V]`` int64, ``vocabulary [V]``,
    ``words [K]`` (total term count per class) and the c-TF-IDF ``scores [K, V]``."""

    vocabulary: tuple[str, ...]
    counts: np.ndarray
    words: np.ndarray
    scores: np.ndarray

    def rate(self, k: int) -> np.ndarray:
        """Relative frequency of each term in class ``k`` ``[V]``."""
        return self.counts[k] / max(int(self.words[k]), 1)


def count_terms(groups: Sequence[Sequence[str]], *, ngram_range: tuple[int, int] = (1, 2)) -> TermCounts:
    """c-TF-IDF of ``K`` groups of texts (see the module doc). A group may be empty."""
    from sklearn.feature_extraction.text import CountVectorizer

    docs = [" \n ".join(g) for g in groups]
    vec = CountVectorizer(
        lowercase=True, stop_words="english", ngram_range=ngram_range, token_pattern=TOKEN_PATTERN
    )
    try:
        counts = vec.fit_transform(docs)
    except ValueError:  # no term at all (empty texts, only stop words)
        k = len(docs)
        z = np.zeros((k, 0))
        return TermCounts((), z.astype(np.int64), np.zeros(k, dtype=np.int64), z)
    counts = np.asarray(counts.toarray(), dtype=np.int64)
    vocab = tuple(str(t) for t in vec.get_feature_names_out())
    # per-class word totals from unigrams only, so bigrams do not double-count text length
    unigram = np.array([" " not in t for t in vocab])
    words = counts[:, unigram].sum(axis=1)
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    f = counts.sum(axis=0)
    avg = float(counts.sum()) / max(counts.shape[0], 1)
    idf = np.log1p(avg / np.maximum(f, 1))
    return TermCounts(vocab, counts, words, tf * idf[None, :])


def distinctive_terms(
    tc: TermCounts, k: int, other: int, *, n_terms: int = 8, min_count: int = 2
) -> tuple[tuple[str, float], ...]:
    """The ``n_terms`` highest-scoring terms of class ``k`` that are relatively more
    frequent in ``k`` than in class ``other``, as ``(term, score)``. Terms seen fewer than
    ``min_count`` times in ``k`` are used only when too few others qualify."""
    if not tc.vocabulary:
        return ()
    own, oth = tc.rate(k), tc.rate(other)
    ok = (own > oth) & (tc.counts[k] > 0)
    strong = ok & (tc.counts[k] >= min_count)
    score = tc.scores[k]
    order = np.lexsort((np.arange(score.size), -score))  # score desc, then alphabetical
    picked = [int(i) for i in order if strong[i]][:n_terms]
    if len(picked) < n_terms:
        picked += [int(i) for i in order if ok[i] and not strong[i]][: n_terms - len(picked)]
    return tuple((tc.vocabulary[i], float(score[i])) for i in picked)
