"""Our DINO step's images/s over a matrix of settings (views rendered in the loader or on the
device, JPEGs decoded by PIL or on the device, fp32 or bf16, compiled or not, batch), one short
run each, no peer. Prints a table and writes JSON; the logic is :mod:`unimix.bench.speed`.

Examples::

    python scripts/bench_speed.py --data ../shared/data/cifar10 --out speed.json
    python scripts/bench_speed.py --data ../shared/data/cifar10 --steps 300 --warmup 30 \
        --variant "loader: placement=loader" --variant "device: placement=device"
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from unimix.bench.speed import DEFAULT_VARIANTS, format_speed, measure_speed
from unimix.bench.throughput import ThroughputSpec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = ThroughputSpec()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default=None, help="preset or timm name (default poolformer_nano)")
    p.add_argument("--data", default=d.data, help="'synthetic', 'cifar10' or a folder path")
    p.add_argument("--num-samples", type=int, default=d.num_samples, help="synthetic only")
    p.add_argument(
        "--cache", action="store_true", help="decode a folder's images once into RAM first"
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--global-size", type=int, default=d.global_size)
    p.add_argument("--local-size", type=int, default=d.local_size)
    p.add_argument("--num-local", type=int, default=2, help="local crops per image (default 2)")
    p.add_argument("--out-dim", type=int, default=d.out_dim, help="head output dim")
    p.add_argument("--steps", type=int, default=50, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (compiles)")
    p.add_argument("--num-workers", type=int, default=4, help="DataLoader workers")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument(
        "--variant",
        action="append",
        default=None,
        help="'name: field=value,...' over the options above (repeatable; fields: placement, "
        "decode, precision, compile, compile_mode, batch_size, num_workers...); default: "
        + "; ".join(DEFAULT_VARIANTS),
    )
    p.add_argument("--out", default="bench_speed.json", help="JSON report path")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fields = {f.name for f in dataclasses.fields(ThroughputSpec)}
    base = ThroughputSpec(**{k: v for k, v in vars(args).items() if k in fields})
    try:
        report = measure_speed(base, args.variant or list(DEFAULT_VARIANTS))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n" + format_speed(report))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
