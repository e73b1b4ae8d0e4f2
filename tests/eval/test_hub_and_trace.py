"""What the docs claim about torch.hub and TorchScript (issue 27 item 9): ``torch.hub.list`` on
a copy of this repository lists exactly the presets and ``from_export`` (no helper leaks in as
an entry point); ``torch.jit.trace`` (the supported TorchScript path, docs/export.md) gives the
eager model's features for every backbone family, at another batch size than the trace's."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import timm
import torch

from unimix.backbones import PRESETS

REPO = Path(__file__).resolve().parents[2]


def test_torch_hub_list_shows_the_presets_and_from_export_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # torch.hub.list downloads GitHub repositories only: hand it this checkout as the download
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", lambda *args, **kwargs: str(REPO))
    assert torch.hub.list("owner/unimix") == sorted([*PRESETS, "from_export"])


#: One preset per family (the skeleton's token mixers and stems, DeiT's timm ViT).
FAMILIES = [
    "poolformer_nano",
    "convformer_nano",
    "caformer_nano",
    "attention_nano",
    "container_light_nano",
    "container_nano",
    "coatnet_nano",
    "deit_nano",
]


@pytest.mark.parametrize("name", FAMILIES)
def test_torch_jit_trace_matches_the_eager_backbone(name: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model(f"unimix_{name}", num_classes=0).eval()
    example = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings, torch.jit's deprecation notice
        traced = torch.jit.trace(model, example, check_trace=False)
        other = torch.randn(3, 3, 32, 32)
        torch.testing.assert_close(traced(other), model(other), atol=1e-5, rtol=1e-5)
