"""Container: the official Container(-Light) layouts on the shared skeleton.

Paper and official code: see the mixer, :mod:`unimix.backbones.mixers.container`
(``A = α·A_dynamic + β·A_static`` on shared values; modes ``"affine"``, ``"sigmoid"``,
``"static"``). Container-Light uses ``"static"`` in stages 1–3 and ``"sigmoid"`` in stage 4; the
``container`` preset uses ``"affine"`` everywhere.

Choice, documented: the paper's full Container learns a dense ``N × N`` static affinity (an
MLP-Mixer-like matrix), which ties the model to one token count. DINO runs two crop sizes
through one instance, so our ``container`` preset uses the same local 5×5 depthwise static path
as Container-Light in every stage: any input size works. Its parameter count therefore differs
from the paper's 22.1 M Container, and we quote no anchor for it.

Models (:func:`build_container`), following the official Container-Light layout: ``"patchify"``
stem (4×4/4 conv + LayerNorm) and 2×2/2 patch merges (conv + LayerNorm) between stages; dims
64/128/320/512, depths 3/4/8/3, MLP ratios 8/8/4/4; every block is
``x + dwconv3×3(x)`` (position residual) → ``x + DropPath(mixer(BN(x)))`` →
``x + DropPath(MLP(BN(x)))`` with 1×1-conv MLPs; a final BatchNorm, global average pool and a
linear head. Heads are ``head_dim = 32`` channels (the official 16 heads of stage 4, dim 512).

Guarantees (tested): ``container_light`` is within 2 % of the official code's 20.63 M parameters
(1000-class head); ``trace(x).affinity @ trace(x).values`` reproduces each mixer's aggregation;
``(α, β) = (1, 0)`` is exactly the attention path and ``(0, 1)`` the static path; every preset
runs any input size ≥ 1 px in one instance; timm's model API.

Departures from the official code, on purpose:

- the official patch embeddings assert one input size; ours zero-pad a map whose side is not a
  multiple of the patch (right/bottom), so any size works (identical when it divides);
- the static 5×5 depthwise conv has no bias (see the mixer);
- the nano presets replace the 4×4 patchify by the ``"conv"`` stem (one 3×3 stride-2 conv +
  LayerNorm), as CIFAR networks shrink their stems, so 32-px images give 16/8/4/2 maps over the
  four stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from timm.layers import LayerNorm2d
from torch import nn

from ..mixers import MIX_MODES
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
            # before the shared skeleton the stem was stage 0's downsample
            legacy_keys=((r"^stages\.0\.downsample\.", "stem."),),
        )


# -- presets --------------------------------------------------------------------------------------

CONTAINER_LIGHT = ContainerCfg()
CONTAINER = ContainerCfg(modes=("affine",) * 4)
# CPU-sized, for 32-px images: 3×3/2 stem → maps of 16/8/4/2 over the stages (1×1 at 16 px)
CONTAINER_LIGHT_NANO = ContainerCfg(
    dims=(32, 64, 128, 224), depths=(2, 2, 4, 2), stem="conv", modes=CONTAINER_LIGHT.modes
)
CONTAINER_NANO = ContainerCfg(
    dims=(32, 64, 128, 224), depths=(2, 2, 4, 2), stem="conv", modes=("affine",) * 4
)


def build_container(cfg: ContainerCfg, **kwargs: Any) -> Backbone:
    """``Backbone(cfg.backbone_cfg(), **kwargs)``; as in the official code ``drop_rate`` also
    drops inside the MLPs (unless ``proj_drop_rate`` is given)."""
    kwargs.setdefault("proj_drop_rate", kwargs.get("drop_rate", 0.0))
    return Backbone(cfg.backbone_cfg(), **kwargs)


def container_light(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """Container-Light (official code: 20.63 M params): static 5×5 stages 1–3, ``σ(s)`` mix in stage 4."""
    refuse_pretrained(pretrained, "container_light")
    return build_container(CONTAINER_LIGHT, **kwargs)


def container(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """Container with ``α·A_dynamic + β·A_static`` (5×5 depthwise static path) in every stage."""
    refuse_pretrained(pretrained, "container")
    return build_container(CONTAINER, **kwargs)


def container_light_nano(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """CPU-sized Container-Light for 32-px images (widths 32–224, depths 2/2/4/2)."""
    refuse_pretrained(pretrained, "container_light_nano")
    return build_container(CONTAINER_LIGHT_NANO, **kwargs)


def container_nano(pretrained: bool = False, **kwargs: Any) -> Backbone:
    """CPU-sized Container (α/β mix in every stage) for 32-px images (widths 32–224)."""
    refuse_pretrained(pretrained, "container_nano")
    return build_container(CONTAINER_NANO, **kwargs)
