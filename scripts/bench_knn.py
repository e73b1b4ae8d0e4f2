"""k-NN search speed: FAISS (exact and IVF) next to the peers' chunked ``torch.mm`` + ``topk``.

Same features, same k, one run: prints each method's search time, checks that exact FAISS and
``torch.mm`` give identical predictions (DINO's weighted vote, T = 0.07), and reports the IVF
index's agreement with exact search. Features are random class clusters by default, or
``--features file.safetensors`` with ``train``, ``train_labels``, ``test`` tensors (e.g. saved
from ``unimix.eval.extract_features``). Writes JSON. Example::

    python scripts/bench_knn.py --bank 50000 --queries 10000 --dim 384 --out bench_knn.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bank", type=int, default=50_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--temperature", type=float, default=0.07)
    p.add_argument("--features", help="safetensors with train, train_labels, test")
    p.add_argument("--repeats", type=int, default=3, help="best of N timings per method")
    p.add_argument("--out", default="bench_knn.json")
    args = p.parse_args(argv)
    from unimix.eval.knn import _vote, knn_search, torch_knn_search

    if args.features:
        from safetensors.torch import load_file

        tensors = load_file(args.features)
        bank, labels, queries = tensors["train"], tensors["train_labels"], tensors["test"]
    else:
        g = torch.Generator().manual_seed(0)
        centres = torch.randn(args.classes, args.dim, generator=g)
        labels = torch.randint(0, args.classes, (args.bank,), generator=g)
        bank = centres[labels] + 2.0 * torch.randn(args.bank, args.dim, generator=g)
        q_labels = torch.randint(0, args.classes, (args.queries,), generator=g)
        queries = centres[q_labels] + 2.0 * torch.randn(args.queries, args.dim, generator=g)
    classes = int(labels.max()) + 1
    print(
        f"bank {bank.shape[0]:,} × {bank.shape[1]}, queries {queries.shape[0]:,}, k={args.k}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )

    methods = {
        "faiss exact (IndexFlatIP)": lambda: knn_search(bank, queries, args.k),
        "faiss ivf": lambda: knn_search(bank, queries, args.k, index="ivf"),
        "torch.mm + topk (chunked)": lambda: torch_knn_search(bank, queries, args.k),
    }
    times, preds = {}, {}
    for name, run in methods.items():
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            sims, ids = run()
            best = min(best, time.perf_counter() - start)
        times[name] = best
        preds[name] = _vote(sims, ids, labels, classes, args.temperature).argmax(1)
        print(f"  {name:<28} {best:8.3f} s", flush=True)
    exact = preds["faiss exact (IndexFlatIP)"]
    reference = preds["torch.mm + topk (chunked)"]
    agree = {n: (p == exact).double().mean().item() for n, p in preds.items()}
    identical = bool(torch.equal(exact, reference))
    speedup = times["torch.mm + topk (chunked)"] / times["faiss exact (IndexFlatIP)"]
    print(f"\n{'method':<28} {'time s':>8} {'vs torch.mm':>12} {'agrees w/ exact':>16}")
    for name in methods:
        ratio = times["torch.mm + topk (chunked)"] / times[name]
        print(f"{name:<28} {times[name]:>8.3f} {ratio:>11.2f}× {100 * agree[name]:>15.2f}%")
    print(f"exact FAISS and torch.mm predictions identical: {identical}")
    report = {
        "bank": list(bank.shape),
        "queries": list(queries.shape),
        "k": args.k,
        "temperature": args.temperature,
        "threads": torch.get_num_threads(),
        "seconds": times,
        "agreement_with_exact": agree,
        "faiss_vs_torch_speedup": speedup,
        "identical_predictions": identical,
        "machine": platform.platform(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
