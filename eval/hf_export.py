"""Export a backbone in timm's Hugging Face layout with a model card, and read such a folder back.

``export_hf(model, meta, "DIR")`` writes, through timm's own ``save_for_hf``:

- ``DIR/config.json``: ``architecture``, ``num_classes`` 0, ``num_features``, ``model_args``,
  ``pretrained_cfg`` with :func:`~unimix.eval.eval_data_config` (the config unimix's
  :func:`~unimix.eval.eval_transform` is built from), ``first_conv``, and a ``unimix`` block
  (preset, step, which network, the trained image size, run-relative source) that
  ``unimix knn`` and ``unimix export`` read when given the folder back (:func:`load_hf_folder`);
- ``DIR/model.safetensors``: the backbone's ``state_dict``, keys as the timm-created model has them;
- ``DIR/README.md``: a model card (timm's ``generate_readme``) with the exported network's numbers.

After ``import unimix``, ``timm.create_model("local-dir:DIR", pretrained=True, num_classes=0)``
returns the backbone with that ``pretrained_cfg``; :func:`push_hf` uploads the folder for
``"hf-hub:USER/REPO"``. No absolute path is written anywhere. Every field: docs/export.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from torch import nn

from .. import __version__
from ..backbones import PRESETS
from ..checkpoint import default_file_mode
from ..config import ConfigError, read_yaml_file
from .export import ExportWriteError, export_write_error, portable_source
from .report import EVAL_DIR, RUN_CONFIG
from .transform import eval_data_config

__all__ = [
    "HF_FILES",
    "export_hf",
    "hf_card",
    "hf_export_args",
    "is_hf_folder",
    "load_hf_folder",
    "push_hf",
]

_DROP_RATES = ("drop_rate", "drop_path_rate", "drop_block_rate", "proj_drop_rate")
_TIMM_ARGS = ("num_classes", "in_chans", "global_pool")  # model_args timm records on its own
_TASK = "image-feature-extraction"
#: What makes a folder an hf export: timm's config and the weights.
HF_FILES = ("config.json", "model.safetensors")


def _architecture(backbone: str) -> str:
    bare = backbone.removeprefix("unimix_")
    return "unimix_" + bare if bare in PRESETS else backbone


def hf_export_args(model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments shared by timm's ``save_for_hf`` and ``push_to_hf_hub``:
    ``model_args`` (the run's kwargs, drop rates left out), ``data_config`` (the run's eval
    transform, :func:`~unimix.eval.eval_data_config`) and ``model_config`` (the ``unimix``
    block of ``config.json``)."""
    if not hasattr(model, "pretrained_cfg") or not meta.get("backbone"):
        raise ValueError(
            f"--format hf: needs a checkpoint or a safetensors export (a timm-built backbone), "
            f"got {type(model).__name__}"
        )
    size = int(meta.get("image_size") or model.pretrained_cfg["input_size"][-1])
    kwargs = {k: v for k, v in (meta.get("backbone_kwargs") or {}).items() if k not in _DROP_RATES}
    mean = meta.get("mean") or (0.485, 0.456, 0.406)
    std = meta.get("std") or (0.229, 0.224, 0.225)
    unimix = {
        "backbone": meta["backbone"],
        "backbone_kwargs": kwargs,
        "step": meta.get("step"),
        "which": meta.get("which"),
        "trained_image_size": meta.get("trained_image_size") or size,
        "source": portable_source(meta.get("source")),
        "unimix_version": __version__,
    }
    return {
        "model_args": kwargs,
        "data_config": eval_data_config(size, mean, std),
        "model_config": {"unimix": unimix},
    }


def is_hf_folder(path: str | os.PathLike) -> bool:
    """A folder holding timm's ``config.json`` and ``model.safetensors``."""
    path = Path(path)
    return path.is_dir() and all((path / name).is_file() for name in HF_FILES)


