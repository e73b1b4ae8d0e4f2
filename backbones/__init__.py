"""Unified token-mixer backbones: every mixer shows its affinity, every preset is a timm model.

``create_backbone(name, **kwargs)`` builds a preset (``num_classes=0`` for a headless backbone
returning ``[B, num_features]``); ``list_backbones()`` lists them. Importing this package
registers each preset with timm as ``unimix_<name>``.
"""

from .acmix import ACmix
from .acmix_resnet import ACmixBottleneck, build_acmix_resnet
from .coatnet import CoAtNet, CoAtNetCfg, RelPosAttention, RelPosBias
from .container import Container, ContainerCfg, ContainerMixer
from .mbconv import MBConv, MBConvBlock, depthwise_affinity
from .mixer_base import MixerTrace, TokenMixer
from .registry import PRESETS, Preset, create_backbone, list_backbones

__all__ = [
    "PRESETS",
    "ACmix",
    "ACmixBottleneck",
    "CoAtNet",
    "CoAtNetCfg",
    "Container",
    "ContainerCfg",
    "ContainerMixer",
    "MBConv",
    "MBConvBlock",
    "MixerTrace",
    "Preset",
    "RelPosAttention",
    "RelPosBias",
    "TokenMixer",
    "build_acmix_resnet",
    "create_backbone",
    "depthwise_affinity",
    "list_backbones",
]
