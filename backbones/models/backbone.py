"""The one skeleton every family is built on: stem → stages → (final norm) → pooled head.

Each stage is ``downsample → blocks``, its block type named from
:data:`~unimix.backbones.blocks.BLOCKS`; its first block may stride itself (CoAtNet, ResNet)
where a family does not downsample between stages. The family files only translate their
papers' layouts into a :class:`BackboneCfg` (timm's ``maxxvit.py`` idea, one skeleton with a
block type per stage, widened to four families; docs/backbones.md).

Guarantees (tested): timm's model API (``forward_features``, ``forward_head(pre_logits=True)``,
``forward_intermediates`` where index ``i`` is the output of stage ``i``,
``prune_intermediate_layers``, ``feature_info``, ``num_features``, ``num_classes=0``,
``reset_classifier``, ``set_grad_checkpointing``, ``no_weight_decay``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.layers import trunc_normal_
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq
from torch import nn

from ..blocks import BLOCKS
from ..layers import ConvDownsample, ConvNormPool, PoolHead, create_stem, stem_reduction
from ..mixers import TokenMixer

__all__ = [
    "INITS",
    "Backbone",
    "BackboneCfg",
    "HeadCfg",
    "Stage",
    "StageCfg",
    "refuse_pretrained",
    "stage_cfgs",
]

NormFactory = Callable[[int], nn.Module]
DOWNSAMPLES = ("none", "conv", "patch")
INITS = ("default", "trunc_normal", "trunc_normal_linear", "kaiming")


@dataclass(frozen=True)
class StageCfg:
    """One stage: ``downsample`` then ``depth`` blocks of type ``block`` writing ``dim`` channels.

    ``downsample``: ``"none"``, ``"conv"`` (norm → 3×3/2 conv) or ``"patch"`` (2×2/2 conv → norm);
    ``stride``: stride of the stage's first block; ``block_kwargs``: the block's own settings.
    """

    block: str
    dim: int
    depth: int
    downsample: str = "none"
    downsample_norm: NormFactory | None = None
    stride: int = 1
    block_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ValueError(
                f"StageCfg.block: expected one of {', '.join(BLOCKS)}, got {self.block!r}"
            )
        if self.downsample not in DOWNSAMPLES:
            raise ValueError(
                f"StageCfg.downsample: expected one of {', '.join(DOWNSAMPLES)}, got {self.downsample!r}"
            )
        if self.depth < 1 or self.dim < 1:
            raise ValueError(f"StageCfg: dim and depth must be >= 1, got {self.dim}, {self.depth}")


@dataclass(frozen=True)
class HeadCfg:
    """The pooled head (:class:`~unimix.backbones.layers.PoolHead`): norm of the pooled map,
    ``tanh`` pre-logits width, MLP classifier."""

    norm: NormFactory | None = None
    hidden_size: int | None = None
    mlp_classifier: bool = False


@dataclass(frozen=True)
class BackboneCfg:
    """A whole network.

    Attributes:
        stem, stem_dim, stem_stride, stem_norm: the stem (a kind from
            :data:`~unimix.backbones.layers.STEMS`), its width, stride and norm.
        stages: per-stage :class:`StageCfg`.
        final_norm: norm of the last map before the head (Container's BatchNorm), or None.
        head: :class:`HeadCfg`.
        init: ``"default"`` (torch's), ``"trunc_normal"`` (std 0.02 on convs and linears),
            ``"trunc_normal_linear"`` (linears only) or ``"kaiming"`` (fan-out normal on convs,
            residual branches' last BatchNorm at zero: timm's ResNet).
    """

    stem: str
    stem_dim: int
    stages: tuple[StageCfg, ...]
    stem_stride: int = 1
    stem_norm: NormFactory | None = None
    final_norm: NormFactory | None = None
    head: HeadCfg = HeadCfg()
    init: str = "default"

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(
                f"BackboneCfg.init: expected one of {', '.join(INITS)}, got {self.init!r}"
            )
        if not self.stages:
            raise ValueError("BackboneCfg.stages: expected at least one stage")


def refuse_pretrained(pretrained: bool, preset: str) -> None:
    """Presets are architectures: asking one for weights is a clear error, not a silent no-op."""
    if pretrained:
        raise ValueError(f"{preset}: no pretrained weights are published for unimix presets")


def stage_cfgs(
    block: str,
    dims: tuple[int, ...],
    depths: tuple[int, ...],
    block_kwargs: list[dict[str, Any]],
    downsample: str = "none",
    downsample_norm: NormFactory | None = None,
    strides: tuple[int, ...] | None = None,
) -> tuple[StageCfg, ...]:
    """One :class:`StageCfg` per width: stages after the first start with ``downsample`` (the first
    keeps the stem's resolution), ``strides[i]`` strides stage ``i``'s first block (default 1)."""
    strides = strides or (1,) * len(dims)
    return tuple(
        StageCfg(block, dim, depth, downsample if i else "none", downsample_norm, stride, kwargs)
        for i, (dim, depth, kwargs, stride) in enumerate(
            zip(dims, depths, block_kwargs, strides, strict=True)
        )
    )


class Stage(nn.Module):
    """``downsample`` (identity when none) then ``blocks``."""

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


def _downsample(cfg: StageCfg, dim: int, index: int) -> nn.Module:
    if cfg.downsample == "conv":
        return ConvDownsample(dim, cfg.dim, cfg.downsample_norm)
    if cfg.downsample == "patch":
        norm = cfg.downsample_norm(cfg.dim) if cfg.downsample_norm else None
        return ConvNormPool(
            dim, cfg.dim, 2, 2, 0, norm=norm, pad_ragged=True, name=f"stage {index}"
        )
    return nn.Identity()


def _stage(cfg: StageCfg, dim: int, index: int, rates: list[float], proj_drop: float) -> Stage:
    downsample = _downsample(cfg, dim, index)
    if cfg.downsample != "none":
        dim = cfg.dim
    blocks = []
    for j, rate in enumerate(rates):
        stride = cfg.stride if j == 0 else 1
        block_cls = BLOCKS[cfg.block]
        blocks.append(
            block_cls(
                dim, cfg.dim, stride=stride, drop_path=rate, proj_drop=proj_drop, **cfg.block_kwargs
            )
        )
        dim = cfg.dim
    return Stage(downsample, blocks)


class Backbone(nn.Module):
    """Stem → stages → final norm → pooled head, for every family.

    Args:
        cfg: layout (:class:`BackboneCfg`).
        num_classes: classifier outputs; 0 gives a headless backbone whose ``model(x)`` returns
            ``[B, num_features]``.
        in_chans: input channels.
        global_pool: timm pool type of the head (``"avg"``, ``"max"``, ``"avgmax"``...).
        drop_rate: dropout before the classifier.
        proj_drop_rate: dropout inside the blocks' MLPs (blocks without one accept only 0).
        drop_path_rate: stochastic depth, increasing linearly over all blocks.
    """

    def __init__(
        self,
        cfg: BackboneCfg,
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
        self.grad_checkpointing = False

        self.stem = create_stem(cfg.stem, in_chans, cfg.stem_dim, cfg.stem_stride, cfg.stem_norm)
        depths = [s.depth for s in cfg.stages]
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").split(depths)
        stages, self.feature_info = [], []
        dim, reduction = cfg.stem_dim, stem_reduction(cfg.stem, cfg.stem_stride)
        for i, (stage_cfg, stage_rates) in enumerate(zip(cfg.stages, rates, strict=True)):
            stages.append(_stage(stage_cfg, dim, i, stage_rates.tolist(), proj_drop_rate))
            reduction *= (2 if stage_cfg.downsample != "none" else 1) * stage_cfg.stride
            self.feature_info.append(
                dict(num_chs=stage_cfg.dim, reduction=reduction, module=f"stages.{i}")
            )
            dim = stage_cfg.dim
        self.stages = nn.Sequential(*stages)
        self.norm = cfg.final_norm(dim) if cfg.final_norm else nn.Identity()
        head = cfg.head
        self.head = PoolHead(
            dim,
            num_classes,
            global_pool,
            head.norm,
            head.hidden_size,
            head.mlp_classifier,
            drop_rate,
        )
        # timm's contract: `num_features` is what forward_head(pre_logits=True) returns
        self.num_features = self.head_hidden_size = self.head.num_features
        self._init_weights(cfg.init)

    def _init_weights(self, scheme: str) -> None:
        def trunc_normal(m: nn.Module, types: tuple[type[nn.Module], ...]) -> None:
            if isinstance(m, types):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        if scheme == "trunc_normal":
            self.apply(lambda m: trunc_normal(m, (nn.Conv2d, nn.Linear)))
        elif scheme == "trunc_normal_linear":
            self.apply(lambda m: trunc_normal(m, (nn.Linear,)))
        elif scheme == "kaiming":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()
        # mixers with a structured init (ACmix's one-hot shift kernels) restore it
        for m in self.modules():
            if hasattr(m, "reset_shift_kernel"):
                m.reset_shift_kernel()

    # timm model API ------------------------------------------------------------------------------

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters the mixers keep out of weight decay (Container's mixing scalars)."""
        return {
            f"{name}.{leaf}"
            for name, module in self.named_modules()
            if isinstance(module, TokenMixer)
            for leaf in module.no_weight_decay_names
            if isinstance(getattr(module, leaf, None), nn.Parameter)
        }

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New classifier with ``num_classes`` outputs (0: none); optionally a new pool type."""
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` → the normalised last map ``[B, C, H/r, W/r]`` (``r`` =
        ``feature_info[-1]["reduction"]``; sides rounded up, never below 1)."""
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool → norm → flatten → pre-logits → dropout → (classifier unless ``pre_logits``)."""
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
        """timm's ``forward_intermediates``: index ``i`` is the output of stage ``i`` (0-based),
        ``indices`` an int (last n) or a list; ``norm`` applies the final norm (where the family
        has one) to the last stage's map."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt: only 'NCHW' is supported, got {output_fmt!r}")
        last = len(self.stages) - 1
        take, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[: max_index + 1] if stop_early else self.stages
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(self.norm(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        if len(stages) == len(self.stages):
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last wanted one (and the head): timm's API."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        if max_index < len(self.stages) - 1:
            self.stages = self.stages[: max_index + 1]
            prune_head = prune_norm = True
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
            self.head.norm = nn.Identity()
            self.head.pre_logits = nn.Identity()
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            self.head.num_features = self.num_features
        return take
