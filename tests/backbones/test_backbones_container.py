"""Container mixer and models: affinity truth, the α/β limits, paper parameter counts, any size.

References are independent of the code under test: attention and the depthwise conv are
rebuilt from the mixer's weights with plain tensor maths, the static affinity is written out
entry by entry from the kernel, and parameter counts come from the official Container code.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unimix.backbones.mixers import ContainerMixer
from unimix.backbones.models.container import (
    ContainerCfg,
    container,
    container_light,
    container_light_nano,
    container_nano,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the CPU is shared: with several busy processes, every OpenMP barrier waits for a
    # descheduled thread (measured 20x slower on small convs); one thread is faster here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _mixer(mode: str, dim: int = 16, head_dim: int = 8, seed: int = 0) -> ContainerMixer:
    torch.manual_seed(seed)
    return ContainerMixer(dim, mode=mode, head_dim=head_dim).eval()


def _reference_paths(mixer: ContainerMixer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention path and the static path, each followed by the output projection, written
    out from the mixer's weights (no SDPA, no depthwise_affinity)."""
    B, C, H, W = x.shape
    weight = mixer.qkv.weight[:, :, 0, 0]
    qkv = torch.einsum("oc,bcn->bon", weight, x.flatten(2)) + mixer.qkv.bias[None, :, None]
    q, k, v = qkv.split(C, dim=1)  # each [B, C, N]
    heads, d = C // mixer.head_dim, mixer.head_dim
    qh, kh, vh = (t.reshape(B, heads, d, H * W) for t in (q, k, v))
    probs = torch.softmax(torch.einsum("bhdi,bhdj->bhij", qh, kh) / math.sqrt(d), dim=-1)
    attn = torch.einsum("bhij,bhdj->bhdi", probs, vh).reshape(B, C, H, W)
    static = F.conv2d(
        v.reshape(B, C, H, W), mixer.static.weight, padding=mixer.kernel_size // 2, groups=C
    )
    return mixer.proj(attn), mixer.proj(static)


