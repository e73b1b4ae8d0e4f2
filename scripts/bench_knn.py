"""k-NN at ImageNet scale: exact FAISS against an approximate index, on a memory-mapped bank.

Streams a synthetic bank (a mixture of ``--classes`` Gaussians on the unit sphere, labels =
cluster) into memory-mapped files chunk by chunk, draws ``--queries`` queries around the same
centres, then times exact FAISS search and each approximate index over the files (IVF-Flat at
each ``--nprobe``; HNSW with ``--hnsw``; chunked torch mm + topk with ``--torch``), and reports
the speed-up, the agreement of DINO's weighted k-NN predictions (k = 20, T = 0.07) with exact
search, and each phase's peak resident memory against the bank's size. Prints a table, writes
JSON. The logic is :mod:`unimix.bench.knn_speed`. The committed run::

    python scripts/bench_knn.py --bank 1000000 --queries 10000 --dim 384 \
        --out results/knn/bench_knn_1m.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from unimix.bench.knn_speed import (
    format_knn_speed,
    knn_speed,
    measure_phase,
    sphere_mixture,
    write_bank,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bank", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument(
        "--spread",
        type=float,
        default=2.0,
        help="noise norm over the centre's (cosine to the centre 1/sqrt(1+s^2))",
    )
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--temperature", type=float, default=0.07)
    p.add_argument("--nlist", type=int, help="IVF cells (default: unimix's, about sqrt(bank))")
    p.add_argument("--nprobe", type=int, nargs="+", help="IVF rows to time (default: unimix's)")
    p.add_argument("--hnsw", action="store_true", help="also time an HNSW index (slow to build)")
    p.add_argument("--torch", action="store_true", help="also time chunked torch mm + topk")
    p.add_argument("--dir", help="where the bank's files go (default: a temporary directory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="time every method this many times in turn, keep each one's best",
    )
    p.add_argument("--out", default="bench_knn.json")
    return p.parse_args(argv)


def _methods(args: argparse.Namespace) -> dict[str, dict]:
    methods: dict[str, dict] = {}
    for nprobe in args.nprobe or [None]:
        name = "faiss ivf-flat" + (f" nprobe={nprobe}" if nprobe else " (default nprobe)")
        methods[name] = {"index": "ivf", "nlist": args.nlist, "nprobe": nprobe, "seed": args.seed}
    if args.hnsw:
        methods["faiss hnsw (32 links, ef 128)"] = {"index": "hnsw"}
    if args.torch:
        methods["torch mm + topk (chunked, exact)"] = {"index": "exact", "backend": "torch"}
    return methods


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(
            f"bank {args.bank:,} × {args.dim} ({args.classes} clusters, spread {args.spread}), "
            f"{args.queries:,} queries, k={args.k}, {torch.get_num_threads()} threads",
            flush=True,
        )
        bank, seconds, peak = measure_phase(
            lambda: write_bank(
                Path(tmp) / "bank", args.bank, args.dim, args.classes, args.spread, args.seed
            )
        )
        write = {"seconds": seconds, "peak_rss_bytes": peak}
        queries, labels = sphere_mixture(
            args.queries, args.dim, args.classes, args.spread, args.seed, part=0
        )
        report = knn_speed(
            bank,
            queries,
            labels,
            _methods(args),
            k=args.k,
            temperature=args.temperature,
            rounds=args.rounds,
        )
    write["peak_rss_vs_bank"] = write["peak_rss_bytes"] / report["bank_bytes"]
    report.update(
        write=write,
        classes=args.classes,
        spread=args.spread,
        seed=args.seed,
        command="python scripts/bench_knn.py " + " ".join(sys.argv[1:] if argv is None else argv),
    )
    print("\n" + format_knn_speed(report))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
