"""The locally built sets (unimix.bench.folder_sets) and the folder-recipe search runner
(unimix.bench.folder_search, scripts/bench_folder.py), on tiny inputs and real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unimix.bench.folder_search import (
    FolderRun,
    load_folder_grid,
    plan_runs,
    run_all,
    summarize_runs,
)
from unimix.bench.folder_sets import GLYPHS, find_fonts, render_glyph, write_glyphs28

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ glyphs28
def test_glyph_classes_are_distinct_characters_without_the_ambiguous_ones() -> None:
    chars = [c for _, c in GLYPHS]
    names = [n for n, _ in GLYPHS]
    assert len(set(chars)) == len(chars) == 38 and len(set(n.lower() for n in names)) == 38
    assert "O" not in chars and "I" not in chars and {"0", "1", "b", "d", "p", "q"} <= set(chars)


def test_a_rendered_glyph_is_dark_ink_inside_the_image_on_light_paper() -> None:
    fonts = find_fonts()
    for i, font in enumerate(fonts):
        rng = np.random.default_rng(i)
        pixels = render_glyph("W", font, rng).astype(float)
        assert pixels.shape == (28, 28)
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        # paper >= 170 with noise of sigma <= 12: the border holds no ink (the glyph fits)
        assert border.mean() > 150, font
        assert pixels.min() < border.mean() - 60, font  # there is ink


def test_the_mirror_of_a_rendered_b_is_nearer_a_d_than_a_b() -> None:
    """The set's labels depend on orientation: checked on the ink, cropped to its box (the
    position jitter mirrors too) and compared at one size."""

    def ink(char: str, seed: int) -> np.ndarray:
        pixels = render_glyph(char, "default", np.random.default_rng(seed)).astype(float)
        mask = pixels < (pixels.max() + pixels.min()) / 2
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        return np.asarray(Image.fromarray(box.astype(np.uint8) * 255).resize((16, 16))) / 255

    for seed in range(5):
        b, d = ink("b", seed), ink("d", seed)  # same draws: same size, slant, stroke
        mirror_to_b, mirror_to_d = np.abs(b[:, ::-1] - b).mean(), np.abs(b[:, ::-1] - d).mean()
        assert mirror_to_d < mirror_to_b and mirror_to_b > 0.15  # ~0.2: a third of the ink moves


def test_find_fonts_falls_back_to_pils_own(tmp_path: Path) -> None:
    assert find_fonts(tmp_path / "none") == ["default"]
    (tmp_path / "a.ttf").write_bytes(b"")
    (tmp_path / "Math.ttf").write_bytes(b"")
    assert find_fonts(tmp_path) == [str(tmp_path / "a.ttf"), "default"]


def test_write_glyphs28_is_labeled_by_character_and_reproducible(tmp_path: Path) -> None:
    fonts = write_glyphs28(tmp_path / "a", {"train": 2, "test": 1}, fonts=["default"])
    write_glyphs28(tmp_path / "b", {"train": 2, "test": 1}, fonts=["default"])
    assert fonts == ["default"]
    for split, count in (("train", 2), ("test", 1)):
        classes = sorted(p.name for p in (tmp_path / "a" / split).iterdir())
        assert classes == sorted(n for n, _ in GLYPHS)
        files = sorted((tmp_path / "a" / split).rglob("*.png"))
        assert len(files) == 38 * count
        for f in files:
            image = Image.open(f)
            assert image.size == (28, 28) and image.mode == "L"
            assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()
    first_train = np.asarray(Image.open(tmp_path / "a/train/digit_0/00000.png"))
    first_test = np.asarray(Image.open(tmp_path / "a/test/digit_0/00000.png"))
    assert not np.array_equal(first_train, first_test)  # splits draw from different streams


def test_make_folder_sets_needs_cifar10_only_for_gray28(tmp_path: Path) -> None:
    script = REPO / "scripts" / "make_folder_sets.py"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "--cifar10",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "sets"),
            "--sets",
            "gray28",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --cifar10 {tmp_path / 'none'}: no train/ folder (needed for gray28)"
    ]


# ------------------------------------------------------------------------------ the search
def _grid(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


GRID = """
holdout: 7
base: [threads=1]
sets: [a, b]
configs:
  sized: []
  flip_off: {sets: [b], overrides: [augment.flip_p=0]}
