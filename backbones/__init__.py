"""Unified token-mixer backbones: every mixer shows its affinity, every preset is a timm model.

``create_backbone(name, **kwargs)`` builds a preset (``num_classes=0`` for a headless backbone
returning ``[B, num_features]``); ``list_backbones()`` lists them. Importing this package
registers each preset with timm as ``unimix_<name>``.
"""

from .acmix import ACmix
from .acmix_resnet import ACmixBottleneck, build_acmix_resnet
from .attention import Attention
from .coatnet import CoAtNet, CoAtNetCfg, RelPosAttention, RelPosBias
from .container import Container, ContainerCfg, ContainerMixer
from .dwconv import DepthwiseConv
from .factory import create_dino_backbone
from .mbconv import MBConv, MBConvBlock, depthwise_affinity
from .metaformer import MIXERS, MetaFormer, MetaFormerBlock, MetaFormerCfg
from .mixer_base import MixerTrace, TokenMixer
from .pooling import Pooling
from .registry import PRESETS, Preset, create_backbone, list_backbones
from .sepconv import SepConv
from .token_mlp import TokenMLP

__all__ = [
    "MIXERS",
    "PRESETS",
    "ACmix",
    "ACmixBottleneck",
    "Attention",
    "CoAtNet",
    "CoAtNetCfg",
    "Container",
    "ContainerCfg",
    "ContainerMixer",
    "DepthwiseConv",
    "MBConv",
    "MBConvBlock",
    "MetaFormer",
    "MetaFormerBlock",
    "MetaFormerCfg",
    "MixerTrace",
    "Pooling",
    "Preset",
    "RelPosAttention",
    "RelPosBias",
    "SepConv",
    "TokenMLP",
    "TokenMixer",
    "build_acmix_resnet",
    "create_backbone",
    "create_dino_backbone",
    "depthwise_affinity",
    "list_backbones",
]
