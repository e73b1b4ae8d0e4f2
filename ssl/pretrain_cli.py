"""``unimix pretrain`` (``python -m unimix.cli pretrain``): DINO pretraining, recipe + overrides.

Examples::

    unimix pretrain --config quickstart
    accelerate launch -m unimix.cli pretrain --config cifar10_nano data.root=../shared/data
    torchrun --nproc_per_node 2 -m unimix.cli pretrain --config cifar10_nano --resume auto
    unimix pretrain --config my_run.yaml optim.base_lr=1e-3 model.backbone=resnet18

Options and ``KEY=VALUE`` overrides mix in any order: ``-c quickstart --resume auto max_steps=2``.

Exit codes: 0 done, 1 training failed (e.g. non-finite loss, another process of the run lost),
2 bad config/arguments/files (checked before any work: :mod:`unimix.ssl.engine.preflight`) or another
run using the output dir, 128 + N stopped by signal N after writing a checkpoint (143 SIGTERM,
130 SIGINT / Ctrl-C; one line gives the ``--resume auto`` command that continues the run).
"""

from __future__ import annotations

import argparse
import os
import shlex
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


def _write(line: str) -> None:
    """``line`` on stderr in ONE write: print() writes the text and the newline separately, and
    under a launcher with unbuffered stderr two processes' lines interleave."""
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()


def _error(message: object) -> None:
    _write(f"error: {message}")


def resume_command(argv: Sequence[str], world_size: int = 1) -> str:
    """The command that continues the run ``unimix pretrain argv`` started: the same arguments
    with ``--resume auto`` (replacing any ``--resume``), quoted for a POSIX shell."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            kept.append(arg)
    command = shlex.join(["unimix", "pretrain", *kept, "--resume", "auto"])
    if world_size > 1:  # the launcher's own options are not ours to know
        rest = command.removeprefix("unimix ")
        return f"the same launcher (accelerate launch / torchrun ...) with -m unimix.cli {rest}"
    return command


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, validate the whole config before any work, run; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_intermixed_args(argv)
    from ..config import ConfigError, to_dict
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

    from .engine.launch import lost_peer_message
    from .engine.run_lock import RunLockedError
    from .engine.trainer import NonFiniteLossError, RunInterrupted, pretrain

    try:
        pretrain(cfg, resume=args.resume)
    except RunInterrupted as err:
        if err.is_main:
            command = resume_command(argv, int(os.environ.get("WORLD_SIZE", "1")))
            _write(f"{err}; continue with: {command}")
        return err.exit_code
    except KeyboardInterrupt:  # Ctrl-C twice: stopped at once, in the middle of a step
        _error(
            "interrupted (Ctrl-C twice): the step in progress was not saved; --resume auto "
            "continues from the last checkpoint"
        )
        return 130
    except NonFiniteLossError as err:
        _error(err)
        return 1
    except RunLockedError as err:
        if err.report:
            _error(err)
        return 2
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
