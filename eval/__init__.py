"""Frozen-feature evaluation and export: feature extraction on any device and in any number of
processes, k-NN (FAISS / torch, exact or approximate), linear probe, export, reports.

Public API::

    from unimix.eval import (load_model, load_backbone, eval_transform, eval_data_config,
                             extract_features, extract_to_store, FeatureStore, resolve_device,
                             knn_classify, knn_evaluate, compare_knn, linear_probe,
                             export_extractor, load_extractor, calibrate_batchnorm)

Each name is imported from its module on first use (PEP 562), so ``import unimix.eval.knn_cli``
(what ``unimix knn --help`` runs) does not pay for torch, timm and FAISS.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module of this package that defines it.
_LAZY: dict[str, str] = {
    "calibrate_batchnorm": "compare",
    "compare_knn": "compare",
    "has_batchnorm": "compare",
    "is_like_for_like": "compare",
    "like_for_like_top1": "compare",
    "pixel_features": "compare",
    "EvalConfig": "config",
    "resolve_device": "device",
    "eval_datasets": "eval_sets",
    "export_extractor": "export",
    "FeatureStore": "feature_store",
    "extract_bank_and_queries": "features",
    "extract_features": "features",
    "extract_to_store": "features",
    "approximate_agreement": "knn",
    "knn_classify": "knn",
    "knn_evaluate": "knn",
    "knn_search": "knn",
    "linear_probe": "linear_probe",
    "linear_probe_augmented": "linear_probe_augmented",
    "clean_state_dict": "load",
    "load_backbone": "load",
    "load_extractor": "load",
    "load_model": "load",
    "eval_data_config": "transform",
    "eval_transform": "transform",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
