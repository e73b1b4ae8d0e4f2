"""MetaFormer mixers and presets against references built here (loops) or by timm independently.

References: P − I and the depthwise Toeplitz band are built by explicit loops; timm's own
``metaformer`` modules and models (``timm.create_model("caformer_s18")``...) with our weights
copied in; timm's parameter counts (11.92 M / 26.77 M / 26.34 M) as literals.
"""

from __future__ import annotations

import time

import pytest
import timm
import torch
from timm.models import metaformer as timm_mf

from unimix.backbones.mixers import Attention, DepthwiseConv, Pooling, SepConv, TokenMLP
from unimix.backbones.models import metaformer as mf

NANOS = ["poolformer_nano", "convformer_nano", "caformer_nano", "attention_nano"]
FULL = {"poolformer_s12": 11.92e6, "convformer_s18": 26.77e6, "caformer_s18": 26.34e6}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the CPU is shared with other processes: one thread avoids OpenMP barriers waiting on a
    # descheduled thread, which made these small convs many times slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _pool_minus_identity(H: int, W: int) -> torch.Tensor:
    """P − I of a 3×3 stride-1 average pool that ignores padding, by explicit loops."""
    A = torch.zeros(H * W, H * W)
    for y in range(H):
        for x in range(W):
            window = [
                (y + dy, x + dx)
                for dy in (-1, 0, 1)
                for dx in (-1, 0, 1)
                if 0 <= y + dy < H and 0 <= x + dx < W
            ]
            for yy, xx in window:
                A[y * W + x, yy * W + xx] += 1.0 / len(window)
            A[y * W + x, y * W + x] -= 1.0
    return A


