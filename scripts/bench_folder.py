"""The data-sized ``folder`` recipe on several image folders: a search on a validation split
carved from each set's training images, or finalist runs on the test splits.

Each run is ``unimix pretrain -c folder data.dataset=<root>/<set> ...`` with a configuration's
overrides (``bench/grids/folder.yaml``); runs go two at a time on one thread each, finished
runs are kept and interrupted ones continue, so the search grows and resumes. Prints one row
per set and configuration (teacher k-NN@20 mean ± sd over seeds, untrained and raw-pixel
floors of the same runs) and writes ``<out>/summary.json``. Examples::

    python scripts/make_folder_sets.py --out runs/folder_sets
    python scripts/bench_folder.py --grid bench/grids/folder.yaml --root runs/folder_sets \\
        --seeds 0 1 --out runs/folder_search                      # validation (holdout 500)
    python scripts/bench_folder.py --grid bench/grids/folder.yaml --root runs/folder_sets \\
        --seeds 0 1 --only sized --holdout 0 --out runs/folder_test   # test split, once
    python scripts/bench_folder.py ... --only sized --holdout 0 --extra-epochs 2 --out runs/folder_test2x
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unimix.bench.folder_search import (
    format_rows,
    load_folder_grid,
    plan_runs,
    run_all,
    summarize_runs,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", default="bench/grids/folder.yaml")
    p.add_argument("--root", default="runs/folder_sets", help="folder holding the sets")
    p.add_argument("--out", default="runs/folder_search")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--holdout", type=int, default=None, help="default: the grid's; 0: test split")
    p.add_argument("--only", nargs="+", default=None, help="run only these configurations")
    p.add_argument(
        "--epochs-factor",
        type=float,
        default=None,
        help="multiply the epochs the sizing chooses (each set's own) by this factor",
    )
    p.add_argument("--parallel", type=int, default=2, help="runs at a time (one thread each)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    try:
        grid = load_folder_grid(args.grid)
        runs = plan_runs(
            grid,
            root=args.root,
            out=args.out,
            seeds=args.seeds,
            holdout=args.holdout,
            only=args.only,
            epochs_factor=args.epochs_factor,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        for run in runs:
            print(" ".join(run.command))
        return 0
    run_all(runs, parallel=args.parallel)
    rows = summarize_runs(runs)
    summary = {"grid": grid, "argv": sys.argv, "rows": rows}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1))
    print(format_rows(rows))
    print(f"wrote {args.out}/summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
