"""``unimix shards FOLDER OUT``: convert an image folder into WebDataset tar shards.

Examples::

    unimix shards ~/data/imagenet/train shards/imagenet-train --shard-size 1000
    unimix pretrain data.dataset='shards/imagenet-train/shard-{000000..001281}.tar'
    unimix shards ~/data/cifar10 shards/cifar10     # train/ and test/: shards/cifar10/<split>/

Exit codes: 0 done, 2 bad arguments or input, or a write that failed (full disk, read-only:
one line; the complete shards stay, listed in shards.json, no partial one is left).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimix shards",
        description="Write the images of FOLDER (an ImageFolder tree root/<class>/<image>, a "
        "flat folder of unlabeled images, or a folder of split folders train/, test/, ... each "
        "such a tree) into WebDataset tar shards in OUT (OUT/<split>/ per split), in a seeded "
        "random order across classes, bytes unchanged, with labels as <key>.cls and an index "
        "shards.json (classes, samples per shard). Every image is decoded first: unreadable "
        "ones are skipped with a warning line.",
        epilog="Train on them with data.dataset='OUT/PREFIX-{000000..000NNN}.tar' or "
        "data.dataset=OUT (every .tar in it, or in OUT/<data.split>/).",
    )
    parser.add_argument("folder", metavar="FOLDER", help="image folder to convert")
    parser.add_argument("out", metavar="OUT", help="folder to write the shards into (created)")
    parser.add_argument(
        "--shard-size",
        type=int,
        default=1000,
        metavar="N",
        help="images per shard (default: 1000; the last shard takes the rest)",
    )
    parser.add_argument(
        "--prefix",
        default="shard",
        help="shard file names are PREFIX-000000.tar, PREFIX-000001.tar, ... (default: shard)",
    )
    parser.add_argument(
        "--unlabeled",
        action="store_true",
        help="take every image under FOLDER (recursively) without labels, ignoring class folders",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the order images are written in, shuffled across classes (default: 0)",
    )
    return parser


def _summary(index: dict, where: str) -> str:
    names = sorted(index["shards"])
    return f"{index['num_samples']} images in {len(names)} shards ({names[0]} … {names[-1]}) in {where}"


def main(argv: Sequence[str] | None = None) -> int:
    """Convert; prints one summary line. Returns the exit code."""
    args = build_parser().parse_args(argv)
    from pathlib import Path

    from .shard_writer import split_folders, write_shards

    options = {
        "shard_size": args.shard_size,
        "prefix": args.prefix,
        "seed": args.seed,
        "labeled": False if args.unlabeled else None,
    }
    try:
        splits = split_folders(args.folder)
        if not splits:
            index = write_shards(args.folder, args.out, **options)
            print(
                f"{_summary(index, args.out)}, {len(index['classes'])} classes, index "
                f"{Path(args.out) / 'shards.json'}"
            )
            return 0
        parts, classes = [], None
        for split in splits:  # the same classes in each: their labels must agree
            out = Path(args.out) / split
            index = write_shards(Path(args.folder) / split, out, classes=classes, **options)
            classes = index["classes"]
            parts.append(f"{split}: {_summary(index, str(out))}")
        print(f"{'; '.join(parts)}; {len(classes)} classes, an index shards.json in each")
    except (OSError, ValueError) as err:
        sys.stderr.write(f"error: {' '.join(str(err).split())}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
