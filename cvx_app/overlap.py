"""Top-k overlap for the Compare page: a re-export of the one implementation in
:mod:`cvx_core.learn.compare` (the CLI and the app share its top-k rule and chance level)."""

from cvx_core.learn.compare import TopKOverlap, chance_jaccard, overlap_ks, topk_overlaps

__all__ = ["TopKOverlap", "chance_jaccard", "overlap_ks", "topk_overlaps"]
