"""unimix: DINO pretraining of unified token-mixer vision backbones.

After ``import unimix``, ``timm.create_model("unimix_container_light", num_classes=0)`` works:
the backbone presets are registered with timm under the ``unimix_`` prefix.

Python API (see docs/python_api.md)::

    import unimix
    result = unimix.pretrain("quickstart", dataset=my_dataset)  # a recipe, a YAML path or a config

Subpackages, bottom to top (imports run one way, see tests/test_import_direction.py):
``unimix.config``; ``unimix.data`` (datasets), ``unimix.backbones`` (mixers, skeleton, presets);
``unimix.checkpoint`` (the checkpoint format); ``unimix.eval`` (k-NN, linear probe, export);
``unimix.ssl`` (DINO); ``unimix.bench``, ``unimix.viz`` (affinity plots), ``unimix.cli``. Each
loads on first use, so ``import unimix`` (and ``unimix --help``) does not pay for torch and timm.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from typing import Any

__version__ = "0.1.0"

#: Attributes resolved on first access: name -> module holding it.
_LAZY = {
    "pretrain": "unimix.ssl",
    "PretrainConfig": "unimix.ssl",
    "PretrainResult": "unimix.ssl",
    "load_pretrain_config": "unimix.ssl",
    "create_backbone": "unimix.backbones",
    "list_backbones": "unimix.backbones",
}
_SUBPACKAGES = ("backbones", "bench", "checkpoint", "cli", "config", "data", "eval", "ssl", "viz")

__all__ = ["__version__", *_LAZY, *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"unimix.{name}")
    raise AttributeError(f"module 'unimix' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _RegisterPresetsAfterTimm(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loaders of ``timm`` and of ``unimix.backbones.*`` so that,
    once timm is imported, ``unimix.backbones.registry`` (the preset registration) is imported as
    soon as no backbones module is half-executed: right after timm's own ``__init__``, or after
    the outermost backbones module whose import brought timm in (the registry imports them all,
    which it cannot do from inside one of them). Then removes itself from ``sys.meta_path``."""

    #: Marks the hook across copies of this file: pytest imports the repository root's
    #: ``__init__.py`` a second time (as the checkout folder's name), and two hooks calling each
    #: other's ``find_spec`` would recurse without end.
    unimix_registration_hook = True

    def __init__(self) -> None:
        self.executing = 0  # backbones modules whose code is running

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "timm" and not fullname.startswith("unimix.backbones."):
            return None
        spec = None
        for finder in sys.meta_path:  # the real finders, without this one
            if not hasattr(finder, "unimix_registration_hook") and hasattr(finder, "find_spec"):
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: Any) -> None:
            self.executing += 1
            try:
                exec_module(module)
            finally:
                self.executing -= 1
            if not self.executing and "timm" in sys.modules and self in sys.meta_path:
                sys.meta_path.remove(self)
                importlib.import_module("unimix.backbones.registry")  # registers unimix_*

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


# ssl/ has no __init__.py (a regular package named ssl would shadow the standard library's from
# the repository root): unimix.ssl is a namespace package, given its public names here.
importlib.import_module("unimix.ssl.api").install(importlib.import_module("unimix.ssl"))

# Importing torch and timm takes seconds, which `unimix --help` must not pay; the registration
# still has to happen before anyone calls timm.create_model("unimix_..."). So: register now if
# timm is already loaded, else as soon as timm finishes importing (whoever imports it).
if "timm" in sys.modules:
    importlib.import_module("unimix.backbones.registry")
elif not any(hasattr(f, "unimix_registration_hook") for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterPresetsAfterTimm())
