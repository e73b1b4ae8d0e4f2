"""``unimix plot RUN [--output FILE.png]``: a pretraining run's learning curves as one PNG
(:mod:`unimix.viz.run_plot`); matplotlib is imported, torch is not."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    from .run_plot import DEFAULT_OUTPUT, METRICS_FILE

    parser = argparse.ArgumentParser(
        prog="unimix plot",
        description=(
            "Draw a pretraining run's curves into one PNG: DINO loss, the teacher's per-sample "
            "entropy against the entropy of its batch mean (collapse: the two meet), learning "
            "rate, teacher momentum, teacher k-NN top-1 and throughput. A panel whose values "
            "the run did not log says so."
        ),
    )
    parser.add_argument(
        "run", metavar="RUN", help=f"the run's output folder (holds {METRICS_FILE})"
    )
    parser.add_argument(
        "--output",
        "-o",
        metavar="FILE.png",
        help=f"where the PNG goes (default: RUN/{DEFAULT_OUTPUT})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``unimix plot``: write the run's curves PNG; returns the exit code."""
    args = build_parser().parse_args(argv)
    from .run_plot import plot_run

    try:
        out = plot_run(args.run, args.output)
    except (ValueError, OSError) as err:  # no run / metrics file, unwritable or unknown format
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
