"""Frozen-feature evaluation and export: feature extraction, FAISS k-NN, reports.

Public API::

    from unimix.eval import load_backbone, eval_transform, extract_features, knn_classify, knn_evaluate
"""

from .features import clean_state_dict, eval_transform, extract_features, load_backbone
from .knn import approximate_agreement, knn_classify, knn_evaluate, knn_search

__all__ = [
    "approximate_agreement",
    "clean_state_dict",
    "eval_transform",
    "extract_features",
    "knn_classify",
    "knn_evaluate",
    "knn_search",
    "load_backbone",
]
