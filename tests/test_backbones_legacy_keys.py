"""State dicts written before the families shared one skeleton still load.

``tests/data/legacy_state_dict_keys.json`` holds the keys and shapes of four nano presets (one
per family, 10-class head) as the pre-skeleton model classes wrote them (recorded at 3d36421).
A state dict under those keys, holding the new model's tensors in the same order, must load
strictly and give the same outputs: a wrong or missing rename fails the load or moves a tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unimix.backbones import create_backbone

LEGACY = json.loads((Path(__file__).parent / "data" / "legacy_state_dict_keys.json").read_text())


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_legacy_state_dict_loads(name: str) -> None:
    torch.manual_seed(0)
    source = create_backbone(name, num_classes=10).eval()
    current = source.state_dict()
    legacy_keys = LEGACY[name]
    assert [list(t.shape) for t in current.values()] == [shape for _, shape in legacy_keys]
    legacy = {key: tensor for (key, _), tensor in zip(legacy_keys, current.values(), strict=True)}

    torch.manual_seed(1)
    target = create_backbone(name, num_classes=10).eval()
    target.load_state_dict(legacy, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_legacy_keys_load_under_a_prefix() -> None:
    """A DINO checkpoint holds the backbone under ``backbone.``: the rename honours the prefix."""
    legacy_keys = LEGACY["coatnet_nano"]
    wrapper = torch.nn.Module()
    wrapper.backbone = create_backbone("coatnet_nano", num_classes=10)
    values = list(wrapper.backbone.state_dict().values())
    state = {f"backbone.{key}": v for (key, _), v in zip(legacy_keys, values, strict=True)}
    assert any(k.startswith("backbone.stages.0.0.") for k in state)  # the old layout
    wrapper.load_state_dict(state, strict=True)
