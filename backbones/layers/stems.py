"""Stems and stage downsamplers: the one vocabulary every family's stem is named in.

==================  ===========================================================  =========
kind                layers                                                       reduction
==================  ===========================================================  =========
``"patch"``         7×7 conv, stride 4, padding 2 (+ norm); needs ``H, W ≥ 3``   4
``"patchify"``      4×4 conv, stride 4 on the zero-padded map (+ norm)           4
``"conv"``          3×3 conv, stride ``s``, padding 1 (+ norm): the CIFAR stem   ``s``
``"conv_bn_relu"``  3×3 conv (no bias), stride ``s`` → BN → ReLU: CIFAR ResNets  ``s``
``"resnet"``        7×7/2 conv (no bias) → BN → ReLU → 3×3/2 max pool            4
``"coatnet"``       3×3/``s`` conv → BN+GELU → 3×3 conv (no biases)              ``s``
==================  ===========================================================  =========

Which family uses which: docs/backbones.md. The image is read by ``stem.conv`` (``stem.conv1``
for ``"coatnet"``), the ``first_conv`` the presets declare.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import get_norm_act_layer
from torch import nn

__all__ = [
    "STEMS",
    "CoAtNetStem",
    "ConvDownsample",
    "ConvNormPool",
    "create_stem",
    "stem_reduction",
]

NormFactory = Callable[[int], nn.Module]
STEMS = ("patch", "patchify", "conv", "conv_bn_relu", "resnet", "coatnet")


class ConvNormPool(nn.Module):
    """``conv → norm → act → pool``: ``[B, C_in, H, W] → [B, C_out, H', W']``.

    ``pad_ragged``: zero-pad the right/bottom sides to a multiple of the stride first (a
    non-overlapping patchify of any size); ``min_size``: the smallest side accepted (a smaller
    input raises a ``ValueError`` naming ``name``).
    """

    def __init__(
        self,
        in_chans: int,
        dim: int,
        kernel_size: int,
        stride: int,
        padding: int,
        bias: bool = True,
        norm: nn.Module | None = None,
        act: nn.Module | None = None,
        pool: nn.Module | None = None,
        pad_ragged: bool = False,
        min_size: int = 1,
        name: str = "stem",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, dim, kernel_size, stride=stride, padding=padding, bias=bias)
        self.norm = norm if norm is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()
        self.pool = pool if pool is not None else nn.Identity()
        self.stride, self.pad_ragged, self.min_size, self.name = stride, pad_ragged, min_size, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"{self.name}: expected input [B, C, H, W] with H, W >= {self.min_size}, "
                f"got {tuple(x.shape)}"
            )
        if self.pad_ragged:
            H, W = x.shape[-2:]
            x = F.pad(x, (0, (-W) % self.stride, 0, (-H) % self.stride))
        return self.pool(self.act(self.norm(self.conv(x))))


class CoAtNetStem(nn.Module):
    """``conv3×3(stride) → BN+GELU → conv3×3``: timm's CoAtNet stem (no norm after the 2nd conv;
    the first block's pre-norm follows). ``[B, C_in, H, W] → [B, dim, ⌈H/s⌉, ⌈W/s⌉]``."""

    def __init__(self, in_chans: int, dim: int, stride: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, dim, 3, stride=stride, padding=1, bias=False)
        self.norm1 = get_norm_act_layer("batchnorm2d", "gelu")(dim)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm1(self.conv1(x)))


class ConvDownsample(nn.Module):
    """``norm → 3×3 conv, stride 2, padding 1``: ``[B, C_in, H, W] → [B, C_out, ⌈H/2⌉, ⌈W/2⌉]``
    (MetaFormer's downsampling between stages)."""

    def __init__(self, dim: int, dim_out: int, norm: NormFactory | None = None) -> None:
        super().__init__()
        self.norm = norm(dim) if norm else nn.Identity()
        self.conv = nn.Conv2d(dim, dim_out, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


def stem_reduction(kind: str, stride: int) -> int:
    """How much a stem of ``kind`` shrinks each side."""
    return 4 if kind in ("patch", "patchify", "resnet") else stride


def create_stem(
    kind: str, in_chans: int, dim: int, stride: int = 1, norm: NormFactory | None = None
) -> nn.Module:
    """The stem ``kind`` (see the module table); ``norm`` builds the norm of the one-conv stems."""
    if kind not in STEMS:
        raise ValueError(f"stem: expected one of {', '.join(STEMS)}, got {kind!r}")
    if stride < 1:
        raise ValueError(f"stem stride: expected >= 1, got {stride}")
    name = f"{kind} stem"
    if kind == "coatnet":
        return CoAtNetStem(in_chans, dim, stride)
    if kind == "resnet":
        return ConvNormPool(
            in_chans,
            dim,
            kernel_size=7,
            stride=2,
            padding=3,
            bias=False,
            norm=nn.BatchNorm2d(dim),
            act=nn.ReLU(inplace=True),
            pool=nn.MaxPool2d(3, stride=2, padding=1),
            name=name,
        )
    if kind == "conv_bn_relu":
        return ConvNormPool(
            in_chans,
            dim,
            kernel_size=3,
            stride=stride,
            padding=1,
            bias=False,
            norm=nn.BatchNorm2d(dim),
            act=nn.ReLU(inplace=True),
            name=name,
        )
    norm_module = norm(dim) if norm else None
    if kind == "patch":
        return ConvNormPool(in_chans, dim, 7, 4, 2, norm=norm_module, min_size=3, name=name)
    if kind == "patchify":
        return ConvNormPool(in_chans, dim, 4, 4, 0, norm=norm_module, pad_ragged=True, name=name)
    return ConvNormPool(in_chans, dim, 3, stride, 1, norm=norm_module, name=name)
