"""DINO self-supervised pretraining (``unimix.ssl``).

Public API (each name is imported on first use, so ``import unimix.ssl`` stays light)::

    from unimix.ssl import pretrain, PretrainConfig, PretrainResult, load_pretrain_config
    from unimix.ssl import DINOLoss, DINOHead, DINOModel, MultiCropAugment, koleo_loss

``pretrain(config, dataset=None, eval_dataset=None)`` runs one job in this process and returns a
:class:`PretrainResult`; see docs/python_api.md.
"""

# This folder is named ``ssl`` like the standard library's module. With the repository root on
# sys.path (``python -c ...`` or ``python -m pytest`` run from the root) ``import ssl`` finds this
# package first; it then loads the standard library's ssl.py under the name ``ssl`` in its own
# place (the import system returns whatever sys.modules["ssl"] holds once this file has run).
if __name__ != "unimix.ssl":
    import importlib.util as _util
    import os as _os
    import sys as _sys
    import sysconfig as _sysconfig

    _spec = _util.spec_from_file_location(
        "ssl", _os.path.join(_sysconfig.get_paths()["stdlib"], "ssl.py")
    )
    _stdlib_ssl = _util.module_from_spec(_spec)
    _sys.modules["ssl"] = _stdlib_ssl
    _spec.loader.exec_module(_stdlib_ssl)
else:
    import importlib as _importlib
    from typing import Any as _Any

    #: Public name -> the module of this package that defines it.
    _EXPORTS = {
        "pretrain": "trainer",
        "PretrainResult": "trainer",
        "NonFiniteLossError": "trainer",
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
    __all__ = sorted(_EXPORTS)

    def __getattr__(name: str) -> _Any:
        if name not in _EXPORTS:
            raise AttributeError(f"module 'unimix.ssl' has no attribute {name!r}")
        value = getattr(_importlib.import_module(f"unimix.ssl.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))
