"""MetaFormer (PoolFormer, ConvFormer, CAFormer) on the shared skeleton: a token mixer per stage.

Papers: Yu et al., *MetaFormer Is Actually What You Need for Vision*, CVPR 2022
(https://arxiv.org/abs/2111.11418) and *MetaFormer Baselines for Vision*, TPAMI 2023
(https://arxiv.org/abs/2210.13452). :class:`MetaFormerCfg` is the family's layout (that of
timm's ``metaformer.py``, read for facts, not copied), :func:`build_metaformer` builds it, and
each preset is declared below with :func:`~unimix.backbones.preset.register_preset`.

Guarantees (tested): one instance runs any input size >= 1 px (conv stem) or >= 3 px (patch
stem; smaller raises a ``ValueError``); timm's model API. Layouts, nano presets and the
departures from timm: docs/backbones.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from timm.layers import GroupNorm1, LayerNorm2d
from timm.models.metaformer import LayerNorm2dNoBias, StarReLU
from torch import nn

from ..mixers import TokenMixer, mixer_class
from ..preset import register_preset
from .backbone import Backbone, BackboneCfg, HeadCfg, refuse_pretrained, stage_cfgs

__all__ = [
    "MetaFormerCfg",
    "attention_nano",
    "build_metaformer",
    "caformer_nano",
    "caformer_s18",
    "convformer_nano",
    "convformer_s18",
    "poolformer_nano",
    "poolformer_s12",
]


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
        stem: ``"patch"`` (7×7/4) or ``"conv"`` (3×3, stride ``stem_stride``).
        stem_stride: stride of the conv stem (ignored by the patch stem).
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
    stem: str = "patch"
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
        if self.stem not in ("patch", "conv"):
            raise ValueError(f"MetaFormerCfg.stem: expected 'patch' or 'conv', got {self.stem!r}")
        if self.stem_stride < 1:
            raise ValueError(f"MetaFormerCfg.stem_stride: expected >= 1, got {self.stem_stride}")
        for spec in self.mixers:
            mixer_class(spec)

    def backbone_cfg(self) -> BackboneCfg:
        """The skeleton's layout: the stem, stages 2–4 downsampled by ``norm → 3×3/2 conv``,
        MetaFormer blocks, a norm on the pooled features, timm's truncated-normal init."""
        block_kwargs = [
            dict(
                mixer=self.mixers[i],
                mixer_kwargs=self.mixer_kwargs[i],
                mlp_ratio=self.mlp_ratios[i],
                mlp_act=self.mlp_act,
                mlp_bias=self.mlp_bias,
                norm_layer=self.norm_layers[i],
                layer_scale_init_value=self.layer_scale_init_values[i],
                res_scale_init_value=self.res_scale_init_values[i],
            )
            for i in range(len(self.dims))
        ]
        stages = stage_cfgs(
            "metaformer", self.dims, self.depths, block_kwargs, "conv", self.downsample_norm
        )
        return BackboneCfg(
            stem=self.stem,
            stem_dim=self.dims[0],
            stem_stride=self.stem_stride,
            stem_norm=self.downsample_norm,
            stages=stages,
            head=HeadCfg(norm=self.output_norm, mlp_classifier=self.use_mlp_head),
            init="trunc_normal",
        )


_CFG_FIELDS = {f.name for f in dataclasses.fields(MetaFormerCfg)}


def build_metaformer(cfg: MetaFormerCfg, **kwargs: Any) -> Backbone:
    """``Backbone(cfg.backbone_cfg(), **kwargs)``; ``kwargs`` as :class:`Backbone` (``num_classes``,
    ``in_chans``, ``global_pool``, ``drop_rate``, ``proj_drop_rate``, ``drop_path_rate``)."""
    return Backbone(cfg.backbone_cfg(), **kwargs)


def _build(cfg: MetaFormerCfg, pretrained: bool, kwargs: dict[str, Any]) -> Backbone:
    """A preset with any :class:`MetaFormerCfg` fields in ``kwargs`` replaced (the registry
    refuses ``pretrained=True`` and drops timm's own keyword arguments before this)."""
    refuse_pretrained(pretrained, "MetaFormer")
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in _CFG_FIELDS}
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    return build_metaformer(cfg, **kwargs)


