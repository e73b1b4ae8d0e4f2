"""The folder recipe sized from the data (unimix.ssl.folder_recipe, unimix.data.image_stats).

Each sizing rule is checked on a folder built to trip it (the printed block and the config
must both say what the set is), against values computed here by hand or with numpy; the
precedence (override > recipe file > the data > defaults) on real config loads; the mirror
score against its exchangeability argument (0.5 on a mirror-invariant set) and on sets whose
orientation carries meaning.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from unimix.data.image_stats import ImageStats, image_stats, mirror_score
from unimix.ssl.config import load_pretrain_config
from unimix.ssl.folder_recipe import SIZED_KEYS, choose, given_keys, size_from_data

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ sets on disk
def _write(folder: Path, images: list[np.ndarray], classes: int = 2) -> Path:
    for i, pixels in enumerate(images):
        target = folder / f"c{i % classes}"
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target / f"{i:04d}.png")
    return folder


def _noise(n: int, side: int, gray: bool, seed: int = 0) -> list[np.ndarray]:
    """Content everywhere, mirror-invariant by construction (i.i.d. pixels)."""
    rng = np.random.default_rng(seed)
    if gray:
        return [
            np.repeat(rng.integers(0, 256, (side, side, 1), dtype=np.uint8), 3, 2) for _ in range(n)
        ]
    return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n)]


def _oriented(n: int, side: int = 24, seed: int = 0) -> list[np.ndarray]:
    """Gray images of an 'L'-like stroke pattern always facing one way (like text): a vertical
    bar on the left and a foot to the right, at random thickness, length, position and ink."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = np.full((side, side), float(rng.uniform(200, 250)))
        top, left = rng.integers(2, 6), rng.integers(4, 8)
        height, width, bar = rng.integers(12, 17), rng.integers(7, 11), rng.integers(2, 4)
        ink = rng.uniform(0, 60)
        img[top : top + height, left : left + bar] = ink
        img[top + height - bar : top + height, left : left + width] = ink
        img += rng.normal(0, 4, img.shape)
        out.append(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, 2))
    return out


def _centred(n: int, side: int = 28, seed: int = 0) -> list[np.ndarray]:
    """A dark disc near the centre of a flat light image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    out = []
    for _ in range(n):
        cy, cx = side / 2 + rng.uniform(-1, 1, 2)
        disc = np.hypot(yy - cy, xx - cx) < side * rng.uniform(0.12, 0.2)
        img = np.where(disc, rng.uniform(0, 60), 220.0)
        out.append(np.repeat(img.astype(np.uint8)[..., None], 3, 2))
    return out


def _sized(folder: Path, *overrides: str) -> tuple[object, str]:
    """The config ``-c folder data.dataset=folder overrides`` resolves to, and the block."""
    from unimix.config import load_config
    from unimix.ssl.config import RECIPES, PretrainConfig

    args = [f"data.dataset={folder}", *overrides]
    cfg = load_config(PretrainConfig, "folder", args, presets=RECIPES)
    stream = io.StringIO()
    return size_from_data(cfg, "folder", args, presets=RECIPES, stream=stream), stream.getvalue()


def _line(block: str, key: str) -> str:
    """The block's line that sets ``key``."""
    found = [line for line in block.splitlines()[1:] if f"{key}=" in line]
    assert len(found) == 1, block
    return found[0]


# ------------------------------------------------------------------------------ image_stats
def test_stats_count_sides_colour_and_moments_match_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (s, s + 3, 3), dtype=np.uint8) for s in (10, 12, 12, 20, 40)]
    images += _noise(3, 16, gray=True)
    stats = image_stats(images)  # a plain list of arrays is a map-style dataset
    assert stats.count == stats.sampled == 8
    assert stats.side == int(np.median([10, 12, 12, 20, 40, 16, 16, 16]))
    assert (stats.min_side, stats.max_side) == (10, 40)
    assert stats.gray_share == pytest.approx(3 / 8)
    pixels = np.concatenate([i.reshape(-1, 3) for i in images]).astype(np.float64) / 255
    np.testing.assert_allclose(stats.mean, pixels.mean(0), atol=1e-4)
    np.testing.assert_allclose(stats.std, pixels.std(0), atol=1e-4)


