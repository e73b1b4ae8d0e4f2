"""The preset registry: every preset is a working timm model, parameter counts meet their anchors,
``unimix backbones`` prints the table, and the FLOP counter agrees with hand-counted MACs."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import unimix  # noqa: F401  (registers the presets)
from unimix.backbones import PRESETS, create_backbone, list_backbones, registry
from unimix.backbones.backbones_cli import main as main_table
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


# -- where presets are declared, and what registers them ----------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "backbones.md"


def _python(code: str) -> str:
    """``python -c code`` in a fresh interpreter (nothing registered with timm yet): its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _first_conv_called(model: nn.Module, size: int) -> str:
    """The first convolution a forward pass calls on a 3-channel image (found by hooks)."""
    called: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(lambda *_, name=name: called.append(name))
    model(torch.zeros(1, 3, size, size, device="meta"))
    return called[0]


@pytest.mark.parametrize("name", list(PRESETS))
def test_declared_first_conv_and_classifier_are_the_models(name: str) -> None:
    with torch.device("meta"):
        model = create_backbone(name, num_classes=7).eval()
    cfg = model.pretrained_cfg
    size = PRESETS[name].image_size
    assert _first_conv_called(model, size) == cfg["first_conv"]
    assert model.get_submodule(cfg["first_conv"]).in_channels == 3
    classifier = model.get_submodule(cfg["classifier"])
    assert isinstance(classifier, nn.Linear) and classifier.out_features == 7


def test_presets_are_declared_in_their_family_files_only() -> None:
    families = [family.__name__ for family in registry.FAMILIES]
    modules = [preset.builder.__module__ for preset in PRESETS.values()]
    assert set(modules) == set(families)
    assert modules == sorted(modules, key=families.index)  # listed family by family
    # no preset table: no string in registry.py names a preset (docstrings aside)
    tree = ast.parse(Path(registry.__file__).read_text())
    literals = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert not literals & set(PRESETS)


def _doc_snippet(heading: str) -> str:
    section = DOC.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_adding_a_preset_is_one_edit_in_its_family_file() -> None:
    """The docs' block, appended to metaformer.py (in memory, in a fresh process) and nothing
    else, gives a preset timm, the registry and ``unimix backbones`` know, with the parameters
    of timm's own ``poolformer_s24``."""
    snippet = _doc_snippet("Adding a preset")
    family = REPO_ROOT / "backbones" / "models" / "metaformer.py"
    assert "def poolformer_s24" in snippet and "poolformer_s24" not in family.read_text()
    code = f"""
import importlib.abc, importlib.machinery, sys
from pathlib import Path

NAME, SNIPPET = "unimix.backbones.models.metaformer", {snippet!r}

class EditedFile(importlib.abc.Loader):
    def __init__(self, origin): self.origin = origin
    def create_module(self, spec): return None
    def exec_module(self, module):
        source = Path(self.origin).read_text() + "\\n\\n" + SNIPPET
        exec(compile(source, self.origin, "exec"), module.__dict__)

class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != NAME:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        spec.loader = EditedFile(spec.origin)
        return spec

sys.meta_path.insert(0, Finder())
import timm, torch
import unimix
from unimix.backbones import PRESETS, create_backbone
from unimix.cli import main

assert PRESETS["poolformer_s24"].family == "pooling"
with torch.device("meta"):
    ours = create_backbone("poolformer_s24")
    theirs = timm.create_model("poolformer_s24")
    hub = timm.create_model("unimix_poolformer_s24", features_only=True)
count = lambda model: sum(p.numel() for p in model.parameters())
print(count(ours), count(theirs), len(hub.feature_info))
main(["backbones", "--names", "poolformer_s24", "--no-flops"])
"""
    out = _python(code).splitlines()
    ours, theirs, stages = out[0].split()
    assert ours == theirs and stages == "4"
    (row,) = [line for line in out if line.startswith("poolformer_s24")]
    assert row.split()[1:3] == ["pooling", "21.39"] and "timm poolformer_s24" in row


@pytest.mark.parametrize(
    "first",
    [
        "from unimix.backbones.mixers import ACmix",  # its modules import timm half-way
        "from unimix.backbones.models import coatnet",
        "from unimix.backbones.layers.stems import create_stem",
    ],
)
def test_presets_register_whatever_backbones_module_is_imported_first(first: str) -> None:
    out = _python(
        f"import sys, unimix\n{first}\n"
        "assert 'timm' in sys.modules\n"
        "import timm\n"
        "print(timm.is_model('unimix_coatnet_nano'), len(timm.list_models('unimix_*')))"
    )
    assert out.split() == ["True", str(len(PRESETS))]


def test_public_api_is_small_and_imports_nothing_heavy() -> None:
    out = _python(
        "import json, sys\n"
        "import unimix.backbones as b\n"
        "heavy = sorted({'torch', 'timm', 'numpy'} & set(sys.modules))\n"
        "model = b.create_dino_backbone('unimix_poolformer_nano')\n"
        "print(json.dumps([heavy, b.__all__, isinstance(model, b.Backbone)]))"
    )
    heavy, public, is_backbone = json.loads(out)
    assert heavy == [] and is_backbone
    assert sorted(public) == sorted(
        ["create_backbone", "create_dino_backbone", "list_backbones", "PRESETS", "Preset"]
        + ["Backbone", "MIXERS", "MixerTrace", "TokenMixer"]
    )
