"""k-NN search speed: FAISS (exact and IVF) next to the peers' chunked ``torch.mm`` + ``topk``.

Same features, same k, one run: prints each method's time (index build included, and shown
apart), checks that exact FAISS and ``torch.mm`` give identical predictions (DINO's weighted
vote, T = 0.07), and reports the IVF index's agreement with exact search at its default
``nprobe`` (2·sqrt(nlist)) and at a smaller one. k defaults to 200, the single search ``unimix knn``
runs for k = 10/20/100/200. The reference is ``unimix.eval.knn.torch_knn_search`` (dino's
``eval_knn.py`` loop: normalise, ``queries_chunk @ bank.T``, ``topk``). Features are random class clusters by default, or
``--features file.safetensors`` with ``train``, ``train_labels``, ``test`` tensors (e.g. saved
from ``unimix.eval.extract_features``). Writes JSON. The logic is :mod:`unimix.bench.knn_speed`.
Example::

    python scripts/bench_knn.py --bank 50000 --queries 10000 --dim 384 --out bench_knn.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from unimix.bench.knn_speed import cluster_features, format_knn_speed, knn_speed, load_features


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bank", type=int, default=50_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--fast-nprobe", type=int, default=8, help="nprobe of the faster IVF row")
    p.add_argument("--temperature", type=float, default=0.07)
    p.add_argument("--features", help="safetensors with train, train_labels, test")
    p.add_argument("--repeats", type=int, default=3, help="best of N timings per method")
    p.add_argument("--out", default="bench_knn.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.features:
        bank, labels, queries = load_features(args.features)
    else:
        bank, labels, queries = cluster_features(args.bank, args.queries, args.dim, args.classes)
    print(
        f"bank {bank.shape[0]:,} × {bank.shape[1]}, queries {queries.shape[0]:,}, k={args.k}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    report = knn_speed(
        bank, labels, queries, k=args.k, fast_nprobe=args.fast_nprobe,
        temperature=args.temperature, repeats=args.repeats,
    )  # fmt: skip
    print("\n" + format_knn_speed(report))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0 if report["identical_predictions"] else 1


if __name__ == "__main__":
    sys.exit(main())
