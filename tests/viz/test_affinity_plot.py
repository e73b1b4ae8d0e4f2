"""The affinity PNG: collected rows are the mixers' own affinity rows, the CLI writes a PNG."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from unimix.backbones import create_backbone
from unimix.backbones.mixers import ACmix
from unimix.viz import collect_stage_affinities, load_image, render_affinity_grid
from unimix.viz.affinity_cli import main as main_affinity

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_backbone("acmix_nano", num_classes=0).eval()


def test_one_panel_per_stage_with_the_query_mapped_to_each_grid(model: torch.nn.Module) -> None:
    image = torch.randn(3, 32, 32)
    panels = collect_stage_affinities(model, image, (10, 21))
    assert [p.stage for p in panels] == ["stage 1", "stage 2", "stage 3", "stage 4"]
    assert all(p.mixer == "ACmix" for p in panels)
    # the stride-2 blocks pool *after* ACmix: stage k's mixer sees 32 / 2**(k-2) pixels
    assert [p.query_grid for p in panels] == [(32, 32), (32, 32), (16, 16), (8, 8)]
    assert [p.query_cell for p in panels] == [(10, 21), (10, 21), (5, 10), (2, 5)]
    for panel in panels:
        mixer = model.get_submodule(panel.module)
        assert isinstance(mixer, ACmix)
        # ACmix shows rate1 * softmax: each head's row sums to rate1 and stays in the 7x7 window
        torch.testing.assert_close(panel.row.sum(dim=(1, 2)), mixer.rate1.expand(4).detach())
        qy, qx = panel.query_cell
        nonzero = panel.row.abs().sum(0).nonzero()
        assert (nonzero[:, 0] - qy).abs().max() <= 3 and (nonzero[:, 1] - qx).abs().max() <= 3


def test_render_writes_a_png(model: torch.nn.Module, tmp_path: Path) -> None:
    image = load_image(None, 32, 0, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert image.shape == (3, 32, 32)
    panels = collect_stage_affinities(model, image, (16, 16))
    out = render_affinity_grid(
        [("acmix_nano", panels)], image, (16, 16), tmp_path / "sub" / "a.png", per_head=True
    )
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(out) as png:
        assert png.width > 600 and png.height > 400


def test_query_outside_the_image_is_a_clear_error(model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match=r"--query: 40,3 lies outside the 32x32"):
        collect_stage_affinities(model, torch.randn(3, 32, 32), (40, 3))


def test_cli_bad_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.png"
    assert main_affinity(["--image", str(missing), "--out", str(tmp_path / "x.png")]) == 2
    assert f"error: --image: no such file {str(missing)!r}" in capsys.readouterr().err
    assert main_affinity(["--query", "1;2", "--out", str(tmp_path / "x.png")]) == 2
    assert "--query: expected ROW,COL" in capsys.readouterr().err


def test_cli_writes_png_for_a_registered_preset(tmp_path: Path) -> None:
    out = tmp_path / "affinity.png"
    code = main_affinity(
        ["--model", "acmix_nano", "--synthetic", "--query", "8,20", "--out", str(out)]
    )
    assert code == 0
    assert out.read_bytes()[:8] == PNG_SIGNATURE
