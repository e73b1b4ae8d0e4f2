"""ACmix mixer and ACmix-ResNet presets against references built here (brute force, paper numbers)."""

from __future__ import annotations

import time

import pytest
import torch

from unimix.backbones.mixers import ACmix
from unimix.backbones.mixers import acmix as acmix_module
from unimix.backbones.models.acmix_resnet import (
    acmix_nano,
    acmix_resnet26,
    acmix_resnet38,
    acmix_resnet50,
)

SIZES = [(1, 1), (2, 2), (3, 5), (9, 9), (10, 7)]


def _qkv(mixer: ACmix, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k, v as [B, heads, d, H, W] from the 1×1 weights, by einsum."""
    w = mixer.qkv.weight[:, :, 0, 0]
    out = torch.einsum("oc,bchw->bohw", w, x) + mixer.qkv.bias.view(1, -1, 1, 1)
    B, _, H, W = x.shape
    return out.view(B, 3, mixer.num_heads, mixer.head_dim, H, W).unbind(1)


def _reference_attention(mixer: ACmix, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense masked attention with the paper's logit q_p·(k_j + pe_p − pe_j)/√d.

    Returns probabilities [B, heads, N, N] and the attended values [B, C, H, W].
    """
    q, k, v = _qkv(mixer, x)
    B, h, d, H, W = q.shape
    N = H * W
    coords = []
    for y in range(H):
        for xx in range(W):
            cx = -1.0 + 2.0 * xx / (W - 1) if W > 1 else -1.0
            cy = -1.0 + 2.0 * y / (H - 1) if H > 1 else -1.0
            coords.append((cx, cy))
    coords = torch.tensor(coords)  # [N, 2]
    pe = coords @ mixer.pos.weight[:, :, 0, 0].T + mixer.pos.bias  # [N, d]
    qf = q.reshape(B, h, d, N).transpose(-1, -2)  # [B, h, N, d]
    kf = k.reshape(B, h, d, N).transpose(-1, -2)
    vf = v.reshape(B, h, d, N).transpose(-1, -2)
    rel = kf[:, :, None, :, :] + pe[None, None, :, None, :] - pe[None, None, None, :, :]
    logits = (qf[:, :, :, None, :] * rel).sum(-1) / d**0.5  # [B, h, N(query), N(key)]
    r = mixer.window_size // 2
    mask = torch.zeros(N, N, dtype=torch.bool)
    for i in range(N):
        for j in range(N):
            mask[i, j] = abs(i // W - j // W) <= r and abs(i % W - j % W) <= r
    probs = logits.masked_fill(~mask, float("-inf")).softmax(-1)
    out = (probs @ vf).transpose(-1, -2).reshape(B, h * d, H, W)
    return probs, out


def _shift_zero_fill(t: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[..., y, x] = t[..., y + dy, x + dx], zero where that falls outside (torch.roll + clear)."""
    out = torch.roll(t, shifts=(-dy, -dx), dims=(-2, -1))
    H, W = t.shape[-2:]
    if dy > 0:
        out[..., H - dy :, :] = 0
    if dy < 0:
        out[..., :-dy, :] = 0
    if dx > 0:
        out[..., :, W - dx :] = 0
    if dx < 0:
        out[..., :, :-dx] = 0
    return out


def _reference_conv_path(mixer: ACmix, x: torch.Tensor) -> torch.Tensor:
    """fc over (q, k, v) of each channel index → k² maps, then explicit shifts summed per group."""
    q, k, v = _qkv(mixer, x)
    B, h, d, H, W = q.shape
    ks = mixer.kernel_size
    stacked = torch.cat([q, k, v], dim=1)  # [B, 3h, d, H, W]
    f = torch.einsum("sj,bjdhw->bsdhw", mixer.fc.weight[:, :, 0, 0], stacked)  # [B, k², d, H, W]
    out = torch.zeros(B, h * d, H, W)
    for o in range(h * d):
        group = o // h  # grouped conv: d groups with k² inputs and `heads` outputs each
        for s in range(ks * ks):
            dy, dx = s // ks - ks // 2, s % ks - ks // 2
            out[:, o] += _shift_zero_fill(f[:, s, group], dy, dx)
    return out


# the two attention paths: offset loop (in chunks of one image·head, or all at once) and dense
PATHS = {
    "loop-chunked": dict(dense_max_tokens=0, chunk_elements=1),
    "loop": dict(dense_max_tokens=0, chunk_elements=1 << 30),
    "dense": dict(dense_max_tokens=1 << 30, chunk_elements=1 << 19),
}


def _use_path(mixer: ACmix, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    mixer.dense_max_tokens = PATHS[path]["dense_max_tokens"]
    monkeypatch.setattr(acmix_module, "_CHUNK_ELEMENTS", PATHS[path]["chunk_elements"])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("size", SIZES)
def test_local_attention_equals_masked_full_attention(
    size: tuple[int, int], path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    mixer = ACmix(16, num_heads=4, window_size=7)
    _use_path(mixer, path, monkeypatch)
    x = torch.randn(2, 16, *size)
    probs, attended = _reference_attention(mixer, x)
    trace = mixer.trace(x)
    rate1 = mixer.rate1.item()
    assert trace.affinity.shape == (2, 4, size[0] * size[1], size[0] * size[1])
    torch.testing.assert_close(trace.affinity / rate1, probs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mixer.attention_probs(x), probs, atol=1e-5, rtol=1e-4)
    # fast path output == rate1 * reference attention + rate2 * reference conv path
    expected = rate1 * attended + mixer.rate2.item() * _reference_conv_path(mixer, x)
    torch.testing.assert_close(mixer(x), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("size", [(3, 5), (9, 9)])
def test_gradients_equal_autograd_through_the_reference(
    size: tuple[int, int], path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand-written backward (loop path) and the dense path's autograd against autograd
    through the brute-force reference, for the input and every parameter the reference uses
    (it applies the one-hot shifts explicitly, so the shift conv's own weights are left out)."""
    torch.manual_seed(3)
    mixer = ACmix(8, num_heads=2, window_size=5)
    _use_path(mixer, path, monkeypatch)
    x = torch.randn(2, 8, *size, requires_grad=True)
    weight = torch.randn(2, 8, *size)  # a generic upstream gradient

    def grads(output: torch.Tensor) -> list[torch.Tensor]:
        params = [p for name, p in mixer.named_parameters() if not name.startswith("shift.")]
        return torch.autograd.grad((output * weight).sum(), [x, *params])

    rate1, rate2 = mixer.rate1, mixer.rate2
    expected = grads(
        rate1 * _reference_attention(mixer, x)[1] + rate2 * _reference_conv_path(mixer, x)
    )
    for got, want in zip(grads(mixer(x)), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_one_hot_shift_conv_equals_explicit_shifts() -> None:
    torch.manual_seed(1)
    mixer = ACmix(8, num_heads=2, kernel_size=3)
    x = torch.randn(2, 8, 5, 6)
    q, k, v = _qkv(mixer, x)
    shifted = mixer.shift(mixer.conv_path_input(q, k, v))
    torch.testing.assert_close(shifted, _reference_conv_path(mixer, x), atol=1e-5, rtol=1e-4)
    assert mixer.rate1.item() == 0.5 and mixer.rate2.item() == 0.5


@pytest.mark.parametrize("size", SIZES)
def test_trace_rows_are_rate1_and_stay_in_the_window(size: tuple[int, int]) -> None:
    torch.manual_seed(2)
    mixer = ACmix(12, num_heads=3, window_size=5)
    with torch.no_grad():
        mixer.rate1.fill_(0.8)
        mixer.rate2.fill_(0.3)
    x = torch.randn(2, 12, *size)
    trace = mixer.trace(x)  # the generic contract: tests/backbones/test_backbones_mixers.py
    rows = trace.affinity.sum(-1) / 0.8
    torch.testing.assert_close(rows, torch.ones_like(rows))
    # sparse rows: nothing outside the 5×5 window
    assert (trace.affinity > 0).sum(-1).max() <= 25
    assert "conv path" in trace.note


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(dim=10, num_heads=4), "num_heads=4"),
        (dict(dim=8, window_size=4), "window_size"),
        (dict(dim=8, kernel_size=0), "kernel_size"),
    ],
)
def test_bad_arguments_name_the_value(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        ACmix(**kwargs)


def test_wrong_channel_count_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"expected input \[B, 8, H, W\]"):
        ACmix(8)(torch.randn(1, 4, 3, 3))


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "factory, paper_millions",
    [(acmix_resnet26, 10.6), (acmix_resnet38, 14.6), (acmix_resnet50, 18.6)],
)
def test_param_counts_match_the_paper(factory, paper_millions: float) -> None:
    count = _params(factory(num_classes=1000)) / 1e6
    assert abs(count - paper_millions) / paper_millions < 0.02, count


