"""k-NN at ImageNet scale: exact FAISS against an approximate index on a memory-mapped bank.

The bank is a mixture of Gaussians on the unit sphere (one cluster per class, each feature
``normalise(centre + spread · noise / sqrt(D))``), streamed chunk by chunk into a
:class:`~unimix.eval.feature_store.FeatureStore` as ``extract_to_store`` writes extracted
features; it is then searched in place. Per phase (writing, exact search, each method) the
report has the time, the peak resident memory (``VmHWM``, reset before each phase) against
the bank's size, and DINO's weighted-vote predictions (k = 20, T = 0.07) compared with exact
search. ``scripts/bench_knn.py`` is its command line.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..eval.feature_store import FeatureStore

__all__ = [
    "EXACT",
    "format_knn_speed",
    "knn_speed",
    "measure_phase",
    "peak_rss",
    "sphere_mixture",
    "write_bank",
]

EXACT = "faiss exact"


def _centres(classes: int, dim: int, seed: int) -> np.ndarray:
    c = np.random.default_rng([seed, 0]).standard_normal((classes, dim)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def sphere_mixture(
    n: int, dim: int, classes: int, spread: float, seed: int, part: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit features ``[n, dim]`` float32 and their cluster labels ``[n]``; ``part``
    seeds an independent draw (chunks of the bank, the queries) around the same centres."""
    centres = _centres(classes, dim, seed)
    g = np.random.default_rng([seed, 1, part])
    labels = g.integers(0, classes, n)
    x = centres[labels] + (spread / np.sqrt(dim)) * g.standard_normal((n, dim), np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def write_bank(
    directory: str | Path,
    n: int,
    dim: int,
    classes: int,
    spread: float,
    seed: int = 0,
    chunk: int = 65536,
) -> FeatureStore:
    """Stream an ``[n, dim]`` :func:`sphere_mixture` bank into a store, ``chunk`` rows at a
    time (memory holds one chunk)."""
    store = FeatureStore.allocate(directory, n, dim)
    for i, start in enumerate(range(0, n, chunk)):
        x, y = sphere_mixture(min(chunk, n - start), dim, classes, spread, seed, part=1 + i)
        store.write(start, x, y)
    store.mark_complete()
    return store


def _reset_peak() -> None:
    """Return freed heap to the OS (glibc keeps it, and it would count against the next phase),
    then reset the peak resident set size (Linux: "5" to clear_refs resets VmHWM)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    """Peak resident memory of this process in bytes (since the last phase's reset)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measure_phase(run: Callable[[], Any]) -> tuple[Any, float, int]:
    """``(result, seconds, peak RSS bytes)`` of one call (the peak is reset before it)."""
    _reset_peak()
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start, peak_rss()


def _predict(sims: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor, t: float):
    from ..eval.knn import _vote

    classes = int(labels.max()) + 1
    scores = _vote(sims, ids, labels, classes, t)
    return scores.sort(dim=1, descending=True, stable=True).indices[:, 0]


def _run_method(bank: FeatureStore, queries: np.ndarray, k: int, options: dict[str, Any]):
    """``((sims, ids), build s, search s, peak RSS)``: approximate indexes are built and
    searched as two timed phases; exact search is one."""
    from ..eval.knn import knn_search
    from ..eval.search import build_index, search_index

    if options.get("index", "exact") == "exact":
        found, seconds, peak = measure_phase(lambda: knn_search(bank, queries, k, **options))
        return found, 0.0, seconds, peak
    build = {key: v for key, v in options.items() if key != "index"}
    index, build_s, build_peak = measure_phase(lambda: build_index(bank, options["index"], **build))
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    found, search_s, peak = measure_phase(lambda: search_index(index, unit, k))
    return found, build_s, search_s, max(build_peak, peak)


def knn_speed(
    bank: FeatureStore,
    queries: np.ndarray,
    query_labels: np.ndarray,
    methods: dict[str, dict[str, Any]],
    *,
    k: int = 20,
    temperature: float = 0.07,
    rounds: int = 1,
) -> dict[str, Any]:
    """Search the store with exact FAISS, then with each of ``methods`` (name → ``knn_search``
    options, e.g. ``{"index": "ivf", "nprobe": 8}``), ``rounds`` times in turn (a shared
    machine's load moves; the best time of each method is kept); returns the JSON report (per
    method: build and search seconds, speed-ups over exact, prediction agreement, top-1, peak
    RSS). Prints a line per method and round."""
    labels = torch.from_numpy(bank.labels())
    bank_bytes = bank.n * bank.dim * 4
    _reset_peak()
    idle = _rss()
    runs: dict[str, dict[str, Any]] = {}
    for round_ in range(rounds):
        for name, options in {EXACT: {"index": "exact", "backend": "faiss"}, **methods}.items():
            found, build_s, search_s, peak = _run_method(bank, queries, k, options)
            run = runs.setdefault(name, {"options": options, "build": [], "search": [], "peak": 0})
            run["build"].append(build_s)
            run["search"].append(search_s)
            run["peak"] = max(run["peak"], peak)
            if round_ == 0:
                run["pred"] = _predict(*found, labels, temperature)
            print(
                f"  round {round_ + 1}: {name:<34} build {build_s:7.1f} s  search "
                f"{search_s:7.1f} s  peak {peak / 2**30:5.2f} GiB",
                flush=True,
            )
    exact_s, exact_pred = min(runs[EXACT]["search"]), runs[EXACT]["pred"]
    rows = {
        name: _method_row(run, exact_s, exact_pred, query_labels, bank_bytes, idle)
        for name, run in runs.items()
    }
    return {
        "bank": [bank.n, bank.dim],
        "bank_bytes": bank_bytes,
        "idle_rss_bytes": idle,
        "queries": list(queries.shape),
        "k": k,
        "temperature": temperature,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "methods": rows,
        "machine": platform.platform(),
    }


def _method_row(
    run: dict[str, Any],
    exact_s: float,
    exact_pred: torch.Tensor,
    query_labels: np.ndarray,
    bank_bytes: int,
    idle: int,
) -> dict[str, Any]:
    """One method's report: its best times of the rounds, speed-ups over exact search, its
    agreement with exact search's predictions, top-1 and peak memory."""
    build_s, search_s = min(run["build"]), min(run["search"])
    return {
        "options": {key: str(v) for key, v in run["options"].items()},
        "build_seconds": build_s,
        "search_seconds": search_s,
        "build_seconds_each_round": run["build"],
        "search_seconds_each_round": run["search"],
        "speedup_search": exact_s / search_s,
        "speedup_with_build": exact_s / (build_s + search_s),
        "agreement_with_exact": (run["pred"] == exact_pred).double().mean().item(),
        "top1": 100 * float((run["pred"].numpy() == query_labels).mean()),
        "peak_rss_bytes": run["peak"],
        "peak_rss_vs_bank": run["peak"] / bank_bytes,
        "peak_above_idle_vs_bank": (run["peak"] - idle) / bank_bytes,
    }


def format_knn_speed(report: dict[str, Any]) -> str:
    """The report as a table: build and search seconds, speed-ups, agreement, peak memory."""
    lines = [
        f"{'method':<34} {'build s':>8} {'search s':>9} {'speed-up':>9} {'w/ build':>9} "
        f"{'agrees':>8} {'top-1':>7} {'peak GiB':>9} {'× bank':>7} {'above idle':>10}"
    ]
    for name, r in report["methods"].items():
        lines.append(
            f"{name:<34} {r['build_seconds']:>8.1f} {r['search_seconds']:>9.1f} "
            f"{r['speedup_search']:>8.1f}× {r['speedup_with_build']:>8.1f}× "
            f"{100 * r['agreement_with_exact']:>7.2f}% {r['top1']:>7.2f} "
            f"{r['peak_rss_bytes'] / 2**30:>9.2f} {r['peak_rss_vs_bank']:>7.2f} "
            f"{r['peak_above_idle_vs_bank']:>9.2f}×"
        )
    gib = 2**30
    lines.append(
        f"bank {report['bank_bytes'] / gib:.2f} GiB; the process idles at "
        f"{report['idle_rss_bytes'] / gib:.2f} GiB (torch, faiss, queries)"
    )
    if "write" in report:
        w = report["write"]
        lines.append(
            f"bank streamed to disk in {w['seconds']:.1f} s, peak {w['peak_rss_bytes'] / gib:.2f} "
            f"GiB ({w['peak_rss_vs_bank']:.2f}× the bank)"
        )
    return "\n".join(lines)
