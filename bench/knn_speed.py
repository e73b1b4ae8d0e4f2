"""k-NN search speed: FAISS (exact and IVF) next to the peers' chunked ``torch.mm`` + ``topk``.

Same features, same k, one run: each method's time (index build included, and timed apart),
whether exact FAISS and ``torch.mm`` give identical predictions (DINO's weighted vote), and the
IVF index's agreement with exact search at its default ``nprobe`` (2·sqrt(nlist)) and a smaller
one. The reference is :func:`unimix.eval.knn.torch_knn_search` (dino's ``eval_knn.py`` loop).
``scripts/bench_knn.py`` is its command line.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "EXACT",
    "REFERENCE",
    "cluster_features",
    "format_knn_speed",
    "knn_speed",
    "load_features",
]

EXACT = "faiss exact (IndexFlatIP)"
REFERENCE = "torch.mm + topk (chunked)"


def cluster_features(
    bank: int, queries: int, dim: int, classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random class clusters (seed 0): bank ``[bank, dim]``, its labels ``[bank]``, queries
    ``[queries, dim]``."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, dim, generator=g)
    labels = torch.randint(0, classes, (bank,), generator=g)
    bank_x = centres[labels] + 2.0 * torch.randn(bank, dim, generator=g)
    q_labels = torch.randint(0, classes, (queries,), generator=g)
    queries_x = centres[q_labels] + 2.0 * torch.randn(queries, dim, generator=g)
    return bank_x, labels, queries_x


def load_features(path: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``train`` ``[N, D]``, ``train_labels`` ``[N]``, ``test`` ``[M, D]`` from a safetensors file."""
    from safetensors.torch import load_file

    tensors = load_file(path)
    return tensors["train"], tensors["train_labels"], tensors["test"]


def _methods(
    bank: torch.Tensor, queries: torch.Tensor, k: int, fast_nprobe: int
) -> dict[str, tuple[Callable[[], Any], str | None]]:
    """name → (search, index kind for the build-only timing; None: no index)."""
    from unimix.eval.knn import knn_search, torch_knn_search

    return {
        EXACT: (lambda: knn_search(bank, queries, k), "exact"),
        "faiss ivf": (lambda: knn_search(bank, queries, k, index="ivf"), "ivf"),
        f"faiss ivf nprobe={fast_nprobe}": (
            lambda: knn_search(bank, queries, k, index="ivf", nprobe=fast_nprobe),
            "ivf",
        ),
        REFERENCE: (lambda: torch_knn_search(bank, queries, k), None),
    }


def knn_speed(
    bank: torch.Tensor,
    labels: torch.Tensor,
    queries: torch.Tensor,
    *,
    k: int = 200,
    fast_nprobe: int = 8,
    temperature: float = 0.07,
    repeats: int = 3,
) -> dict[str, Any]:
    """Time every method (best of ``repeats``) on bank ``[N, D]`` / labels ``[N]`` / queries
    ``[M, D]``; returns the JSON report (``seconds``, ``build_seconds``,
    ``agreement_with_exact``, ``identical_predictions`` …). Prints one line per method."""
    from unimix.eval.knn import _build_index, _check, _vote

    classes = int(labels.max()) + 1
    methods = _methods(bank, queries, k, fast_nprobe)
    unit_bank, _ = _check(bank, queries[:1], k)
    times, builds, preds = {}, {}, {}
    for name, (run, kind) in methods.items():
        best = build = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            sims, ids = run()
            best = min(best, time.perf_counter() - start)
            if kind is not None:
                start = time.perf_counter()
                _build_index(unit_bank, kind, None, 0)
                build = min(build, time.perf_counter() - start)
        times[name], builds[name] = best, (build if kind is not None else 0.0)
        preds[name] = _vote(sims, ids, labels, classes, temperature).argmax(1)
        print(f"  {name:<28} {best:8.3f} s", flush=True)
    exact = preds[EXACT]
    return {
        "bank": list(bank.shape),
        "queries": list(queries.shape),
        "k": k,
        "temperature": temperature,
        "threads": torch.get_num_threads(),
        "seconds": times,
        "build_seconds": builds,
        "agreement_with_exact": {n: (p == exact).double().mean().item() for n, p in preds.items()},
        "faiss_vs_torch_speedup": times[REFERENCE] / times[EXACT],
        "identical_predictions": bool(torch.equal(exact, preds[REFERENCE])),
        "machine": platform.platform(),
    }


def format_knn_speed(report: dict[str, Any]) -> str:
    """The report as a table: total and build seconds, speed-up over torch.mm, agreement."""
    times, builds = report["seconds"], report["build_seconds"]
    agree = report["agreement_with_exact"]
    lines = [
        f"{'method':<28} {'total s':>8} {'build s':>8} {'vs torch.mm':>12} {'agrees w/ exact':>16}"
    ]
    for name in times:
        ratio = times[REFERENCE] / times[name]
        lines.append(
            f"{name:<28} {times[name]:>8.3f} {builds[name]:>8.3f} {ratio:>11.2f}× "
            f"{100 * agree[name]:>15.2f}%"
        )
    lines.append(
        f"exact FAISS and torch.mm predictions identical: {report['identical_predictions']}"
    )
    return "\n".join(lines)
