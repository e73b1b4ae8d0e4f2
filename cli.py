"""The ``unimix`` command: one entry point, one subcommand per job.

Each subcommand lives with the library code it wraps and is imported only when called, so
``unimix --help`` stays fast. Every subcommand's ``main(argv) -> int`` parses its own arguments;
configuration and input errors print one ``error: ...`` line and exit with code 2.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]

# name -> (module, function, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "pretrain": (
        "unimix.ssl.pretrain_cli",
        "main",
        "DINO pretraining (run it under `accelerate launch`)",
    ),
    "knn": ("unimix.eval.knn_cli", "main", "k-NN top-1/top-5 of frozen features (FAISS)"),
    "linear": ("unimix.eval.linear_cli", "main", "linear probe on frozen features"),
    "export": ("unimix.eval.export_cli", "main", "export a frozen feature extractor"),
    "backbones": (
        "unimix.backbones.backbones_cli",
        "main",
        "list backbone presets: params, GFLOPs",
    ),
    "affinity": ("unimix.viz.affinity_cli", "main", "plot each stage's affinity as a PNG"),
    "plot": ("unimix.viz.plot_cli", "main", "a run's curves as a PNG: loss, entropy, lr, k-NN"),
    "shards": ("unimix.data.shards_cli", "main", "image folder -> WebDataset tar shards"),
}


def _usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: unimix <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, _, text) in SUBCOMMANDS.items()]
    lines += ["", "Run `unimix <command> --help` for a command's options."]
    return "\n".join(lines)


class _LineHandler(logging.Handler):
    """``warning: message`` (the level in lower case) on the *current* ``sys.stderr``, one
    write per record: what every command prints for the library's log records (e.g. a damaged
    checkpoint skipped), as its own ``error:`` / ``warning:`` lines look."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"{record.levelname.lower()}: {record.getMessage()}\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _log_lines() -> None:
    """Records of ``unimix.*`` loggers (warnings and above) as ``warning:`` lines; pretraining
    sets its own handlers (:func:`unimix.ssl.engine.runtime.configure_logging`), which stop them here."""
    log = logging.getLogger("unimix")
    if not any(isinstance(h, _LineHandler) for h in log.handlers):
        handler = _LineHandler(logging.WARNING)
        log.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``unimix <command> ...``; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if args[0] == "--version":
        from . import __version__

        print(f"unimix {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    _log_lines()
    module_name, func_name, _ = SUBCOMMANDS[name]
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
