"""CoAtNet: depthwise-conv (MBConv) stages, then relative-attention transformer stages.

Paper: Dai et al., *CoAtNet: Marrying Convolution and Attention for All Data Sizes*, NeurIPS 2021
(https://arxiv.org/abs/2106.04803). Sizes follow timm's ``coatnet_0_224``
(``timm/models/maxxvit.py``): stem 64 (two 3×3 convs, the first stride 2), stage widths
96/192/384/768, depths 2/3/5/2, layout C-C-T-T, MBConv expand 4 with SE, attention heads of 32
channels with a relative-position bias inside the softmax, MLP ratio 4, head = pool → LayerNorm →
768-wide tanh pre-logits → classifier. Every stage halves the resolution in its first block.

Guarantees (tested): ``coatnet_0`` is within 2 % of timm's 25.04 M parameters; one instance runs
at any input size ≥ 1 px (32, 16, 64, 96, 224 and odd sizes) — timm sizes its relative-position
tables at construction and fails at other resolutions, ours derive the bias for each input
(see :class:`RelPosBias`); every transformer mixer's ``trace`` reproduces its aggregation;
timm's model API (``forward_features``, ``forward_head(pre_logits=True)``,
``forward_intermediates``, ``num_features``, ``num_classes=0``, ``reset_classifier``).

Departures from timm, on purpose: downsampling average pools use ``ceil_mode`` so that odd maps
work (identical on even maps); attention is the plain fused kernel with the bias as an additive
mask (the same maths as timm's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import (
    ConvMlp,
    DropPath,
    LayerNorm2d,
    NormMlpClassifierHead,
    get_norm_act_layer,
    trunc_normal_,
)
from timm.models._features import feature_take_indices
from torch import nn

from .mbconv import Downsample, MBConvBlock
from .mixer_base import MixerTrace, TokenMixer

__all__ = [
    "CoAtNet",
    "CoAtNetCfg",
    "RelPosAttention",
    "RelPosBias",
    "TransformerBlock",
    "coatnet_0",
    "coatnet_nano",
]


# -- layers ---------------------------------------------------------------------------------------


class RelPosBias(nn.Module):
    """Learned bias per head and 2-D offset, derived for any ``H × W`` grid.

    The table covers offsets of a ``base × base`` grid (``(2·base − 1)²`` entries per head, as
    timm's ``RelPosBias`` sized for the training resolution). For a grid that fits inside it the
    bias is read off exactly (a centre crop of the table); for a larger grid the table is
    resized bicubically to ``(2H − 1) × (2W − 1)``, the usual way of moving relative tables to a
    new resolution (timm's ``resize_rel_pos_bias_table``, Swin, BEiT).
    """

    def __init__(self, num_heads: int, base_size: int) -> None:
        super().__init__()
        if base_size < 1:
            raise ValueError(f"RelPosBias base_size: expected >= 1, got {base_size}")
        self.num_heads, self.base_size = num_heads, base_size
        self.table = nn.Parameter(torch.zeros(num_heads, 2 * base_size - 1, 2 * base_size - 1))
        trunc_normal_(self.table, std=0.02)

    def table_for(self, height: int, width: int) -> torch.Tensor:
        """``[heads, 2H − 1, 2W − 1]``: bias for offsets ``(dy, dx)`` at ``[dy + H − 1, dx + W − 1]``."""
        b = self.base_size
        if height <= b and width <= b:
            return self.table[:, b - height : b + height - 1, b - width : b + width - 1]
        size = (2 * height - 1, 2 * width - 1)
        return F.interpolate(self.table.unsqueeze(0), size=size, mode="bicubic")[0]

    def forward(self, height: int, width: int) -> torch.Tensor:
        """Bias ``[heads, N, N]`` for an ``H × W`` grid (rows: queries)."""
        table = self.table_for(height, width)
        ys, xs = torch.meshgrid(
            torch.arange(height, device=table.device),
            torch.arange(width, device=table.device),
            indexing="ij",
        )
        ys, xs = ys.flatten(), xs.flatten()
        dy = ys[:, None] - ys[None, :] + height - 1
        dx = xs[:, None] - xs[None, :] + width - 1
        return table[:, dy, dx]

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, base_size={self.base_size}"


class RelPosAttention(TokenMixer):
    """Multi-head self-attention with a relative-position bias: ``[B, dim_in, H, W] → [B, dim, H, W]``.

    ``softmax(q kᵀ / √d + bias) v`` then a 1×1 output projection. ``dim_in`` lets the first block
    of a stage widen the channels inside the attention (timm's ``expand_first``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        head_dim: int = 32,
        dim_in: int | None = None,
        rel_pos_base: int | None = 7,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        num_heads = num_heads or max(1, dim // head_dim)
        if dim % num_heads:
            raise ValueError(
                f"RelPosAttention: dim={dim} is not divisible by num_heads={num_heads}"
            )
        self.dim, self.dim_in = dim, dim_in or dim
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Conv2d(self.dim_in, 3 * dim, 1, bias=qkv_bias)
        self.rel_pos = RelPosBias(num_heads, rel_pos_base) if rel_pos_base else None
        self.proj = nn.Conv2d(dim, dim, 1)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.dim_in:
            raise ValueError(
                f"RelPosAttention: expected input [B, {self.dim_in}, H, W], got {tuple(x.shape)}"
            )
        B, _, H, W = x.shape
        qkv = self.qkv(x).view(B, 3, self.num_heads, self.head_dim, H * W).transpose(-1, -2)
        return qkv.unbind(1)  # each [B, heads, N, d]

    def _bias(self, H: int, W: int) -> torch.Tensor | None:
        return None if self.rel_pos is None else self.rel_pos(H, W).unsqueeze(0)

    def _output(self, aggregated: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B = aggregated.shape[0]
        return self.proj(aggregated.transpose(-1, -2).reshape(B, self.dim, H, W))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        q, k, v = self._qkv(x)
        attn_mask = self._bias(H, W)
        if attn_mask is not None:
            attn_mask = attn_mask.to(q.dtype)
        return self._output(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask), H, W)

    def trace(self, x: torch.Tensor) -> MixerTrace:
        """``affinity = softmax(q kᵀ/√d + bias)`` ``[B, heads, N, N]``, ``values = v``."""
        H, W = x.shape[-2:]
        q, k, v = self._qkv(x)
        logits = (q * self.scale) @ k.transpose(-1, -2)
        bias = self._bias(H, W)
        affinity = (logits if bias is None else logits + bias).softmax(dim=-1)
        attn_mask = None if bias is None else bias.to(q.dtype)
        aggregated = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return MixerTrace(affinity, v, aggregated, self._output(aggregated, H, W))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, dim_in={self.dim_in}, num_heads={self.num_heads}"


# -- blocks ---------------------------------------------------------------------------------------


class TransformerBlock(nn.Module):
    """CoAtNet transformer block (NCHW, pre-norm), timm's ``TransformerBlock2d`` layout.

    ``x = shortcut(x) + DropPath(attn(pool(norm1(x))))``, then ``x + DropPath(mlp(norm2(x)))``.
    In a downsampling block the shortcut is a 2×2 average pool + 1×1 conv and the attention
    reads the pooled, normalised ``dim``-channel map and writes ``dim_out`` channels.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int | None = None,
        stride: int = 1,
        head_dim: int = 32,
        mlp_ratio: float = 4.0,
        rel_pos_base: int | None = 7,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        dim_out = dim_out or dim
        if stride not in (1, 2):
            raise ValueError(f"TransformerBlock stride: expected 1 or 2, got {stride!r}")
        changes = stride != 1 or dim != dim_out
        self.shortcut = Downsample(dim, dim_out, stride) if changes else nn.Identity()
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.pool = nn.AvgPool2d(2, stride=2, ceil_mode=True) if stride == 2 else nn.Identity()
        self.mixer = RelPosAttention(
            dim_out, head_dim=head_dim, dim_in=dim, rel_pos_base=rel_pos_base
        )
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm2d(dim_out, eps=1e-6)
        self.mlp = ConvMlp(dim_out, int(dim_out * mlp_ratio), act_layer=nn.GELU)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shortcut(x) + self.drop_path1(self.mixer(self.pool(self.norm1(x))))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class Stem(nn.Module):
    """``conv3×3(stride) → BN+GELU → conv3×3``: timm's CoAtNet stem (no norm after the 2nd conv;
    the first block's pre-norm follows)."""

    def __init__(self, in_chans: int, width: int, stride: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, 3, stride=stride, padding=1, bias=False)
        self.norm1 = get_norm_act_layer("batchnorm2d", "gelu")(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm1(self.conv1(x)))


# -- model ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoAtNetCfg:
    """A CoAtNet layout. ``stage_types``: ``"C"`` (MBConv) or ``"T"`` (transformer) per stage.

    ``rel_pos_base``: side of the grid each transformer stage's bias table covers exactly
    (timm: the stage's map size at the training resolution, e.g. 14 and 7 at 224 px).
    """

    dims: tuple[int, ...] = (96, 192, 384, 768)
    depths: tuple[int, ...] = (2, 3, 5, 2)
    stage_types: tuple[str, ...] = ("C", "C", "T", "T")
    stem_width: int = 64
    stem_stride: int = 2
    head_dim: int = 32
    expand_ratio: float = 4.0
    se_ratio: float = 0.25
    mlp_ratio: float = 4.0
    rel_pos_base: tuple[int, ...] = (28, 28, 14, 7)
    head_hidden_size: int | None = 768

    def __post_init__(self) -> None:
        n = len(self.dims)
        for name in ("depths", "stage_types", "rel_pos_base"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"CoAtNetCfg.{name}: expected {n} entries like dims, got {getattr(self, name)}"
                )
        bad = [t for t in self.stage_types if t not in ("C", "T")]
        if bad:
            raise ValueError(f"CoAtNetCfg.stage_types: expected 'C' or 'T', got {bad[0]!r}")


class CoAtNet(nn.Module):
    """Stem → stages (each halves the resolution in its first block) → pooled head.

    Args:
        cfg: layout (:class:`CoAtNetCfg`).
        num_classes: classifier outputs; 0 gives a headless backbone returning ``[B, num_features]``
            (after the tanh pre-logits when ``cfg.head_hidden_size`` is set, as in timm).
        in_chans: input channels.
        drop_path_rate: stochastic depth, increasing linearly over all blocks.
        global_pool: timm pool type of the head.
    """

    def __init__(
        self,
        cfg: CoAtNetCfg,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = Stem(in_chans, cfg.stem_width, cfg.stem_stride)
        self.feature_info = [dict(num_chs=cfg.stem_width, reduction=cfg.stem_stride, module="stem")]
        rates = torch.linspace(0, drop_path_rate, sum(cfg.depths)).tolist()
        stages, dim, reduction = [], cfg.stem_width, cfg.stem_stride
        for i, (dim_out, depth, kind) in enumerate(
            zip(cfg.dims, cfg.depths, cfg.stage_types, strict=True)
        ):
            blocks = []
            for j in range(depth):
                stride = 2 if j == 0 else 1
                drop = rates[sum(cfg.depths[:i]) + j]
                if kind == "C":
                    block = MBConvBlock(
                        dim,
                        dim_out,
                        stride=stride,
                        drop_path=drop,
                        expand_ratio=cfg.expand_ratio,
                        se_ratio=cfg.se_ratio,
                    )
                else:
                    block = TransformerBlock(
                        dim,
                        dim_out,
                        stride=stride,
                        head_dim=cfg.head_dim,
                        mlp_ratio=cfg.mlp_ratio,
                        rel_pos_base=cfg.rel_pos_base[i],
                        drop_path=drop,
                    )
                blocks.append(block)
                dim = dim_out
            stages.append(nn.Sequential(*blocks))
            reduction *= 2
            self.feature_info.append(
                dict(num_chs=dim_out, reduction=reduction, module=f"stages.{i}")
            )
        self.stages = nn.Sequential(*stages)
        self.num_features = cfg.dims[-1]
        self.head = NormMlpClassifierHead(
            self.num_features,
            num_classes,
            hidden_size=cfg.head_hidden_size,
            pool_type=global_pool,
            drop_rate=drop_rate,
            norm_layer=LayerNorm2d,
        )
        self.head_hidden_size = self.head.num_features
        # timm's contract: `num_features` is what forward_head(pre_logits=True) returns
        self.num_features = self.head.num_features

    # timm model API ------------------------------------------------------------------------------

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` → last-stage map ``[B, dims[-1], ~H/32, ~W/32]`` (stride 32 for
        ``coatnet_0``; never smaller than 1×1)."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's ``forward_intermediates``: index 0 is the stem, 1.. the stages."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt: only 'NCHW' is supported, got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.stages) + 1, indices)
        intermediates = []
        x = self.stem(x)
        if 0 in take:
            intermediates.append(x)
        stages = self.stages[:max_index] if stop_early else self.stages
        for i, stage in enumerate(stages, start=1):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates


# -- presets --------------------------------------------------------------------------------------

COATNET_0 = CoAtNetCfg()
# CPU-sized, for 32-px images: stride-1 stem, so 32 px → maps of 16/8/4/2 over the four stages
# (transformer stages on 4×4 and 2×2 tokens; 16 px still leaves a 1×1 final map).
COATNET_NANO = CoAtNetCfg(
    dims=(32, 64, 128, 256),
    depths=(1, 2, 3, 2),
    stem_width=32,
    stem_stride=1,
    rel_pos_base=(16, 8, 4, 2),
    head_hidden_size=None,
)


def _build(cfg: CoAtNetCfg, kwargs: dict[str, Any]) -> CoAtNet:
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return CoAtNet(cfg, **kwargs)


def coatnet_0(pretrained: bool = False, **kwargs: Any) -> CoAtNet:
    """CoAtNet-0 (timm ``coatnet_0_224``: 25.04 M params)."""
    return _build(COATNET_0, kwargs)


def coatnet_nano(pretrained: bool = False, **kwargs: Any) -> CoAtNet:
    """CPU-sized CoAtNet for 32-px images (C-C-T-T, widths 32–256)."""
    return _build(COATNET_NANO, kwargs)
