"""Shared fixtures: real data when the shared folder is present, tiny generated image folders.

No image file is ever committed: everything a test reads is drawn here with PIL in ``tmp_path``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
#: ``../shared/data/cifar10`` next to the repository (``train/`` and ``test/`` ImageFolder trees).
SHARED_CIFAR10 = REPO_ROOT.parent / "shared" / "data" / "cifar10"


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    """``../shared/data/cifar10`` (ImageFolder ``train/`` and ``test/``); skips when absent."""
    if not (SHARED_CIFAR10 / "train").is_dir() or not (SHARED_CIFAR10 / "test").is_dir():
        pytest.skip(f"CIFAR-10 image folders not found at {SHARED_CIFAR10}")
    return SHARED_CIFAR10


MakeImageFolder = Callable[..., Path]


@pytest.fixture
def tiny_image_folder(tmp_path: Path) -> MakeImageFolder:
    """Factory writing a small folder of random RGB images and returning its path.

    ``make(classes=("cat", "dog"), per_class=3, *, size=8, suffix=".png", name="images")``:
    with ``classes`` an ImageFolder tree ``<tmp>/<name>/<class>/<class>_<i><suffix>``; with
    ``classes=None`` a flat folder of ``per_class`` unlabeled images. Pixels are seeded by the
    image's position, so two calls with the same arguments write identical files.
    """
    counter = iter(range(1_000_000))

    def make(
        classes: Sequence[str] | None = ("cat", "dog"),
        per_class: int = 3,
        *,
        size: int = 8,
        suffix: str = ".png",
        name: str | None = None,
    ) -> Path:
        root = tmp_path / (name or f"images{next(counter)}")
        folders = [(root / c, c) for c in classes] if classes is not None else [(root, "img")]
        for k, (folder, stem) in enumerate(folders):
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                rng = np.random.default_rng([k, i])
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{stem}_{i}{suffix}")
        return root

    return make


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Factory mounting a real file system of a given size: ``tmpfs("320k")`` (``"1m,ro"``:
    read-only) returns its folder under ``tmp_path``; the test is skipped where mounting is not
    allowed (it needs root). Unmounted after the test, lazily: even with a file still open."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"tmpfs{len(mounts)}"
        folder.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
        try:
            done = subprocess.run(command, capture_output=True)
        except OSError:
            done = None
        if done is None or done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(autouse=True)
def _fresh_accelerate_settings():
    """Accelerate keeps the first Accelerator's precision and compile settings for the whole
    process; a test that asked for bf16 must not hand them to the next test's Accelerator()."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