def test_stats_sample_is_fixed_and_bounded() -> None:
    images = _noise(40, 8, gray=False)
    a, b = image_stats(images, sample=10), image_stats(images, sample=10)
    assert a == b and a.sampled == 10 and a.count == 40
    assert image_stats(images, sample=10, seed=1) != a


def test_centre_share_separates_centred_from_spread_content() -> None:
    assert image_stats(_centred(60)).centre_share > 0.8  # all content in the middle
    assert image_stats(_noise(60, 28, gray=True)).centre_share == pytest.approx(0.25, abs=0.03)


def test_mirror_score_is_one_half_on_a_mirror_invariant_set_and_high_on_oriented_content() -> None:
    invariant = [np.asarray(Image.fromarray(i).resize((20, 20))) for i in _oriented(1000, seed=1)]
    rng = np.random.default_rng(0)
    # the same strokes, each mirrored or not at random: the set no longer has a handedness
    invariant = [i[:, ::-1] if rng.random() < 0.5 else i for i in invariant]
    thumbs = np.stack([i.mean(2) for i in invariant])
    assert mirror_score(thumbs, np.fliplr) == pytest.approx(0.5, abs=0.05)
    oriented = np.stack([i.mean(2) for i in _oriented(1000, seed=1)])
    assert mirror_score(oriented, np.fliplr) > 0.9
    assert mirror_score(oriented, np.rot90) > 0.9


def test_mirror_score_of_rendered_text_and_of_natural_images(cifar10_root: Path) -> None:
    from unimix.bench.folder_sets import GLYPHS, find_fonts, render_glyph
    from unimix.data import build_dataset

    fonts = find_fonts()
    glyphs = []
    for i in range(400):
        rng = np.random.default_rng([5, i])
        char = "bdpq2345679FGJLNPRSZ"[i % 20]
        assert any(char == c for _, c in GLYPHS)
        glyphs.append(np.repeat(render_glyph(char, fonts[i % len(fonts)], rng)[..., None], 3, 2))
    assert image_stats(glyphs).mirror_score >= 0.58
    photos = image_stats(build_dataset(cifar10_root, "test"))
    assert abs(photos.mirror_score - 0.5) < 0.08  # the threshold sits far above it


