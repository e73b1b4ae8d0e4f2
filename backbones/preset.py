"""What a family file declares about each of its presets.

A preset is an entry point with timm's signature, ``name(pretrained=False, **kwargs) -> model``,
decorated with :func:`register_preset` where it is defined. :mod:`.registry` collects every
family file's declarations and registers them with timm as ``unimix_<name>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Preset", "declared_presets", "register_preset"]

EntryPoint = TypeVar("EntryPoint", bound=Callable[..., Any])


@dataclass(frozen=True)
class Preset:
    """One preset.

    Attributes:
        name: bare name, the entry point's (timm knows it as ``unimix_<name>``).
        builder: the entry point, ``builder(pretrained=False, **kwargs) -> nn.Module``.
        family: the mixer family, for tables.
        image_size: the size the preset is designed for (224, or 32 for nano presets).
        first_conv, classifier: module names of the convolution that reads the image and of the
            classifier, for timm's ``pretrained_cfg`` (``in_chans`` adaptation, head filtering).
        out_indices: default ``features_only`` indices (None: every stage).
        anchor_params_m: parameters (millions, 1000-class head) of the reference, if any.
        anchor_gmacs: GMACs at 224 px of the reference, if any.
        anchor_source: where the anchor comes from.
    """

    name: str
    builder: Callable[..., Any]
    family: str
    image_size: int = 224
    first_conv: str = "stem.conv"
    classifier: str = "head.fc"
    out_indices: int | None = None
    anchor_params_m: float | None = None
    anchor_gmacs: float | None = None
    anchor_source: str = ""

    @property
    def nano(self) -> bool:
        return self.name.endswith("_nano")


#: module name -> its presets, in declaration order
_DECLARED: dict[str, dict[str, Preset]] = {}


def register_preset(family: str, **fields: Any) -> Callable[[EntryPoint], EntryPoint]:
    """Declare the decorated entry point a preset of ``family`` named after the function;
    ``fields`` are :class:`Preset`'s (``image_size``, ``first_conv``, ``anchor_params_m``...).
    The function is returned unchanged."""

    def declare(entry_point: EntryPoint) -> EntryPoint:
        preset = Preset(entry_point.__name__, entry_point, family, **fields)
        _DECLARED.setdefault(entry_point.__module__, {})[preset.name] = preset
        return entry_point

    return declare


def declared_presets(module: str) -> list[Preset]:
    """The presets the module named ``module`` declared, in declaration order."""
    return list(_DECLARED.get(module, {}).values())
