"""Every preset, collected from the family files and registered with timm as ``unimix_<name>``.

Importing this module registers them (``import unimix`` imports it as soon as timm is imported),
after which ``timm.create_model("unimix_container_light", num_classes=0)`` works. Each entry point
builds through timm's ``build_model_with_cfg``, so timm's own paths work: ``pretrained=True``
loads the weights a ``pretrained_cfg`` names (``timm.create_model("local-dir:DIR",
pretrained=True)`` for an ``unimix export --format hf`` folder; with none configured, a one-line
``ValueError``), and ``features_only=True`` (+ ``out_indices``) wraps the model in timm's
``FeatureGetterNet`` over ``forward_intermediates``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, register_model
from timm.models._builder import resolve_pretrained_cfg
from torch import nn

from .models import acmix_resnet, coatnet, container, deit, metaformer
from .preset import Preset, declared_presets

__all__ = [
    "FAMILIES",
    "PREFIX",
    "PRESETS",
    "Preset",
    "create_backbone",
    "create_dino_backbone",
    "list_backbones",
]

PREFIX = "unimix_"
#: The family files, in the order their presets are listed.
FAMILIES = (metaformer, container, coatnet, acmix_resnet, deit)


def _collect() -> dict[str, Preset]:
    presets: dict[str, Preset] = {}
    for family in FAMILIES:
        for preset in declared_presets(family.__name__):
            if preset.name in presets:
                raise ValueError(
                    f"preset {preset.name!r} is declared twice: in "
                    f"{presets[preset.name].builder.__module__} and {family.__name__}"
                )
            presets[preset.name] = preset
    return presets


#: bare preset name → :class:`Preset`, family by family, in declaration order.
PRESETS: dict[str, Preset] = _collect()


def _pretrained_cfg(preset: Preset) -> dict[str, Any]:
    """A timm ``pretrained_cfg`` without weights: what ``timm.data.resolve_data_config`` reads
    until an export (``local-dir:`` / ``hf-hub:``) replaces it with the run's."""
    size = preset.image_size
    return dict(
        input_size=(3, size, size),
        crop_pct=1.0 if preset.nano else 0.875,
        interpolation="bicubic",
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        num_classes=1000,
        fixed_input_size=False,
        first_conv=preset.first_conv,
        classifier=preset.classifier,
        license="apache-2.0",
    )


#: timm reads a module's ``default_cfgs`` when :func:`register_model` registers its entry points.
default_cfgs = generate_default_cfgs(
    {PREFIX + p.name: _pretrained_cfg(p) for p in PRESETS.values()}
)


def _require_weights(name: str, kwargs: dict[str, Any]) -> None:
    """``pretrained=True`` needs a weights source (file, url, hub id or state dict)."""
    cfg = resolve_pretrained_cfg(
        name, kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay")
    )
    if not (cfg.has_weights or cfg.state_dict is not None):
        raise ValueError(
            f"{name}: no pretrained weights are configured; load an export with "
            f"timm.create_model('local-dir:DIR', pretrained=True) (unimix export --format hf) or "
            f"pass pretrained_cfg_overlay=dict(file=...)"
        )


def _entry_point(preset: Preset) -> Callable[..., nn.Module]:
    """The family's entry point adapted to timm: weights, ``features_only`` and cfgs by timm."""
    name = PREFIX + preset.name

    def entry_point(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            _require_weights(name, kwargs)
        feature_cfg = dict(feature_cls="getter", out_indices=preset.out_indices)
        return build_model_with_cfg(
            preset.builder, name, pretrained, feature_cfg=feature_cfg, **kwargs
        )

    entry_point.__name__ = entry_point.__qualname__ = name
    entry_point.__module__ = __name__
    entry_point.__doc__ = preset.builder.__doc__
    return entry_point


def _register_all() -> None:
    for preset in PRESETS.values():
        # re-importing (reload, a second import path) must not re-register: timm would warn
        if not is_model(PREFIX + preset.name):
            register_model(_entry_point(preset))


_register_all()


# -- public API -------------------------------------------------------------------------------------


def list_backbones() -> list[str]:
    """Bare names of every unimix preset (``timm`` knows them as ``unimix_<name>``)."""
    return list(PRESETS)


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build a preset by name (``"container_light"`` or ``"unimix_container_light"``).

    ``kwargs`` go to ``timm.create_model`` (``num_classes=0`` for a headless backbone returning
    ``[B, num_features]``, ``drop_path_rate``, ``in_chans``...). Unknown names raise a
    ``ValueError`` listing the presets.
    """
    bare = name.removeprefix(PREFIX)
    if bare not in PRESETS:
        raise ValueError(
            f"unknown backbone {name!r}; available presets: {', '.join(list_backbones())}"
        )
    return timm.create_model(PREFIX + bare, **kwargs)


def create_dino_backbone(name: str, **kwargs: Any) -> nn.Module:
    """A headless backbone (``model(x)`` → ``[B, num_features]``): a unimix preset or any timm model.

    unimix presets come first (:func:`create_backbone`, with or without the ``unimix_`` prefix);
    any other name goes to ``timm.create_model(name, num_classes=0, pretrained=False)``, with
    ``dynamic_img_size=True`` for the models that take it (timm's ViTs and their kin; unless
    ``kwargs`` sets it): DINO's global and local crops, and a recipe's 32-px images, then run
    through a ``*_patch16_224`` model (its position table resampled to each input's grid, as
    the reference DINO's ViT does) instead of failing on "Input height (96) doesn't match
    model (224)". At the model's own size the features are unchanged.
    """
    if name.removeprefix(PREFIX) in PRESETS:
        return create_backbone(name, num_classes=0, **kwargs)
    if not timm.is_model(name):
        raise ValueError(
            f"model.backbone: unknown backbone {name!r} (not a unimix preset nor a timm model)"
        )
    if "dynamic_img_size" not in kwargs:
        try:  # a model without the option refuses it in its constructor, before any weight
            return timm.create_model(
                name, num_classes=0, pretrained=False, dynamic_img_size=True, **kwargs
            )
        except TypeError as err:
            if "dynamic_img_size" not in str(err):
                raise
    return timm.create_model(name, num_classes=0, pretrained=False, **kwargs)
