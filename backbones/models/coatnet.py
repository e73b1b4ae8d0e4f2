"""CoAtNet on the shared skeleton: MBConv stages, then relative-attention transformer stages.

Paper: Dai et al., *CoAtNet: Marrying Convolution and Attention for All Data Sizes*, NeurIPS 2021
(https://arxiv.org/abs/2106.04803). Sizes follow timm's ``coatnet_0_224``
(``timm/models/maxxvit.py``): stem 64 (two 3×3 convs, the first stride 2), stage widths
96/192/384/768, depths 2/3/5/2, layout C-C-T-T, MBConv expand 4 with SE, attention heads of 32
channels with a relative-position bias inside the softmax, MLP ratio 4, head = pool → LayerNorm →
768-wide tanh pre-logits → classifier. Every stage halves the resolution in its first block.

Guarantees (tested): ``coatnet_0`` is within 2 % of timm's 25.04 M parameters; one instance runs
at any input size ≥ 1 px (32, 16, 64, 96, 224 and odd sizes) — timm sizes its relative-position
tables at construction and fails at other resolutions, ours derive the bias for each input
(see :class:`~unimix.backbones.layers.RelPosBias`); every transformer mixer's ``trace`` reproduces its aggregation;
timm's model API (``forward_features``, ``forward_head(pre_logits=True)``,
``forward_intermediates``, ``num_features``, ``num_classes=0``, ``reset_classifier``).

Departures from timm, on purpose: downsampling average pools use ``ceil_mode`` so that odd maps
work (identical on even maps); attention is the plain fused kernel with the bias as an additive
mask (the same maths as timm's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from timm.layers import LayerNorm2d

from .backbone import Backbone, BackboneCfg, HeadCfg, StageCfg, refuse_pretrained

__all__ = ["CoAtNetCfg", "build_coatnet", "coatnet_0", "coatnet_nano"]


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

    def backbone_cfg(self) -> BackboneCfg:
        """The skeleton's layout: the ``"coatnet"`` stem, stages whose first block halves the
        resolution (MBConv or transformer blocks), a LayerNorm + ``tanh`` pre-logits head."""
        stages = []
        for i, (dim, depth, kind) in enumerate(
            zip(self.dims, self.depths, self.stage_types, strict=True)
        ):
            if kind == "C":
                block, kwargs = (
                    "mbconv",
                    dict(expand_ratio=self.expand_ratio, se_ratio=self.se_ratio),
                )
            else:
                block = "transformer"
                kwargs = dict(
                    head_dim=self.head_dim,
                    mlp_ratio=self.mlp_ratio,
                    rel_pos_base=self.rel_pos_base[i],
                )
            stages.append(
                StageCfg(block=block, dim=dim, depth=depth, stride=2, block_kwargs=kwargs)
            )
        return BackboneCfg(
            stem="coatnet",
            stem_dim=self.stem_width,
            stem_stride=self.stem_stride,
            stages=tuple(stages),
            head=HeadCfg(norm=LayerNorm2d, hidden_size=self.head_hidden_size),
            # before the shared skeleton a stage was a plain sequence of blocks
            legacy_keys=((r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2."),),
        )


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


def build_coatnet(cfg: CoAtNetCfg, **kwargs: Any) -> Backbone:
    """``Backbone(cfg.backbone_cfg(), **kwargs)``; ``num_features`` is the pre-logits width when
    ``cfg.head_hidden_size`` is set, as in timm."""
    return Backbone(cfg.backbone_cfg(), **kwargs)


def coatnet_0(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """CoAtNet-0 (timm ``coatnet_0_224``: 25.04 M params)."""
    refuse_pretrained(pretrained, "coatnet_0")
    return build_coatnet(COATNET_0, **kwargs)


def coatnet_nano(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """CPU-sized CoAtNet for 32-px images (C-C-T-T, widths 32–256)."""
    refuse_pretrained(pretrained, "coatnet_nano")
    return build_coatnet(COATNET_NANO, **kwargs)
