"""MBConv and CoAtNet presets against references built here (Toeplitz band, timm's literals)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unimix.backbones.blocks import MBConvBlock
from unimix.backbones.layers import RelPosBias
from unimix.backbones.mixers import MBConv, RelPosAttention
from unimix.backbones.models import coatnet


def _toeplitz(kernel: torch.Tensor, H: int, W: int, stride: int) -> torch.Tensor:
    """[C, N_out, N_in] band of a depthwise conv (zero padding k//2), by explicit loops."""
    C, _, k, _ = kernel.shape
    r = k // 2
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    A = torch.zeros(C, Ho * Wo, H * W)
    for oy in range(Ho):
        for ox in range(Wo):
            for a in range(k):
                for b in range(k):
                    iy, ix = oy * stride + a - r, ox * stride + b - r
                    if 0 <= iy < H and 0 <= ix < W:
                        A[:, oy * Wo + ox, iy * W + ix] = kernel[:, 0, a, b]
    return A


@pytest.mark.parametrize("size, stride", [((6, 6), 1), ((5, 7), 2), ((1, 1), 2), ((3, 3), 1)])
def test_mbconv_affinity_is_the_depthwise_toeplitz_band(size: tuple[int, int], stride: int) -> None:
    torch.manual_seed(0)
    mixer = MBConv(8, 12, stride=stride).eval()
    x = torch.randn(2, 8, *size)
    trace = mixer.trace(x)
    expected = _toeplitz(mixer.dw.weight.detach(), *size, stride)
    torch.testing.assert_close(trace.affinity, expected.expand(2, -1, -1, -1))
    torch.testing.assert_close(trace.affinity @ trace.values, trace.aggregated, atol=1e-5, rtol=0)
    torch.testing.assert_close(trace.output, mixer(x), atol=1e-5, rtol=0)


def test_mbconv_block_matches_timm_layout() -> None:
    # literals read from timm coatnet_0_224: stages[0].blocks[0] / [1] parameter counts
    assert sum(p.numel() for p in MBConvBlock(64, 96, stride=2).parameters()) == 91736
    assert sum(p.numel() for p in MBConvBlock(96, 96).parameters()) == 97848


def test_mbconv_block_odd_and_tiny_maps() -> None:
    block = MBConvBlock(4, 8, stride=2)
    for size, expected in [(1, 1), (3, 2), (7, 4), (8, 4)]:
        assert block(torch.randn(2, 4, size, size)).shape == (2, 8, expected, expected)


def test_mbconv_bad_arguments() -> None:
    with pytest.raises(ValueError, match="stride: expected 1 or 2, got 3"):
        MBConv(4, stride=3)
    with pytest.raises(ValueError, match="kernel_size"):
        MBConv(4, kernel_size=2)
    with pytest.raises(ValueError, match=r"expected input \[B, 4, H, W\]"):
        MBConv(4)(torch.randn(1, 3, 4, 4))


def test_block_shortcut_is_pool_then_projection() -> None:
    block = MBConvBlock(4, 6, stride=2).eval()
    x = torch.randn(1, 4, 4, 4)
    expand = block.shortcut.expand
    expected = F.conv2d(F.avg_pool2d(x, 2), expand.weight, expand.bias)
    torch.testing.assert_close(block.shortcut(x), expected)


# -- CoAtNet presets ------------------------------------------------------------------------------


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _forward_backward(model: torch.nn.Module, size: int, batch: int = 1) -> torch.Tensor:
    feats = model(torch.randn(batch, 3, size, size))
    feats.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    model.zero_grad()
    return feats


def test_coatnet_0_params_match_timm() -> None:
    # timm coatnet_0_224: 25.04 M with a 1000-class head (brief §3)
    count = _params(coatnet.coatnet_0(num_classes=1000))
    assert abs(count - 25.04e6) / 25.04e6 < 0.02, count


def test_coatnet_nano_any_size_one_instance() -> None:
    torch.manual_seed(0)
    model = coatnet.coatnet_nano(num_classes=0)
    assert 1.0e6 <= _params(model) <= 3.0e6
    assert 1.0e6 <= _params(coatnet.coatnet_nano()) <= 3.0e6
    for size in (32, 16, 64, 96):
        feats = _forward_backward(model, size, batch=2)
        assert feats.shape == (2, model.num_features)


def test_coatnet_0_relative_bias_at_many_sizes_in_one_instance() -> None:
    model = coatnet.coatnet_0(num_classes=0).eval()
    with torch.no_grad():
        for size in (32, 64, 96, 224, 16):
            assert model(torch.randn(1, 3, size, size)).shape == (1, 768)


def test_coatnet_0_forward_backward_224() -> None:
    model = coatnet.coatnet_0(num_classes=10)
    out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 10)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_coatnet_0_timm_api() -> None:
    model = coatnet.coatnet_0(num_classes=0).eval()
    assert model.num_features == 768
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        feats = model.forward_features(x)
        assert feats.shape == (1, 768, 2, 2)
        assert model.forward_head(feats, pre_logits=True).shape == (1, 768)
        final, inter = model.forward_intermediates(x)
        assert [t.shape[1] for t in inter][-4:] == [96, 192, 384, 768]
    model.reset_classifier(5)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_rel_pos_bias_reads_the_table_by_offset() -> None:
    torch.manual_seed(0)
    rel = RelPosBias(num_heads=2, base_size=4)
    H, W = 3, 2
    bias = rel(H, W)
    assert bias.shape == (2, 6, 6)
    for i in range(H * W):
        for j in range(H * W):
            dy, dx = i // W - j // W, i % W - j % W
            torch.testing.assert_close(bias[:, i, j], rel.table[:, dy + 3, dx + 3])


def test_rel_pos_bias_on_a_grid_larger_than_its_table_depends_on_offset_only() -> None:
    torch.manual_seed(0)
    rel = RelPosBias(num_heads=3, base_size=2)
    H, W = 5, 4
    bias = rel(H, W)
    assert bias.shape == (3, 20, 20) and torch.isfinite(bias).all()
    for i in range(H * W):
        for j in range(H * W):
            # the same offset (shifted by one row) gives the same bias
            if i + W < H * W and j + W < H * W:
                torch.testing.assert_close(bias[:, i, j], bias[:, i + W, j + W])


def test_attention_affinity_equals_explicit_softmax_with_bias() -> None:
    torch.manual_seed(0)
    mixer = RelPosAttention(16, num_heads=2, dim_in=8, rel_pos_base=3)
    x = torch.randn(2, 8, 3, 2)  # fits the 3x3 base: the bias is read straight off the table
    N = 6
    w, b = mixer.qkv.weight[:, :, 0, 0], mixer.qkv.bias
    qkv = torch.einsum("oc,bcn->bon", w, x.flatten(2)) + b[:, None]  # [B, 3*16, N]
    q, k, v = qkv.view(2, 3, 2, 8, N).unbind(1)  # [B, heads, d, N]
    logits = torch.einsum("bhdi,bhdj->bhij", q, k) / 8**0.5
    for i in range(N):
        for j in range(N):
            dy, dx = i // 2 - j // 2, i % 2 - j % 2
            logits[:, :, i, j] += mixer.rel_pos.table[:, dy + 2, dx + 2]
    trace = mixer.trace(x)
    torch.testing.assert_close(trace.affinity, logits.softmax(-1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(trace.values, v.transpose(-1, -2), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(trace.affinity @ trace.values, trace.aggregated, atol=1e-5, rtol=0)
    torch.testing.assert_close(trace.output, mixer(x), atol=1e-5, rtol=0)
