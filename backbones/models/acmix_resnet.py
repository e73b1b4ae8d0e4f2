"""ACmix-ResNet on the shared skeleton: ResNet bottlenecks whose 3×3 conv is the ACmix mixer.

Paper: Pan et al., *On the Integration of Self-Attention and Convolution*, CVPR 2022
(https://arxiv.org/abs/2111.14556): ResNet-26/38/50 with ACmix (attention window 7, 4 heads,
shift kernel 3, rates 0.5/0.5) have 10.6/14.6/18.6 M parameters with a 1000-class head.

Layout of timm's ``ResNet`` (read for facts): the ``"resnet"`` stem, four stages of
:class:`~unimix.backbones.blocks.ACmixBottleneck` (the first of stages 2–4 strides by 2), average
pool and a linear classifier; kaiming fan-out init, the last BatchNorm of each branch at zero,
then ACmix's shift kernels restored to the paper's one-hot shifts. The nano preset uses the
``"conv_bn_relu"`` stem (3×3/1, no max pool) as CIFAR ResNets do. Guarantees (tested):
``acmix_resnet50`` is within 2 % of 18.6 M parameters; any input size works in one instance.
"""

from __future__ import annotations

from typing import Any

from ..preset import register_preset
from .backbone import Backbone, BackboneCfg, refuse_pretrained, stage_cfgs

__all__ = [
    "acmix_nano",
    "acmix_resnet26",
    "acmix_resnet38",
    "acmix_resnet50",
    "acmix_resnet_cfg",
    "build_acmix_resnet",
]

_STEM_WIDTH = 64
_LAYOUT_ARGS = ("channels", "num_heads", "window_size", "kernel_size", "small_stem")


def acmix_resnet_cfg(
    layers: tuple[int, ...],
    channels: tuple[int, ...] = (64, 128, 256, 512),
    num_heads: int = 4,
    window_size: int = 7,
    kernel_size: int = 3,
    small_stem: bool = False,
) -> BackboneCfg:
    """The skeleton's layout of an ACmix-ResNet.

    Args:
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        channels: bottleneck widths per stage (outputs are 4× these).
        num_heads, window_size, kernel_size: ACmix settings shared by all blocks.
        small_stem: the 3×3 stride-1 stem without max pool, for 32-px images.
    """
    if len(layers) != len(channels):
        raise ValueError(f"acmix_resnet: {len(layers)} layers but {len(channels)} channels")
    mixer = dict(num_heads=num_heads, window_size=window_size, kernel_size=kernel_size)
    dims = tuple(4 * width for width in channels)  # bottleneck outputs: 4× the width
    strides = (1,) + (2,) * (len(layers) - 1)
    stages = stage_cfgs("acmix_bottleneck", dims, layers, [mixer] * len(layers), strides=strides)
    return BackboneCfg(
        stem="conv_bn_relu" if small_stem else "resnet",
        stem_dim=_STEM_WIDTH,
        stem_stride=1,
        stages=stages,
        init="kaiming",
    )


def build_acmix_resnet(layers: tuple[int, ...], **kwargs: Any) -> Backbone:
    """An ACmix-ResNet: ``kwargs`` named by :func:`acmix_resnet_cfg` (``channels``, ``num_heads``,
    ``window_size``, ``kernel_size``, ``small_stem``) build the layout, the rest go to
    :class:`Backbone` (``num_classes``, ``in_chans``, ``global_pool``, ``drop_rate``,
    ``drop_path_rate``)."""
    layout = {k: kwargs.pop(k) for k in _LAYOUT_ARGS if k in kwargs}
    return Backbone(acmix_resnet_cfg(layers, **layout), **kwargs)


# -- presets --------------------------------------------------------------------------------------


@register_preset("acmix", anchor_params_m=10.6, anchor_source="ACmix paper")
def acmix_resnet26(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """ACmix-ResNet-26 (paper: 10.6 M params); stage depths 1/2/4/1 as in SASA's ResNet-26."""
    refuse_pretrained(pretrained, "acmix_resnet26")
    return build_acmix_resnet((1, 2, 4, 1), **kwargs)


@register_preset("acmix", anchor_params_m=14.6, anchor_source="ACmix paper")
def acmix_resnet38(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """ACmix-ResNet-38 (paper: 14.6 M params)."""
    refuse_pretrained(pretrained, "acmix_resnet38")
    return build_acmix_resnet((2, 3, 5, 2), **kwargs)


@register_preset("acmix", anchor_params_m=18.6, anchor_source="ACmix paper")
def acmix_resnet50(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """ACmix-ResNet-50 (paper: 18.6 M params): ResNet-50 with ACmix in every bottleneck."""
    refuse_pretrained(pretrained, "acmix_resnet50")
    return build_acmix_resnet((3, 4, 6, 3), **kwargs)


@register_preset("acmix", image_size=32)
def acmix_nano(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """CPU-sized ACmix-ResNet for 32-px images: CIFAR stem, widths 32–256, one block per stage."""
    refuse_pretrained(pretrained, "acmix_nano")
    return build_acmix_resnet((1, 1, 1, 1), channels=(32, 64, 128, 256), small_stem=True, **kwargs)
