"""The k-NN monitor of a pretraining run: the teacher's top-1 during training, and at the end the
teacher, the student and the same backbone untrained, like for like
(:func:`unimix.eval.compare_knn`)."""

from __future__ import annotations

from typing import Any

from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import Dataset

from ...backbones import create_dino_backbone
from ...eval import compare_knn, like_for_like_top1
from ..config import EvalConfig, PretrainConfig
from ..model import DINOModel
from ..step import disable_stochastic_layers
from .datasets import knn_datasets

__all__ = [
    "FINAL_BN_IMAGES",
    "RAW_PIXEL_MAX_SIZE",
    "final_knn",
    "final_knn_line",
    "final_knn_metrics",
    "online_knn",
]


def _knn_rows(
    e: EvalConfig,
    seed: int,
    networks: dict[str, nn.Module],
    train: Dataset,
    test: Dataset,
    accelerator: Accelerator,
    *,
    bn_images: int = 0,
    raw_pixels: bool = False,
) -> list[dict[str, Any]]:
    """Every process calls this: each extracts its block of the data on its device (the same
    distributed code as ``unimix knn``) and all get the same rows."""
    return compare_knn(
        networks,
        train,
        test,
        ks=(min(e.k, len(train)),),
        temperature=e.temperature,
        bn_images=bn_images,
        raw_pixels=raw_pixels,
        seed=seed,
        batch_size=e.batch_size,
        accelerator=accelerator,
    )


def online_knn(
    cfg: PretrainConfig,
    teacher: DINOModel,
    accelerator: Accelerator,
    eval_dataset: tuple[Dataset, Dataset] | None = None,
) -> float | None:
    """The teacher's k-NN top-1 during training, computed by every process (each extracts its
    share of the images); returned on the main process, None elsewhere. ``eval_dataset``: the
    caller's (bank, queries) instead of the config's (see :func:`knn_datasets`)."""
    train, test, _ = knn_datasets(cfg, eval_dataset)
    networks = {"teacher": teacher.backbone}
    rows = _knn_rows(cfg.eval, cfg.seed, networks, train, test, accelerator)
    top1 = next(iter(v for k, v in rows[0].items() if k.startswith("top1@")))
    disable_stochastic_layers(teacher)  # extraction put the backbone back in train mode
    return top1 if accelerator.is_main_process else None


#: Clean images that re-estimate BatchNorm statistics before the final k-NN (every network).
FINAL_BN_IMAGES = 2048
#: Largest image side at which the final k-NN also reports the raw-pixel floor.
RAW_PIXEL_MAX_SIZE = 64


def final_knn(
    cfg: PretrainConfig,
    teacher: DINOModel,
    student: DINOModel,
    accelerator: Accelerator,
    eval_dataset: tuple[Dataset, Dataset] | None = None,
) -> dict[str, Any] | None:
    """k-NN top-1 of the trained teacher, the trained student and the same backbone at its
    initial weights, like for like (:func:`unimix.eval.compare_knn`): one bank, one set of
    queries, and BatchNorm statistics re-estimated on the same clean bank images for every
    BatchNorm network (the statistics each came with are reported too); with small images, the
    raw-pixel floor as well. Every process computes it (each extracts its share of the images);
    returned on the main process, None elsewhere. ``eval_dataset``: as for :func:`online_knn`."""
    train, test, description = knn_datasets(cfg, eval_dataset)
    set_seed(cfg.seed)  # the student's backbone was the first thing built from this seed
    untrained = create_dino_backbone(cfg.model.backbone, **cfg.model.backbone_kwargs)
    untrained.to(accelerator.device)
    networks = {"teacher": teacher.backbone, "student": student.backbone, "untrained": untrained}
    rows = _knn_rows(
        cfg.eval,
        cfg.seed,
        networks,
        train,
        test,
        accelerator,
        bn_images=FINAL_BN_IMAGES,
        raw_pixels=cfg.augment.global_size <= RAW_PIXEL_MAX_SIZE,
    )
    disable_stochastic_layers(teacher)
    k = min(cfg.eval.k, len(train))

    if not accelerator.is_main_process:
        return None

    def headline(name: str) -> float | None:
        return like_for_like_top1(rows, name, k)

    return {
        "trained": headline("teacher"),
        "student": headline("student"),
        "untrained": headline("untrained"),
        "raw_pixels": headline("raw_pixels"),
        "bn_images": FINAL_BN_IMAGES if any(r["bn"] != "none" for r in rows) else 0,
        "rows": rows,
        "k": k,
        "temperature": cfg.eval.temperature,
        "dataset": description,
    }


def final_knn_metrics(knn: dict[str, Any]) -> dict[str, float]:
    """The final k-NN as metrics for ``metrics.jsonl`` and the trackers:
    ``final_knn_top1_<network>`` (teacher, student, untrained, raw_pixels) for each number."""
    names = {
        "trained": "teacher",
        "student": "student",
        "untrained": "untrained",
        "raw_pixels": "raw_pixels",
    }
    return {
        f"final_knn_top1_{name}": float(knn[key])
        for key, name in names.items()
        if isinstance(knn.get(key), int | float)
    }


def final_knn_line(knn: dict[str, Any]) -> str:
    """The run's last line: trained teacher (and student) against untrained and raw pixels."""
    trained, untrained = knn["trained"], knn["untrained"]
    line = (
        f"k-NN top-1 (k={knn['k']}, T={knn['temperature']}) on {knn['dataset']}: trained teacher "
        f"{trained:.2f}% (student {knn['student']:.2f}%) vs same backbone untrained "
        f"{untrained:.2f}% (margin {trained - untrained:+.2f} points)"
    )
    if knn.get("raw_pixels") is not None:
        line += f"; raw pixels {knn['raw_pixels']:.2f}%"
    if knn.get("bn_images"):
        kept = {r["network"]: r[f"top1@{knn['k']}"] for r in knn["rows"] if r["bn"] == "kept"}
        line += (
            f" [BatchNorm statistics re-estimated on {knn['bn_images']} clean bank images for "
            f"every network; as kept: teacher {kept['teacher']:.2f}%, untrained "
            f"{kept['untrained']:.2f}%]"
        )
    return line