def test_shift_kernels_survive_resnet_init() -> None:
    model = acmix_nano(num_classes=0)
    for module in model.modules():
        if isinstance(module, ACmix):
            w = module.shift.weight
            assert set(w.unique().tolist()) == {0.0, 1.0}
            assert torch.equal(w.sum(dim=(1, 2, 3)), torch.full((w.shape[0],), 9.0))


def _check_forward_backward(model: torch.nn.Module, size: int, num_features: int) -> None:
    x = torch.randn(1, 3, size, size)
    feats = model(x)
    assert feats.shape == (1, num_features)
    feats.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad()


def test_acmix_nano_any_size_one_instance() -> None:
    torch.manual_seed(0)
    model = acmix_nano(num_classes=0)
    assert model.num_features == 1024
    assert 1.0e6 <= _params(model) <= 3.0e6
    assert 1.0e6 <= _params(acmix_nano()) <= 3.0e6  # with the 1000-class head too
    for size in (32, 16, 64, 96, 15):
        _check_forward_backward(model, size, 1024)
    pooled = model.forward_head(model.forward_features(torch.randn(2, 3, 8, 8)), pre_logits=True)
    assert pooled.shape == (2, 1024)


@pytest.mark.slow
def test_acmix_resnet50_forward_backward_224() -> None:
    model = acmix_resnet50(num_classes=10)
    start = time.perf_counter()
    out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 10)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert time.perf_counter() - start < 120
