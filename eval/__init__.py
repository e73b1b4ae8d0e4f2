"""Frozen-feature evaluation and export: feature extraction on any device and in any number of
processes, k-NN (FAISS / torch, exact or approximate), linear probe, export, reports.

Public API::

    from unimix.eval import (load_backbone, eval_transform, extract_features, extract_to_store,
                             FeatureStore, resolve_device, knn_classify, knn_evaluate,
                             compare_knn, linear_probe, export_extractor, load_extractor,
                             calibrate_batchnorm)
"""

from .compare import (
    compare_knn,
    has_batchnorm,
    is_like_for_like,
    like_for_like_top1,
    pixel_features,
)
from .device import resolve_device
from .export import export_extractor, load_extractor
from .feature_store import FeatureStore
from .features import (
    calibrate_batchnorm,
    clean_state_dict,
    eval_transform,
    extract_features,
    extract_to_store,
    load_backbone,
)
from .knn import approximate_agreement, knn_classify, knn_evaluate, knn_search
from .linear_probe import linear_probe, linear_probe_augmented
from .run_eval_set import eval_datasets

__all__ = [
    "FeatureStore",
    "approximate_agreement",
    "calibrate_batchnorm",
    "clean_state_dict",
    "compare_knn",
    "eval_datasets",
    "eval_transform",
    "export_extractor",
    "extract_features",
    "extract_to_store",
    "has_batchnorm",
    "is_like_for_like",
    "knn_classify",
    "knn_evaluate",
    "knn_search",
    "like_for_like_top1",
    "linear_probe",
    "linear_probe_augmented",
    "load_backbone",
    "load_extractor",
    "pixel_features",
    "resolve_device",
]
