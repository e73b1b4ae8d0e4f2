"""The README's tour runs as written, on tiny settings: each command of its first ``bash`` block
after "A five-minute tour" (read from README.md, so an edit there is what runs here), in a fresh
working directory, with only these changes: ``.venv/bin/`` is this interpreter's folder, each
pretraining gets overrides that make it a few steps, and the placeholder folders
(``/data/my_images``, ``/data/my_labeled_images``, ``/data/shards``) are small folders made
here (the shard range then names the one shard they hold). The CIFAR-10 line runs when
``../shared/data/cifar10`` is present. Then the README's Python snippet runs (with a list of
images as ``my_dataset`` and the same tiny overrides)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, SHARED_CIFAR10
from PIL import Image

README = REPO_ROOT / "README.md"
BIN = str(Path(sys.executable).parent) + "/"
#: A few steps of any recipe: small batches, no loader workers, a small k-NN at the end.
TINY = [
    "max_steps=2",
    "data.batch_size=16",
    "data.num_workers=0",
    "threads=1",
    "eval.num_train=48",
    "eval.num_test=16",
    "eval.k=5",
]
TINY_CIFAR = [
    "max_steps=1",
    "data.batch_size=16",
    "data.num_workers=0",
    "data.cache=false",
    "threads=1",
    "eval.knn_at_end=false",
    "eval.knn_every_epochs=0",
]


def tour_commands(text: str) -> list[str]:
    """The shell commands of the tour's block (continuation lines joined, comments dropped)."""
    tour = text.split("A five-minute tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", tour, re.S).group(1).replace("\\\n", " ")
    lines = [line.strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def python_snippet(text: str) -> str:
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def _images(root: Path, classes: list[str] | None, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for folder in [root / c for c in classes] if classes else [root]:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _placeholders(work: Path) -> dict[str, str]:
    images = _images(work / "my_images", None, 48, seed=0)
    labeled = work / "my_labeled_images"
    _images(labeled / "train", ["a", "b", "c"], 12, seed=1)
    _images(labeled / "test", ["a", "b", "c"], 4, seed=2)
    return {
        "/data/my_labeled_images": str(labeled),
        "/data/my_images": str(images),
        "/data/shards/shard-{000000..000099}.tar": str(
            work / "shards" / "shard-{000000..000000}.tar"
        ),
        "/data/shards": str(work / "shards"),
    }


def _prepare(command: str, places: dict[str, str]) -> list[list[str]] | None:
    """The command as argv lists (``a && b``: two), made tiny; None when it cannot run here."""
    command = command.replace(".venv/bin/", BIN)
    pattern = "|".join(re.escape(p) for p in sorted(places, key=len, reverse=True))
    command = re.sub(pattern, lambda m: places[m.group(0)], command)  # one pass: no re-replacing
    runs = []
    for part in command.split("&&"):
        argv = shlex.split(part, comments=True)
        if "pretrain" in argv:
            if any("../shared/data/cifar10" in a for a in argv):
                if not (SHARED_CIFAR10 / "train").is_dir():
                    return None
                argv += TINY_CIFAR
            else:
                argv += TINY
        runs.append(argv)
    return runs


@pytest.mark.slow
def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    text = README.read_text()
    commands = tour_commands(text)
    assert len(commands) >= 8 and "unimix knn runs/quickstart" in commands[1]
    work = tmp_path / "tour"  # a clean clone's root: the tour's relative paths start here
    work.mkdir()
    places = _placeholders(tmp_path / "data")
    if (SHARED_CIFAR10 / "train").is_dir():  # ../shared/data/cifar10 as seen from the clone
        (tmp_path / "shared" / "data").mkdir(parents=True)
        (tmp_path / "shared" / "data" / "cifar10").symlink_to(SHARED_CIFAR10)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for command in commands:
        runs = _prepare(command, places)
        for argv in runs or []:
            proc = subprocess.run(
                argv, cwd=work, env=env, capture_output=True, text=True, timeout=300
            )
            assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    quickstart = work / "runs" / "quickstart"
    assert (quickstart / "knn.json").is_file() and (quickstart / "curves.png").is_file()
    assert list((quickstart / "eval").glob("knn-teacher-step2-*.json"))
    assert (work / "extractor.onnx").is_file()
    assert (work / "exports" / "quickstart" / "config.json").is_file()
    assert (work / "runs" / "my_images" / "knn.json").is_file()
    assert (tmp_path / "data" / "shards" / "shard-000000.tar").is_file()

    # the Python snippet, from the same folder, after the tour
    code = python_snippet(text).replace("overrides=[", f"overrides={TINY!r} + [")
    assert code != python_snippet(text)
    prelude = (
        "from PIL import Image\n"
        "my_dataset = [Image.new('RGB', (32, 32), (i, 255 - i, 90)) for i in range(0, 256, 8)]\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "runs" / "mine" / "checkpoints").is_dir()
