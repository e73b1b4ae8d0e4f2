"""WebDataset shards against hostile input (issue 25 items 6, 17, 18; issue 27 item 6): shards
written shuffled across classes (seeded), bad files skipped at conversion instead of copied, a
root of split folders, a full disk during conversion, a shard with no image, a damaged shard
listed in ``shards.json`` while training, and ``pipe:`` specs. Real folders, real tars
(read back with ``tarfile``), a real tmpfs where mounting is allowed, the real commands."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_data_shards import TINY as SHARD_RUN
from test_dino_train import PRETRAIN, REPO, _env

from unimix.checkpoint import list_checkpoints, load_backbone, verify_checkpoint
from unimix.data import UnreadableImageWarning
from unimix.data.shards import ShardSet, iter_shard_samples
from unimix.data.shards_cli import main as shards_main


def _members(tar_path: Path) -> dict[str, dict[str, bytes]]:
    """``{key: {ext: bytes}}`` of a tar, in member order, by the standard library alone."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return out


def _png(seed: int, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "png")
    return buffer.getvalue()


def _consistent(out: Path) -> dict[str, int]:
    """Every ``.tar`` in ``out`` is whole and listed in ``shards.json`` with its true count;
    no temporary file is left. Returns the index's shards."""
    index = json.loads((out / "shards.json").read_text())
    on_disk = sorted(p.name for p in out.glob("*.tar"))
    assert sorted(index["shards"]) == on_disk
    for name, count in index["shards"].items():
        assert len(_members(out / name)) == count
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert index["num_samples"] == sum(index["shards"].values())
    return index["shards"]


# ------------------------------------------------------------ issue 27 item 6: shuffled shards


def test_shards_mix_the_classes_and_the_order_is_seeded(tiny_image_folder, tmp_path) -> None:
    classes = [f"c{k}" for k in range(10)]
    src = tiny_image_folder(classes, per_class=40, size=8, name="src")
    out = tmp_path / "shards"
    assert shards_main([str(src), str(out), "--shard-size", "400"]) == 0
    labels = [int(m["cls"]) for m in _members(out / "shard-000000.tar").values()]
    assert sorted(labels) == sorted(k for k in range(10) for _ in range(40))
    windows = [labels[i : i + 64] for i in range(0, len(labels) - 63, 64)]
    assert len(windows) == 6
    assert all(len(set(window)) >= 8 for window in windows), [len(set(w)) for w in windows]
    again = tmp_path / "again"
    assert shards_main([str(src), str(again), "--shard-size", "400"]) == 0
    assert (again / "shard-000000.tar").read_bytes() == (out / "shard-000000.tar").read_bytes()
    other = tmp_path / "other"
    assert shards_main([str(src), str(other), "--shard-size", "400", "--seed", "1"]) == 0
    assert [int(m["cls"]) for m in _members(other / "shard-000000.tar").values()] != labels


# ------------------------------------------------------------------- item 18: the converter