def load_hf_folder(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, meta)`` of a ``--format hf`` folder: the headless backbone through timm's
    ``local-dir:`` loader, in eval mode, and the keys :func:`~unimix.checkpoint.load_backbone`
    gives (``backbone``, ``backbone_kwargs``, ``num_features``, ``image_size``, ``mean``,
    ``std``, ``step``, ``source``) plus ``which``, ``trained_image_size`` and ``hf_folder``.
    A folder timm cannot load is one ValueError line naming it."""
    import timm

    path = Path(path)
    config_file = path / "config.json"
    config = _read_json(config_file)
    if config is None or not isinstance(config.get("pretrained_cfg"), dict):
        raise ValueError(f"{config_file}: not a timm config (a JSON object with pretrained_cfg)")
    try:
        model = timm.create_model(f"local-dir:{path}", pretrained=True, num_classes=0)
    except Exception as err:  # timm raises many types for a foreign or damaged folder
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: timm cannot load this folder ({first})") from None
    info = config["unimix"] if isinstance(config.get("unimix"), dict) else {}
    timm_args = config.get("model_args") or {}
    cfg = model.pretrained_cfg
    meta = {
        "backbone": info.get("backbone") or config.get("architecture"),
        "backbone_kwargs": info.get("backbone_kwargs")
        or {k: v for k, v in timm_args.items() if k not in _TIMM_ARGS},
        "num_features": int(model.num_features),
        "image_size": int(cfg["input_size"][-1]),
        "trained_image_size": info.get("trained_image_size"),
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "step": info.get("step"),
        "which": info.get("which") or "teacher",
        "source": info.get("source"),
        "hf_folder": str(path),
    }
    return model.eval(), meta


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _recipe(run_dir: Path | None) -> dict[str, Any]:
    """The run's ``config.yaml`` as the config loader reads a file (safe, size-capped, no
    duplicate keys); ``{}`` when absent or unreadable."""
    if run_dir is None or not (run_dir / RUN_CONFIG).is_file():
        return {}
    try:
        cfg = read_yaml_file(run_dir / RUN_CONFIG)
    except ConfigError:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _reports(run_dir: Path) -> list[dict[str, Any]]:
    """``unimix knn`` / ``unimix linear`` reports of the run: ``eval/*.json`` (and the
    ``linear.json`` earlier versions wrote into the working directory)."""
    files = [*sorted((run_dir / EVAL_DIR).glob("*.json")), run_dir / "linear.json"]
    found = [_read_json(f) for f in files if f.is_file()]
    return [r for r in found if r and r.get("command") in ("knn", "linear")]


def _final_step(run_dir: Path) -> int | None:
    """The step of the run's newest checkpoint: what a ``knn.json`` without a step measured."""
    from ..checkpoint import CHECKPOINTS_DIR, list_checkpoints

    found = list_checkpoints(run_dir / CHECKPOINTS_DIR)
    return int(found[-1].name.rsplit("_", 1)[-1]) if found else None


def _results(run_dir: Path | None, which: str, step: Any, names: Callable[[Any], str]) -> list[str]:
    """Card lines: the numbers of the exported network (``which`` at ``step``), never another's."""
    if run_dir is None:
        return []
    rows = []
    knn = _read_json(run_dir / "knn.json")
    key = "trained" if which == "teacher" else which
    if knn and knn.get("step", _final_step(run_dir)) == step and _number(knn.get(key)):
        line = f"- k-NN top-1 (k={knn.get('k')}) on {names(knn.get('dataset'))}: {knn[key]:.2f}%"
        if _number(knn.get("untrained")):
            line += f" (same backbone untrained: {knn['untrained']:.2f}%)"
        rows.append(f"{line}; the run's final k-NN of the {which}")
    for report in _reports(run_dir):
        if report.get("which", "teacher") != which or report.get("step") != step:
            continue
        data = names(f"{report.get('dataset')} {report.get('test_split')}")
        if report["command"] == "knn" and isinstance(report.get("top1"), dict):
            for k, top1 in sorted(report["top1"].items(), key=lambda kv: int(kv[0])):
                if _number(top1):
                    rows.append(f"- k-NN top-1 (k={k}) on {data}: {top1:.2f}%; unimix knn")
        top1 = report.get("test_top1")
        if report["command"] == "linear" and _number(top1):
            rows.append(f"- linear probe top-1 on {data}: {top1:.2f}%; unimix linear")
    return rows


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _dataset_names(cfg: dict[str, Any], run_dir: Path | None) -> Callable[[Any], str]:
    """A function rewriting, in a text, each dataset path of the run's config as seen from the
    run folder (``../data/src``): the card names no absolute path, and no path the reader
    could not place."""
    paths = []
    for section in ("data", "eval"):
        value = (cfg.get(section) or {}).get("dataset")
        if isinstance(value, str) and ("/" in value or os.sep in value):
            paths.append(value)

    def relative(value: str) -> str:
        path = Path(value)
        if run_dir is None:
            return path.name
        if not path.is_absolute():  # as typed where the run was started: taken from here
            path = Path.cwd() / path
        return Path(os.path.relpath(path, run_dir.resolve())).as_posix()

    def names(text: Any) -> str:
        text = str(text)
        for value in sorted(paths, key=len, reverse=True):
            text = text.replace(value, relative(value))
        return text

    return names


def _pretraining_data(cfg: dict[str, Any], names: Callable[[Any], str]) -> str:
    if not cfg:
        return "not recorded (no config.yaml of the run was found)"
    dataset = (cfg.get("data") or {}).get("dataset")
    if dataset is None:
        return "the caller's own images (unimix.pretrain(dataset=...)), not named by the run"
    return names(dataset)


_USAGE = """
```python
import timm
import unimix  # registers the unimix_* architectures with timm

# "{source}": a path from the folder that holds {name}/ (from elsewhere, give the folder's path)
model = timm.create_model("{source}", pretrained=True, num_classes=0).eval()
config = timm.data.resolve_data_config({{}}, model=model)  # the run's size, mean/std, crop
transform = timm.data.create_transform(**config)  # = unimix's eval transform
features = model(transform(image).unsqueeze(0))  # image: a PIL RGB image -> [1, {num_features}]

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
    names = _dataset_names(cfg, run_dir)
    arch = _architecture(meta["backbone"])
    which = meta.get("which") or "teacher"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    size = int(meta.get("image_size") or model.pretrained_cfg["input_size"][-1])
    trained = meta.get("trained_image_size") or (cfg.get("augment") or {}).get("global_size")
    input_size = f"{size} px" + (
        f" (trained at {trained} px)" if trained and trained != size else ""
    )
    details: dict[str, Any] = {
        "Model Type": "Image feature backbone (self-supervised, DINO; headless)",
        "Architecture": f"{arch} ({params:.2f} M parameters, {model.num_features} features)",
        "Pretraining data": _pretraining_data(cfg, names)
        + (f", at {trained} px" if trained else ""),
        "Input size": input_size,
        "Steps": meta.get("step"),
        "Weights": f"the {which} backbone"
        + (f" of {meta['source']}" if meta.get("source") else ""),
        "Normalisation": f"mean {list(meta.get('mean') or [])}, std {list(meta.get('std') or [])}",
    }
    details = {k: v for k, v in details.items() if v is not None}
    if cfg:
        recipe = {
            "epochs": cfg.get("epochs"),
            "max_steps": cfg.get("max_steps"),
            "batch_size": data.get("batch_size"),
            "base_lr": (cfg.get("optim") or {}).get("base_lr"),
            "dino head": (head or {}).get("head"),
            "teacher_temp": dino.get("teacher_temp"),
            "momentum_teacher": dino.get("momentum_teacher"),
        }
        details["Recipe"] = {k: v for k, v in recipe.items() if v is not None}
    step = meta.get("step")
    results = _results(run_dir, which, step, names) or [
        f"- no k-NN / linear report of the {which}"
        + (f" at step {step}" if step is not None else "")
        + " was found in the run folder"
    ]
    name = source.split(":", 1)[-1].rstrip("/").rsplit("/", 1)[-1]
    return {
        "tags": [_TASK, "timm", "unimix", "dino", "self-supervised"],
        "license": "apache-2.0",
        "description": f"A {arch} backbone pretrained with DINO by unimix "
        f"(exported with `unimix export --format hf`).",
        "details": details,
        "usage": _USAGE.format(source=source, name=name, num_features=model.num_features),
        "comparison": "\n".join(results) + "\n",
    }


def export_hf(
    model: nn.Module, meta: dict[str, Any], output: str | os.PathLike, run_dir: Path | None = None
) -> Path:
    """Write ``output/{config.json, model.safetensors, README.md}`` with timm's ``save_for_hf``
    (the folder is created when missing). Returns the folder.

    ``meta``: what :func:`~unimix.checkpoint.load_backbone` returns (``backbone``,
    ``backbone_kwargs``, ``image_size``, ``mean``, ``std``, ``step``, ``source``), ``which``,
    and ``trained_image_size`` when ``image_size`` is the export's own;
    ``run_dir``: the run's output folder, read for ``config.yaml``, ``knn.json``, ``eval/``.
    """
    from timm.models import save_for_hf
    from timm.models._hub import generate_readme

    folder = Path(output)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: --format hf writes a folder, but this is a file")
    meta = {**meta, "source": portable_source(meta.get("source"))}
    args = hf_export_args(model, meta)
    name = folder.resolve().name
    card = hf_card(model, meta, f"local-dir:{name}", run_dir)
    was_training = model.training
    try:
        save_for_hf(model.eval(), os.fspath(folder), safe_serialization=True, **args)
        readme = generate_readme(card, name, task_name=_TASK)
        (folder / "README.md").write_text(readme, encoding="utf-8")
        weights = folder / HF_FILES[1]
        weights.chmod(default_file_mode())  # safetensors writes 0600; the JSON beside it is not
    except OSError as err:  # read-only, full, no permission: inside timm or here
        raise export_write_error(err, folder) from None
    except SafetensorError as err:  # safetensors' own I/O error for model.safetensors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportWriteError(f"cannot write {folder / HF_FILES[1]}: {first}") from None
    finally:
        model.train(was_training)
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
            model.eval(), repo_id, model_card=card, task_name=_TASK, safe_serialization=True, **args
        )
    except Exception as err:  # network, authentication, hub errors: many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RuntimeError(f"--push-to-hub {repo_id}: upload failed ({first})") from err
    finally:
        model.train(was_training)