# -- presets --------------------------------------------------------------------------------------

_SEPCONV2_ATTN2 = ("sepconv", "sepconv", "attention", "attention")
#: the classifier of timm's ``MlpHead`` (``use_mlp_head``), as timm's ConvFormer/CAFormer name it
_MLP_HEAD = "head.fc.fc2"

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


@register_preset(
    "pooling", anchor_params_m=11.92, anchor_gmacs=1.81, anchor_source="timm poolformer_s12"
)
def poolformer_s12(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """PoolFormer-S12 (timm ``poolformer_s12``: 11.92 M params), 224 px."""
    return _build(POOLFORMER_S12, pretrained, kwargs)


@register_preset(
    "sepconv", classifier=_MLP_HEAD, anchor_params_m=26.77, anchor_source="timm convformer_s18"
)
def convformer_s18(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """ConvFormer-S18 (timm ``convformer_s18``: 26.77 M params), 224 px: SepConv everywhere,
    StarReLU MLP, res scale in stages 3–4, MLP head."""
    return _build(MetaFormerCfg(depths=(3, 3, 9, 3), mixers=("sepconv",) * 4), pretrained, kwargs)


@register_preset(
    "sepconv+attention",
    classifier=_MLP_HEAD,
    anchor_params_m=26.34,
    anchor_gmacs=3.88,
    anchor_source="timm caformer_s18",
)
def caformer_s18(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """CAFormer-S18 (timm ``caformer_s18``: 26.34 M params), 224 px: SepConv in stages 1–2,
    attention (heads of 32) in stages 3–4."""
    return _build(MetaFormerCfg(depths=(3, 3, 9, 3), mixers=_SEPCONV2_ATTN2), pretrained, kwargs)


# CPU-sized layouts for 32-px images: a 3×3 stride-2 conv stem, so a 32-px image gives maps of
# 16/8/4/2 over the four stages (16 px: 8/4/2/1), the schedule of coatnet_nano and the Container
# nanos; ``stem_stride=1`` keeps 32/16/8/4 maps at four times the cost.
_NANO = dict(dims=(32, 64, 128, 256), stem="conv", stem_stride=2)


@register_preset("pooling", image_size=32)
def poolformer_nano(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """CPU-sized PoolFormer for 32-px images (pooling in every stage)."""
    cfg = dataclasses.replace(POOLFORMER_S12, depths=(2, 2, 6, 2), **_NANO)
    return _build(cfg, pretrained, kwargs)


@register_preset("sepconv", image_size=32, classifier=_MLP_HEAD)
def convformer_nano(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """CPU-sized ConvFormer for 32-px images (SepConv in every stage)."""
    cfg = MetaFormerCfg(depths=(2, 2, 3, 2), mixers=("sepconv",) * 4, **_NANO)
    return _build(cfg, pretrained, kwargs)


@register_preset("sepconv+attention", image_size=32, classifier=_MLP_HEAD)
def caformer_nano(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """CPU-sized CAFormer for 32-px images (SepConv, SepConv, attention, attention)."""
    cfg = MetaFormerCfg(depths=(2, 2, 3, 2), mixers=_SEPCONV2_ATTN2, **_NANO)
    return _build(cfg, pretrained, kwargs)


@register_preset("attention", image_size=32, classifier=_MLP_HEAD)
def attention_nano(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """CPU-sized pure-attention MetaFormer for 32-px images, DeiT-like: a relative-position bias
    whose table covers each stage's map at 32 px exactly (larger inputs get it resized)."""
    cfg = MetaFormerCfg(
        depths=(2, 2, 3, 2),
        mixers=("attention",) * 4,
        mixer_kwargs=tuple({"rel_pos": True, "rel_pos_base": s} for s in (16, 8, 4, 2)),
        **_NANO,
    )
    return _build(cfg, pretrained, kwargs)
