"""Export a run's backbone in timm's Hugging Face layout (``save_for_hf``) + a model card.

``export_hf(model, meta, "DIR")`` writes, through timm's own ``save_for_hf``:

- ``DIR/config.json``: ``architecture`` (``unimix_<preset>``, or the timm model's name),
  ``num_classes`` 0, ``num_features``, ``model_args`` (the run's ``backbone_kwargs`` without drop
  rates, as timm records them) and ``pretrained_cfg`` with the run's ``mean``/``std``,
  ``input_size`` (the run's image size) and the interpolation / crop of unimix's
  :func:`~unimix.eval.eval_transform` (bilinear; centre crop 0.875 above 64 px, a plain resize at
  64 px and below);
- ``DIR/model.safetensors``: the backbone's ``state_dict``, keys as the timm-created model has them;
- ``DIR/README.md``: a model card (timm's ``generate_readme``): recipe, data, steps, the run's
  k-NN / linear-probe numbers (``knn.json`` / ``linear.json`` in the run folder, when present),
  how to load it, licence Apache-2.0.

After ``import unimix``, ``timm.create_model("local-dir:DIR", pretrained=True, num_classes=0)``
returns the backbone with that ``pretrained_cfg`` (``timm.data.resolve_data_config({},
model=model)`` gives the run's transform); ``"hf-hub:USER/REPO"`` takes the same path once the
folder is on the Hub (:func:`push_hf` uploads it with timm's ``push_to_hf_hub``; needs network
access and a Hugging Face token). No absolute path is written anywhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from unimix.backbones import PRESETS

from .export import portable_source

__all__ = ["export_hf", "hf_card", "hf_export_args", "push_hf"]

_DROP_RATES = ("drop_rate", "drop_path_rate", "drop_block_rate", "proj_drop_rate")
_TASK = "image-feature-extraction"


def _architecture(backbone: str) -> str:
    bare = backbone.removeprefix("unimix_")
    return "unimix_" + bare if bare in PRESETS else backbone


def hf_export_args(model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments shared by timm's ``save_for_hf`` and ``push_to_hf_hub``:
    ``model_args`` (the run's kwargs, drop rates left out) and ``data_config`` (the run's
    eval transform: size, mean/std, bilinear, crop)."""
    if not hasattr(model, "pretrained_cfg") or not meta.get("backbone"):
        raise ValueError(
            f"--format hf: needs a checkpoint or a safetensors export (a timm-built backbone), "
            f"got {type(model).__name__}"
        )
    size = int(meta.get("image_size") or model.pretrained_cfg["input_size"][-1])
    kwargs = {k: v for k, v in (meta.get("backbone_kwargs") or {}).items() if k not in _DROP_RATES}
    data_config = {
        "input_size": (3, size, size),
        "mean": tuple(float(v) for v in meta.get("mean") or (0.485, 0.456, 0.406)),
        "std": tuple(float(v) for v in meta.get("std") or (0.229, 0.224, 0.225)),
        "interpolation": "bilinear",  # torchvision's Resize default, as eval_transform
        "crop_pct": 0.875 if size > 64 else 1.0,
        "crop_mode": "center" if size > 64 else "squash",
    }
    return {"model_args": kwargs, "data_config": data_config}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _recipe(run_dir: Path | None) -> dict[str, Any]:
    """The run's ``config.yaml`` (``yaml.safe_load``), ``{}`` when absent or unreadable."""
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return {}
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    except yaml.YAMLError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _results(run_dir: Path | None) -> list[str]:
    rows = []
    knn = _read_json(run_dir / "knn.json") if run_dir else None
    if knn and isinstance(knn.get("trained"), (int, float)):
        line = f"- k-NN top-1 (k={knn.get('k')}) on {knn.get('dataset')}: {knn['trained']:.2f}%"
        if isinstance(knn.get("untrained"), (int, float)):
            line += f" (same backbone untrained: {knn['untrained']:.2f}%)"
        rows.append(line)
    linear = _read_json(run_dir / "linear.json") if run_dir else None
    top1 = (linear or {}).get("test_top1", (linear or {}).get("top-1"))
    if isinstance(top1, (int, float)):
        rows.append(
            f"- linear probe top-1 on {linear.get('dataset', 'its test split')}: {top1:.2f}%"
        )
    return rows


_USAGE = """
```python
import timm
import unimix  # registers the unimix_* architectures with timm

model = timm.create_model("{source}", pretrained=True, num_classes=0).eval()
# a local folder: "local-dir:PATH/TO/FOLDER"; on the Hugging Face Hub: "hf-hub:USER/REPO"
config = timm.data.resolve_data_config({{}}, model=model)  # the run's size, mean/std, crop
transform = timm.data.create_transform(**config)
features = model(transform(image).unsqueeze(0))  # [1, {num_features}]

# torch.hub, from a checkout of unimix (its hubconf.py)
import torch
model = torch.hub.load("path/to/unimix", "from_export", "{source}", source="local")
```
"""


