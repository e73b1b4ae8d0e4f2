"""``unimix backbones``: every preset with its parameters, compute and the number it is held to
(the rows and how they are measured: :mod:`unimix.backbones.stats`). ``--help`` answers without
importing torch."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimix backbones",
        description=(
            "List the backbone presets: parameters (1000-class head), GMACs at 224 px (32 px for "
            "nano presets), and the anchor each is held to with the difference in percent."
        ),
    )
    parser.add_argument("--names", help="comma-separated presets to show (default: all)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    parser.add_argument(
        "--no-flops", action="store_true", help="skip the FLOP count (parameters only, fast)"
    )
    return parser


def _names(spec: str | None, known: list[str], prefix: str) -> list[str]:
    """The presets ``--names`` asks for (all when None, ``prefix`` optional); an unknown one is
    a ``ValueError``."""
    if spec is None:
        return known
    names = [n.strip().removeprefix(prefix) for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(
            f"--names: unknown preset {unknown[0] if unknown else spec!r}; "
            f"available: {', '.join(known)}"
        )
    return names


def main(argv: Sequence[str] | None = None) -> int:
    """``unimix backbones``: print the preset table; returns the exit code."""
    args = _build_parser().parse_args(argv)
    import torch

    from .registry import PREFIX, list_backbones
    from .stats import format_table, preset_stats

    try:
        names = _names(args.names, list_backbones(), PREFIX)
        # one thread: these single-image passes are overhead-bound, and on a busy machine every
        # OpenMP barrier waits for a descheduled thread
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            rows = [preset_stats(name, flops=not args.no_flops) for name in names]
        finally:
            torch.set_num_threads(threads)
        if args.json:
            path = Path(args.json)
            if not path.parent.is_dir():
                raise FileNotFoundError(f"--json: directory {str(path.parent)!r} does not exist")
            path.write_text(json.dumps(rows, indent=2) + "\n")
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(rows))
    if args.json:
        print(f"wrote {args.json}")
    return 0
