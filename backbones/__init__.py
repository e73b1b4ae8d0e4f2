"""Unified token-mixer backbones: every mixer shows its affinity, every family is one skeleton,
every preset is a timm model (``unimix_<name>``).

Public API::

    from unimix.backbones import (create_backbone, create_dino_backbone, list_backbones,
                                  PRESETS, Preset, Backbone, TokenMixer, MixerTrace, MIXERS)

Each name is imported from its module on first use (PEP 562), so ``unimix backbones --help``
does not pay for torch and timm. Layout: ``mixers/`` (the :class:`TokenMixer` contract, one file
per mixer), ``layers/``, ``blocks/`` (one block per family), ``models/`` (the skeleton
:class:`Backbone` and one file per family, which declares its presets), ``registry.py`` (collects
the presets, registers them with timm), ``stats.py`` (parameters and GMACs), ``cli.py``.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module of this package that defines it.
_LAZY: dict[str, str] = {
    "PRESETS": "registry",
    "create_backbone": "registry",
    "create_dino_backbone": "registry",
    "list_backbones": "registry",
    "Preset": "preset",
    "Backbone": "models",
    "MIXERS": "mixers",
    "MixerTrace": "mixers",
    "TokenMixer": "mixers",
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
