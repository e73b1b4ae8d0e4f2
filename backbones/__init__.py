"""Unified token-mixer backbones: every mixer shows its affinity, every family is one skeleton,
every preset is a timm model.

``create_backbone(name, **kwargs)`` builds a preset (``num_classes=0`` for a headless backbone
returning ``[B, num_features]``); ``list_backbones()`` lists them. Importing this package
registers each preset with timm as ``unimix_<name>``.

Layout: ``mixers/`` (the :class:`TokenMixer` contract, :data:`MIXERS`, one file per mixer),
``layers/`` (stems, shortcuts, head, relative-position bias, depthwise affinity), ``blocks/``
(one block per family, :data:`BLOCKS`), ``models/`` (the skeleton :class:`Backbone` and one file
per family's presets), ``registry.py`` (timm registration).
"""

from .blocks import (
    BLOCKS,
    ACmixBottleneck,
    ContainerBlock,
    MBConvBlock,
    MetaFormerBlock,
    TransformerBlock,
)
from .factory import create_dino_backbone
from .layers import RelPosBias, depthwise_affinity
from .mixers import (
    MIXERS,
    ACmix,
    Attention,
    ContainerMixer,
    DepthwiseConv,
    MBConv,
    MixerTrace,
    Pooling,
    RelPosAttention,
    SepConv,
    TokenMixer,
    TokenMLP,
)
from .models import (
    Backbone,
    BackboneCfg,
    CoAtNetCfg,
    ContainerCfg,
    HeadCfg,
    MetaFormerCfg,
    StageCfg,
    build_acmix_resnet,
    build_coatnet,
    build_container,
    build_metaformer,
)
from .registry import PRESETS, Preset, create_backbone, list_backbones

__all__ = [
    "BLOCKS",
    "MIXERS",
    "PRESETS",
    "ACmix",
    "ACmixBottleneck",
    "Attention",
    "Backbone",
    "BackboneCfg",
    "CoAtNetCfg",
    "ContainerBlock",
    "ContainerCfg",
    "ContainerMixer",
    "DepthwiseConv",
    "HeadCfg",
    "MBConv",
    "MBConvBlock",
    "MetaFormerBlock",
    "MetaFormerCfg",
    "MixerTrace",
    "Pooling",
    "Preset",
    "RelPosAttention",
    "RelPosBias",
    "SepConv",
    "StageCfg",
    "TokenMLP",
    "TokenMixer",
    "TransformerBlock",
    "build_acmix_resnet",
    "build_coatnet",
    "build_container",
    "build_metaformer",
    "create_backbone",
    "create_dino_backbone",
    "depthwise_affinity",
    "list_backbones",
]