def _toeplitz(weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[C, N, N]`` written entry by entry: output ``(i, j)`` reads input ``(i+di, j+dj)`` with
    kernel tap ``(di + r, dj + r)``; zero padding means out-of-image taps are dropped."""
    C, _, k, _ = weight.shape
    r = k // 2
    A = torch.zeros(C, height * width, height * width)
    for i in range(height):
        for j in range(width):
            for di in range(-r, r + 1):
                for dj in range(-r, r + 1):
                    y, x = i + di, j + dj
                    if 0 <= y < height and 0 <= x < width:
                        A[:, i * width + j, y * width + x] = weight[:, 0, di + r, dj + r]
    return A


# -- mixer: affinity truth --------------------------------------------------------------------------


def test_static_affinity_is_the_kernel_toeplitz_matrix() -> None:
    mixer = _mixer("static")
    with torch.no_grad():
        got = mixer.static_affinity(4, 7)
    torch.testing.assert_close(got, _toeplitz(mixer.static.weight.detach(), 4, 7))


def test_attention_rows_sum_to_one() -> None:
    mixer = _mixer("sigmoid")
    with torch.no_grad():
        probs = mixer.attention_probs(torch.randn(2, 16, 4, 5))
    assert probs.shape == (2, 2, 20, 20)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 20))
    assert (probs >= 0).all()


@pytest.mark.parametrize(("alpha", "beta", "path"), [(1.0, 0.0, 0), (0.0, 1.0, 1)])
def test_alpha_beta_limits_are_the_pure_paths(alpha: float, beta: float, path: int) -> None:
    mixer = _mixer("affine")
    with torch.no_grad():
        mixer.alpha.fill_(alpha)
        mixer.beta.fill_(beta)
        x = torch.randn(2, 16, 5, 4)
        expected = _reference_paths(mixer, x)[path]
        torch.testing.assert_close(mixer(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mixer.trace(x).output, expected, atol=1e-5, rtol=1e-5)


def test_affine_mix_is_linear_in_alpha_beta() -> None:
    mixer = _mixer("affine")
    with torch.no_grad():
        mixer.alpha.fill_(0.25)
        mixer.beta.fill_(1.5)
        x = torch.randn(1, 16, 3, 5)
        attn, static = _reference_paths(mixer, x)
        # proj(a·u + b·w) = a·proj(u) + b·proj(w) + (1 - a - b)·bias
        bias = mixer.proj.bias.view(1, -1, 1, 1)
        expected = 0.25 * attn + 1.5 * static + (1 - 0.25 - 1.5) * bias
        torch.testing.assert_close(mixer(x), expected, atol=1e-5, rtol=1e-5)


def test_light_gate_starts_at_half_and_saturates_to_each_path() -> None:
    mixer = _mixer("sigmoid")
    x = torch.randn(1, 16, 4, 4)
    with torch.no_grad():
        attn, static = _reference_paths(mixer, x)
        # official MixBlock: sa_weight starts at 0, so sigmoid(0) = 0.5 of each path
        torch.testing.assert_close(mixer(x), 0.5 * attn + 0.5 * static, atol=1e-5, rtol=1e-5)
        mixer.mix_logit.fill_(40.0)
        torch.testing.assert_close(mixer(x), attn, atol=1e-5, rtol=1e-5)
        mixer.mix_logit.fill_(-40.0)
        torch.testing.assert_close(mixer(x), static, atol=1e-5, rtol=1e-5)


def test_mixer_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        ContainerMixer(16, mode="dense")
    with pytest.raises(ValueError, match="divisible"):
        ContainerMixer(24, head_dim=16)
    with pytest.raises(ValueError, match="kernel_size"):
        ContainerMixer(16, kernel_size=4)
    with pytest.raises(ValueError, match=r"expected input \[B, 16, H, W\]"):
        ContainerMixer(16)(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="no attention path"):
        ContainerMixer(16, mode="static").attention_probs(torch.randn(1, 16, 2, 2))
    with pytest.raises(ValueError, match="ContainerCfg.modes"):
        ContainerCfg(modes=("static", "static", "static", "full"))


# -- models ---------------------------------------------------------------------------------------


def test_container_light_matches_the_official_parameter_count() -> None:
    # official allenai/container `container_v1_light`, 1000-class head: 20.63 M parameters
    model = container_light()
    assert abs(_params(model) / 1e6 - 20.63) / 20.63 < 0.02
    modes = [stage.blocks[0].mixer.mode for stage in model.stages]
    assert modes == ["static", "static", "static", "sigmoid"]
    assert [len(stage.blocks) for stage in model.stages] == [3, 4, 8, 3]
    assert model.stages[3].blocks[0].mixer.num_heads == 16  # official: 16 heads at dim 512
    assert model.num_features == 512


def test_container_full_mixes_in_every_stage() -> None:
    model = container(num_classes=0)
    assert all(b.mixer.mode == "affine" for stage in model.stages for b in stage.blocks)
    assert 20e6 < _params(model) < 25e6


@pytest.mark.parametrize("builder", [container_light_nano, container_nano])
def test_nano_sizes_and_any_input_size_in_one_instance(builder) -> None:
    torch.manual_seed(0)
    assert 1e6 <= _params(builder()) <= 3e6  # with the 1000-class head
    model = builder(num_classes=0)
    for size in (32, 16, 64, 96, 17, 1):
        model.train()
        x = torch.randn(2, 3, size, size)
        feats = model(x)
        assert feats.shape == (2, model.num_features), size
        if size in (32, 16):
            model.zero_grad()
            feats.square().mean().backward()
            grads = [p.grad for p in model.parameters() if p.requires_grad]
            assert all(g is not None and torch.isfinite(g).all() for g in grads), size


def test_timm_api_head_and_intermediates() -> None:
    torch.manual_seed(0)
    model = container_nano(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fmap = model.forward_features(x)
        assert fmap.shape == (2, 224, 2, 2)
        assert model(x).shape == (2, 10)
        pooled = model.forward_head(fmap, pre_logits=True)
        torch.testing.assert_close(pooled, fmap.mean((2, 3)))
        final, inter = model.forward_intermediates(x)
        assert [t.shape[-1] for t in inter] == [16, 8, 4, 2]
        assert [t.shape[1] for t in inter] == [32, 64, 128, 224]
        torch.testing.assert_close(final, fmap)
        only = model.forward_intermediates(x, indices=[1], intermediates_only=True, stop_early=True)
        torch.testing.assert_close(only[0], inter[1])
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16]
    assert {n.rsplit(".", 1)[-1] for n in model.no_weight_decay()} == {"alpha", "beta"}


def test_any_size_container_light_224_and_96() -> None:
    torch.manual_seed(0)
    model = container_light(num_classes=0).eval()
    with torch.no_grad():
        for size in (96, 50):
            assert model(torch.randn(1, 3, size, size)).shape == (1, 512)
