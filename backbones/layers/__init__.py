"""Layers the skeleton and the mixers share: stems, downsamplers, shortcuts, the head, the
relative-position bias and the depthwise-conv affinity."""

from .affinity import depthwise_affinity
from .head import PoolHead
from .rel_pos import RelPosBias
from .shortcuts import PoolShortcut, conv_bn_shortcut
from .stems import STEMS, CoAtNetStem, ConvDownsample, ConvNormPool, create_stem, stem_reduction

__all__ = [
    "STEMS",
    "CoAtNetStem",
    "ConvDownsample",
    "ConvNormPool",
    "PoolHead",
    "PoolShortcut",
    "RelPosBias",
    "conv_bn_shortcut",
    "create_stem",
    "depthwise_affinity",
    "stem_reduction",
]