def test_bad_files_are_skipped_with_a_warning_not_copied(
    tiny_image_folder, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tiny_image_folder(("a", "b"), per_class=4, name="src")
    (src / "a" / "empty.jpg").write_bytes(b"")  # zero bytes
    (src / "a" / "text.jpg").write_text("this is not a JPEG\n" * 20)
    (src / "b" / "gone.png").symlink_to(tmp_path / "nowhere.png")  # dangling
    out = tmp_path / "shards"
    with pytest.warns(UnreadableImageWarning) as caught:
        assert shards_main([str(src), str(out), "--shard-size", "3"]) == 0
    warned = " ".join(str(w.message) for w in caught)
    for name in ("empty.jpg", "text.jpg", "gone.png"):
        assert name in warned, warned
    shards = _consistent(out)
    assert sum(shards.values()) == 8  # the 8 real images, nothing else
    stored = sorted(
        v for s in shards for m in _members(out / s).values() for k, v in m.items() if k != "cls"
    )
    real = sorted(p.read_bytes() for p in src.rglob("*_*.png"))
    assert stored == real


def test_a_root_of_split_folders_gets_shards_per_split(tiny_image_folder, tmp_path) -> None:
    root = tmp_path / "cifar"
    root.mkdir()
    for split, count in (("train", 5), ("test", 2)):
        tiny_image_folder(("cat", "dog"), per_class=count, name=f"src_{split}").rename(root / split)
    out = tmp_path / "shards"
    assert shards_main([str(root), str(out)]) == 0
    for split, count in (("train", 10), ("test", 4)):
        index = json.loads((out / split / "shards.json").read_text())
        assert index["classes"] == ["cat", "dog"]  # the classes, not "train" / "test"
        assert ShardSet.open(out, split).counts == (count,)
    (root / "extra").mkdir()
    (root / "extra" / "x.png").write_bytes(_png(0))
    assert shards_main([str(root), str(tmp_path / "o2")]) == 2  # neither layout: refused


def _big_images(root: Path, count: int) -> None:
    """PNGs of noise, ~48 kB each (noise does not compress)."""
    (root / "a").mkdir(parents=True)
    for i in range(count):
        (root / "a" / f"{i:03d}.png").write_bytes(_png(i, size=128))


@pytest.fixture
def small_disk(tmpfs: Callable[[str], Path]) -> Path:
    """A real 320 kB file system; the test is skipped where mounting is not allowed."""
    return tmpfs("320k")


def _full_disk_line(out: Path, err: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: no space left on device while writing ")
    assert f"are listed in {out / 'shards.json'}, no partial shard is left" in lines[0]


def test_a_full_disk_leaves_whole_listed_shards_and_one_line(
    tmp_path: Path, small_disk: Path
) -> None:
    src, out = tmp_path / "src", small_disk / "shards"
    _big_images(src, 12)  # ~580 kB: more than the disk holds
    proc = subprocess.run(
        [sys.executable, "-m", "unimix.cli", "shards", str(src), str(out), "--shard-size", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        cwd=REPO,
    )
    assert proc.returncode == 2
    _full_disk_line(out, proc.stderr)
    shards = _consistent(out)
    assert 1 <= len(shards) < 6


def test_a_write_error_mid_shard_removes_it(tmp_path: Path, monkeypatch, capsys) -> None:
    import webdataset

    src, out = tmp_path / "src", tmp_path / "shards"
    _big_images(src, 7)
    write = webdataset.TarWriter.write
    calls = {"n": 0}

    def fails_on_the_fifth(self, sample):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(self, sample)

    monkeypatch.setattr(webdataset.TarWriter, "write", fails_on_the_fifth)
    assert shards_main([str(src), str(out), "--shard-size", "2"]) == 2
    _full_disk_line(out, capsys.readouterr().err)
    assert _consistent(out) == {"shard-000000.tar": 2, "shard-000001.tar": 2}


# ------------------------------------------------------------ item 6: shards without images


def test_a_shard_without_images_is_left_out_with_one_warning(tmp_path: Path) -> None:
    from webdataset import TarWriter

    out = tmp_path / "shards"
    out.mkdir()
    for n in range(3):
        with TarWriter(str(out / f"s-{n}.tar"), encoder=False) as tar:
            for i in range(4):
                sample = {"__key__": f"{n}{i:03d}", "cls": b"0"}
                sample["txt" if n == 1 else "png"] = b"caption" if n == 1 else _png(i)
                tar.write(sample)
    with pytest.warns(UnreadableImageWarning) as caught:
        shards = ShardSet.open(out)
    lines = [str(w.message) for w in caught]
    assert lines == [
        f"shard {out / 's-1.tar'} holds no image (8 members: 1000.cls, 1000.txt, 1001.cls, ...): "
        "left out"
    ]
    assert [Path(p).name for p in shards.paths] == ["s-0.tar", "s-2.tar"]
    assert shards.counts == (4, 4)
    assert len(list(iter_shard_samples(shards, [0, 1]))) == 8


# --------------------------------------------------- item 17: a damaged shard while training


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "damage"), [(0, "cut"), (2, "garbage")])
def test_a_damaged_listed_shard_ends_the_run_in_one_line_naming_it(
    tiny_image_folder, tmp_path: Path, workers: int, damage: str
) -> None:
    src = tiny_image_folder(("a", "b", "c"), per_class=8, size=16, name="src")
    shards = tmp_path / "shards"
    assert shards_main([str(src), str(shards), "--shard-size", "6"]) == 0
    damaged = shards / "shard-000002.tar"
    data = damaged.read_bytes()  # still listed in shards.json with its 6 samples
    if damage == "cut":
        damaged.write_bytes(data[:5000])
        reason = "ends after 1 of the 6 samples its shards.json lists"
    else:  # a member header overwritten
        damaged.write_bytes(data[:3000] + bytes(range(256)) * 4 + data[4024:])
        reason = "damaged tar file"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(SHARD_RUN))
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            *PRETRAIN,
            "-c",
            str(config),
            "-o",
            str(out),
            f"data.dataset={shards}",
            f"data.num_workers={workers}",
            "data.batch_size=2",
            "epochs=3",
            "checkpoint.every_steps=1",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Caught ValueError" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: shard {damaged}: "), proc.stderr
    assert reason in errors[0]
    for checkpoint in list_checkpoints(out / "checkpoints"):  # what was saved still loads
        verify_checkpoint(checkpoint)
        load_backbone(checkpoint)


def test_pipe_specs_are_one_clear_line() -> None:
    with pytest.raises(ValueError, match=r"pipe: shards are not read .*copy or mount them"):
        ShardSet.open("pipe:curl -s https://example.org/shard-{0..9}.tar")
    with pytest.raises(ValueError, match=r"https: shards are not read"):
        ShardSet.open("https://example.org/shard-{0..9}.tar")


