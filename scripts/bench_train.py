"""DINO step throughput: unimix's trainer next to lightly's documented DINO example loop.

Both sides train the same backbone with the same head sizes, batch size, crops, thread count and
DataLoader workers, starting from the same weights. They run in one process, alternating in
rounds (ours, lightly, ours, lightly, …) so that machine drift hits both alike. Each side's time
includes its data path: unimix's batched multi-crop loader, or lightly's ``DINOTransform`` per
PIL image.

The lightly side re-creates lightly 1.6's ``examples/pytorch/dino.py`` (docs/benchmarks.md).
Prints a table (source images/s, ratio, share of the peak FLOP/s measured in the same run, peak
RSS) and writes JSON. The logic is :mod:`unimix.bench.throughput`. Examples::

    python scripts/bench_train.py                                  # nano preset, 2×32 + 6×16 px
    python scripts/bench_train.py --backbone caformer_s18 --global-size 224 --local-size 96 \
        --num-local 6 --batch-size 32                              # full preset (GPU)
    python scripts/bench_train.py --backbone poolformer_s12 --global-size 224 --local-size 96 \
        --num-local 2 --precision bf16 --num-workers 12      # GPU, bf16 on both sides
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unimix.bench.throughput import DEFAULT_NANO, ThroughputSpec, format_throughput, measure


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = ThroughputSpec()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default=None, help=f"preset or timm name (default {DEFAULT_NANO})")
    p.add_argument("--data", default=d.data, help="'synthetic', 'cifar10' or a folder path")
    p.add_argument("--num-samples", type=int, default=d.num_samples, help="synthetic only")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--global-size", type=int, default=d.global_size)
    p.add_argument("--local-size", type=int, default=d.local_size)
    p.add_argument(
        "--num-local",
        type=int,
        default=d.num_local,
        help="local crops per image (default 6: lightly's DINOTransform and example)",
    )
    p.add_argument("--out-dim", type=int, default=d.out_dim, help="head output dim (both sides)")
    p.add_argument("--hidden-dim", type=int, default=d.hidden_dim)
    p.add_argument("--bottleneck-dim", type=int, default=d.bottleneck_dim)
    p.add_argument("--steps", type=int, default=d.steps, help="timed steps per side per round")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed steps per side first")
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument(
        "--num-workers", type=int, default=d.num_workers, help="DataLoader workers (both sides)"
    )
    p.add_argument(
        "--threads", type=int, default=d.threads, help="torch threads (0: torch's default)"
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default=d.precision,
        help="fp32, or bf16 autocast on both sides (default fp32)",
    )
    p.add_argument(
        "--compile",
        default=d.compile,
        help="torch.compile backend for our student and teacher, e.g. inductor (default: eager)",
    )
    p.add_argument(
        "--compile-mode",
        default=d.compile_mode,
        help="torch.compile mode with --compile, e.g. reduce-overhead (CUDA graphs)",
    )
    p.add_argument(
        "--placement",
        choices=("auto", "loader", "device"),
        default=d.placement,
        help="where our views are rendered: loader workers, the training device, or auto "
        "(device on a GPU, loader on CPU)",
    )
    p.add_argument(
        "--decode",
        choices=("loader", "device"),
        default=d.decode,
        help="where our JPEG files are decoded (with --data FOLDER): loader workers (PIL) or "
        "the training device (torchvision decode_jpeg, with --placement device)",
    )
    p.add_argument("--out", default=d.out, help="JSON report path")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = measure(ThroughputSpec(**vars(args)))
    print("\n" + format_throughput(report))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
