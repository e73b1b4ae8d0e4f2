"""``unimix pretrain`` (``python -m unimix.cli pretrain``): DINO pretraining from a recipe and
overrides.

Examples::

    unimix pretrain --config quickstart
    accelerate launch -m unimix.cli pretrain --config cifar10_nano data.root=../shared/data
    torchrun --nproc_per_node 2 -m unimix.cli pretrain --config cifar10_nano --resume auto
    unimix pretrain --config my_run.yaml optim.base_lr=1e-3 model.backbone=resnet18

Exit codes: 0 done, 1 training failed (e.g. non-finite loss, another process of the run lost),
2 bad config/arguments/files (checked before any work: :mod:`unimix.ssl.preflight`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from .config import RECIPES

    parser = argparse.ArgumentParser(
        prog="unimix pretrain",
        description="DINO self-supervised pretraining of a unimix preset or any timm backbone. "
        "Run under `accelerate launch` or `torchrun` for several processes.",
        epilog=f"recipes: {', '.join(RECIPES)}. Overrides are dotted KEY=VALUE pairs, e.g. "
        "optim.base_lr=1e-3 data.batch_size=256 model.backbone=resnet18.",
    )
    parser.add_argument(
        "--config",
        "-c",
        default="quickstart",
        help="recipe name or YAML path (default: quickstart)",
    )
    parser.add_argument(
        "--output-dir", "-o", help="where checkpoints and metrics go (overrides output_dir)"
    )
    parser.add_argument(
        "--resume",
        help="'auto': continue from the newest valid checkpoint in the output dir (fresh start if none); "
        "or a checkpoint directory",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    return parser


def _error(message: object) -> None:
    """``error: message`` on stderr in ONE write: print() writes the text and the newline
    separately, and under a launcher with unbuffered stderr two processes' lines interleave."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, validate the whole config before any work, run; returns the exit code."""
    args = build_parser().parse_args(argv)
    from unimix.config import ConfigError, to_dict

    from .config import load_pretrain_config

    overrides = list(args.overrides)
    if args.output_dir is not None:
        overrides.append(f"output_dir={args.output_dir}")
    try:
        cfg = load_pretrain_config(args.config, overrides)
    except ConfigError as err:
        _error(err)
        return 2
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0

    from .launch import lost_peer_message
    from .trainer import NonFiniteLossError, pretrain

    try:
        pretrain(cfg, resume=args.resume)
    except NonFiniteLossError as err:
        _error(err)
        return 1
    except (ValueError, FileNotFoundError) as err:
        _error(err)
        return 2
    except RuntimeError as err:
        lost = lost_peer_message(err)
        if lost is None:
            raise
        _error(lost)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
