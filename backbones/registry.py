"""Every unimix backbone preset, registered with timm as ``unimix_<name>``.

Importing this module (``import unimix`` does) registers the presets, after which
``timm.create_model("unimix_container_light", num_classes=0)`` works. :func:`create_backbone`
accepts a name with or without the prefix; :func:`list_backbones` lists the bare names.
Each :class:`Preset` also carries the number its family is measured against (parameters with a
1000-class head, and GMACs at 224 px where the source gives one) for ``unimix backbones``.

The DeiT baselines reuse timm's ``VisionTransformer`` with ``dynamic_img_size=True`` (the
position table is resampled to each input's patch grid, so DINO's 224/96 or 32/16 crops run
through one instance) and ``dynamic_img_pad=True`` (sides the patch does not divide are padded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import is_model, register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from . import acmix_resnet, coatnet, container, metaformer

__all__ = [
    "PREFIX",
    "PRESETS",
    "Preset",
    "create_backbone",
    "deit_nano",
    "deit_small",
    "list_backbones",
]

PREFIX = "unimix_"
_TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


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


# -- DeiT baselines: timm's ViT, made resolution-agnostic --------------------------------------------


def _vit_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in kwargs.items() if k not in _TIMM_ONLY_KWARGS}
    kwargs.setdefault("dynamic_img_size", True)
    kwargs.setdefault("dynamic_img_pad", True)
    return kwargs


def deit_small(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm's ``deit_small_patch16_224`` (22.05 M params; patch 16, dim 384, depth 12, 6 heads),
    any input size (position embeddings resampled per input)."""
    return timm.create_model("deit_small_patch16_224", pretrained=False, **_vit_kwargs(kwargs))


def deit_nano(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """CPU-sized DeiT for 32-px images: patch 4 (8×8 tokens at 32 px, 4×4 at 16 px), dim 192,
    depth 5, 3 heads, MLP ratio 4; any input size."""
    args = dict(img_size=32, patch_size=4, embed_dim=192, depth=5, num_heads=3, mlp_ratio=4.0)
    args.update(_vit_kwargs(kwargs))
    return VisionTransformer(**args)


# -- the preset table -------------------------------------------------------------------------------

_PRESET_LIST: list[Preset] = [
    Preset(
        "poolformer_s12",
        metaformer.poolformer_s12,
        "pooling",
        anchor_params_m=11.92,
        anchor_gmacs=1.81,
        anchor_source="timm poolformer_s12",
    ),
    Preset(
        "convformer_s18",
        metaformer.convformer_s18,
        "sepconv",
        anchor_params_m=26.77,
        anchor_source="timm convformer_s18",
    ),
    Preset(
        "caformer_s18",
        metaformer.caformer_s18,
        "sepconv+attention",
        anchor_params_m=26.34,
        anchor_gmacs=3.88,
        anchor_source="timm caformer_s18",
    ),
    Preset("poolformer_nano", metaformer.poolformer_nano, "pooling", 32),
    Preset("convformer_nano", metaformer.convformer_nano, "sepconv", 32),
    Preset("caformer_nano", metaformer.caformer_nano, "sepconv+attention", 32),
    Preset("attention_nano", metaformer.attention_nano, "attention", 32),
    Preset(
        "container_light",
        container.container_light,
        "container",
        anchor_params_m=20.63,
        anchor_gmacs=3.85,
        anchor_source="allenai/container container_v1_light",
    ),
    Preset("container", container.container, "container"),
    Preset("container_light_nano", container.container_light_nano, "container", 32),
    Preset("container_nano", container.container_nano, "container", 32),
    Preset(
        "coatnet_0",
        coatnet.coatnet_0,
        "coatnet",
        anchor_params_m=25.04,
        anchor_gmacs=4.39,
        anchor_source="timm coatnet_0_224",
    ),
    Preset("coatnet_nano", coatnet.coatnet_nano, "coatnet", 32),
    Preset(
        "acmix_resnet26",
        acmix_resnet.acmix_resnet26,
        "acmix",
        anchor_params_m=10.6,
        anchor_source="ACmix paper",
    ),
    Preset(
        "acmix_resnet38",
        acmix_resnet.acmix_resnet38,
        "acmix",
        anchor_params_m=14.6,
        anchor_source="ACmix paper",
    ),
    Preset(
        "acmix_resnet50",
        acmix_resnet.acmix_resnet50,
        "acmix",
        anchor_params_m=18.6,
        anchor_source="ACmix paper",
    ),
    Preset("acmix_nano", acmix_resnet.acmix_nano, "acmix", 32),
    Preset(
        "deit_small",
        deit_small,
        "attention",
        anchor_params_m=22.05,
        anchor_gmacs=4.24,
        anchor_source="timm deit_small_patch16_224",
    ),
    Preset("deit_nano", deit_nano, "attention", 32),
]

#: bare preset name → :class:`Preset`, in table order.
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESET_LIST}


def _model_cfg(preset: Preset, num_classes: int) -> dict[str, Any]:
    """A timm ``pretrained_cfg`` (no weights): what ``timm.data.resolve_data_config`` reads."""
    size = preset.image_size
    return dict(
        architecture=PREFIX + preset.name,
        input_size=(3, size, size),
        crop_pct=1.0 if preset.nano else 0.875,
        interpolation="bicubic",
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        num_classes=num_classes,
    )


def _entrypoint(preset: Preset) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise ValueError(f"{PREFIX}{preset.name}: no pretrained weights are published")
        for key in _TIMM_ONLY_KWARGS:
            kwargs.pop(key, None)
        model = preset.builder(**kwargs)
        model.pretrained_cfg = model.default_cfg = _model_cfg(
            preset, getattr(model, "num_classes", 0)
        )
        return model

    entrypoint.__name__ = entrypoint.__qualname__ = PREFIX + preset.name
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
