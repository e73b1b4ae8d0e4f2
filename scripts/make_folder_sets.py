"""Write two small labeled image folders that differ in character, to test recipes meant for a
user's own folder: ``gray28`` (grayscale CIFAR-10 at 28 px, 400 train / 100 test images per
class) and ``shapes48`` (SyntheticShapes at 48 px, 6 classes, 3,000 train / 600 test).

Both are ImageFolder trees (``<out>/<set>/{train,test}/<class>/*.png``) written from data on
this machine (``../shared/data/cifar10`` and the embedded generator); nothing is downloaded and
nothing is written into the repository. The logic is :mod:`unimix.bench.folder_sets`.
Example::

    python scripts/make_folder_sets.py --cifar10 ../shared/data/cifar10 --out runs/folder_sets
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unimix.bench.folder_sets import write_gray28, write_shapes48


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cifar10", default="../shared/data/cifar10", help="CIFAR-10 ImageFolder root")
    p.add_argument("--out", default="runs/folder_sets")
    args = p.parse_args(argv)
    out = Path(args.out)
    write_gray28(Path(args.cifar10), out / "gray28", {"train": 400, "test": 100})
    write_shapes48(out / "shapes48", {"train": 3000, "test": 600})
    print(f"wrote {out / 'gray28'} and {out / 'shapes48'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