def hf_card(
    model: nn.Module, meta: dict[str, Any], source: str, run_dir: Path | None
) -> dict[str, Any]:
    """The ``model_card`` dict timm's ``generate_readme`` turns into ``README.md``; ``source``
    is what the usage example loads (``"local-dir:NAME"`` / ``"hf-hub:USER/REPO"``)."""
    cfg = _recipe(run_dir)
    data, dino, head = cfg.get("data") or {}, cfg.get("dino") or {}, cfg.get("model", {})
    arch = _architecture(meta["backbone"])
    params = sum(p.numel() for p in model.parameters()) / 1e6
    details: dict[str, Any] = {
        "Model Type": "Image feature backbone (self-supervised, DINO; headless)",
        "Architecture": f"{arch} ({params:.2f} M parameters, {model.num_features} features)",
        "Pretraining data": f"{data.get('dataset', 'unknown')} at {meta.get('image_size')} px",
        "Steps": meta.get("step"),
        "Weights": f"the {meta.get('which', 'teacher')} backbone of {meta.get('source')}",
        "Normalisation": f"mean {list(meta.get('mean') or [])}, std {list(meta.get('std') or [])}",
    }
    if cfg:
        details["Recipe"] = {
            "epochs": cfg.get("epochs"),
            "max_steps": cfg.get("max_steps"),
            "batch_size": data.get("batch_size"),
            "base_lr": (cfg.get("optim") or {}).get("base_lr"),
            "dino head": (head or {}).get("head"),
            "teacher_temp": dino.get("teacher_temp"),
            "momentum_teacher": dino.get("momentum_teacher"),
        }
    results = _results(run_dir) or ["- no k-NN / linear report was found in the run folder"]
    return {
        "tags": [_TASK, "timm", "unimix", "dino", "self-supervised"],
        "license": "apache-2.0",
        "description": f"A {arch} backbone pretrained with DINO by unimix "
        f"(exported with `unimix export --format hf`).",
        "details": details,
        "usage": _USAGE.format(source=source, num_features=model.num_features),
        "comparison": "\n".join(results) + "\n",
    }


def export_hf(
    model: nn.Module, meta: dict[str, Any], output: str | os.PathLike, run_dir: Path | None = None
) -> Path:
    """Write ``output/{config.json, model.safetensors, README.md}`` with timm's ``save_for_hf``
    (the folder is created when missing). Returns the folder.

    ``meta``: what :func:`~unimix.checkpoint.load_backbone` returns (``backbone``,
    ``backbone_kwargs``, ``image_size``, ``mean``, ``std``, ``step``, ``source``; ``which``);
    ``run_dir``: the run's output folder, read for ``config.yaml``, ``knn.json``, ``linear.json``.
    """
    from timm.models import save_for_hf
    from timm.models._hub import generate_readme

    folder = Path(output)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: --format hf writes a folder, but this is a file")
    meta = {**meta, "source": portable_source(meta.get("source"))}
    args = hf_export_args(model, meta)
    card = hf_card(model, meta, f"local-dir:{folder.name}", run_dir)
    was_training = model.training
    try:
        save_for_hf(model.eval(), os.fspath(folder), safe_serialization=True, **args)
    finally:
        model.train(was_training)
    readme = generate_readme(card, folder.name, task_name=_TASK)
    (folder / "README.md").write_text(readme, encoding="utf-8")
    return folder


def push_hf(
    model: nn.Module, meta: dict[str, Any], repo_id: str, run_dir: Path | None = None
) -> Any:
    """Upload the same files to the Hugging Face Hub repo ``repo_id`` with timm's
    ``push_to_hf_hub`` (creates the repo; keeps an existing README). Needs network access and a
    token (``huggingface-cli login`` or ``HF_TOKEN``); failures are one-line ``RuntimeError``."""
    from timm.models import push_to_hf_hub

    meta = {**meta, "source": portable_source(meta.get("source"))}
    args = hf_export_args(model, meta)
    card = hf_card(model, meta, f"hf-hub:{repo_id}", run_dir)
    was_training = model.training
    try:
        return push_to_hf_hub(
            model.eval(), repo_id, model_card=card, task_name=_TASK, safe_serialization=True,
            **args,
        )  # fmt: skip
    except Exception as err:  # network, authentication, hub errors: many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RuntimeError(f"--push-to-hub {repo_id}: upload failed ({first})") from err
    finally:
        model.train(was_training)