# ------------------------------------------------------------------------------ one test per rule
def test_view_size_is_the_images_side_within_16_and_32(tmp_path: Path) -> None:
    for side, expected in [(20, 20), (28, 28), (30, 28), (64, 32), (13, 16)]:
        cfg, block = _sized(_write(tmp_path / f"s{side}", _noise(8, side, gray=False)))
        assert cfg.augment.global_size == expected, side
        assert cfg.augment.local_size == max(8, expected // 2 // 4 * 4)
        assert cfg.augment.num_local == 0
        line = _line(block, "augment.global_size")
        assert f"augment.global_size={expected} " in line and f"images of {side} px" in line
    assert "CPU-sized" in _line(_sized(tmp_path / "s64")[1], "augment.global_size")


def test_local_crops_follow_a_view_size_you_set(tmp_path: Path) -> None:
    folder = _write(tmp_path / "big", _noise(8, 64, gray=False))
    cfg, block = _sized(folder, "augment.global_size=48")
    assert (cfg.augment.global_size, cfg.augment.num_local, cfg.augment.local_size) == (48, 2, 24)
    assert "augment.global_size=48 (yours)" in block and "augment.num_local=2" in block
    cfg, _ = _sized(folder, "augment.global_size=48", "augment.num_local=0")
    assert cfg.augment.num_local == 0


def test_crop_scale_keeps_centred_content(tmp_path: Path) -> None:
    cfg, block = _sized(_write(tmp_path / "centred", _centred(30)))
    assert tuple(cfg.augment.global_scale) == (0.7, 1.0)  # share > 0.8, capped at 0.7
    assert "content centred" in _line(block, "augment.global_scale")
    assert "at least 70% of the image" in _line(block, "augment.global_scale")
    cfg, block = _sized(_write(tmp_path / "spread", _noise(30, 28, gray=True)))
    assert tuple(cfg.augment.global_scale) == (0.3, 1.0)  # share 0.25, floored at 0.3
    assert "content spread" in _line(block, "augment.global_scale")
    for share, low in [(0.32, 0.3), (0.46, 0.5), (0.54, 0.5), (0.72, 0.7), (0.66, 0.7)]:
        stats = ImageStats(100, 100, 28, 28, 28, 1.0, (0.5,) * 3, (0.2,) * 3, share, 0.5, 0.5)
        chosen = {c.key: c.value for c in choose(stats)}
        assert chosen["augment.global_scale"] == [low, 1.0], share


def test_flips_are_off_for_oriented_content_only(tmp_path: Path) -> None:
    cfg, block = _sized(_write(tmp_path / "text", _oriented(200)))
    assert cfg.augment.flip_p == 0.0
    assert "no flips" in _line(block, "augment.flip_p")
    cfg, block = _sized(_write(tmp_path / "noise", _noise(200, 24, gray=True)))
    assert cfg.augment.flip_p == 0.5
    assert "look like the set" in _line(block, "augment.flip_p")


def test_grayscale_gets_no_colour_operations(tmp_path: Path) -> None:
    cfg, block = _sized(_write(tmp_path / "gray", _noise(20, 16, gray=True)))
    a = cfg.augment
    assert (a.saturation, a.hue, a.grayscale_p) == (0.0, 0.0, 0.0)
    assert (a.brightness, a.contrast) == (0.4, 0.4)
    assert "grayscale (100% of the sample)" in _line(block, "augment.hue")
    cfg, block = _sized(_write(tmp_path / "colour", _noise(20, 16, gray=False)))
    a = cfg.augment
    assert (a.saturation, a.hue, a.grayscale_p) == (0.8, 0.5, 0.2)
    assert "colour (100% of the sample)" in _line(block, "augment.hue")


def test_blur_scales_with_the_view(tmp_path: Path) -> None:
    for side in (16, 28, 64):
        cfg, block = _sized(_write(tmp_path / f"b{side}", _noise(8, side, gray=False)))
        size = cfg.augment.global_size
        assert tuple(cfg.augment.blur_sigma) == (0.1, round(size / 32, 3))
        assert tuple(cfg.augment.blur_p) == (0.5, 0.1, 0.2)
        assert f"at {size} px" in _line(block, "augment.blur_sigma")


def test_mean_and_std_are_the_training_images(tmp_path: Path) -> None:
    images = [
        np.clip(i.astype(int) // 2 + 100, 0, 255).astype(np.uint8)
        for i in _noise(30, 12, gray=False)
    ]
    cfg, _ = _sized(_write(tmp_path / "m", images))
    pixels = np.concatenate([i.reshape(-1, 3) for i in images]) / 255
    np.testing.assert_allclose(cfg.data.mean, pixels.mean(0), atol=1.5e-3)
    np.testing.assert_allclose(cfg.data.std, pixels.std(0), atol=1.5e-3)


def test_sizing_counts_the_images_left_after_the_holdout(tmp_path: Path) -> None:
    folder = _write(tmp_path / "n", _noise(100, 8, gray=False))
    cfg, block = _sized(folder)
    assert cfg.epochs == 60.0  # 12,000 / 100 = 120, capped
    cfg, block = _sized(folder, "data.holdout=40")
    assert "60 images" in _line(block, "epochs") and cfg.epochs == 60.0


@pytest.mark.parametrize(
    ("count", "batch", "epochs"),
    [
        (100, 64, 60.0),
        (3_000, 64, 4.0),
        (3_500, 64, 3.5),
        (3_800, 64, 3.0),
        (16_383, 64, 2.0),
        (16_384, 128, 2.0),
        (131_072, 256, 2.0),
    ],
)
def test_batch_epochs_and_warmups_from_the_count(count: int, batch: int, epochs: float) -> None:
    stats = ImageStats(count, 512, 32, 32, 32, 0.0, (0.5,) * 3, (0.25,) * 3, 0.3, 0.5, 0.5)
    chosen = {c.key: c.value for c in choose(stats)}
    assert chosen["data.batch_size"] == batch
    assert chosen["epochs"] == epochs
    # 12,000 source images rounded to half epochs, within 2-60
    assert chosen["epochs"] == min(60, max(2, round(12_000 / count * 2) / 2))
    assert chosen["optim.warmup_epochs"] == chosen["dino.freeze_last_layer_epochs"]
    assert chosen["optim.warmup_epochs"] == pytest.approx(0.1 * epochs)
    assert list(chosen) == list(SIZED_KEYS)


# ------------------------------------------------------------------------------ precedence
def test_an_override_wins_and_is_marked_yours(tmp_path: Path) -> None:
    folder = _write(tmp_path / "text", _oriented(200))
    cfg, block = _sized(folder, "augment.flip_p=0.5", "data.batch_size=32")
    assert cfg.augment.flip_p == 0.5 and cfg.data.batch_size == 32
    assert "augment.flip_p=0.5 (yours)" in block and "data.batch_size=32 (yours)" in block
    cfg, _ = _sized(folder, "augment={global_size: 20}")  # a whole section counts as given
    assert cfg.augment.global_size == 20 and cfg.augment.flip_p == 0.5  # the schema's default


def test_a_value_written_in_the_recipe_file_wins(tmp_path: Path) -> None:
    folder = _write(tmp_path / "gray", _noise(40, 28, gray=True))
    recipe = yaml.safe_load((REPO / "ssl" / "recipes" / "folder.yaml").read_text())
    recipe["augment"].update(global_size=24, hue=0.3)
    recipe["epochs"] = 10
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert {"augment.global_size", "augment.hue", "epochs"} <= given_keys(path, [])
    stream = io.StringIO()
    from unimix.config import load_config
    from unimix.ssl.config import PretrainConfig

    args = [f"data.dataset={folder}"]
    cfg = size_from_data(load_config(PretrainConfig, path, args), path, args, stream=stream)
    assert (cfg.augment.global_size, cfg.augment.hue, cfg.epochs) == (24, 0.3, 10.0)
    assert cfg.augment.saturation == 0.0  # still sized: grayscale
    assert tuple(cfg.augment.blur_sigma) == (0.1, 0.75)  # follows your 24-px views
    assert cfg.optim.warmup_epochs == 1.0  # 10% of your 10 epochs
    assert "augment.hue=0.3 (yours)" in stream.getvalue()
    # and the command line beats the file
    cfg = size_from_data(
        load_config(PretrainConfig, path, [*args, "epochs=4"]),
        path,
        [*args, "epochs=4"],
        stream=io.StringIO(),
    )
    assert cfg.epochs == 4.0 and cfg.optim.warmup_epochs == pytest.approx(0.4)


def test_doubled_epochs_keep_their_warmup_share(tmp_path: Path) -> None:
    folder = _write(tmp_path / "d", _noise(40, 16, gray=False))
    sized, _ = _sized(folder)
    doubled, block = _sized(folder, f"epochs={sized.epochs * 2}")
    assert doubled.optim.warmup_epochs == pytest.approx(2 * sized.optim.warmup_epochs)
    assert f"epochs={sized.epochs * 2:g} (yours)" in block


def test_sizing_off_or_all_given_reads_nothing(tmp_path: Path) -> None:
    from unimix.config import load_config
    from unimix.ssl.config import RECIPES, PretrainConfig

    assert not load_pretrain_config("quickstart").size_from_data
    stream = io.StringIO()
    args = ["data.dataset=synthetic", "size_from_data=false"]
    cfg = load_config(PretrainConfig, "folder", args, presets=RECIPES)
    assert size_from_data(cfg, "folder", args, presets=RECIPES, stream=stream) is cfg
    # every sized key given: the folder (missing here) is not even looked at
    args = [
        f"data.dataset={tmp_path / 'missing'}",
        "augment={}",
        "data.mean=[0.5,0.5,0.5]",
        "data.std=[0.2,0.2,0.2]",
        "data.batch_size=8",
        "epochs=1",
        "optim.warmup_epochs=0",
        "dino.freeze_last_layer_epochs=0",
    ]
    cfg = load_config(PretrainConfig, "folder", args, presets=RECIPES)
    assert (
        size_from_data(cfg, "folder", args, presets=RECIPES, stream=stream) is cfg
        and stream.getvalue() == ""
    )


def test_data_that_cannot_be_inspected_is_one_warning_line(tmp_path: Path) -> None:
    from unimix.config import load_config
    from unimix.ssl.config import RECIPES, PretrainConfig

    for data in (tmp_path / "missing", tmp_path / "shard-{000000..000001}.tar"):
        args = [f"data.dataset={data}"]
        cfg = load_config(PretrainConfig, "folder", args, presets=RECIPES)
        stream = io.StringIO()
        assert size_from_data(cfg, "folder", args, presets=RECIPES, stream=stream) is cfg
        lines = stream.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("warning: size_from_data: cannot inspect")


def test_only_the_main_process_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _write(tmp_path / "r", _noise(8, 16, gray=False))
    monkeypatch.setenv("RANK", "1")
    cfg, block = _sized(folder)
    assert block == "" and cfg.augment.global_size == 16  # sized the same, silently


def test_your_own_dataset_object_is_sized() -> None:
    from unimix.ssl.engine.trainer import resolve_config

    images = _noise(30, 20, gray=True)
    cfg = resolve_config("folder", ["threads=1"], own_dataset=True, images=images)
    assert cfg.augment.global_size == 20 and cfg.augment.hue == 0.0
    with pytest.raises(TypeError, match=r"^dataset\[0\]"):
        resolve_config("folder", [], own_dataset=True, images=[np.zeros((4, 4), np.float32)])


def test_the_command_prints_one_block_matching_the_config_it_runs(tmp_path: Path) -> None:
    folder = _write(tmp_path / "cli", _oriented(60, side=28))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "unimix.cli",
            "pretrain",
            "-c",
            "folder",
            f"data.dataset={folder}",
            "epochs=5",
            "--print-config",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    block = proc.stderr.strip().splitlines()
    assert block[0].startswith(f"sized from the data (data.dataset={folder}): 60 images, 28 px")
    assert all(line.startswith("  ") for line in block[1:]) and len(block) <= 10
    printed = yaml.safe_load(proc.stdout)
    assert printed["size_from_data"] is True
    assert printed["augment"]["global_size"] == 28 and printed["augment"]["flip_p"] == 0.0
    assert printed["augment"]["hue"] == 0.0 and printed["epochs"] == 5.0
    assert printed["optim"]["warmup_epochs"] == 0.5
    for line in block[1:]:
        for setting in line.strip().split(": ")[0].split(" "):
            if "=" not in setting:
                continue
            key, value = setting.split("=")
            section, _, name = key.rpartition(".")
            actual = printed[section][name] if section else printed[name]
            assert yaml.safe_load(value) == actual, setting


def test_saved_config_reloads_without_sizing_again(tmp_path: Path) -> None:
    folder = _write(tmp_path / "s", _noise(20, 16, gray=True))
    cfg, _ = _sized(folder)
    from unimix.config import save_config

    save_config(cfg, tmp_path / "config.yaml")
    (folder / "c0" / "extra.png").write_bytes(b"")  # the folder changed since
    again = load_pretrain_config(tmp_path / "config.yaml")
    assert again == cfg
