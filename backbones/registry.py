"""Every unimix backbone preset, registered with timm as ``unimix_<name>``.

Importing this module (``import unimix`` does) registers the presets, after which
``timm.create_model("unimix_container_light", num_classes=0)`` works. :func:`create_backbone`
accepts a name with or without the prefix; :func:`list_backbones` lists the bare names.
Each :class:`Preset` also carries the number its family is measured against (parameters with a
1000-class head, and GMACs at 224 px where the source gives one) for ``unimix backbones``.

Every family except the DeiT baselines (timm's own ViT, :mod:`unimix.backbones.models.deit`) is
built by the one skeleton, :class:`~unimix.backbones.models.Backbone`.

Each entry point builds through timm's ``build_model_with_cfg``, so timm's own paths work:

- ``pretrained=True`` loads the weights the ``pretrained_cfg`` names. ``unimix export RUN
  --format hf --output DIR`` writes such a folder, and
  ``timm.create_model("local-dir:DIR", pretrained=True, num_classes=0)`` (or ``"hf-hub:ID"`` for
  the same folder pushed to the Hugging Face Hub) loads it with the run's mean/std in
  ``model.pretrained_cfg``. With no weights configured, ``pretrained=True`` is a one-line
  ``ValueError``.
- ``features_only=True`` (+ ``out_indices``) wraps the model in timm's ``FeatureGetterNet`` over
  ``forward_intermediates``: one ``[B, C_i, H/r_i, W/r_i]`` map per index, ``C_i`` and ``r_i`` as
  in ``feature_info``. Default indices: every stage (skeleton families), the last 3 blocks (DeiT,
  as timm's ViT).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, register_model
from timm.models._builder import resolve_pretrained_cfg
from torch import nn

from .models import acmix_resnet, coatnet, container, deit, metaformer

__all__ = [
    "PREFIX",
    "PRESETS",
    "Preset",
    "create_backbone",
    "list_backbones",
]

PREFIX = "unimix_"


@dataclass(frozen=True)
class Preset:
    """One registered backbone.

    Attributes:
        name: bare preset name (timm name is ``unimix_<name>``).
        builder: ``builder(**kwargs) -> nn.Module`` (timm-style keyword arguments).
        family: the mixer family, for tables.
        image_size: the size the preset is designed for (224, or 32 for nano presets).
        anchor_params_m: parameters (millions, 1000-class head) of the reference, if any.
        anchor_gmacs: GMACs at 224 px of the reference, if any.
        anchor_source: where the anchor comes from.
    """

    name: str
    builder: Callable[..., nn.Module]
    family: str
    image_size: int = 224
    anchor_params_m: float | None = None
    anchor_gmacs: float | None = None
    anchor_source: str = ""

    @property
    def nano(self) -> bool:
        return self.name.endswith("_nano")


# -- the preset table -------------------------------------------------------------------------------

# fmt: off
_ANCHORED = ("anchor_params_m", "anchor_gmacs", "anchor_source")
#  name                   builder                           family               size  anchor: params M, GMACs, source
_TABLE: list[tuple] = [
    ("poolformer_s12",       metaformer.poolformer_s12,       "pooling",            224, 11.92, 1.81, "timm poolformer_s12"),
    ("convformer_s18",       metaformer.convformer_s18,       "sepconv",            224, 26.77, None, "timm convformer_s18"),
    ("caformer_s18",         metaformer.caformer_s18,         "sepconv+attention",  224, 26.34, 3.88, "timm caformer_s18"),
    ("poolformer_nano",      metaformer.poolformer_nano,      "pooling",             32),
    ("convformer_nano",      metaformer.convformer_nano,      "sepconv",             32),
    ("caformer_nano",        metaformer.caformer_nano,        "sepconv+attention",   32),
    ("attention_nano",       metaformer.attention_nano,       "attention",           32),
    ("container_light",      container.container_light,       "container",          224, 20.63, 3.85, "allenai/container container_v1_light"),
    ("container",            container.container,             "container",          224),
    ("container_light_nano", container.container_light_nano,  "container",           32),
    ("container_nano",       container.container_nano,        "container",           32),
    ("coatnet_0",            coatnet.coatnet_0,               "coatnet",            224, 25.04, 4.39, "timm coatnet_0_224"),
    ("coatnet_nano",         coatnet.coatnet_nano,            "coatnet",             32),
    ("acmix_resnet26",       acmix_resnet.acmix_resnet26,     "acmix",              224, 10.6,  None, "ACmix paper"),
    ("acmix_resnet38",       acmix_resnet.acmix_resnet38,     "acmix",              224, 14.6,  None, "ACmix paper"),
    ("acmix_resnet50",       acmix_resnet.acmix_resnet50,     "acmix",              224, 18.6,  None, "ACmix paper"),
    ("acmix_nano",           acmix_resnet.acmix_nano,         "acmix",               32),
    ("deit_small",           deit.deit_small,                 "attention",          224, 22.05, 4.24, "timm deit_small_patch16_224"),
    ("deit_nano",            deit.deit_nano,                  "attention",           32),
]
# fmt: on
_PRESET_LIST = [Preset(*row[:4], **dict(zip(_ANCHORED, row[4:], strict=False))) for row in _TABLE]

#: bare preset name → :class:`Preset`, in table order.
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESET_LIST}


def _is_vit(preset: Preset) -> bool:
    return preset.builder.__module__ == deit.__name__


def _model_cfg(preset: Preset) -> dict[str, Any]:
    """A timm ``pretrained_cfg`` without weights: what ``timm.data.resolve_data_config`` reads
    until an export (``local-dir:`` / ``hf-hub:``) replaces it with the run's."""
    size = preset.image_size
    vit = _is_vit(preset)
    return dict(
        input_size=(3, size, size),
        crop_pct=1.0 if preset.nano else 0.875,
        interpolation="bicubic",
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        num_classes=1000,
        fixed_input_size=False,
        first_conv="patch_embed.proj" if vit else None,
        classifier="head" if vit else "head.fc",
        license="apache-2.0",
    )


#: timm reads a module's ``default_cfgs`` when :func:`register_model` registers its entry points.
default_cfgs = generate_default_cfgs({PREFIX + p.name: _model_cfg(p) for p in _PRESET_LIST})


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


def _entrypoint(preset: Preset) -> Callable[..., nn.Module]:
    name = PREFIX + preset.name
    # DeiT: timm's ViT default (last 3 blocks); the skeleton: every stage (None)
    out_indices = 3 if _is_vit(preset) else None

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            _require_weights(name, kwargs)
        feature_cfg = dict(feature_cls="getter", out_indices=out_indices)
        return build_model_with_cfg(
            preset.builder, name, pretrained, feature_cfg=feature_cfg, **kwargs
        )

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = preset.builder.__doc__
    return entrypoint


def _register_all() -> None:
    for preset in PRESETS.values():
        # re-importing (reload, a second import path) must not re-register: timm would warn
        if not is_model(PREFIX + preset.name):
            register_model(_entrypoint(preset))


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
    bare = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    if bare not in PRESETS:
        raise ValueError(
            f"unknown backbone {name!r}; available presets: {', '.join(list_backbones())}"
        )
    return timm.create_model(PREFIX + bare, **kwargs)
