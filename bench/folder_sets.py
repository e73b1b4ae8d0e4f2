"""Two small labeled image folders that differ in character, to test recipes meant for a user's
own folder: ``gray28`` (grayscale CIFAR-10 at 28 px) and ``shapes48`` (SyntheticShapes at 48 px,
6 classes). Both are ImageFolder trees written from data on this machine; nothing is downloaded.
``scripts/make_folder_sets.py`` is its command line.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

__all__ = ["write_gray28", "write_shapes48"]


def write_gray28(cifar10: Path, out: Path, per_class: dict[str, int]) -> None:
    """Grayscale CIFAR-10 at 28 px: the first ``per_class[split]`` images of each class folder of
    ``cifar10/<split>`` → ``out/<split>/<class>/<stem>.png``."""
    for split, count in per_class.items():
        for class_dir in sorted((cifar10 / split).iterdir()):
            target = out / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for file in sorted(class_dir.iterdir())[:count]:
                image = Image.open(file).convert("L").resize((28, 28), Image.BILINEAR)
                image.save(target / f"{file.stem}.png")


def write_shapes48(out: Path, sizes: dict[str, int]) -> None:
    """SyntheticShapes at 48 px, 6 classes, seed 7: ``sizes[split]`` images per split →
    ``out/<split>/<class>/<index>.png``."""
    from unimix.data import SyntheticShapes

    for split, count in sizes.items():
        data = SyntheticShapes(split, num_samples=count, image_size=48, num_classes=6, seed=7)
        for i, (pixels, label) in enumerate(zip(data.data, data.targets, strict=True)):
            target = out / split / data.classes[label]
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(target / f"{i:05d}.png")
