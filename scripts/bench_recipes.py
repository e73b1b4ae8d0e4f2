"""Recipe search: a grid of DINO recipe variants × seeds at one budget of source images, chosen
on a validation split carved from the training set (the test set is not read).

Each configuration is a list of overrides on the grid's recipe (see ``bench/grids/*.yaml``); every
run sees the same number of source images; runs go two at a time on one thread each, and
finished runs are kept, so the grid can grow and an interrupted search resumes. Prints the
ranked table (Markdown) and writes ``<out>/search.json``. Example (≈ 25 minutes per pair of
50,000-image runs of poolformer_nano on 2 CPU cores)::

    python scripts/bench_recipes.py --grid bench/grids/cifar10_nano.yaml \
        --data ../shared/data/cifar10 --images 50000 --seeds 0 1 --out runs/recipes
"""

from __future__ import annotations

import argparse
import sys

from unimix.bench import format_table, load_grid, search


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", required=True, help="grid YAML (recipe, backbone, base, configs)")
    p.add_argument("--data", default="../shared/data/cifar10", help="ImageFolder root or name")
    p.add_argument("--images", type=int, default=50_000, help="source images per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--holdout", type=int, default=5000, help="training images held out as queries")
    p.add_argument("--bank-limit", type=int, default=10_000, help="k-NN bank size (cost)")
    p.add_argument("--only", nargs="+", default=None, help="run only these configurations")
    p.add_argument("--parallel", type=int, default=2, help="runs at a time (one thread each)")
    p.add_argument("--out", default="runs/recipes")
    args = p.parse_args(argv)
    grid = load_grid(args.grid)
    report = search(
        grid,
        data=args.data,
        images=args.images,
        seeds=args.seeds,
        holdout=args.holdout,
        out=args.out,
        bank_limit=args.bank_limit,
        parallel=args.parallel,
        only=args.only,
    )
    print(
        f"\n{grid['backbone']} on {args.data}: {args.images:,} source images per run, "
        f"validation = {args.holdout} held-out training images, bank {args.bank_limit}"
    )
    print(report["evaluation"])
    print(format_table(report["rows"], report["floors"]))
    print(f"wrote {args.out}/search.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
