"""ACmix-ResNet: timm's ResNet with an ACmix mixer in place of every bottleneck's 3×3 conv.

Paper: Pan et al., *On the Integration of Self-Attention and Convolution*, CVPR 2022
(https://arxiv.org/abs/2111.14556): ResNet-26/38/50 with ACmix (attention window 7, 4 heads,
shift kernel 3, rates 0.5/0.5) have 10.6/14.6/18.6 M parameters with a 1000-class head.

We reuse timm's :class:`~timm.models.resnet.ResNet` (stem, stages, head, ``forward_features``,
``forward_head``, ``forward_intermediates``, ``reset_classifier``) and only supply the block.
Guarantees (tested): ``acmix_resnet50`` is within 2 % of 18.6 M parameters, and every preset
accepts any input size in one instance (the ACmix mixer masks its window at borders).

Departures from the official code (LeapLabTHU/ACmix ``ResNet/``), on purpose:

- *Stride*: the official block strides inside ACmix (strided queries, strided shift conv). Our
  mixer keeps ``[B, C, H, W]`` so its affinity stays square and inspectable; a stride-2 block
  downsamples right after it with a 3×3/2 average pool (``count_include_pad=False``), which gives
  ``ceil(H/2)`` like timm's strided 1×1 shortcut at every size, odd ones and 1×1 included.
  No parameters change.
- timm's ResNet init (kaiming normal on every conv, like the official ResNet) would overwrite the
  shift conv's one-hot kernels; we restore them after init so the conv path starts as the paper's
  shifts.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.resnet import ResNet
from torch import nn

from .acmix import ACmix

__all__ = [
    "ACmixBottleneck",
    "acmix_nano",
    "acmix_resnet26",
    "acmix_resnet38",
    "acmix_resnet50",
    "build_acmix_resnet",
]


class ACmixBottleneck(nn.Module):
    """ResNet bottleneck ``1×1 → ACmix → 1×1`` (×4 expansion), built by timm's ``make_blocks``.

    Accepts timm's block keyword arguments; the ones ACmix cannot honour (grouped or dilated
    convs, anti-aliasing layers, DropBlock) raise a ``ValueError`` naming the value.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 1,
        base_width: int = 64,
        reduce_first: int = 1,
        dilation: int = 1,
        first_dilation: int | None = None,
        act_layer: type[nn.Module] = nn.ReLU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        attn_layer: type[nn.Module] | None = None,
        aa_layer: type[nn.Module] | None = None,
        drop_block: Any = None,
        drop_path: nn.Module | None = None,
        num_heads: int = 4,
        window_size: int = 7,
        kernel_size: int = 3,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        for name, value, ok in (
            ("cardinality", cardinality, cardinality == 1),
            ("dilation", dilation, dilation == 1 and (first_dilation or 1) == 1),
            ("reduce_first", reduce_first, reduce_first == 1),
            ("attn_layer", attn_layer, attn_layer is None),
            ("aa_layer", aa_layer, aa_layer is None),
            ("drop_block", drop_block, drop_block is None),
            ("stride", stride, stride in (1, 2)),
        ):
            if not ok:
                raise ValueError(f"ACmixBottleneck {name}: unsupported value {value!r}")
        dd = {"device": device, "dtype": dtype}
        width = int(planes * base_width / 64)
        outplanes = planes * self.expansion

        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False, **dd)
        self.bn1 = norm_layer(width, **dd)
        self.act1 = act_layer(inplace=True)
        self.mixer = ACmix(
            width, num_heads=num_heads, window_size=window_size, kernel_size=kernel_size
        )
        self.bn2 = norm_layer(width, **dd)
        self.act2 = act_layer(inplace=True)
        self.pool = (
            nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
            if stride == 2
            else nn.Identity()
        )
        self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False, **dd)
        self.bn3 = norm_layer(outplanes, **dd)
        self.act3 = act_layer(inplace=True)
        self.downsample = downsample
        self.drop_path = drop_path if drop_path is not None else nn.Identity()

    def zero_init_last(self) -> None:
        """Start the residual branch at zero (timm's ``zero_init_last``)."""
        if getattr(self.bn3, "weight", None) is not None:
            nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.pool(self.act2(self.bn2(self.mixer(x))))
        x = self.bn3(self.conv3(x))
        return self.act3(self.drop_path(x) + shortcut)


def _cifar_stem(model: ResNet, in_chans: int) -> None:
    """Replace the 7×7/2 conv + max-pool stem by one 3×3/1 conv (CIFAR ResNets), in place."""
    out = model.conv1.out_channels
    model.conv1 = nn.Conv2d(in_chans, out, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    for info in model.feature_info:
        info["reduction"] = max(1, info["reduction"] // 4)


def build_acmix_resnet(
    layers: tuple[int, ...],
    channels: tuple[int, ...] = (64, 128, 256, 512),
    num_heads: int = 4,
    window_size: int = 7,
    kernel_size: int = 3,
    small_stem: bool = False,
    **kwargs: Any,
) -> ResNet:
    """Build a timm ResNet whose bottlenecks mix tokens with ACmix.

    Args:
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        channels: bottleneck widths per stage (outputs are 4× these).
        num_heads, window_size, kernel_size: ACmix settings shared by all blocks.
        small_stem: 3×3 stride-1 stem without max-pool, for 32-px images.
        **kwargs: timm ``ResNet`` arguments (``num_classes``, ``in_chans``, ``drop_path_rate``...).
    """
    for key in ("block", "block_args", "stem_type", "aa_layer"):
        if key in kwargs:
            raise ValueError(f"acmix_resnet: argument {key!r} is fixed by the preset")
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    kwargs.pop("cache_dir", None)
    model = ResNet(
        block=ACmixBottleneck,
        layers=layers,
        channels=channels,
        block_args=dict(num_heads=num_heads, window_size=window_size, kernel_size=kernel_size),
        **kwargs,
    )
    if small_stem:
        _cifar_stem(model, kwargs.get("in_chans", 3))
    for module in model.modules():
        if isinstance(module, ACmix):
            module.reset_shift_kernel()
    return model


# -- presets (registered with timm by unimix.backbones.registry) -----------------------------------


def acmix_resnet26(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ACmix-ResNet-26 (paper: 10.6 M params); stage depths 1/2/4/1 as in SASA's ResNet-26."""
    return build_acmix_resnet((1, 2, 4, 1), **kwargs)


def acmix_resnet38(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ACmix-ResNet-38 (paper: 14.6 M params)."""
    return build_acmix_resnet((2, 3, 5, 2), **kwargs)


def acmix_resnet50(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ACmix-ResNet-50 (paper: 18.6 M params): ResNet-50 with ACmix in every bottleneck."""
    return build_acmix_resnet((3, 4, 6, 3), **kwargs)


def acmix_nano(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """CPU-sized ACmix-ResNet for 32-px images: CIFAR stem, widths 32–256, one block per stage."""
    return build_acmix_resnet((1, 1, 1, 1), channels=(32, 64, 128, 256), small_stem=True, **kwargs)
