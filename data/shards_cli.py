"""``unimix shards FOLDER OUT``: convert an image folder into WebDataset tar shards.

Examples::

    unimix shards ~/data/imagenet/train shards/imagenet-train --shard-size 1000
    unimix pretrain data.dataset='shards/imagenet-train/shard-{000000..001281}.tar'

Exit codes: 0 done, 2 bad arguments or input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimix shards",
        description="Write the images of FOLDER (an ImageFolder tree root/<class>/<image> or a "
        "flat folder of unlabeled images) into WebDataset tar shards in OUT, bytes unchanged, "
        "with labels as <key>.cls and an index OUT/shards.json (classes, samples per shard).",
        epilog="Train on them with data.dataset='OUT/PREFIX-{000000..000NNN}.tar' or "
        "data.dataset=OUT (every .tar in it).",
    )
    parser.add_argument("folder", metavar="FOLDER", help="image folder to convert")
    parser.add_argument("out", metavar="OUT", help="folder to write the shards into (created)")
    parser.add_argument(
        "--shard-size", type=int, default=1000, metavar="N",
        help="images per shard (default: 1000; the last shard takes the rest)",
    )  # fmt: skip
    parser.add_argument(
        "--prefix", default="shard",
        help="shard file names are PREFIX-000000.tar, PREFIX-000001.tar, ... (default: shard)",
    )  # fmt: skip
    parser.add_argument(
        "--unlabeled", action="store_true",
        help="take every image under FOLDER (recursively) without labels, ignoring class folders",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Convert; prints one summary line. Returns the exit code."""
    args = build_parser().parse_args(argv)
    from .shard_writer import write_shards

    try:
        index = write_shards(
            args.folder, args.out, args.shard_size, args.prefix,
            labeled=False if args.unlabeled else None,
        )  # fmt: skip
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    names = sorted(index["shards"])
    print(
        f"{index['num_samples']} images, {len(index['classes'])} classes in {len(names)} shards "
        f"({names[0]} … {names[-1]}) in {args.out}, index {args.out}/shards.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
