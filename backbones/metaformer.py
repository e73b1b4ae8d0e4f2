"""MetaFormer: one staged skeleton, a token mixer per stage.

Papers: Yu et al., *MetaFormer Is Actually What You Need for Vision*, CVPR 2022
(https://arxiv.org/abs/2111.11418) and *MetaFormer Baselines for Vision*, TPAMI 2023
(https://arxiv.org/abs/2210.13452). Layout and sizes follow timm's ``metaformer.py`` (read for
facts, not copied), top-down:

- **stem**: ``"patch"`` = 7×7 conv, stride 4, padding 2 (+ norm), timm's; or ``"cifar"`` = 3×3
  conv, stride ``stem_stride`` (default 1), padding 1 (+ norm), as CIFAR ResNets shrink their
  stems for 32-px images;
- **4 stages**: stage 1 keeps the stem's resolution, stages 2–4 start with a downsampling
  ``norm → 3×3 conv, stride 2, padding 1``; then blocks
  ``x = res_scale(x) + layer_scale(DropPath(mixer(norm1(x))))`` and the same with a 1×1-conv MLP;
- **head**: global pool → norm → (dropout) → classifier, a linear layer (PoolFormer) or timm's
  ``MlpHead`` (ConvFormer / CAFormer). ``num_classes=0`` leaves the pooled, normalised features
  ``[B, num_features]`` (``num_features = dims[-1]``).

Mixers are named per stage (``MIXERS``: ``"pooling"``, ``"dwconv"``, ``"sepconv"``, ``"mlp"``,
``"attention"``, plus the Container, ACmix and MBConv mixers) with per-stage keyword arguments;
each is built as ``Mixer(dim, **kwargs)`` and every one can return its affinity
(:mod:`unimix.backbones.mixer_base`).

Presets: ``poolformer_s12``, ``convformer_s18``, ``caformer_s18`` (layouts of timm's models of
the same names; parameter counts equal timm's: 11.92 M / 26.77 M / 26.34 M with a 1000-class
head) and the CPU-sized ``poolformer_nano``, ``convformer_nano``, ``caformer_nano``,
``attention_nano`` for 32-px images (cifar stem; numbers in the README).

No ``mlpmixer_nano``: the token-mixing MLP (:class:`~unimix.backbones.token_mlp.TokenMLP`)
mixes a fixed token count, and DINO runs every backbone at two crop sizes (32 and 16 px), which
give two token counts. The mixer is available for single-resolution models (``mixers=("mlp",
...)`` with ``mixer_kwargs=({"num_tokens": N}, ...)``).

Guarantees (tested): one instance runs any input size ≥ 1 px (cifar stem) or ≥ 3 px (patch stem;
a smaller input raises a ``ValueError``); timm's model API (``forward_features``,
``forward_head(pre_logits=True)``, ``forward_intermediates``, ``num_features``,
``num_classes=0``, ``reset_classifier``).

Departures from timm, on purpose: the attention stages keep ``[B, C, H, W]`` maps and use a
channels-first LayerNorm and 1×1 convs (the same maths and parameters as timm's token-major
``LayerNorm`` and ``nn.Linear``); stages 2–4 always downsample (timm skips it when two
neighbouring widths are equal).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from timm.layers import (
    DropPath,
    GroupNorm1,
    LayerNorm2d,
    LayerScale2d,
    Mlp,
    SelectAdaptivePool2d,
    calculate_drop_path_rates,
    trunc_normal_,
)
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq
from timm.models.metaformer import LayerNorm2dNoBias, MlpHead, StarReLU
from torch import nn

from .acmix import ACmix
from .attention import Attention
from .container import ContainerMixer
from .dwconv import DepthwiseConv
from .mbconv import MBConv
from .mixer_base import TokenMixer
from .pooling import Pooling
from .sepconv import SepConv
from .token_mlp import TokenMLP

__all__ = [
    "MIXERS",
    "MetaFormer",
    "MetaFormerBlock",
    "MetaFormerCfg",
    "attention_nano",
    "caformer_nano",
    "caformer_s18",
    "convformer_nano",
    "convformer_s18",
    "poolformer_nano",
    "poolformer_s12",
]

#: mixer name → class; every class is built as ``cls(dim, **kwargs)``.
MIXERS: dict[str, type[TokenMixer]] = {
    "pooling": Pooling,
    "dwconv": DepthwiseConv,
    "sepconv": SepConv,
    "mlp": TokenMLP,
    "attention": Attention,
    "container": ContainerMixer,
    "acmix": ACmix,
    "mbconv": MBConv,
}

StemKind = Literal["patch", "cifar"]


def _mixer_class(spec: str | type[TokenMixer]) -> type[TokenMixer]:
    if isinstance(spec, str):
        if spec not in MIXERS:
            raise ValueError(f"unknown mixer {spec!r}; available: {', '.join(MIXERS)}")
        return MIXERS[spec]
    return spec


# -- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetaFormerCfg:
    """A MetaFormer layout; every per-stage field has one entry per stage.

    Attributes:
        dims, depths: stage widths and block counts.
        mixers: per-stage mixer, a name from :data:`MIXERS` or a :class:`TokenMixer` class.
        mixer_kwargs: per-stage keyword arguments of the mixer.
        mlp_ratios: MLP hidden width = ``ratio × dim``.
        mlp_act, mlp_bias: MLP activation class and whether its 1×1 convs have biases.
        norm_layers: per-stage norm class of the blocks (``norm(dim)``).
        downsample_norm: norm after the stem conv and before each downsampling conv (None: none).
        layer_scale_init_values, res_scale_init_values: per-stage init of the branch scale and of
            the shortcut scale (None: not used).
        stem: ``"patch"`` (7×7/4) or ``"cifar"`` (3×3, stride ``stem_stride``).
        stem_stride: stride of the cifar stem (ignored by the patch stem).
        use_mlp_head: timm's ``MlpHead`` classifier instead of one linear layer.
        output_norm: norm of the pooled features.
    """

    dims: tuple[int, ...] = (64, 128, 320, 512)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    mixers: tuple[str | type[TokenMixer], ...] = ("pooling",) * 4
    mixer_kwargs: tuple[Mapping[str, Any], ...] = ({},) * 4
    mlp_ratios: tuple[float, ...] = (4.0,) * 4
    mlp_act: type[nn.Module] = StarReLU
    mlp_bias: bool = False
    norm_layers: tuple[type[nn.Module], ...] = (LayerNorm2dNoBias,) * 4
    downsample_norm: type[nn.Module] | None = LayerNorm2dNoBias
    layer_scale_init_values: tuple[float | None, ...] = (None,) * 4
    res_scale_init_values: tuple[float | None, ...] = (None, None, 1.0, 1.0)
    stem: StemKind = "patch"
    stem_stride: int = 1
    use_mlp_head: bool = True
    output_norm: type[nn.Module] = LayerNorm2d

    def __post_init__(self) -> None:
        n = len(self.dims)
        per_stage = (
            "depths",
            "mixers",
            "mixer_kwargs",
            "mlp_ratios",
            "norm_layers",
            "layer_scale_init_values",
            "res_scale_init_values",
        )
        for name in per_stage:
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"MetaFormerCfg.{name}: expected {n} entries like dims, got {getattr(self, name)}"
                )
        if self.stem not in ("patch", "cifar"):
            raise ValueError(f"MetaFormerCfg.stem: expected 'patch' or 'cifar', got {self.stem!r}")
        if self.stem_stride < 1:
            raise ValueError(f"MetaFormerCfg.stem_stride: expected >= 1, got {self.stem_stride}")
        for spec in self.mixers:
            _mixer_class(spec)

    @property
    def stem_reduction(self) -> int:
        return 4 if self.stem == "patch" else self.stem_stride


# -- layers ---------------------------------------------------------------------------------------


class Stem(nn.Module):
    """``conv → norm``: ``[B, in_chans, H, W] → [B, dim, H', W']``.

    ``"patch"``: 7×7, stride 4, padding 2 (``H' = ⌊(H − 3)/4⌋ + 1``, needs ``H ≥ 3``);
    ``"cifar"``: 3×3, stride ``s``, padding 1 (``H' = ⌈H/s⌉``, any ``H ≥ 1``).
    """

    def __init__(
        self,
        in_chans: int,
        dim: int,
        kind: StemKind = "patch",
        stride: int = 1,
        norm_layer: type[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if kind == "patch":
            self.conv = nn.Conv2d(in_chans, dim, 7, stride=4, padding=2)
            self.min_size = 3
        else:
            self.conv = nn.Conv2d(in_chans, dim, 3, stride=stride, padding=1)
            self.min_size = 1
        self.kind = kind
        self.norm = norm_layer(dim) if norm_layer else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"MetaFormer {self.kind} stem: expected input [B, C, H, W] with H, W >= "
                f"{self.min_size}, got {tuple(x.shape)}"
            )
        return self.norm(self.conv(x))


class Downsampling(nn.Module):
    """``norm → 3×3 conv, stride 2, padding 1``: ``[B, C_in, H, W] → [B, C_out, ⌈H/2⌉, ⌈W/2⌉]``."""

    def __init__(self, dim: int, dim_out: int, norm_layer: type[nn.Module] | None = None) -> None:
        super().__init__()
        self.norm = norm_layer(dim) if norm_layer else nn.Identity()
        self.conv = nn.Conv2d(dim, dim_out, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


class MetaFormerBlock(nn.Module):
    """``x = rs1(x) + ls1(DropPath(mixer(norm1(x))))``; ``x = rs2(x) + ls2(DropPath(mlp(norm2(x))))``.

    ``ls``/``rs`` are per-channel scales (timm's ``LayerScale2d``) when their init value is set,
    identities otherwise. ``[B, dim, H, W] → [B, dim, H, W]``.
    """

    def __init__(
        self,
        dim: int,
        mixer: str | type[TokenMixer] = "pooling",
        mixer_kwargs: Mapping[str, Any] | None = None,
        mlp_ratio: float = 4.0,
        mlp_act: type[nn.Module] = StarReLU,
        mlp_bias: bool = False,
        norm_layer: type[nn.Module] = LayerNorm2dNoBias,
        drop_path: float = 0.0,
        proj_drop: float = 0.0,
        layer_scale_init_value: float | None = None,
        res_scale_init_value: float | None = None,
    ) -> None:
        super().__init__()

        def scale(value: float | None) -> nn.Module:
            return nn.Identity() if value is None else LayerScale2d(dim, value)

        self.norm1 = norm_layer(dim)
        self.mixer = _mixer_class(mixer)(dim, **dict(mixer_kwargs or {}))
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale1 = scale(layer_scale_init_value)
        self.res_scale1 = scale(res_scale_init_value)

        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(
            dim,
            int(mlp_ratio * dim),
            act_layer=mlp_act,
            bias=mlp_bias,
            drop=proj_drop,
            use_conv=True,
        )
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale2 = scale(layer_scale_init_value)
        self.res_scale2 = scale(res_scale_init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res_scale1(x) + self.layer_scale1(self.drop_path1(self.mixer(self.norm1(x))))
        return self.res_scale2(x) + self.layer_scale2(self.drop_path2(self.mlp(self.norm2(x))))


class MetaFormerStage(nn.Module):
    """``downsample`` (identity in stage 1) then ``blocks``."""

    def __init__(self, downsample: nn.Module, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


# -- model ----------------------------------------------------------------------------------------


class MetaFormer(nn.Module):
    """Stem → stages → pooled head.

    Args:
        cfg: layout (:class:`MetaFormerCfg`).
        num_classes: classifier outputs; 0 gives a headless backbone whose ``model(x)`` returns
            the pooled, normalised features ``[B, num_features]``.
        in_chans: input channels.
        global_pool: timm pool type of the head (``"avg"``, ``"max"``, ``"avgmax"``...).
        drop_rate: dropout before the classifier.
        proj_drop_rate: dropout inside the MLPs.
        drop_path_rate: stochastic depth, increasing linearly over all blocks.
    """

    def __init__(
        self,
        cfg: MetaFormerCfg,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = cfg.dims[-1]
        self.grad_checkpointing = False

        self.stem = Stem(in_chans, cfg.dims[0], cfg.stem, cfg.stem_stride, cfg.downsample_norm)
        rates = calculate_drop_path_rates(drop_path_rate, list(cfg.depths), stagewise=True)
        stages, self.feature_info = [], []
        dim, reduction = cfg.dims[0], cfg.stem_reduction
        for i, (dim_out, depth) in enumerate(zip(cfg.dims, cfg.depths, strict=True)):
            downsample = nn.Identity()
            if i > 0:
                downsample = Downsampling(dim, dim_out, cfg.downsample_norm)
                reduction *= 2
            blocks = [
                MetaFormerBlock(
                    dim_out,
                    mixer=cfg.mixers[i],
                    mixer_kwargs=cfg.mixer_kwargs[i],
                    mlp_ratio=cfg.mlp_ratios[i],
                    mlp_act=cfg.mlp_act,
                    mlp_bias=cfg.mlp_bias,
                    norm_layer=cfg.norm_layers[i],
                    drop_path=rates[i][j],
                    proj_drop=proj_drop_rate,
                    layer_scale_init_value=cfg.layer_scale_init_values[i],
                    res_scale_init_value=cfg.res_scale_init_values[i],
                )
                for j in range(depth)
            ]
            stages.append(MetaFormerStage(downsample, blocks))
            self.feature_info.append(
                dict(num_chs=dim_out, reduction=reduction, module=f"stages.{i}")
            )
            dim = dim_out
        self.stages = nn.Sequential(*stages)

        self.head = nn.Sequential(
            OrderedDict(
                global_pool=SelectAdaptivePool2d(pool_type=global_pool),
                norm=cfg.output_norm(self.num_features),
                flatten=nn.Flatten(1) if global_pool else nn.Identity(),
                drop=nn.Dropout(drop_rate),
                fc=self._classifier(num_classes),
            )
        )
        self.apply(self._init_weights)

    def _classifier(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        if self.cfg.use_mlp_head:
            return MlpHead(self.num_features, num_classes)
        return nn.Linear(self.num_features, num_classes)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        # mixers with a structured init (ACmix's one-hot shift kernels) restore it
        if hasattr(m, "reset_shift_kernel"):
            m.reset_shift_kernel()

    # timm model API ------------------------------------------------------------------------------

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New classifier with ``num_classes`` outputs (0: none); optionally a new pool type."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.head.global_pool = SelectAdaptivePool2d(pool_type=global_pool)
            self.head.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.head.fc = self._classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` → last-stage map ``[B, dims[-1], H/r, W/r]`` (``r`` = 32 for the
        patch stem, ``8·stem_stride`` for the cifar stem; sides rounded up, never below 1)."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool → norm → flatten → dropout → (classifier unless ``pre_logits``)."""
        x = self.head.global_pool(x)
        x = self.head.norm(x)
        x = self.head.flatten(x)
        x = self.head.drop(x)
        return x if pre_logits else self.head.fc(x)

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
        """timm's ``forward_intermediates``: index ``i`` is the output of stage ``i`` (0-based),
        ``indices`` an int (last n) or a list; ``norm`` is accepted and ignored, as in timm's
        MetaFormer (the head's norm acts on pooled features)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt: only 'NCHW' is supported, got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        stages = self.stages[: max_index + 1] if stop_early else self.stages
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last wanted one (and the classifier): timm's API."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        if max_index < len(self.stages) - 1:
            self.stages = self.stages[: max_index + 1]
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            prune_head = True
        if prune_head:
            self.reset_classifier(0, "")
            self.head.norm = nn.Identity()
        return take


# -- presets --------------------------------------------------------------------------------------

_SEPCONV2_ATTN2 = ("sepconv", "sepconv", "attention", "attention")

#: timm ``poolformer_s12`` (PoolFormer v1): GroupNorm, GELU MLP with biases, layer scale 1e-5.
POOLFORMER_S12 = MetaFormerCfg(
    dims=(64, 128, 320, 512),
    depths=(2, 2, 6, 2),
    mixers=("pooling",) * 4,
    mlp_act=nn.GELU,
    mlp_bias=True,
    norm_layers=(GroupNorm1,) * 4,
    downsample_norm=None,
    layer_scale_init_values=(1e-5,) * 4,
    res_scale_init_values=(None,) * 4,
    use_mlp_head=False,
)
#: timm ``convformer_s18``: SepConv everywhere, StarReLU MLP, res scale in stages 3–4, MLP head.
CONVFORMER_S18 = MetaFormerCfg(depths=(3, 3, 9, 3), mixers=("sepconv",) * 4)
#: timm ``caformer_s18``: SepConv in stages 1–2, attention (heads of 32) in stages 3–4.
CAFORMER_S18 = MetaFormerCfg(depths=(3, 3, 9, 3), mixers=_SEPCONV2_ATTN2)

# CPU-sized layouts for 32-px images: a 3×3 stride-2 cifar stem, so a 32-px image gives maps of
# 16/8/4/2 over the four stages (16 px: 8/4/2/1), the schedule of coatnet_nano and the Container
# nanos, and about the same compute (0.03–0.04 GMACs at 32 px); widths 32–256, 2.3–2.9 M params
# without a head. ``stem_stride=1`` keeps 32/16/8/4 maps at four times the cost.
_NANO = dict(dims=(32, 64, 128, 256), stem="cifar", stem_stride=2)
POOLFORMER_NANO = dataclasses.replace(POOLFORMER_S12, depths=(2, 2, 6, 2), **_NANO)
CONVFORMER_NANO = MetaFormerCfg(depths=(2, 2, 3, 2), mixers=("sepconv",) * 4, **_NANO)
CAFORMER_NANO = MetaFormerCfg(depths=(2, 2, 3, 2), mixers=_SEPCONV2_ATTN2, **_NANO)
#: a DeiT-like nano on the skeleton: attention in every stage with a relative-position bias whose
#: table covers each stage's map at 32 px exactly (larger inputs get it resized).
ATTENTION_NANO = MetaFormerCfg(
    depths=(2, 2, 3, 2),
    mixers=("attention",) * 4,
    mixer_kwargs=tuple({"rel_pos": True, "rel_pos_base": s} for s in (16, 8, 4, 2)),
    **_NANO,
)

_CFG_FIELDS = {f.name for f in dataclasses.fields(MetaFormerCfg)}
_TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _build(cfg: MetaFormerCfg, pretrained: bool, kwargs: dict[str, Any]) -> MetaFormer:
    """``MetaFormer(cfg with any MetaFormerCfg fields in kwargs replaced, **other kwargs)``."""
    if pretrained:
        raise ValueError("unimix MetaFormer presets: no pretrained weights are published")
    for key in _TIMM_ONLY_KWARGS:
        kwargs.pop(key, None)
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in _CFG_FIELDS}
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    return MetaFormer(cfg, **kwargs)


def poolformer_s12(pretrained: bool = False, **kwargs: Any) -> MetaFormer:
    """PoolFormer-S12 (timm ``poolformer_s12``: 11.92 M params), 224 px."""
    return _build(POOLFORMER_S12, pretrained, kwargs)


def convformer_s18(pretrained: bool = False, **kwargs: Any) -> MetaFormer:
    """ConvFormer-S18 (timm ``convformer_s18``: 26.77 M params), 224 px."""
    return _build(CONVFORMER_S18, pretrained, kwargs)


def caformer_s18(pretrained: bool = False, **kwargs: Any) -> MetaFormer:
    """CAFormer-S18 (timm ``caformer_s18``: 26.34 M params), 224 px."""
    return _build(CAFORMER_S18, pretrained, kwargs)


def poolformer_nano(pretrained: bool = False, **kwargs: Any) -> MetaFormer:
    """CPU-sized PoolFormer for 32-px images (pooling in every stage)."""
    return _build(POOLFORMER_NANO, pretrained, kwargs)


def convformer_nano(pretrained: bool = False, **kwargs: Any) -> MetaFormer:
    """CPU-sized ConvFormer for 32-px images (SepConv in every stage)."""
    return _build(CONVFORMER_NANO, pretrained, kwargs)


def caformer_nano(pretrained: bool = False, **kwargs: Any) -> MetaFormer:
    """CPU-sized CAFormer for 32-px images (SepConv, SepConv, attention, attention)."""
    return _build(CAFORMER_NANO, pretrained, kwargs)


def attention_nano(pretrained: bool = False, **kwargs: Any) -> MetaFormer:
    """CPU-sized pure-attention MetaFormer for 32-px images (relative-position bias, any size)."""
    return _build(ATTENTION_NANO, pretrained, kwargs)
