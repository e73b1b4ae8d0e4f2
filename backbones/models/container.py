"""Container (Container-Light, Container) on the shared skeleton.

Paper: Gao et al., *Container: Context Aggregation Network*, NeurIPS 2021
(https://arxiv.org/abs/2106.01401); the mixer is :mod:`unimix.backbones.mixers.container`.
:class:`ContainerCfg` follows the official Container-Light layout (allenai/container), and each
preset is declared below with :func:`~unimix.backbones.preset.register_preset`.

Guarantees (tested): ``container_light`` is within 2 % of the official 20.63 M parameters;
every preset runs any input size >= 1 px in one instance; timm's model API. The layout, why
``container`` keeps a local static path, and the departures from the official code:
docs/backbones.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from timm.layers import LayerNorm2d
from torch import nn

from ..mixers import MIX_MODES
from ..preset import register_preset
from .backbone import Backbone, BackboneCfg, refuse_pretrained, stage_cfgs

__all__ = [
    "ContainerCfg",
    "build_container",
    "container",
    "container_light",
    "container_light_nano",
    "container_nano",
]

_LAYER_NORM = partial(LayerNorm2d, eps=1e-5)


@dataclass(frozen=True)
class ContainerCfg:
    """A Container layout: per-stage widths, depths, MLP ratios and mixer modes.

    ``stem``: ``"patchify"`` (4×4/4, official) or ``"conv"`` (3×3/2 conv, nano presets).
    """

    dims: tuple[int, ...] = (64, 128, 320, 512)
    depths: tuple[int, ...] = (3, 4, 8, 3)
    mlp_ratios: tuple[float, ...] = (8.0, 8.0, 4.0, 4.0)
    modes: tuple[str, ...] = ("static", "static", "static", "sigmoid")
    stem: str = "patchify"
    head_dim: int = 32
    kernel_size: int = 5

    def __post_init__(self) -> None:
        n = len(self.dims)
        for name in ("depths", "mlp_ratios", "modes"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"ContainerCfg.{name}: expected {n} entries like dims, got {getattr(self, name)}"
                )
        bad = [m for m in self.modes if m not in MIX_MODES]
        if bad:
            raise ValueError(f"ContainerCfg.modes: expected one of {MIX_MODES}, got {bad[0]!r}")
        if self.stem not in ("patchify", "conv"):
            raise ValueError(f"ContainerCfg.stem: expected 'patchify' or 'conv', got {self.stem!r}")

    def backbone_cfg(self) -> BackboneCfg:
        """The skeleton's layout: the stem, 2×2/2 patch merges before stages 2–4, Container
        blocks, a final BatchNorm, a linear head, truncated-normal init of linear layers."""
        block_kwargs = [
            dict(mode=mode, mlp_ratio=ratio, head_dim=self.head_dim, kernel_size=self.kernel_size)
            for mode, ratio in zip(self.modes, self.mlp_ratios, strict=True)
        ]
        stages = stage_cfgs("container", self.dims, self.depths, block_kwargs, "patch", _LAYER_NORM)
        return BackboneCfg(
            stem=self.stem,
            stem_dim=self.dims[0],
            stem_stride=2,
            stem_norm=_LAYER_NORM,
            stages=stages,
            final_norm=nn.BatchNorm2d,
            init="trunc_normal_linear",
        )


def build_container(cfg: ContainerCfg, **kwargs: Any) -> Backbone:
    """``Backbone(cfg.backbone_cfg(), **kwargs)``; as in the official code ``drop_rate`` also
    drops inside the MLPs (unless ``proj_drop_rate`` is given)."""
    kwargs.setdefault("proj_drop_rate", kwargs.get("drop_rate", 0.0))
    return Backbone(cfg.backbone_cfg(), **kwargs)


# -- presets --------------------------------------------------------------------------------------

# CPU-sized, for 32-px images: 3×3/2 stem → maps of 16/8/4/2 over the stages (1×1 at 16 px)
_NANO = dict(dims=(32, 64, 128, 224), depths=(2, 2, 4, 2), stem="conv")


@register_preset(
    "container",
    anchor_params_m=20.63,
    anchor_gmacs=3.85,
    anchor_source="allenai/container container_v1_light",
)
def container_light(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """Container-Light (official code: 20.63 M params): static 5×5 stages 1–3, ``σ(s)`` mix in stage 4."""
    refuse_pretrained(pretrained, "container_light")
    return build_container(ContainerCfg(), **kwargs)


@register_preset("container")
def container(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """Container with ``α·A_dynamic + β·A_static`` (5×5 depthwise static path) in every stage."""
    refuse_pretrained(pretrained, "container")
    return build_container(ContainerCfg(modes=("affine",) * 4), **kwargs)


@register_preset("container", image_size=32)
def container_light_nano(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """CPU-sized Container-Light for 32-px images (widths 32–224, depths 2/2/4/2)."""
    refuse_pretrained(pretrained, "container_light_nano")
    return build_container(ContainerCfg(**_NANO), **kwargs)


@register_preset("container", image_size=32)
def container_nano(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """CPU-sized Container (α/β mix in every stage) for 32-px images (widths 32–224)."""
    refuse_pretrained(pretrained, "container_nano")
    return build_container(ContainerCfg(modes=("affine",) * 4, **_NANO), **kwargs)
