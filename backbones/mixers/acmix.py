"""ACmix: self-attention and convolution sharing one set of 1×1 projections.

Paper: Pan et al., *On the Integration of Self-Attention and Convolution*, CVPR 2022
(https://arxiv.org/abs/2111.14556); official code: LeapLabTHU/ACmix. From the shared ``q, k, v``
an **attention path** attends to a ``window × window`` neighbourhood with the paper's coordinate
positional encoding, a **convolution path** maps the ``3·heads`` maps of each channel index to
``kernel²`` maps summed by a grouped shift convolution (one-hot kernels at init), and the output
is ``rate1 · attention + rate2 · convolution`` (learnable, 0.5 each).

Guarantees (tested): any input size >= 1×1 in one instance (window positions outside the image
are masked), ``trace(x).affinity @ trace(x).values`` reproduces the attention path, and the
mixer never strides (``[B, C, H, W] → [B, C, H, W]``). The departures from the official code
and how the window attention runs: docs/backbones.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import MixerTrace, TokenMixer

__all__ = ["ACmix", "window_mask"]


def _check_odd(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f"ACmix {name}: expected an odd int >= 1, got {value!r}")


def normalized_coords(height: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """Pixel coordinates scaled to ``[-1, 1]`` as in the paper: ``[1, 2, H, W]`` (x, then y)."""
    ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y]).unsqueeze(0)


def window_mask(height: int, width: int, window: int, device=None) -> torch.Tensor:
    """``[N, N]`` bool: key ``j`` lies in the ``window × window`` neighbourhood of query ``i``."""
    r = window // 2
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    ys, xs = ys.flatten(), xs.flatten()
    return ((ys[:, None] - ys[None, :]).abs() <= r) & ((xs[:, None] - xs[None, :]).abs() <= r)


def _window_attention(
    q: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Forward of :class:`_WindowAttention` in plain tensor ops (also used without autograd, so
    that ``torch.jit.trace`` records ops, not a Python function).

    Inputs are contiguous (the caller makes them so once, for both paths). Returns the output
    ``[M, d, H, W]``, the attention ``[M, window², H, W]`` and the offsets.
    """
    M, d, H, W = q.shape
    ry, rx = (kp.shape[-2] - H) // 2, (kp.shape[-1] - W) // 2
    offsets = [(dy, dx) for dy in range(2 * ry + 1) for dx in range(2 * rx + 1)]
    inside = F.pad(q.new_ones(1, 1, H, W), (rx, rx, ry, ry))
    outside = torch.stack([inside[0, 0, dy : dy + H, dx : dx + W] == 0 for dy, dx in offsets])
    attn = q.new_empty(M, len(offsets), H, W)
    out = torch.zeros_like(q)
    for c in _chunks(q):
        q_c, kp_c, vp_c, attn_c = q[c], kp[c], vp[c], attn[c]
        for j, (dy, dx) in enumerate(offsets):
            torch.sum(q_c * kp_c[:, :, dy : dy + H, dx : dx + W], dim=1, out=attn_c[:, j])
        attn_c.masked_fill_(outside.unsqueeze(0), float("-inf"))
        torch.softmax(attn_c, dim=1, out=attn_c)
        out_c = out[c]
        for j, (dy, dx) in enumerate(offsets):
            out_c.addcmul_(attn_c[:, j : j + 1], vp_c[:, :, dy : dy + H, dx : dx + W])
    return out, attn, offsets


