"""The curves of a race: k-NN top-1 @20 of each run's teacher against source images seen, with
the floors (raw pixels, untrained) as dotted lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_race"]


def plot_race(report: dict[str, Any], path: str | Path) -> None:
    """Draw ``report`` (from :func:`unimix.bench.race.race`) into the image file ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from unimix.eval import is_like_for_like

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for method, summary in report["methods"].items():
        for run in summary["runs"]:
            xs = [p["images_seen"] for p in run["curve"]]
            ax.plot(
                xs, [p["teacher@20"] for p in run["curve"]], "o-", label=f"{method} s{run['seed']}"
            )
    for rows in report["floors"].values():
        for row in rows:
            if is_like_for_like(row):
                ax.axhline(row["top1@20"], ls=":", lw=1, color="gray")
    ax.set_xlabel("source images seen")
    ax.set_ylabel("k-NN top-1 @20 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="dotted: floors")
    fig.savefig(path, dpi=120)
