"""ACmix-ResNet on the shared skeleton: ResNet bottlenecks whose 3×3 conv is the ACmix mixer.

Paper: Pan et al., *On the Integration of Self-Attention and Convolution*, CVPR 2022
(https://arxiv.org/abs/2111.14556): ResNet-26/38/50 with ACmix (attention window 7, 4 heads,
shift kernel 3, rates 0.5/0.5) have 10.6/14.6/18.6 M parameters with a 1000-class head.

Layout of timm's ``ResNet`` (read for facts): the ``"resnet"`` stem (7×7/2 conv, BN, ReLU, 3×3/2
max pool; 64 channels), four stages of :class:`~unimix.backbones.blocks.ACmixBottleneck` (the
first of stages 2–4 strides by 2), average pool and a linear classifier; kaiming fan-out init of
every conv and the last BatchNorm of each branch at zero — after which ACmix's shift kernels are
restored to the paper's one-hot shifts. Guarantees (tested): ``acmix_resnet50`` is within 2 % of
18.6 M parameters, and every preset accepts any input size in one instance (the ACmix mixer
masks its window at borders). The nano preset uses the ``"conv_bn_relu"`` stem (3×3/1 conv, BN,
ReLU; no max pool) as CIFAR ResNets do.
"""

from __future__ import annotations

from typing import Any

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
# before the shared skeleton these presets were timm ResNets (conv1/bn1, layer1-4, fc)
_LEGACY_KEYS = (
    (r"^conv1\.", "stem.conv."),
    (r"^bn1\.", "stem.norm."),
    *((rf"^layer{n}\.", f"stages.{n - 1}.blocks.") for n in range(1, 5)),
    (r"^fc\.", "head.fc."),
)


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
        legacy_keys=_LEGACY_KEYS,
    )


def build_acmix_resnet(layers: tuple[int, ...], **kwargs: Any) -> Backbone:
    """An ACmix-ResNet: ``kwargs`` named by :func:`acmix_resnet_cfg` (``channels``, ``num_heads``,
    ``window_size``, ``kernel_size``, ``small_stem``) build the layout, the rest go to
    :class:`Backbone` (``num_classes``, ``in_chans``, ``global_pool``, ``drop_rate``,
    ``drop_path_rate``)."""
    layout = {k: kwargs.pop(k) for k in _LAYOUT_ARGS if k in kwargs}
    return Backbone(acmix_resnet_cfg(layers, **layout), **kwargs)


# -- presets (registered with timm by unimix.backbones.registry) -----------------------------------


def acmix_resnet26(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """ACmix-ResNet-26 (paper: 10.6 M params); stage depths 1/2/4/1 as in SASA's ResNet-26."""
    refuse_pretrained(pretrained, "acmix_resnet26")
    return build_acmix_resnet((1, 2, 4, 1), **kwargs)


def acmix_resnet38(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """ACmix-ResNet-38 (paper: 14.6 M params)."""
    refuse_pretrained(pretrained, "acmix_resnet38")
    return build_acmix_resnet((2, 3, 5, 2), **kwargs)


def acmix_resnet50(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """ACmix-ResNet-50 (paper: 18.6 M params): ResNet-50 with ACmix in every bottleneck."""
    refuse_pretrained(pretrained, "acmix_resnet50")
    return build_acmix_resnet((3, 4, 6, 3), **kwargs)


def acmix_nano(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """CPU-sized ACmix-ResNet for 32-px images: CIFAR stem, widths 32–256, one block per stage."""
    refuse_pretrained(pretrained, "acmix_nano")
    return build_acmix_resnet((1, 1, 1, 1), channels=(32, 64, 128, 256), small_stem=True, **kwargs)
