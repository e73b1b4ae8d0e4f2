"""Write small labeled image folders that differ in character, to test recipes meant for a
user's own folder:

- ``gray28``: grayscale CIFAR-10 at 28 px, 400 train / 100 test images per class (natural
  images, no colour, mirror-symmetric content);
- ``shapes48``: SyntheticShapes at 48 px, 6 classes, 3,000 train / 600 test (colour, synthetic);
- ``glyphs28``: 38 characters (digits, capitals, ``b d p q``) rendered with the machine's fonts
  at 28 px in varied sizes, strokes, slants, positions, paper/ink levels and noise, 100 train /
  25 test per class (grayscale; a mirror image changes the label).

Each is an ImageFolder tree (``<out>/<set>/{train,test}/<class>/*.png``) written from data on
this machine; nothing is downloaded. The logic is :mod:`unimix.bench.folder_sets`. Example::

    python scripts/make_folder_sets.py --cifar10 ../shared/data/cifar10 --out runs/folder_sets
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unimix.bench.folder_sets import write_glyphs28, write_gray28, write_shapes48

SETS = ("gray28", "shapes48", "glyphs28")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cifar10", default="../shared/data/cifar10", help="CIFAR-10 ImageFolder root")
    p.add_argument("--out", default="runs/folder_sets")
    p.add_argument(
        "--sets", nargs="+", choices=SETS, default=list(SETS), help="which sets to write"
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    if "gray28" in args.sets:
        cifar10 = Path(args.cifar10)
        if not (cifar10 / "train").is_dir():
            print(
                f"error: --cifar10 {cifar10}: no train/ folder (needed for gray28)", file=sys.stderr
            )
            return 2
        write_gray28(cifar10, out / "gray28", {"train": 400, "test": 100})
    if "shapes48" in args.sets:
        write_shapes48(out / "shapes48", {"train": 3000, "test": 600})
    if "glyphs28" in args.sets:
        fonts = write_glyphs28(out / "glyphs28", {"train": 100, "test": 25})
        print(f"glyphs28: {len(fonts)} fonts ({len(fonts) - 1} TrueType files + PIL's default)")
    print("wrote " + ", ".join(str(out / name) for name in args.sets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
