"""CoAtNet on the shared skeleton: MBConv stages, then relative-attention transformer stages.

Paper: Dai et al., *CoAtNet: Marrying Convolution and Attention for All Data Sizes*, NeurIPS 2021
(https://arxiv.org/abs/2106.04803). :class:`CoAtNetCfg` follows timm's ``coatnet_0_224``
(``timm/models/maxxvit.py``), and each preset is declared below with
:func:`~unimix.backbones.preset.register_preset`.

Guarantees (tested): ``coatnet_0`` is within 2 % of timm's 25.04 M parameters; one instance runs
any input size >= 1 px (the relative-position bias is derived for each input, where timm sizes
its tables at construction); timm's model API. Layout and departures from timm:
docs/backbones.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from timm.layers import LayerNorm2d

from ..preset import register_preset
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
        )


def build_coatnet(cfg: CoAtNetCfg, **kwargs: Any) -> Backbone:
    """``Backbone(cfg.backbone_cfg(), **kwargs)``; ``num_features`` is the pre-logits width when
    ``cfg.head_hidden_size`` is set, as in timm."""
    return Backbone(cfg.backbone_cfg(), **kwargs)


# -- presets (the stem's first convolution reads the image: ``stem.conv1``) -----------------------


@register_preset(
    "coatnet",
    first_conv="stem.conv1",
    anchor_params_m=25.04,
    anchor_gmacs=4.39,
    anchor_source="timm coatnet_0_224",
)
def coatnet_0(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """CoAtNet-0 (timm ``coatnet_0_224``: 25.04 M params)."""
    refuse_pretrained(pretrained, "coatnet_0")
    return build_coatnet(CoAtNetCfg(), **kwargs)


@register_preset("coatnet", image_size=32, first_conv="stem.conv1")
def coatnet_nano(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """CPU-sized CoAtNet for 32-px images (C-C-T-T, widths 32–256). A stride-1 stem, so 32 px
    gives maps of 16/8/4/2 over the four stages (transformer stages on 4×4 and 2×2 tokens)."""
    refuse_pretrained(pretrained, "coatnet_nano")
    cfg = CoAtNetCfg(
        dims=(32, 64, 128, 256),
        depths=(1, 2, 3, 2),
        stem_width=32,
        stem_stride=1,
        rel_pos_base=(16, 8, 4, 2),
        head_hidden_size=None,
    )
    return build_coatnet(cfg, **kwargs)
