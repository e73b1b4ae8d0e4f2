"""The public names of ``unimix.ssl`` (DINO self-supervised pretraining).

``ssl/`` has no ``__init__.py`` on purpose: with the repository root on ``sys.path``
(``python -c ...``, ``python -m pytest`` run from the root) a regular package named ``ssl``
would shadow the standard library's ``ssl`` module. ``unimix.ssl`` is therefore a
namespace package, and ``import unimix`` gives it these names through :func:`install`, each
imported on first use so that ``import unimix.ssl`` stays light::

    from unimix.ssl import pretrain, PretrainConfig, PretrainResult, load_pretrain_config
    from unimix.ssl import DINOLoss, DINOHead, DINOModel, MultiCropAugment, koleo_loss

``pretrain(config, dataset=None, eval_dataset=None)`` runs one job in this process and returns a
:class:`PretrainResult`; see docs/python_api.md.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["EXPORTS", "install"]

#: Public name -> the module of ``unimix.ssl`` that defines it.
EXPORTS: dict[str, str] = {
    "pretrain": "engine.trainer",
    "PretrainResult": "engine.trainer",
    "NonFiniteLossError": "engine.trainer",
    "PretrainConfig": "config",
    "load_pretrain_config": "config",
    "RECIPES": "config",
    "DataConfig": "config",
    "AugmentConfig": "config",
    "ModelConfig": "config",
    "HeadConfig": "config",
    "DinoConfig": "config",
    "OptimConfig": "config",
    "CheckpointConfig": "config",
    "LoggingConfig": "config",
    "EvalConfig": "config",
    "DINOLoss": "loss",
    "DINOHead": "head",
    "DINOModel": "model",
    "MultiCropAugment": "multicrop",
    "koleo_loss": "koleo",
}


def install(package: ModuleType) -> None:
    """Give the namespace package ``unimix.ssl`` its ``__all__``, docstring and a PEP 562
    ``__getattr__`` that imports each public name on first use."""

    def __getattr__(name: str) -> Any:
        if name not in EXPORTS:
            raise AttributeError(f"module 'unimix.ssl' has no attribute {name!r}")
        value = getattr(importlib.import_module(f"unimix.ssl.{EXPORTS[name]}"), name)
        setattr(package, name, value)
        return value

    package.__all__ = sorted(EXPORTS)
    package.__doc__ = __doc__
    package.__getattr__ = __getattr__  # type: ignore[attr-defined]
    package.__dir__ = lambda: sorted(set(vars(package)) | set(EXPORTS))  # type: ignore[attr-defined]
