"""``features_only=True`` / ``out_indices`` for every registered preset: timm's FeatureGetterNet
over ``forward_intermediates``. Each returned map has ``feature_info``'s channels and the input
size divided by its reduction (sides rounded up); the maps equal the plain model's
``forward_intermediates``. Nano presets run real forwards at 32 px; the 224-px presets are built
and run on the meta device (shapes only, no memory, no init cost)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import timm
import torch
from timm.models._features import FeatureGetterNet

from unimix.backbones import PRESETS

NANO = [n for n, p in PRESETS.items() if p.nano]
FULL = [n for n, p in PRESETS.items() if not p.nano]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check_maps(model: torch.nn.Module, maps: list[torch.Tensor], size: int) -> None:
    info = model.feature_info
    assert len(maps) == len(info.out_indices)
    for fmap, chs, red in zip(maps, info.channels(), info.reduction(), strict=True):
        side = math.ceil(size / red)  # "same" padding / ragged pads: sides round up
        assert tuple(fmap.shape) == (2, chs, side, side)


def test_every_preset_is_covered() -> None:
    assert set(NANO) | set(FULL) == set(PRESETS) and len(NANO) >= 9
    assert all(timm.is_model("unimix_" + n) for n in PRESETS)


@pytest.mark.parametrize("name", NANO)
def test_nano_features_only_matches_forward_intermediates(name: str) -> None:
    torch.manual_seed(0)
    plain = timm.create_model("unimix_" + name, num_classes=0).eval()
    features = timm.create_model("unimix_" + name, features_only=True).eval()
    assert isinstance(features, FeatureGetterNet)
    missing = features.model.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing == []  # pruned: only the final norm / head keys are left over
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = features(x)
        expected = plain.forward_intermediates(x, indices=features.out_indices)[1]
    _check_maps(features, maps, 32)
    for got, want in zip(maps, expected, strict=True):
        torch.testing.assert_close(got, want)
    # the data config survives the wrapper
    assert features.pretrained_cfg["input_size"] == (3, 32, 32)


@pytest.mark.parametrize("name", FULL)
def test_full_presets_feature_maps_on_meta_device(name: str) -> None:
    with torch.device("meta"):
        model = timm.create_model("unimix_" + name, features_only=True)
        maps = model(torch.empty(2, 3, 64, 64))
    _check_maps(model, maps, 64)
    assert max(model.feature_info.reduction()) == (16 if "deit" in name else 32)


@pytest.mark.parametrize("name", ["poolformer_nano", "coatnet_nano", "deit_nano"])
def test_out_indices_select_maps(name: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model("unimix_" + name, features_only=True, out_indices=(0, 2)).eval()
    assert model.feature_info.out_indices == (0, 2) and model.out_indices == [0, 2]
    with torch.no_grad():
        maps = model(torch.randn(2, 3, 32, 32))
    _check_maps(model, maps, 32)
    # the wrapper keeps only the stages it needs (timm's prune_intermediate_layers)
    if hasattr(model.model, "stages"):
        assert len(model.model.stages) == 3