"""


def test_grid_configs_apply_to_their_sets(tmp_path: Path) -> None:
    grid = load_folder_grid(_grid(tmp_path, GRID))
    assert grid["recipe"] == "folder"
    runs = plan_runs(grid, root="/sets", out=tmp_path / "out", seeds=[0, 1])
    assert [(r.set, r.config, r.seed) for r in runs] == [
        ("a", "sized", 0),
        ("a", "sized", 1),
        ("b", "sized", 0),
        ("b", "sized", 1),
        ("b", "flip_off", 0),
        ("b", "flip_off", 1),
    ]
    last = runs[-1].command
    assert last[1:6] == ("-m", "unimix.cli", "pretrain", "-c", "folder")
    assert "data.dataset=/sets/b" in last and "data.holdout=7" in last and "seed=1" in last
    assert (
        last.index("threads=1")
        < last.index("augment.flip_p=0")
        < last.index(f"output_dir={tmp_path / 'out' / 'b' / 'flip_off' / 'seed1'}")
    )
    assert last[-2:] == ("--resume", "auto")
    test = plan_runs(grid, root="/sets", out=tmp_path, seeds=[0], holdout=0, only=["flip_off"])
    assert len(test) == 1 and "data.holdout=0" in test[0].command


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sets: [a]\nconfigs: {x: {sets: [c], overrides: []}}", "sets ['c'] not in 'sets'"),
        ("sets: [a]\nconfigs: {x: [lr]}", "KEY=VALUE"),
        ("configs: {x: []}", "'sets' must be"),
        ("sets: [a]", "'configs' mapping"),
    ],
)
def test_bad_grids_are_one_line_naming_the_fault(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(
        ValueError, match="grid .*" + message.replace("[", r"\[").replace("]", r"\]")
    ):
        load_folder_grid(_grid(tmp_path, text))


def test_epochs_factor_multiplies_each_sets_sized_epochs(tmp_path: Path) -> None:
    folder = tmp_path / "sets" / "a" / "train" / "c"
    folder.mkdir(parents=True)
    for i in range(30):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(folder / f"{i}.png")
    grid = load_folder_grid(_grid(tmp_path, "holdout: 10\nsets: [a]\nconfigs: {sized: []}"))
    runs = plan_runs(grid, root=tmp_path / "sets", out=tmp_path / "o", seeds=[0], epochs_factor=2)
    # 20 images after the holdout: 24,000 / 20 -> the 60-epoch cap, doubled
    assert runs[0].command[-4] == "epochs=120"


def _knn(trained: float, untrained: float, raw: float) -> dict:
    return {
        "trained": trained,
        "student": trained + 1,
        "untrained": untrained,
        "raw_pixels": raw,
        "dataset": "x",
    }


def test_summary_means_spreads_and_margins(tmp_path: Path) -> None:
    runs = []
    for seed, (t, u, r) in enumerate([(40.0, 30.0, 35.0), (44.0, 32.0, 35.0)]):
        run = FolderRun("a", "sized", seed, tmp_path / f"s{seed}", ())
        run.out.mkdir()
        (run.out / "knn.json").write_text(json.dumps(_knn(t, u, r)))
        runs.append(run)
    runs.append(FolderRun("a", "other", 0, tmp_path / "unfinished", ()))
    (row,) = summarize_runs(runs)
    assert row["teacher"] == 42.0 and row["teacher_sd"] == pytest.approx(np.std([40, 44], ddof=1))
    assert row["untrained"] == 31.0 and row["over_untrained"] == 11.0 and row["over_raw"] == 7.0
    assert row["teacher_per_seed"] == [40.0, 44.0] and row["student"] == 43.0


def test_run_all_skips_finished_runs_and_names_a_failed_one(tmp_path: Path) -> None:
    write = "import json,sys,pathlib; p=pathlib.Path(sys.argv[1]); p.joinpath('knn.json').write_text(json.dumps({'trained':1,'untrained':0,'raw_pixels':0}))"
    done = FolderRun("a", "c", 0, tmp_path / "done", (sys.executable, "-c", "raise SystemExit(3)"))
    done.out.mkdir()
    (done.out / "knn.json").write_text("{}")
    fresh = FolderRun(
        "a", "c", 1, tmp_path / "fresh", (sys.executable, "-c", write, str(tmp_path / "fresh"))
    )
    run_all([done, fresh], parallel=2)  # `done` would fail if it ran
    assert fresh.done
    bad = FolderRun(
        "a", "c", 2, tmp_path / "bad", (sys.executable, "-c", "print('boom'); raise SystemExit(3)")
    )
    with pytest.raises(RuntimeError, match="bad .exit 3, see .*bad/job.log"):
        run_all([bad])
    assert "boom" in (bad.out / "job.log").read_text()
