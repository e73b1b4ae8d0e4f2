"""Mixer zoo: one nano preset per token-mixer family, one DINO recipe, one budget of source images.

For each preset and seed, pretrains for a budget of source images and evaluates the teacher like
for like (k-NN, bank = train, T = 0.07, BatchNorm statistics re-estimated on the same 2,048 clean
images for every BatchNorm network) next to the same preset untrained; adds parameters and GMACs
at 32 px. The Container paper's claim — Container-Light features beat DeiT's under DINO at equal
budget — is read off the same rows. ``scripts/bench_zoo.py`` is its command line.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .job import JobSpec, headline
from .race import race

__all__ = [
    "FAMILIES",
    "container_claim",
    "format_claim",
    "format_zoo",
    "write_zoo",
    "zoo",
    "zoo_row",
]

FAMILIES = {
    "pooling": "poolformer_nano",
    "sepconv": "convformer_nano",
    "attention (DeiT)": "deit_nano",
    "Container-Light": "container_light_nano",
    "ACmix": "acmix_nano",
    "CoAtNet": "coatnet_nano",
}


def zoo_row(preset: str, report: dict[str, Any]) -> dict[str, Any]:
    """One table row from a preset's race report (method ``ours`` only)."""
    from ..backbones.stats import preset_stats

    summary = report["methods"]["ours"]
    untrained = headline(report["floors"]["ours"], "untrained")
    stats = preset_stats(preset)
    return {
        "preset": preset,
        "family": next((f for f, n in FAMILIES.items() if n == preset), stats["family"]),
        "headless_params_m": stats["headless_params_m"],
        "gmacs_32px": stats["gmacs"],
        "img_per_s": statistics.fmean(r["img_per_s"] for r in summary["runs"]),
        "images_seen": summary["mean"]["images_seen"],
        "teacher@20_per_seed": [r["teacher@20"] for r in summary["runs"]],
        "teacher@20": summary["mean"]["teacher@20"],
        "teacher@200": summary["mean"]["teacher@200"],
        "untrained@20": untrained,
        "untrained@200": headline(report["floors"]["ours"], "untrained", k=200),
        "gain@20": summary["mean"]["teacher@20"] - untrained,
        "raw_pixels@20": headline(report["floors"]["ours"], "raw_pixels"),
    }


def zoo(
    presets: Sequence[str],
    seeds: Sequence[int],
    *,
    out: str | Path,
    parallel: int = 2,
    **spec: Any,
) -> list[dict[str, Any]]:
    """Race every preset (ours only) over ``seeds``; ``spec``: the other :class:`JobSpec`
    fields (data, images, recipe, overrides, points, bank_limit). Returns one row per preset."""
    rows = []
    for preset in presets:
        base = JobSpec(method="ours", out=str(Path(out) / preset), backbone=preset, **spec)
        report = race(base, seeds, peer=None, parallel=parallel)
        rows.append(zoo_row(preset, report))
    return rows


def format_zoo(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (params, GMACs, img/s, k-NN per seed, mean, gain …)."""
    lines = [
        "| family | preset | params M | GMACs @32 | img/s | k-NN@20 (per seed) | mean | "
        "untrained | gain | k-NN@200 | untrained |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        seeds = " / ".join(f"{v:.2f}" for v in r["teacher@20_per_seed"])
        lines.append(
            f"| {r['family']} | `{r['preset']}` | {r['headless_params_m']:.2f} | "
            f"{r['gmacs_32px']:.3f} | {r['img_per_s']:.1f} | {seeds} | {r['teacher@20']:.2f} | "
            f"{r['untrained@20']:.2f} | {r['gain@20']:+.2f} | {r['teacher@200']:.2f} | "
            f"{r['untrained@200']:.2f} |"
        )
    return "\n".join(lines)


def container_claim(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Container-Light against DeiT (k-NN@20 and gain over untrained); None without both."""
    by_preset = {r["preset"]: r for r in rows}
    if "container_light_nano" not in by_preset or "deit_nano" not in by_preset:
        return None
    c, d = by_preset["container_light_nano"], by_preset["deit_nano"]
    return {
        "container_light_nano": c["teacher@20"],
        "deit_nano": d["teacher@20"],
        "gain_difference": c["gain@20"] - d["gain@20"],
        "holds": c["teacher@20"] > d["teacher@20"],
    }


def format_claim(rows: list[dict[str, Any]], claim: dict[str, Any]) -> str:
    """One sentence: does the Container paper's claim hold on these rows."""
    by_preset = {r["preset"]: r for r in rows}
    c, d = by_preset["container_light_nano"], by_preset["deit_nano"]
    return (
        f"Container paper's claim (Container-Light > DeiT under DINO, equal images): "
        f"{'holds' if claim['holds'] else 'does not hold'} here ({c['teacher@20']:.2f} vs "
        f"{d['teacher@20']:.2f}; gains over untrained {c['gain@20']:+.2f} vs {d['gain@20']:+.2f})"
    )


def write_zoo(rows: list[dict[str, Any]], claim: dict[str, Any] | None, out: str | Path) -> Path:
    """Write ``<out>/zoo.json`` (rows and the claim); returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "zoo.json").write_text(json.dumps({"rows": rows, "container_claim": claim}, indent=1))
    return out / "zoo.json"