# ------------------------------------------------- item 20: PIL's decompression-bomb warning

_LOW_LIMIT = """
import sys
import PIL.Image
PIL.Image.MAX_IMAGE_PIXELS = 200  # 16x16 = 256 pixels: over the limit, under twice it
from unimix.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_an_image_over_pils_limit_is_one_warning_line_naming_it(
    tiny_image_folder, tmp_path: Path
) -> None:
    src = tiny_image_folder(("a",), per_class=3, size=8, name="src")
    big = src / "a" / "big.png"
    big.write_bytes(_png(7, size=16))
    proc = subprocess.run(
        [sys.executable, "-c", _LOW_LIMIT, "shards", str(src), str(tmp_path / "shards")],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert "DecompressionBombWarning" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"warning: large image {big}: 16x16 = 256 pixels, over PIL's decompression-bomb limit "
        "of 200; decoded anyway (PIL refuses above twice the limit: raise "
        "PIL.Image.MAX_IMAGE_PIXELS for bigger images you trust)"
    ]
    assert sum(_consistent(tmp_path / "shards").values()) == 4  # kept: it decodes


# ------------------------------------ issue 25 follow-up: a FIFO (or folder) named like a shard


@contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (a blocked ``open`` included)."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _not_a_file(path: Path, kind: str = "a FIFO") -> str:
    return f"shard {path}: {kind}, not a regular file; a shard must be a tar file (remove or rename it)"


@pytest.fixture
def shards_and_fifo(tiny_image_folder, tmp_path: Path) -> tuple[Path, Path]:
    """Converter shards of 8 images (3 shards) in ``<tmp>/shards`` plus a FIFO ``x.tar`` there."""
    src = tiny_image_folder(("a", "b"), per_class=4, name="src")
    out = tmp_path / "shards"
    assert shards_main([str(src), str(out), "--shard-size", "3"]) == 0
    os.mkfifo(out / "x.tar")
    return out, out / "x.tar"


def test_a_fifo_named_like_a_shard_is_refused_before_it_is_opened(shards_and_fifo) -> None:
    out, fifo = shards_and_fifo
    for spec in (out, fifo, out / "{shard-000000,x}.tar"):  # folder, one file, brace pattern
        with _deadline(20), pytest.raises(ValueError) as caught:
            ShardSet.open(spec)
        assert str(caught.value) == _not_a_file(fifo), spec
    fifo.unlink()
    listed = out / "shard-000001.tar"  # a FIFO where shards.json lists a shard: never read
    listed.unlink()
    os.mkfifo(listed)
    with _deadline(20), pytest.raises(ValueError) as caught:
        ShardSet.open(out)
    assert str(caught.value) == _not_a_file(listed)
    listed.unlink()
    listed.mkdir()  # a folder named like a shard
    with _deadline(20), pytest.raises(ValueError) as caught:
        ShardSet.open(out)
    assert str(caught.value) == _not_a_file(listed, "a folder")
    listed.rmdir()
    (out / "linked.tar").symlink_to(out / "shard-000000.tar")  # a link to a shard: a shard
    assert len(ShardSet.open(out / "{linked,shard-000002}.tar")) == 5


def test_commands_on_a_shard_fifo_end_in_one_line_not_a_hang(shards_and_fifo, tmp_path) -> None:
    import torch

    from unimix.backbones import create_dino_backbone
    from unimix.eval import export_extractor

    out, fifo = shards_and_fifo
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(SHARD_RUN))
    torch.manual_seed(0)
    meta = {"backbone": "poolformer_nano", "image_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3}
    model = create_dino_backbone("poolformer_nano").eval()
    extractor = export_extractor(model, meta, tmp_path / "ext", "safetensors")
    commands = {
        "pretrain": (
            [
                *PRETRAIN,
                "-c",
                str(config),
                "-o",
                str(tmp_path / "run"),
                f"data.dataset={out}",
                f"eval.dataset={out.parent / 'src'}",
            ],
            f"error: data.dataset='{out}' (split 'train'): ",
        ),
        "knn": (
            [
                "-m",
                "unimix.cli",
                "knn",
                str(extractor),
                "--data",
                str(out),
                "--k",
                "3",
                "--no-progress",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "knn.json"),
            ],
            "error: ",
        ),
    }
    for name, (args, start) in commands.items():
        proc = subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(),
            cwd=REPO,
        )
        assert proc.returncode == 2, (name, proc.stderr[-3000:])
        assert proc.stderr.splitlines() == [start + _not_a_file(fifo)], (name, proc.stderr)
    assert not (tmp_path / "run").exists() and not (tmp_path / "knn.json").exists()
