"""Mixer zoo: one nano preset per token-mixer family, one DINO recipe, one budget of source images.

For each preset and seed, pretrains on CIFAR-10 train for ``--images`` source images and
evaluates the teacher like for like (k-NN on the test set, bank = train, T = 0.07, BatchNorm
statistics re-estimated on the same 2,048 clean images for every BatchNorm network) next to the
same preset untrained; adds parameters and GMACs at 32 px and prints one table (and JSON). The
Container paper's claim — Container-Light features beat DeiT's under DINO at equal budget — is
read off the same table. Example (six presets × 2 seeds × 100,000 images is many CPU hours)::

    python scripts/bench_zoo.py --images 100000 --seeds 0 1 --out runs/zoo KEY=VALUE ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

FAMILIES = {
    "pooling": "poolformer_nano",
    "sepconv": "convformer_nano",
    "attention (DeiT)": "deit_nano",
    "Container-Light": "container_light_nano",
    "ACmix": "acmix_nano",
    "CoAtNet": "coatnet_nano",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/cifar10")
    p.add_argument("--recipe", default="cifar10_nano")
    p.add_argument("--images", type=int, default=100_000, help="source images per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--presets", nargs="+", default=list(FAMILIES.values()))
    p.add_argument("--points", type=int, default=3)
    p.add_argument("--bank-limit", type=int, default=None, help="k-NN bank size (default all)")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--out", default="runs/zoo")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    args = p.parse_args(argv)
    from unimix.backbones.cli import preset_stats
    from unimix.bench import JobSpec, headline
    from unimix.bench.race import race

    out = Path(args.out)
    rows = []
    for preset in args.presets:
        base = JobSpec(
            method="ours", out=str(out / preset), data=args.data, backbone=preset,
            images=args.images, recipe=args.recipe, overrides=list(args.overrides),
            points=args.points, bank_limit=args.bank_limit,
        )  # fmt: skip
        report = race(base, args.seeds, peer=None, parallel=args.parallel)
        summary = report["methods"]["ours"]
        untrained = headline(report["floors"]["ours"], "untrained")
        untrained200 = headline(report["floors"]["ours"], "untrained", k=200)
        stats = preset_stats(preset)
        trained = [r["teacher@20"] for r in summary["runs"]]
        rows.append(
            {
                "preset": preset,
                "family": next((f for f, n in FAMILIES.items() if n == preset), stats["family"]),
                "headless_params_m": stats["headless_params_m"],
                "gmacs_32px": stats["gmacs"],
                "img_per_s": statistics.fmean(r["img_per_s"] for r in summary["runs"]),
                "images_seen": summary["mean"]["images_seen"],
                "teacher@20_per_seed": trained,
                "teacher@20": summary["mean"]["teacher@20"],
                "teacher@200": summary["mean"]["teacher@200"],
                "untrained@20": untrained,
                "untrained@200": untrained200,
                "gain@20": summary["mean"]["teacher@20"] - untrained,
                "raw_pixels@20": headline(report["floors"]["ours"], "raw_pixels"),
            }
        )
    print(f"\nmixer zoo: DINO on {args.data}, {args.images:,} source images per run")
    print(
        "| family | preset | params M | GMACs @32 | img/s | k-NN@20 (per seed) | mean | "
        "untrained | gain | k-NN@200 | untrained |"
    )
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        seeds = " / ".join(f"{v:.2f}" for v in r["teacher@20_per_seed"])
        print(
            f"| {r['family']} | `{r['preset']}` | {r['headless_params_m']:.2f} | "
            f"{r['gmacs_32px']:.3f} | {r['img_per_s']:.1f} | {seeds} | {r['teacher@20']:.2f} | "
            f"{r['untrained@20']:.2f} | {r['gain@20']:+.2f} | {r['teacher@200']:.2f} | "
            f"{r['untrained@200']:.2f} |"
        )
    by_preset = {r["preset"]: r for r in rows}
    claim = None
    if "container_light_nano" in by_preset and "deit_nano" in by_preset:
        c, d = by_preset["container_light_nano"], by_preset["deit_nano"]
        claim = {
            "container_light_nano": c["teacher@20"],
            "deit_nano": d["teacher@20"],
            "gain_difference": c["gain@20"] - d["gain@20"],
            "holds": c["teacher@20"] > d["teacher@20"],
        }
        print(
            f"Container paper's claim (Container-Light > DeiT under DINO, equal images): "
            f"{'holds' if claim['holds'] else 'does not hold'} here ({c['teacher@20']:.2f} vs "
            f"{d['teacher@20']:.2f}; gains over untrained {c['gain@20']:+.2f} vs {d['gain@20']:+.2f})"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "zoo.json").write_text(json.dumps({"rows": rows, "container_claim": claim}, indent=1))
    print(f"wrote {out / 'zoo.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
