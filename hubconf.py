"""torch.hub entry points: every unimix backbone preset, and exports of trained runs.

From a checkout of this repository (no network)::

    import torch
    model = torch.hub.load("path/to/unimix", "poolformer_nano", source="local")  # [B, 256]
    model = torch.hub.load("path/to/unimix", "from_export", "exports/run_hf", source="local")

Each preset entry point (``poolformer_nano``, ``deit_small``, ...) is
``timm.create_model("unimix_<preset>", **kwargs)`` with ``num_classes=0`` unless given: a
headless backbone, randomly initialised; ``features_only=True`` and timm's other keyword
arguments work as with timm. ``from_export(DIR)`` loads a folder written by
``unimix export RUN --format hf --output DIR`` (``"hf-hub:USER/REPO"`` for one pushed to the
Hugging Face Hub) with the run's weights and ``pretrained_cfg`` (mean/std, input size). There
are no other entry points; ``torch.hub.list`` takes no local folder (docs/export.md).
"""

from __future__ import annotations

import importlib.util as _importlib_util
import sys as _sys
from pathlib import Path as _Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # names imported here would otherwise show up as hub entry points
    from collections.abc import Callable
    from typing import Any

dependencies = ["torch", "timm"]

__all__ = ["dependencies", "from_export"]


def _load_unimix() -> None:
    """``unimix`` when installed; else this checkout, whose folder is the ``unimix`` package."""
    if "unimix" in _sys.modules or _importlib_util.find_spec("unimix") is not None:
        return
    root = _Path(__file__).resolve().parent
    spec = _importlib_util.spec_from_file_location(
        "unimix", root / "__init__.py", submodule_search_locations=[str(root)]
    )
    module = _importlib_util.module_from_spec(spec)
    _sys.modules["unimix"] = module
    spec.loader.exec_module(module)


def _preset(name: str, doc: str | None) -> Callable[..., Any]:
    def entry(pretrained: bool = False, **kwargs: Any) -> Any:
        import timm

        kwargs.setdefault("num_classes", 0)
        return timm.create_model("unimix_" + name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = doc
    return entry


def from_export(source: str, **kwargs: Any) -> Any:
    """A trained backbone from ``unimix export --format hf``: a folder path, ``"local-dir:DIR"``
    or ``"hf-hub:USER/REPO"``; ``kwargs`` go to ``timm.create_model`` (``num_classes=0`` unless
    given). ``model.pretrained_cfg`` carries the run's mean/std and input size."""
    import timm

    _load_unimix()
    import unimix.backbones.registry  # noqa: F401  (registers the unimix_* architectures)

    name = source if source.startswith(("local-dir:", "hf-hub:")) else f"local-dir:{source}"
    kwargs.setdefault("num_classes", 0)
    return timm.create_model(name, pretrained=True, **kwargs)


def _register_presets() -> None:
    _load_unimix()
    from unimix.backbones.registry import PRESETS

    for name, preset in PRESETS.items():
        globals()[name] = _preset(name, preset.builder.__doc__)
        __all__.append(name)


_register_presets()