class _WindowAttention(torch.autograd.Function):
    """Stride-1 neighbourhood attention on zero-padded keys/values, one window offset at a time.

    Hand-written because neither torch nor timm has CPU neighbourhood attention: ``unfold``
    copies keys and values ``window²`` times, and autograd through per-offset slices allocates a
    zeroed padded gradient for every slice. Here forward and backward loop over the offsets and
    accumulate into one buffer, so extra memory is the ``[B·heads, window², H, W]`` attention
    map only. Keys outside the image (the zero padding) are masked. The loops run over chunks of
    about :data:`_CHUNK_ELEMENTS` query elements, so each offset's operands stay in cache.

    Inputs (contiguous): ``q`` ``[M, d, H, W]`` (already scaled), ``kp`` and ``vp``
    ``[M, d, H + 2ry, W + 2rx]``.
    Output: ``[M, d, H, W]``.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor) -> torch.Tensor:
        out, attn, offsets = _window_attention(q, kp, vp)
        ctx.save_for_backward(q, kp, vp, attn)
        ctx.offsets = offsets
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, kp, vp, attn = ctx.saved_tensors
        H, W = q.shape[-2:]
        grad_out = grad_out.contiguous()
        grad_q, grad_kp, grad_vp = torch.zeros_like(q), torch.zeros_like(kp), torch.zeros_like(vp)
        for c in _chunks(q):
            q_c, kp_c, vp_c, attn_c, g_out = q[c], kp[c], vp[c], attn[c], grad_out[c]
            g_q, g_kp, g_vp = grad_q[c], grad_kp[c], grad_vp[c]
            g_attn = torch.empty_like(attn_c)
            for j, (dy, dx) in enumerate(ctx.offsets):
                window = (slice(None), slice(None), slice(dy, dy + H), slice(dx, dx + W))
                torch.sum(g_out * vp_c[window], dim=1, out=g_attn[:, j])
                g_vp[window].addcmul_(attn_c[:, j : j + 1], g_out)
            # softmax backward; masked entries have attn == 0, hence zero gradient
            g_logits = attn_c * (g_attn - (attn_c * g_attn).sum(dim=1, keepdim=True))
            for j, (dy, dx) in enumerate(ctx.offsets):
                window = (slice(None), slice(None), slice(dy, dy + H), slice(dx, dx + W))
                g = g_logits[:, j : j + 1]
                g_q.addcmul_(g, kp_c[window])
                g_kp[window].addcmul_(g, q_c)
        return grad_q, grad_kp, grad_vp


#: query elements (``M·d·H·W``) per chunk of :class:`_WindowAttention` (2 MiB of fp32).
_CHUNK_ELEMENTS = 1 << 19


def _chunks(q: torch.Tensor) -> list[slice]:
    """Slices of ``q``'s first dim holding about :data:`_CHUNK_ELEMENTS` elements each (one
    open slice when tracing, so a traced module works at any batch size)."""
    if torch.jit.is_tracing():
        return [slice(None)]
    step = max(1, _CHUNK_ELEMENTS // max(1, q[0].numel()))
    return [slice(i, i + step) for i in range(0, q.shape[0], step)]


class ACmix(TokenMixer):
    """ACmix token mixer: ``[B, C, H, W] → [B, C, H, W]``.

    Args:
        dim: channels ``C`` (input and output).
        num_heads: attention heads; ``C`` must be divisible by it (head dim ``d = C / heads``).
        window_size: side of the local attention window (odd).
        kernel_size: side of the convolution path's kernel (odd).
        qkv_bias: bias in the shared 1×1 projections (the official code has one).

    Attributes:
        dense_max_tokens: maps with at most this many positions (``H·W``) compute the window
            attention densely with a mask; larger ones loop over window offsets. Both give the
            same result; 256 (16×16) is the largest map on which dense was faster on CPU for a
            7×7 window (measurements in docs/backbones.md).
    """

    dense_max_tokens: int = 256

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        window_size: int = 7,
        kernel_size: int = 3,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(
                f"ACmix num_heads: dim={dim} is not divisible by num_heads={num_heads}"
            )
        _check_odd("window_size", window_size)
        _check_odd("kernel_size", kernel_size)
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = window_size
        self.kernel_size = kernel_size
        self.scale = self.head_dim**-0.5

        # Stage I: shared projections (q, k, v stacked in one conv; channel c = head·d + i).
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=qkv_bias)
        # Attention path: positional encoding from coordinates, shared by all heads.
        self.pos = nn.Conv2d(2, self.head_dim, 1)
        # Convolution path: fc over the 3·heads maps of each channel index → kernel² maps, then
        # kernel² shifts summed by a grouped conv (one group per channel index, `heads` outputs).
        k2 = kernel_size * kernel_size
        self.fc = nn.Conv2d(3 * num_heads, k2, 1, bias=False)
        self.shift = nn.Conv2d(
            k2 * self.head_dim,
            dim,
            kernel_size,
            padding=kernel_size // 2,
            groups=self.head_dim,
            bias=True,
        )
        self.rate1 = nn.Parameter(torch.full((1,), 0.5))
        self.rate2 = nn.Parameter(torch.full((1,), 0.5))
        self.reset_shift_kernel()

    @torch.no_grad()
    def reset_shift_kernel(self) -> None:
        """One-hot kernels: input map ``i`` of each group is read at kernel offset ``i``.

        Call again after a model-wide init (e.g. timm's ResNet kaiming init) overwrote it.
        """
        k = self.kernel_size
        weight = torch.zeros_like(self.shift.weight)  # [C, k², k, k]
        for i in range(k * k):
            weight[:, i, i // k, i % k] = 1.0
        self.shift.weight.copy_(weight)
        self.shift.bias.zero_()

    # -- pieces shared by forward and trace ------------------------------------------------------

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as ``[B, heads, d, H, W]``."""
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise ValueError(f"ACmix: expected input [B, {self.dim}, H, W], got {tuple(x.shape)}")
        B, _, H, W = x.shape
        q, k, v = self.qkv(x).view(B, 3, self.num_heads, self.head_dim, H, W).unbind(1)
        return q, k, v

    def _keys(self, k: torch.Tensor) -> torch.Tensor:
        """Keys with the positional term, ``k − pe``: the paper's logit ``q_p·(k_j + pe_p − pe_j)``
        less ``q_p·pe_p``, which is constant along the softmax row and cancels."""
        H, W = k.shape[-2:]
        pe = self.pos(normalized_coords(H, W, device=k.device, dtype=k.dtype))  # [1, d, H, W]
        return k - pe.unsqueeze(1)

    def conv_path_input(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The fc's ``kernel²`` maps per channel index: ``[B, d·kernel², H, W]`` (index ``i·k² + s``)."""
        B, h, d, H, W = q.shape
        qkv = torch.cat([q, k, v], dim=1).view(B, 3 * h, d * H * W)
        # the 1×1 conv ``fc`` as one matmul: on CPU mkldnn runs such a narrow conv slower
        f = torch.matmul(self.fc.weight.flatten(1), qkv).view(B, -1, d, H * W)  # [B, k², d, N]
        return f.transpose(1, 2).reshape(B, d * self.kernel_size**2, H, W)

    def _local_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Masked window attention: ``[B, heads, d, H, W]``.

        Maps of at most :attr:`dense_max_tokens` positions run dense attention with the window
        as a boolean mask (one fused ``scaled_dot_product_attention``); larger maps loop over the
        window offsets (:class:`_WindowAttention`), skipping offsets that can never land inside
        the map (same result), so a 2×2 map costs 3×3 offsets, not 7×7.
        """
        B, h, d, H, W = q.shape
        tokens = H * W
        if tokens <= self.dense_max_tokens:
            mask = window_mask(H, W, self.window_size, device=q.device)
            out = F.scaled_dot_product_attention(
                q.reshape(B, h, d, tokens).transpose(-1, -2),
                self._keys(k).reshape(B, h, d, tokens).transpose(-1, -2),
                v.reshape(B, h, d, tokens).transpose(-1, -2),
                attn_mask=mask,
                scale=self.scale,
            )  # [B, h, N, d]
            return out.transpose(-1, -2).reshape(B, h, d, H, W)
        r = self.window_size // 2
        ry, rx = min(r, H - 1), min(r, W - 1)
        pad = (rx, rx, ry, ry)
        # contiguous once here for both paths (channels-last inputs give strided views)
        kp = F.pad(self._keys(k).reshape(B * h, d, H, W), pad).contiguous()
        vp = F.pad(v.reshape(B * h, d, H, W), pad).contiguous()
        q = (q * self.scale).reshape(B * h, d, H, W).contiguous()
        if torch.is_grad_enabled() and not torch.jit.is_tracing():
            out = _WindowAttention.apply(q, kp, vp)
        else:  # no autograd needed: plain ops, which torch.jit.trace can record
            out = _window_attention(q, kp, vp)[0]
        return out.view(B, h, d, H, W)

    def _combine(self, attn_out: torch.Tensor, conv_out: torch.Tensor) -> torch.Tensor:
        B, h, d, H, W = attn_out.shape
        return self.rate1 * attn_out.reshape(B, h * d, H, W) + self.rate2 * conv_out

    # -- public API -------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._project(x)
        conv_out = self.shift(self.conv_path_input(q, k, v))
        return self._combine(self._local_attention(q, k, v), conv_out)

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Dense attention-path probabilities ``[B, heads, N, N]`` (rows sum to 1; zero outside
        each query's window). ``O(N²)`` memory: for inspection and tests."""
        q, k, _ = self._project(x)
        return self._dense_probs(q, k)

    def _dense_probs(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        B, h, d, H, W = q.shape
        qf = q.reshape(B, h, d, H * W).transpose(-1, -2) * self.scale
        kf = self._keys(k).reshape(B, h, d, H * W)
        logits = qf @ kf  # [B, h, N, N]
        mask = window_mask(H, W, self.window_size, device=q.device)
        return logits.masked_fill(~mask, float("-inf")).softmax(dim=-1)

    def trace(self, x: torch.Tensor) -> MixerTrace:
        """What ACmix did to ``x``.

        ``affinity = rate1 · A_attn`` ``[B, heads, N, N]`` (sparse rows: zero outside the window),
        ``values = v`` ``[B, heads, N, d]`` and ``aggregated = rate1 · (attention path)`` as the
        fast path computes it, so ``affinity @ values == aggregated``. The convolution path
        (``rate2 · shift-conv(fc(q, k, v))``) is added to ``output`` but is not an ``A·V`` over
        the same values, so it is not in ``affinity``; ``note`` says so.
        """
        q, k, v = self._project(x)
        B, h, d, H, W = q.shape
        attn_out = self._local_attention(q, k, v)
        conv_out = self.shift(self.conv_path_input(q, k, v))
        return MixerTrace(
            affinity=self.rate1 * self._dense_probs(q, k),
            values=v.reshape(B, h, d, H * W).transpose(-1, -2),
            aggregated=self.rate1 * attn_out.reshape(B, h, d, H * W).transpose(-1, -2),
            output=self._combine(attn_out, conv_out),
            note=(
                "affinity = rate1 * local-window attention (masked at borders); "
                "output also adds rate2 * conv path (fc over q,k,v + k*k shift conv), not shown"
            ),
        )

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, "
            f"kernel_size={self.kernel_size}"
        )
