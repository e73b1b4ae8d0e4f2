"""Mixer zoo: one nano preset per token-mixer family, one DINO recipe, one wall-clock budget.

For each preset, ``scripts/bench_cifar.py`` pretrains on CIFAR-10 train for ``--budget-min``
and evaluates k-NN top-1 on the test set (bank = train, T = 0.07) with its floors; this script
adds parameters and GMACs at 32 px and prints one table (and JSON). The Container paper's claim
— Container-Light features beat DeiT's under DINO at equal budget — is read off the same table
(``container_light_nano`` against ``deit_nano`` and ``attention_nano``) and stated as holding
or not. Example (6 presets × 30 min ≈ 3.5 h on 2 CPU cores)::

    python scripts/bench_zoo.py --data ../shared/data/cifar10 --budget-min 30 --out runs/zoo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_cifar  # noqa: E402 (the sibling script; one implementation of the budget run)

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
    p.add_argument("--budget-min", type=float, default=30.0)
    p.add_argument("--presets", nargs="+", default=list(FAMILIES.values()))
    p.add_argument("--points", type=int, default=3)
    p.add_argument("--limit-train", type=int, default=None, help="k-NN bank size (default all)")
    p.add_argument("--limit-test", type=int, default=None, help="k-NN queries (default all)")
    p.add_argument("--out", default="runs/zoo")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="pretraining overrides")
    args = p.parse_args(argv)
    from unimix.backbones.cli import preset_stats

    out = Path(args.out)
    rows = []
    for preset in args.presets:
        run_out = out / preset
        bench_cifar.main(
            [
                "--data", args.data, "--backbone", preset, "--budget-min", str(args.budget_min),
                "--points", str(args.points), "--out", str(run_out),
                *(["--limit-train", str(args.limit_train)] if args.limit_train else []),
                *(["--limit-test", str(args.limit_test)] if args.limit_test else []),
                *args.overrides,
            ]
        )  # fmt: skip
        report = json.loads((run_out / "bench_cifar.json").read_text())
        stats = preset_stats(preset)
        last = report["curve"][-1]
        rows.append(
            {
                "preset": preset,
                "family": next((f for f, n in FAMILIES.items() if n == preset), stats["family"]),
                "headless_params_m": stats["headless_params_m"],
                "gmacs_32px": stats["gmacs"],
                "img_per_s": report["probe_img_per_s"],
                "images_seen": last["images_seen"],
                **{k: v for k, v in last.items() if k.startswith("top1@")},
                "untrained": report["floors"]["untrained"],
                "untrained_bn_images": report["untrained_bn_images"],
                "raw_pixels": report["floors"]["raw_pixels"],
            }
        )
    print(f"\nmixer zoo: DINO on {args.data}, {args.budget_min:g} min per preset")
    print(
        f"{'family':<18}{'preset':<22}{'M':>6}{'GMACs':>7}{'img/s':>7}{'images':>9}"
        f"{'top1@20':>9}{'untr.':>7}{'gain':>7}"
    )
    nan = float("nan")
    for r in rows:
        top1, untrained = r.get("top1@20", nan), r["untrained"].get("top1@20", nan)
        print(
            f"{r['family']:<18}{r['preset']:<22}{r['headless_params_m']:>6.2f}"
            f"{r['gmacs_32px']:>7.3f}{r['img_per_s']:>7.1f}{r['images_seen']:>9,}"
            f"{top1:>9.2f}{untrained:>7.2f}{top1 - untrained:>+7.2f}"
        )
    by_preset = {r["preset"]: r.get("top1@20") for r in rows}
    claim = None
    if "container_light_nano" in by_preset and "deit_nano" in by_preset:
        holds = by_preset["container_light_nano"] > by_preset["deit_nano"]
        claim = {
            "container_light_nano": by_preset["container_light_nano"],
            "deit_nano": by_preset["deit_nano"],
            "holds": holds,
        }
        print(
            f"Container paper's claim (Container-Light > DeiT under DINO, equal budget): "
            f"{'holds' if holds else 'does not hold'} here ({claim['container_light_nano']:.2f} vs "
            f"{claim['deit_nano']:.2f} k-NN top-1 at k=20)"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "zoo.json").write_text(json.dumps({"rows": rows, "container_claim": claim}, indent=1))
    print(f"wrote {out / 'zoo.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
