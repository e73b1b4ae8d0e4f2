"""The preset registry: every preset is a working timm model, parameter counts meet their anchors,
``unimix backbones`` prints the table, and the FLOP counter agrees with hand-counted MACs."""

from __future__ import annotations

import importlib
import json
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import unimix  # noqa: F401  (registers the presets)
from unimix.backbones import PRESETS, create_backbone, list_backbones
from unimix.backbones.cli import main_table
from unimix.backbones.stats import count_gmacs
from unimix.cli import main as unimix_main

NANO = [name for name in list_backbones() if name.endswith("_nano")]
FULL = [name for name in list_backbones() if not name.endswith("_nano")]
REQUIRED = {
    "poolformer_s12",
    "convformer_s18",
    "caformer_s18",
    "poolformer_nano",
    "convformer_nano",
    "caformer_nano",
    "attention_nano",
    "container_light",
    "container",
    "container_light_nano",
    "container_nano",
    "coatnet_0",
    "coatnet_nano",
    "acmix_resnet26",
    "acmix_resnet38",
    "acmix_resnet50",
    "acmix_nano",
    "deit_small",
    "deit_nano",
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the CPU is shared: with several busy processes, every OpenMP barrier waits for a
    # descheduled thread (measured 20x slower on small convs); one thread is faster here
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_list_backbones_has_every_family() -> None:
    names = list_backbones()
    assert set(names) >= REQUIRED
    assert len(names) == len(set(names))
    assert {f"unimix_{n}" for n in names} <= set(timm.list_models("unimix_*"))


@pytest.mark.parametrize("name", NANO)
def test_nano_forward_backward_at_dino_crop_sizes(name: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model(f"unimix_{name}", num_classes=0)
    # the CPU budget is about the backbone DINO trains (headless); MLP heads add more for 1000 classes
    assert 1e6 <= _params(model) <= 3e6
    model.train()
    for size in (32, 16):
        x = torch.randn(2, 3, size, size, requires_grad=True)
        feats = model(x)
        assert feats.shape == (2, model.num_features), size
        model.zero_grad()
        feats.square().mean().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, size
        for pname, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), (size, pname)
    with torch.no_grad():
        model.eval()
        for size in (64, 96):  # the same instance at larger crops
            assert model(torch.randn(1, 3, size, size)).shape == (1, model.num_features), size
        fmap = model.forward_features(torch.randn(1, 3, 32, 32))
        assert model.forward_head(fmap, pre_logits=True).shape == (1, model.num_features)


@pytest.mark.parametrize("name", FULL)
def test_full_preset_forward_backward_at_224_and_forward_at_96(name: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model(f"unimix_{name}", num_classes=0).train()
    x = torch.randn(1, 3, 224, 224, requires_grad=True)
    feats = model(x)
    assert feats.shape == (1, model.num_features)
    feats.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), pname
    with torch.no_grad():
        feats = model.eval()(torch.randn(1, 3, 96, 96))
    assert feats.shape == (1, model.num_features) and torch.isfinite(feats).all()


@pytest.mark.parametrize("name", [n for n, p in PRESETS.items() if p.anchor_params_m])
def test_parameter_count_within_two_percent_of_anchor(name: str) -> None:
    anchor = PRESETS[name].anchor_params_m
    params = _params(create_backbone(name)) / 1e6  # 1000-class head, as the papers count
    assert abs(params - anchor) / anchor < 0.02, (name, params, anchor)


def test_deit_small_is_timms_deit_and_takes_dino_crops() -> None:
    # timm deit_small_patch16_224: 22.05 M parameters
    model = create_backbone("unimix_deit_small", num_classes=0).eval()
    assert abs(_params(create_backbone("deit_small")) / 1e6 - 22.05) / 22.05 < 0.02
    assert type(model).__name__ == "VisionTransformer" and model.num_features == 384
    nano = create_backbone("deit_nano", num_classes=0)
    assert nano.patch_embed.patch_size == (4, 4) and nano.num_features == 192


def test_timm_api_reset_and_kwargs() -> None:
    model = create_backbone("container_light_nano", num_classes=10, drop_path_rate=0.1)
    assert model.get_classifier().out_features == 10
    model.reset_classifier(0)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, model.num_features)
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)


def test_unknown_name_and_pretrained_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet_nano'.*container_light"):
        create_backbone("resnet_nano")
    for name in ("deit_nano", "poolformer_nano"):  # timm's ViT and the skeleton
        with pytest.raises(ValueError, match="no pretrained weights are configured") as info:
            create_backbone(name, pretrained=True)
        assert "\n" not in str(info.value) and "local-dir:" in str(info.value)


def test_reimport_does_not_register_twice() -> None:
    from unimix.backbones import registry

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # timm warns when a name is overwritten
        importlib.reload(registry)
    assert timm.is_model("unimix_container_light")


# -- FLOP counting and the table ---------------------------------------------------------------------


class _Attention(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x.flatten(2).transpose(1, 2).reshape(1, 3, -1, 1).expand(1, 3, -1, 4).contiguous()
        return F.scaled_dot_product_attention(q, q, q)


def test_gmacs_match_hand_counted_multiply_adds() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)  # 8×8 outputs × 8 channels × 3·3·3 taps
    total, excl = count_gmacs(conv, 8)
    assert total == pytest.approx(8 * 8 * 8 * 27 / 1e9) and excl == total
    # attention on N = 36 tokens, 3 heads of 4: q·kᵀ and A·v each N·N·d MACs per head
    total, excl = count_gmacs(_Attention(), 6)
    assert total == pytest.approx(2 * 36 * 36 * 4 * 3 / 1e9) and excl == 0


def test_table_command_prints_anchors_and_json(tmp_path, capsys) -> None:
    out = tmp_path / "table.json"
    code = main_table(
        ["--names", "container_light,unimix_deit_small", "--no-flops", "--json", str(out)]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "container_light" in text and "20.63" in text and "22.05" in text
    rows = {r["preset"]: r for r in json.loads(out.read_text())}
    assert abs(rows["container_light"]["params_m"] - 20.63) / 20.63 < 0.02
    assert abs(rows["container_light"]["params_diff_pct"]) < 2
    head = (512 * 1000 + 1000) / 1e6  # the 1000-class linear head on 512 features
    light = rows["container_light"]
    assert light["headless_params_m"] == pytest.approx(light["params_m"] - head, abs=1e-6)


def test_table_counts_nano_gmacs_at_32_px(tmp_path, capsys) -> None:
    out = tmp_path / "nano.json"
    assert unimix_main(["backbones", "--names", "deit_nano", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["image_size"] == 32
    # deit_nano at 32 px: 64 patches + cls = 65 tokens, dim 192, 5 blocks, MLP ×4, 1000 classes
    n, d, depth = 65, 192, 5
    block = n * d * 3 * d + n * d * d + 2 * n * d * 4 * d  # qkv, proj, MLP
    attention = 2 * n * n * d  # q·kᵀ and A·v over all heads
    expected = 64 * 48 * d + depth * (block + attention) + d * 1000
    assert row["gmacs"] == pytest.approx(expected / 1e9, rel=1e-3)
    assert row["gmacs_excl_sdpa"] == pytest.approx((expected - depth * attention) / 1e9, rel=1e-3)


def test_table_rejects_unknown_names(capsys) -> None:
    assert main_table(["--names", "nope"]) == 2
    assert "error: --names: unknown preset 'nope'" in capsys.readouterr().err