def _toeplitz(kernel: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """[C, N, N] band of a stride-1 depthwise conv with zero padding k//2, by explicit loops."""
    C, _, k, _ = kernel.shape
    r = k // 2
    A = torch.zeros(C, H * W, H * W)
    for y in range(H):
        for x in range(W):
            for a in range(k):
                for b in range(k):
                    iy, ix = y + a - r, x + b - r
                    if 0 <= iy < H and 0 <= ix < W:
                        A[:, y * W + x, iy * W + ix] = kernel[:, 0, a, b]
    return A


# -- mixers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(5, 6), (1, 1), (2, 3), (4, 4)])
def test_pooling_affinity_is_explicit_p_minus_i(size: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size)
    mixer = Pooling(3)
    expected = _pool_minus_identity(*size)
    torch.testing.assert_close(mixer.affinity(x), expected.expand(2, 3, -1, -1))
    # and the mixer itself equals timm's PoolFormer pooling
    torch.testing.assert_close(mixer(x), timm_mf.Pooling(3)(x))


@pytest.mark.parametrize("kernel_size, size", [(3, (5, 6)), (7, (4, 9)), (7, (1, 1))])
def test_depthwise_affinity_is_the_toeplitz_band(kernel_size: int, size: tuple[int, int]) -> None:
    torch.manual_seed(1)
    mixer = DepthwiseConv(4, kernel_size=kernel_size)
    x = torch.randn(2, 4, *size)
    expected = _toeplitz(mixer.conv.weight.detach(), *size)
    torch.testing.assert_close(mixer.affinity(x), expected.expand(2, -1, -1, -1))


def test_sepconv_affinity_is_its_depthwise_band_and_matches_timm() -> None:
    torch.manual_seed(2)
    mixer = SepConv(4).eval()
    x = torch.randn(2, 4, 5, 5)
    expected = _toeplitz(mixer.dwconv.weight.detach(), 5, 5)
    trace = mixer.trace(x)
    assert trace.affinity.shape == (2, 8, 25, 25) and "projection" in trace.note
    torch.testing.assert_close(trace.affinity, expected.expand(2, -1, -1, -1))
    ref = timm_mf.SepConv(4).eval()
    ref.pwconv1.weight.data.copy_(mixer.pwconv1.weight)
    ref.dwconv.weight.data.copy_(mixer.dwconv.weight)
    ref.pwconv2.weight.data.copy_(mixer.pwconv2.weight)
    ref.act1.load_state_dict(mixer.act.state_dict())
    torch.testing.assert_close(mixer(x), ref(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("rel_pos", [False, True])
def test_attention_rows_sum_to_one_at_several_sizes(rel_pos: bool) -> None:
    torch.manual_seed(3)
    mixer = Attention(16, head_dim=8, rel_pos=rel_pos, rel_pos_base=4).eval()
    for size in [(4, 4), (2, 3), (9, 7)]:  # inside, smaller than and larger than the bias table
        A = mixer.affinity(torch.randn(2, 16, *size))
        assert A.shape == (2, 2, size[0] * size[1], size[0] * size[1])
        assert (A >= 0).all()
        torch.testing.assert_close(A.sum(-1), torch.ones(A.shape[:-1]))


def test_attention_without_bias_matches_timm_metaformer_attention() -> None:
    torch.manual_seed(4)
    ours = Attention(64).eval()
    ref = timm_mf.Attention(64).eval()
    ref.qkv.weight.data.copy_(ours.qkv.weight[:, :, 0, 0])
    ref.proj.weight.data.copy_(ours.proj.weight[:, :, 0, 0])
    assert _n_params(ours) == _n_params(ref)
    x = torch.randn(2, 64, 3, 5)
    expected = ref(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(x.shape)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=0)


def test_token_mlp_rejects_another_token_count() -> None:
    mixer = TokenMLP(4, num_tokens=16)
    assert mixer(torch.randn(1, 4, 2, 8)).shape == (1, 4, 2, 8)  # any H×W with 16 tokens
    with pytest.raises(ValueError, match=r"built for 16 tokens, got a 8x8 map \(64 tokens\)"):
        mixer(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="num_tokens"):
        TokenMLP(4, num_tokens=0)


def test_bad_mixer_arguments() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        Pooling(4, pool_size=2)
    with pytest.raises(ValueError, match="kernel_size"):
        DepthwiseConv(4, kernel_size=4)
    with pytest.raises(ValueError, match=r"expected input \[B, 4, H, W\]"):
        SepConv(4)(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="unknown mixer 'nope'"):
        mf.MetaFormerCfg(mixers=("nope",) * 4)
    with pytest.raises(ValueError, match="MetaFormerCfg.depths: expected 4 entries"):
        mf.MetaFormerCfg(depths=(1, 1))


# -- presets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, anchor", list(FULL.items()))
def test_full_preset_params_match_timm(name: str, anchor: float) -> None:
    with torch.device("meta"):
        ours = getattr(mf, name)()
        ref = timm.create_model(name)
    assert abs(_n_params(ours) - anchor) / anchor < 0.02
    assert _n_params(ours) == _n_params(ref)


def _copy_into_timm(ours: torch.nn.Module, ref: torch.nn.Module) -> None:
    """Load our weights into timm's model: rename the few keys that differ, reshape 1×1 convs."""
    target = ref.state_dict()
    mapped = {}
    for key, value in ours.state_dict().items():
        k = key.replace(".mixer.", ".token_mixer.").replace(".gamma", ".scale")
        k = k.replace("token_mixer.act.", "token_mixer.act1.")
        mapped[k] = value.reshape(target[k].shape)
    ref.load_state_dict(mapped, strict=True)


@pytest.mark.parametrize("name", ["poolformer_s12", "caformer_s18"])
def test_full_preset_computes_what_timm_computes(name: str) -> None:
    torch.manual_seed(5)
    ours = getattr(mf, name)().eval()
    with torch.no_grad():  # make the (near-identity at init) scales matter
        for n, p in ours.named_parameters():
            if n.endswith(".gamma"):
                p.uniform_(0.5, 1.5)
    ref = timm.create_model(name).eval()
    _copy_into_timm(ours, ref)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", list(FULL))
def test_full_preset_forward_backward_at_224(name: str) -> None:
    model = getattr(mf, name)(num_classes=10)
    start = time.perf_counter()
    out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 10)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert time.perf_counter() - start < 20


@pytest.mark.parametrize("name", NANOS)
def test_nano_runs_every_dino_crop_in_one_instance(name: str) -> None:
    torch.manual_seed(6)
    model = getattr(mf, name)(num_classes=0, drop_path_rate=0.1)
    params = _n_params(model)
    assert 1e6 <= params <= 3e6, params
    assert model.num_features == 256
    for size in (32, 16, 64, 96, 7):
        model.zero_grad()
        feats = model(torch.randn(2, 3, size, size))
        assert feats.shape == (2, 256)
        feats.square().mean().backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)


def test_headless_model_returns_pre_logits_and_reset_classifier() -> None:
    model = mf.caformer_nano(num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model(x)
    torch.testing.assert_close(feats, model.forward_head(model.forward_features(x), True))
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.num_classes == 7
    torch.testing.assert_close(model.forward_head(model.forward_features(x), True), feats)
    model.reset_classifier(0)
    assert model(x).shape == (2, 256)


def test_forward_intermediates_shapes() -> None:
    model = mf.attention_nano(num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    final, feats = model.forward_intermediates(x)
    assert [tuple(f.shape) for f in feats] == [
        (2, 32, 16, 16),
        (2, 64, 8, 8),
        (2, 128, 4, 4),
        (2, 256, 2, 2),
    ]
    assert [32 // f.shape[-1] for f in feats] == [i["reduction"] for i in model.feature_info]
    torch.testing.assert_close(final, model.forward_features(x))
    last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [f.shape[1] for f in last2] == [128, 256]
    early = model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
    assert len(early) == 1 and early[0].shape == (2, 64, 8, 8)
    full = mf.poolformer_s12(num_classes=0)
    feats = full.forward_intermediates(torch.randn(1, 3, 96, 96), intermediates_only=True)
    assert [f.shape[-1] for f in feats] == [24, 12, 6, 3]


def test_patch_stem_rejects_too_small_input() -> None:
    model = mf.poolformer_s12(num_classes=0)
    assert model(torch.randn(1, 3, 3, 3)).shape == (1, 512)
    with pytest.raises(ValueError, match="patch stem: expected input .* H, W >= 3"):
        model(torch.randn(1, 3, 2, 2))


def test_single_resolution_token_mlp_model() -> None:
    # MLP-Mixer-like layout at a fixed 16-px input: stride-2 stem → 8/4/2/1 maps
    counts = (64, 16, 4, 1)
    cfg = mf.MetaFormerCfg(
        dims=(16, 16, 32, 32),
        depths=(1, 1, 1, 1),
        mixers=("mlp",) * 4,
        mixer_kwargs=tuple({"num_tokens": n} for n in counts),
        stem="conv",
        stem_stride=2,
    )
    model = mf.build_metaformer(cfg, num_classes=0)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 32)
    with pytest.raises(ValueError, match="built for 64 tokens"):
        model(torch.randn(2, 3, 32, 32))


def test_preset_accepts_cfg_overrides_and_rejects_pretrained() -> None:
    model = mf.poolformer_nano(num_classes=0, stem_stride=1)
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 256, 4, 4)
    with pytest.raises(ValueError, match="no pretrained weights"):
        mf.poolformer_nano(pretrained=True)


@pytest.mark.parametrize(
    "mixers",
    [("mbconv", "dwconv", "acmix", "container"), ("pooling", "sepconv", "attention", "container")],
)
def test_any_mixer_family_fits_the_skeleton(mixers: tuple[str, ...]) -> None:
    torch.manual_seed(7)
    cfg = mf.MetaFormerCfg(
        dims=(32, 32, 64, 64), depths=(1, 1, 1, 1), mixers=mixers, stem="conv", stem_stride=2
    )
    model = mf.build_metaformer(cfg, num_classes=0).eval()
    for size in (32, 16):
        model.zero_grad()
        feats = model(torch.randn(2, 3, size, size))
        assert feats.shape == (2, 64)
        feats.square().mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # every block's mixer explains itself at the map size it sees (16-px input: 8/4/2/1)
    x = model.stem(torch.randn(1, 3, 16, 16))
    for stage in model.stages:
        x = stage.downsample(x)
        block = stage.blocks[0]
        inp = block.norm1(x)
        trace = block.mixer.trace(inp)
        torch.testing.assert_close(trace.output, block.mixer(inp), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            trace.affinity @ trace.values, trace.aggregated, atol=1e-5, rtol=0
        )
        x = stage.blocks(x)
