"""Container: one token mixer that sums a dynamic and a static affinity over shared values.

Paper: Gao, Lu, Li, Mottaghi, Kembhavi, *Container: Context Aggregation Network*, NeurIPS 2021
(https://arxiv.org/abs/2106.01401); official code: allenai/container (``models.py``, read for
facts, not copied). Every spatial aggregator is ``Y = (A·V)·W``; Container learns
``A = α·A_dynamic + β·A_static`` on one shared ``V``:

- ``A_dynamic = softmax(q kᵀ/√d)`` per head (self-attention; heads of ``head_dim`` channels);
- ``A_static`` = a **5×5 depthwise convolution** on ``V`` (a per-channel Toeplitz band).

:class:`ContainerMixer` has three modes:

- ``"affine"``: ``α·A_dynamic + β·A_static`` with learnable scalars ``α``, ``β`` (the paper's
  Container; both start at 0.5, the official Light block's starting point);
- ``"sigmoid"``: ``σ(s)·A_dynamic + (1 − σ(s))·A_static`` with one learnable ``s`` starting at 0
  (the official Container-Light stage-4 ``MixBlock``);
- ``"static"``: ``A_static`` only, values from a ``dim → dim`` 1×1 conv (the official
  Container-Light stage 1–3 ``CBlock``).

Choice, documented: the paper's full Container learns a dense ``N × N`` static affinity (an
MLP-Mixer-like matrix), which ties the model to one token count. DINO runs two crop sizes
through one instance, so our ``container`` preset uses the same local 5×5 depthwise static path
as Container-Light in every stage: any input size works. Its parameter count therefore differs
from the paper's 22.1 M Container, and we quote no anchor for it.

Models (:class:`Container`), following the official Container-Light layout: patchify stem
(4×4/4 conv + LayerNorm) and 2×2/2 patch merges (conv + LayerNorm) between stages; dims
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
- the static 5×5 depthwise conv has no bias, so the static path is a pure ``A·V``; a bias there
  would only add a per-channel constant that the following 1×1 projection's own bias absorbs
  (4,800 fewer parameters in ``container_light``, 0.02 %);
- the nano presets replace the 4×4 patchify by one 3×3 stride-2 conv (+ LayerNorm), as CIFAR
  networks shrink their stems, so 32-px images give 16/8/4/2 maps over the four stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from timm.layers import ClassifierHead, ConvMlp, DropPath, LayerNorm2d, trunc_normal_
from timm.models._features import feature_take_indices
from torch import nn

from .mbconv import depthwise_affinity
from .mixer_base import MixerTrace, TokenMixer

__all__ = [
    "Container",
    "ContainerBlock",
    "ContainerCfg",
    "ContainerMixer",
    "PatchMerge",
    "container",
    "container_light",
    "container_light_nano",
    "container_nano",
]

MixMode = Literal["affine", "sigmoid", "static"]
MIX_MODES = ("affine", "sigmoid", "static")


# -- mixer ----------------------------------------------------------------------------------------


class ContainerMixer(TokenMixer):
    """Container token mixer: ``[B, dim, H, W] → [B, dim, H, W]``.

    ``proj((w_dyn·A_dynamic + w_static·A_static) · V)`` where ``q, k, V`` come from one 1×1 conv
    (``V`` only in ``"static"`` mode) and ``(w_dyn, w_static)`` are ``(α, β)``, ``(σ(s), 1 − σ(s))``
    or ``(0, 1)`` by ``mode`` (see the module docstring).

    Args:
        dim: channels in and out.
        mode: ``"affine"``, ``"sigmoid"`` or ``"static"``.
        head_dim: channels per attention head (``dim`` must be divisible by it).
        kernel_size: side of the static depthwise kernel (odd).
        qkv_bias: bias of the 1×1 q/k/v conv (the official code has one).
        alpha_init, beta_init: starting ``α``, ``β`` of ``"affine"`` mode.
    """

    def __init__(
        self,
        dim: int,
        mode: MixMode = "affine",
        head_dim: int = 32,
        kernel_size: int = 5,
        qkv_bias: bool = True,
        alpha_init: float = 0.5,
        beta_init: float = 0.5,
    ) -> None:
        super().__init__()
        if mode not in MIX_MODES:
            raise ValueError(f"ContainerMixer mode: expected one of {MIX_MODES}, got {mode!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"ContainerMixer kernel_size: expected an odd int >= 1, got {kernel_size!r}"
            )
        head_dim = min(head_dim, dim)
        if dim % head_dim:
            raise ValueError(f"ContainerMixer: dim={dim} is not divisible by head_dim={head_dim}")
        self.dim, self.mode, self.kernel_size = dim, mode, kernel_size
        self.head_dim = head_dim
        self.num_heads = dim // head_dim
        self.scale = head_dim**-0.5
        dynamic = mode != "static"
        # channels of the 1×1 conv: [q | k | v], each `heads × head_dim` (the official order)
        self.qkv = nn.Conv2d(dim, 3 * dim if dynamic else dim, 1, bias=qkv_bias)
        self.static = nn.Conv2d(
            dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=False
        )
        self.proj = nn.Conv2d(dim, dim, 1)
        if mode == "affine":
            self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
            self.beta = nn.Parameter(torch.tensor(float(beta_init)))
        elif mode == "sigmoid":
            self.mix_logit = nn.Parameter(torch.zeros(()))

    def mix_weights(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(w_dynamic, w_static)``: scalars weighting the two affinities (``None``: no dynamic path)."""
        if self.mode == "affine":
            return self.alpha, self.beta
        if self.mode == "sigmoid":
            gate = torch.sigmoid(self.mix_logit)
            return gate, 1.0 - gate
        return None, self.static.weight.new_ones(())

    def _project(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """``q, k`` as ``[B, heads, N, d]`` (``None`` in static mode) and ``V`` as ``[B, dim, H, W]``."""
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise ValueError(
                f"ContainerMixer: expected input [B, {self.dim}, H, W], got {tuple(x.shape)}"
            )
        qkv = self.qkv(x)
        if self.mode == "static":
            return None, None, qkv
        B, _, H, W = x.shape
        q, k, _ = qkv.view(B, 3, self.num_heads, self.head_dim, H * W).transpose(-1, -2).unbind(1)
        return q, k, qkv[:, 2 * self.dim :]

    def _heads(self, v: torch.Tensor) -> torch.Tensor:
        """``[B, dim, H, W]`` → ``[B, heads, N, d]``."""
        B, _, H, W = v.shape
        return v.reshape(B, self.num_heads, self.head_dim, H * W).transpose(-1, -2)

    def _aggregate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The mixed values ``[B, dim, H, W]`` (fast path), plus ``q, k`` and ``V`` for tracing."""
        q, k, v = self._project(x)
        w_dyn, w_static = self.mix_weights()
        static = self.static(v)
        if w_dyn is None:
            return static, None, v
        B, _, H, W = v.shape
        attn = F.scaled_dot_product_attention(q, k, self._heads(v))  # [B, heads, N, d]
        attn = attn.transpose(-1, -2).reshape(B, self.dim, H, W)
        return w_dyn * attn + w_static * static, (q, k), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self._aggregate(x)[0])

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """``A_dynamic = softmax(q kᵀ/√d)``: ``[B, heads, N, N]`` (``O(N²)`` memory)."""
        if self.mode == "static":
            raise ValueError("ContainerMixer: mode='static' has no attention path")
        q, k, _ = self._project(x)
        return ((q * self.scale) @ k.transpose(-1, -2)).softmax(dim=-1)

    def static_affinity(self, height: int, width: int) -> torch.Tensor:
        """``A_static``: the 5×5 depthwise conv as a per-channel ``[dim, N, N]`` Toeplitz band."""
        return depthwise_affinity(self.static.weight, height, width, padding=self.kernel_size // 2)

    def trace(self, x: torch.Tensor) -> MixerTrace:
        """Per-channel view of the combined affinity.

        ``affinity`` ``[B, dim, N, N]`` = ``w_dyn · A_dynamic`` (each channel takes its head's
        attention) ``+ w_static · A_static``; ``values`` = the shared ``V`` as ``[B, dim, N, 1]``;
        ``aggregated`` = the fast path's mix ``[B, dim, N, 1]``; ``output`` = ``proj(mix)``.
        """
        mixed, qk, v = self._aggregate(x)
        B, C, H, W = v.shape
        w_dyn, w_static = self.mix_weights()
        affinity = (w_static * self.static_affinity(H, W)).unsqueeze(0).expand(B, -1, -1, -1)
        if qk is not None:
            q, k = qk
            probs = ((q * self.scale) @ k.transpose(-1, -2)).softmax(dim=-1)
            affinity = affinity + w_dyn * probs.repeat_interleave(self.head_dim, dim=1)
        return MixerTrace(
            affinity=affinity,
            values=v.flatten(2).unsqueeze(-1),
            aggregated=mixed.flatten(2).unsqueeze(-1),
            output=self.proj(mixed),
        )

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, mode={self.mode!r}, num_heads={self.num_heads}, "
            f"kernel_size={self.kernel_size}"
        )


# -- blocks ---------------------------------------------------------------------------------------


class ContainerBlock(nn.Module):
    """``x + dwconv3×3(x)``, then ``x + DropPath(mixer(BN(x)))``, then ``x + DropPath(MLP(BN(x)))``."""

    def __init__(
        self,
        dim: int,
        mode: MixMode = "affine",
        mlp_ratio: float = 4.0,
        head_dim: int = 32,
        kernel_size: int = 5,
        drop_path: float = 0.0,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.mixer = ContainerMixer(dim, mode=mode, head_dim=head_dim, kernel_size=kernel_size)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x + self.drop_path1(self.mixer(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class PatchMerge(nn.Module):
    """``conv(kernel, stride) → LayerNorm`` over channels: ``[B, C_in, H, W] → [B, C_out, ⌈H/s⌉, ⌈W/s⌉]``.

    With ``kernel == stride`` (non-overlapping patches, the official layout) a side that the
    stride does not divide is zero-padded on the right/bottom first, so any size ≥ 1 works.
    """

    def __init__(self, in_chans: int, dim: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.padding = kernel_size // 2 if kernel_size > stride else 0
        self.conv = nn.Conv2d(in_chans, dim, kernel_size, stride=stride, padding=self.padding)
        self.norm = LayerNorm2d(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            H, W = x.shape[-2:]
            x = F.pad(x, (0, (-W) % self.stride, 0, (-H) % self.stride))
        return self.norm(self.conv(x))


class ContainerStage(nn.Module):
    """``downsample`` (stem or patch merge) then ``blocks``."""

    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


# -- model ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerCfg:
    """A Container layout: per-stage widths, depths, MLP ratios and mixer modes.

    ``stem``: ``"patch"`` (4×4/4 patchify, official) or ``"conv"`` (3×3/2 conv, nano presets).
    """

    dims: tuple[int, ...] = (64, 128, 320, 512)
    depths: tuple[int, ...] = (3, 4, 8, 3)
    mlp_ratios: tuple[float, ...] = (8.0, 8.0, 4.0, 4.0)
    modes: tuple[str, ...] = ("static", "static", "static", "sigmoid")
    stem: str = "patch"
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
        if self.stem not in ("patch", "conv"):
            raise ValueError(f"ContainerCfg.stem: expected 'patch' or 'conv', got {self.stem!r}")


class Container(nn.Module):
    """Stem → four stages (each starts with a 2×2/2 patch merge, the first with the stem) →
    BatchNorm → global average pool → linear head.

    Args:
        cfg: layout (:class:`ContainerCfg`).
        num_classes: classifier outputs; 0 gives a headless model returning ``[B, num_features]``.
        in_chans: input channels.
        drop_rate: dropout before the classifier and inside the MLPs.
        drop_path_rate: stochastic depth, increasing linearly over all blocks.
        global_pool: timm pool type of the head (``"avg"``, ``"max"``, ``"avgmax"``...).
    """

    def __init__(
        self,
        cfg: ContainerCfg,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        rates = torch.linspace(0, drop_path_rate, sum(cfg.depths)).tolist()
        stages: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        dim_in, reduction = in_chans, 1
        for i, (dim, depth, ratio, mode) in enumerate(
            zip(cfg.dims, cfg.depths, cfg.mlp_ratios, cfg.modes, strict=True)
        ):
            if i > 0:
                down, reduction = PatchMerge(dim_in, dim, 2, 2), reduction * 2
            elif cfg.stem == "patch":
                down, reduction = PatchMerge(dim_in, dim, 4, 4), 4
            else:
                down, reduction = PatchMerge(dim_in, dim, 3, 2), 2
            first = sum(cfg.depths[:i])
            blocks = [
                ContainerBlock(
                    dim,
                    mode=mode,  # type: ignore[arg-type]
                    mlp_ratio=ratio,
                    head_dim=cfg.head_dim,
                    kernel_size=cfg.kernel_size,
                    drop_path=rates[first + j],
                    drop=drop_rate,
                )
                for j in range(depth)
            ]
            stages.append(ContainerStage(down, blocks))
            self.feature_info.append(dict(num_chs=dim, reduction=reduction, module=f"stages.{i}"))
            dim_in = dim
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(cfg.dims[-1])
        self.num_features = self.head_hidden_size = cfg.dims[-1]
        self.head = ClassifierHead(
            self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate
        )
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # the official init: truncated normal (std 0.02) on linear layers; convs keep torch's
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # timm model API ------------------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Mixing scalars (``alpha``, ``beta``, ``mix_logit``) are kept out of weight decay."""
        return {
            name
            for name, _ in self.named_parameters()
            if name.rsplit(".", 1)[-1] in ("alpha", "beta", "mix_logit")
        }

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` → normalised last map ``[B, dims[-1], ⌈H/32⌉, ⌈W/32⌉]`` (stride
        16 for the nano stem)."""
        return self.norm(self.stages(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (and classify unless ``pre_logits``): ``[B, num_features]`` or ``[B, num_classes]``."""
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
        """timm's ``forward_intermediates``: one map per stage (``norm`` applies the final
        BatchNorm to the last stage's map)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt: only 'NCHW' is supported, got {output_fmt!r}")
        last = len(self.stages) - 1
        take, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[: max_index + 1] if stop_early else self.stages
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(self.norm(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        if len(stages) == len(self.stages):
            x = self.norm(x)
        return x, intermediates


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


def _build(cfg: ContainerCfg, kwargs: dict[str, Any]) -> Container:
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return Container(cfg, **kwargs)


def container_light(pretrained: bool = False, **kwargs: Any) -> Container:
    """Container-Light (official code: 20.63 M params): static 5×5 stages 1–3, ``σ(s)`` mix in stage 4."""
    return _build(CONTAINER_LIGHT, kwargs)


def container(pretrained: bool = False, **kwargs: Any) -> Container:
    """Container with ``α·A_dynamic + β·A_static`` (5×5 depthwise static path) in every stage."""
    return _build(CONTAINER, kwargs)


def container_light_nano(pretrained: bool = False, **kwargs: Any) -> Container:
    """CPU-sized Container-Light for 32-px images (widths 32–224, depths 2/2/4/2)."""
    return _build(CONTAINER_LIGHT_NANO, kwargs)


def container_nano(pretrained: bool = False, **kwargs: Any) -> Container:
    """CPU-sized Container (α/β mix in every stage) for 32-px images (widths 32–224)."""
    return _build(CONTAINER_NANO, kwargs)
