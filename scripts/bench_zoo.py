"""Mixer zoo: one nano preset per token-mixer family, one DINO recipe, one budget of source images.

For each preset and seed, pretrains on CIFAR-10 train for ``--images`` source images and
evaluates the teacher like for like (k-NN on the test set, bank = train, T = 0.07, BatchNorm
statistics re-estimated on the same 2,048 clean images for every BatchNorm network) next to the
same preset untrained; adds parameters and GMACs at 32 px and prints one table (and JSON). The
Container paper's claim — Container-Light features beat DeiT's under DINO at equal budget — is
read off the same table. The logic is :mod:`unimix.bench.zoo`. Example (six presets × 2 seeds ×
100,000 images is many CPU hours)::

    python scripts/bench_zoo.py --images 100000 --seeds 0 1 --out runs/zoo KEY=VALUE ...
"""

from __future__ import annotations

import argparse
import sys

from unimix.bench.zoo import FAMILIES, container_claim, format_claim, format_zoo, write_zoo, zoo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = zoo(
        args.presets,
        args.seeds,
        out=args.out,
        parallel=args.parallel,
        data=args.data,
        images=args.images,
        recipe=args.recipe,
        overrides=list(args.overrides),
        points=args.points,
        bank_limit=args.bank_limit,
    )
    print(f"\nmixer zoo: DINO on {args.data}, {args.images:,} source images per run")
    print(format_zoo(rows))
    claim = container_claim(rows)
    if claim is not None:
        print(format_claim(rows, claim))
    path = write_zoo(rows, claim, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
