"""``unimix export``: a checkpoint's frozen backbone as a feature extractor file
(:mod:`unimix.eval.export`) or a timm / Hugging Face folder (:mod:`unimix.eval.hf_export`),
its round trip checked before it is reported."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli_options import add_model_args, run_command

if TYPE_CHECKING:
    import torch

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    from .formats import FORMATS

    p = argparse.ArgumentParser(
        prog="unimix export",
        description="Export a checkpoint's frozen backbone: a feature extractor (+ sidecar JSON; "
        "TorchScript and ONNX load without unimix) or, with --format hf, a timm / Hugging Face "
        "folder (config.json, model.safetensors, README.md model card) that "
        "timm.create_model('local-dir:DIR', pretrained=True, num_classes=0) loads.",
    )
    add_model_args(p)
    p.add_argument(
        "--format",
        choices=[*FORMATS, "hf"],
        default="safetensors",
        help="safetensors | torchscript | onnx (one file + its sidecar JSON) | hf (timm's "
        "save_for_hf folder + model card); default: safetensors",
    )
    p.add_argument(
        "--output",
        "-o",
        required=True,
        help="file path (the format's suffix is added if missing) or a folder: an existing one, or "
        "any path ending in '/' (created; receives extractor.<suffix>); --format hf: the folder",
    )
    p.add_argument("--image-size", type=int, help="export resolution (default: the checkpoint's)")
    p.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        help="with --format hf: also upload the folder's files to this Hugging Face Hub repo "
        "through timm's push_to_hf_hub, after the local folder is written and checked (needs "
        "network access and a token, e.g. HF_TOKEN; the offline test suite only checks the call)",
    )
    return p


def _run_dir(meta: dict[str, Any]) -> Path | None:
    """The run's output folder, from the weights path ``<run>/checkpoints/step_X/<file>``."""
    from ..checkpoint import CHECKPOINTS_DIR

    if meta.get("model_file") or meta.get("hf_folder"):  # an export: its source is no path here
        return None
    source = Path(meta.get("source") or "")
    if source.parent.parent.name == CHECKPOINTS_DIR:
        return source.parents[2]
    return source.parent if meta.get("source") else None


def _export_hf(args: argparse.Namespace, model: torch.nn.Module, meta: dict[str, Any]) -> None:
    """``--format hf``: write the folder, reload it with timm on ``--device``, compare, push."""
    import timm
    import torch

    from .device import resolve_device
    from .hf_export import export_hf, push_hf

    device = resolve_device(args.device)
    folder = export_hf(model, meta, args.output, _run_dir(meta))
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0)
    size = int(meta.get("image_size") or 224)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exported = loaded.eval().to(device)(x.to(device)).cpu()
        diff = (exported - model.to(device)(x.to(device)).cpu()).abs().max().item()
    arch = loaded.pretrained_cfg["architecture"]
    print(
        f"wrote {folder}/ (config.json, model.safetensors, README.md; {arch}, {size} px, checked "
        f"on {device}: max |diff| vs the checkpoint {diff:.2e}); load with "
        f"timm.create_model('local-dir:{folder}', pretrained=True, num_classes=0) after import unimix"
    )
    if args.push_to_hub:
        push_hf(model.cpu(), meta, args.push_to_hub, _run_dir(meta))
        print(f"pushed to https://huggingface.co/{args.push_to_hub}")


def _export(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.push_to_hub and args.format != "hf":
        raise ValueError(f"--push-to-hub: needs --format hf, got --format {args.format}")
    import torch

    from .device import resolve_device
    from .export import export_extractor, sidecar_path
    from .load import load_extractor, load_model

    device = resolve_device(args.device)
    model, meta = load_model(args.checkpoint, args.which)
    meta["trained_image_size"] = meta.get("trained_image_size") or meta.get("image_size")
    if args.image_size:
        meta["image_size"] = args.image_size  # the export's input size; it trained at its own
    if args.format == "hf":
        _export_hf(args, model, meta)
        return 0
    path = export_extractor(model, meta, args.output, args.format)  # written from the CPU
    # check the round trip on --device before telling the user it worked (ONNX Runtime: CPU)
    check = torch.device("cpu") if args.format == "onnx" else device
    size = int(meta.get("image_size") or 224)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exported = load_extractor(path).to(check)(x.to(check)).cpu()
        diff = (exported - model.to(device)(x.to(device)).cpu()).abs().max().item()
    print(
        f"wrote {path} and {sidecar_path(path)} ({args.format}, {meta.get('backbone')}, "
        f"{size} px, checked on {device}: max |diff| vs the checkpoint {diff:.2e})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``unimix export``: see ``unimix export --help``."""
    return run_command(_export, argv)
