"""k-NN search speed: FAISS (exact and IVF) next to the peers' chunked ``torch.mm`` + ``topk``.

Same features, same k, one run: prints each method's time (index build included, and shown
apart), checks that exact FAISS and ``torch.mm`` give identical predictions (DINO's weighted
vote, T = 0.07), and reports the IVF index's agreement with exact search at its default
``nprobe`` (2·sqrt(nlist)) and at a smaller one. k defaults to 200, the single search ``unimix knn``
runs for k = 10/20/100/200. The reference is ``unimix.eval.knn.torch_knn_search`` (dino's
``eval_knn.py`` loop: normalise, ``queries_chunk @ bank.T``, ``topk``). Features are random class clusters by default, or
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
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--fast-nprobe", type=int, default=8, help="nprobe of the faster IVF row")
    p.add_argument("--temperature", type=float, default=0.07)
    p.add_argument("--features", help="safetensors with train, train_labels, test")
    p.add_argument("--repeats", type=int, default=3, help="best of N timings per method")
    p.add_argument("--out", default="bench_knn.json")
    args = p.parse_args(argv)
    from unimix.eval.knn import _build_index, _check, _vote, knn_search, torch_knn_search

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

    fast = f"faiss ivf nprobe={args.fast_nprobe}"
    methods = {  # name: (search, index kind for the build-only timing)
        "faiss exact (IndexFlatIP)": (lambda: knn_search(bank, queries, args.k), "exact"),
        "faiss ivf": (lambda: knn_search(bank, queries, args.k, index="ivf"), "ivf"),
        fast: (
            lambda: knn_search(bank, queries, args.k, index="ivf", nprobe=args.fast_nprobe),
            "ivf",
        ),
        "torch.mm + topk (chunked)": (lambda: torch_knn_search(bank, queries, args.k), None),
    }
    unit_bank, _ = _check(bank, queries[:1], args.k)
    times, builds, preds = {}, {}, {}
    for name, (run, kind) in methods.items():
        best = build = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            sims, ids = run()
            best = min(best, time.perf_counter() - start)
            if kind is not None:
                start = time.perf_counter()
                _build_index(unit_bank, kind, None, 0)
                build = min(build, time.perf_counter() - start)
        times[name], builds[name] = best, (build if kind is not None else 0.0)
        preds[name] = _vote(sims, ids, labels, classes, args.temperature).argmax(1)
        print(f"  {name:<28} {best:8.3f} s", flush=True)
    exact = preds["faiss exact (IndexFlatIP)"]
    reference = preds["torch.mm + topk (chunked)"]
    agree = {n: (p == exact).double().mean().item() for n, p in preds.items()}
    identical = bool(torch.equal(exact, reference))
    speedup = times["torch.mm + topk (chunked)"] / times["faiss exact (IndexFlatIP)"]
    header = (
        f"{'method':<28} {'total s':>8} {'build s':>8} {'vs torch.mm':>12} {'agrees w/ exact':>16}"
    )
    print("\n" + header)
    for name in methods:
        ratio = times["torch.mm + topk (chunked)"] / times[name]
        print(
            f"{name:<28} {times[name]:>8.3f} {builds[name]:>8.3f} {ratio:>11.2f}× "
            f"{100 * agree[name]:>15.2f}%"
        )
    print(f"exact FAISS and torch.mm predictions identical: {identical}")
    report = {
        "bank": list(bank.shape),
        "queries": list(queries.shape),
        "k": args.k,
        "temperature": args.temperature,
        "threads": torch.get_num_threads(),
        "seconds": times,
        "build_seconds": builds,
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
