"""Checks made before a pretraining run does any work: every dataset and path it will need.

:func:`preflight` runs first in :func:`~unimix.ssl.engine.run.build_run`, before the Accelerator, the
data or the networks are built and before anything is written: the training data
(``data.dataset``), the k-NN data when a k-NN will run (``eval.dataset``/``eval.root`` and
both splits), the ``--resume`` directory and ``output_dir`` (a folder, or creatable; writable;
with room for one checkpoint, every folder name within the file system's limit). The k-NN bank
and queries must not be the same images (a folder without ``train/`` and ``test/`` serves both
splits) and must be labeled (with ``data.holdout``: the training set, see
:mod:`.preflight_holdout`), shards need ``eval.dataset`` for a k-NN, the backbone must take
the global and local crop sizes (tried on the meta device), and a resumed checkpoint must have
been written with this ``data.batch_size`` and ``seed``. Each failure is one line naming the
key and its value.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...checkpoint import CHECKPOINTS_DIR, CheckpointError, list_checkpoints
from ...data import (
    DATASET_NAMES,
    TORCHVISION_SPLITS,
    build_dataset,
    dataset_options,
    default_data_root,
    is_generated,
    unlabeled,
)
from ...data.distinct import check_distinct
from ...data.shards import is_shard_spec
from ...data.torchvision_sets import _EXPECTED_FOLDER  # what torchvision reads under root
from ..config import PretrainConfig
from .preflight_holdout import holdout_problem, knn_runs
from .training_state import check_resume_settings

__all__ = ["PreflightError", "checkpoint_bytes", "preflight"]

#: Room asked for beyond the estimated checkpoint: manifest, RNG states, file-system slack.
MARGIN_BYTES = 16 * 2**20
MARGIN_FRACTION = 0.10
#: Optimizer state tensors per trainable parameter.
_OPTIMIZER_SLOTS = {"adamw": 2, "sgd": 1, "lars": 1}


class PreflightError(ValueError):
    """A dataset or path the run needs is missing or unusable; one line naming the key."""


@dataclass(frozen=True)
class _DataRef:
    """One dataset read: the config key that names it, its value, split and options."""

    key: str
    name: str
    split: str
    options: dict[str, Any]
    download: bool = False
    root_key: str = "data.root"
    knn: bool = False  # read by the k-NN (bank or queries), not by training


def _check_torchvision(ref: _DataRef) -> None:
    name = ref.name.lower()
    splits = TORCHVISION_SPLITS[name]
    if ref.split not in splits:
        raise PreflightError(
            f"{ref.key}={ref.name!r}: no split {ref.split!r} (expected one of {', '.join(splits)})"
        )
    root = Path(ref.options["root"]).expanduser() if "root" in ref.options else default_data_root()
    expected = root / _EXPECTED_FOLDER[name]
    if not ref.download and not expected.is_dir():
        raise PreflightError(
            f"{ref.key}={ref.name!r}: not found under root {os.fspath(root)!r} (expected "
            f"{expected}): set {ref.root_key} to the folder that holds it"
            + (", or data.download=true" if ref.key == "data.dataset" else "")
        )


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _check_dataset(ref: _DataRef, full: bool) -> Any:
    """Raise :class:`PreflightError` unless ``ref`` can be read. ``synthetic``: built with one
    image (checks the split and options); torchvision sets: the split, and their files under
    the root unless downloaded; folders: found, and with ``full`` built (every image listed,
    none decoded) as :func:`~unimix.data.build_dataset` builds them; ``.tar`` shards: opened
    (their headers read). Returns the dataset built, if one was."""
    label = f"{ref.key}={ref.name!r}"
    if ref.name.lower() in TORCHVISION_SPLITS:
        _check_torchvision(ref)
        return None
    shards = is_shard_spec(ref.name, ref.split)  # .tar files, a pattern, pipe:/URL specs
    if not is_generated(ref.name) and not shards:
        folder = Path(ref.name).expanduser()
        if not folder.exists():
            names = ", ".join(DATASET_NAMES)
            raise PreflightError(f"{label}: no such folder and not one of {names}")
        if not folder.is_dir():
            raise PreflightError(f"{label}: a file, not a folder of images")
        if not full:
            return None
    options = {**ref.options, "num_samples": 1} if is_generated(ref.name) else ref.options
    try:
        return build_dataset(ref.name, ref.split, **options)
    except (OSError, ValueError) as err:
        raise PreflightError(f"{label} (split {ref.split!r}): {_first_line(err)}") from None


def _data_refs(cfg: PretrainConfig) -> list[tuple[_DataRef, bool]]:
    """(dataset read, check fully) for the training set and, when a k-NN will run on another
    split or set, both k-NN splits, with the options :mod:`unimix.ssl.engine.datasets` passes."""
    d, e = cfg.data, cfg.eval
    refs = []
    if d.dataset is not None:  # None: the caller's own images (unimix.pretrain(dataset=...))
        train_options = dataset_options(
            d.dataset,
            root=d.root,
            num_samples=d.num_samples,
            image_size=d.image_size,
            seed=cfg.seed,
        )
        refs.append(
            (_DataRef("data.dataset", d.dataset, d.split, train_options, d.download), False)
        )
    if (not knn_runs(cfg) and e.dataset is None) or d.holdout:
        return refs  # no k-NN, or a validation k-NN on the training set's held-out images
    name, key = (
        (e.dataset, "eval.dataset") if e.dataset is not None else (d.dataset, "data.dataset")
    )
    if name is None:
        return refs
    root = e.root or d.root
    # the training set's own download (same name and root) happens before the k-NN reads it
    downloaded = d.download and name.lower() == (d.dataset or "").lower() and root == d.root
    for split, count in ((e.train_split, e.num_train), (e.test_split, e.num_test)):
        options = dataset_options(
            name, root=root, num_samples=count, image_size=d.image_size, seed=cfg.seed
        )
        ref = _DataRef(key, name, split, options, downloaded, "eval.root", knn=True)
        refs.append((ref, True))
    return refs


def _check_eval_values(cfg: PretrainConfig) -> None:
    e = cfg.eval
    if knn_runs(cfg) and not cfg.data.holdout and e.train_split == e.test_split:
        raise PreflightError(
            f"eval.test_split={e.test_split!r}: the same split as eval.train_split, so every "
            "query would find itself in the bank; name another split (or set data.holdout)"
        )
    if e.root is not None and not Path(e.root).expanduser().is_dir():
        raise PreflightError(f"eval.root={e.root!r}: no such folder")


def _check_knn_distinct(bank: tuple[_DataRef, Any], queries: tuple[_DataRef, Any]) -> None:
    """The k-NN's bank and queries are not the same images (compared as files, not split names)."""
    (ref, bank_set), (query_ref, query_set) = bank, queries
    hint = (
        "give it train/ and test/ subfolders, or set eval.train_split / eval.test_split to two "
        "different subfolders"
    )
    if ref.key == "data.dataset":
        hint += " (or data.holdout=N: a k-NN on N held-out training images)"
    try:
        check_distinct(
            bank_set,
            query_set,
            f"{ref.key}={ref.name!r} (splits {ref.split!r} and {query_ref.split!r})",
            hint,
        )
    except ValueError as err:
        raise PreflightError(str(err)) from None


def _check_labeled(ref: _DataRef, dataset: Any) -> None:
    """A k-NN set must have labels: an unlabeled folder failed at the first k-NN, with
    "train_labels: negative label -1" and no checkpoint."""
    if unlabeled(dataset):
        raise PreflightError(
            f"{ref.key}={ref.name!r} (split {ref.split!r}): no labels (a flat folder of "
            "images); the k-NN needs labeled images, root/<split>/<class>/<image> (or switch "
            "it off: eval.knn_at_end=false eval.knn_every_epochs=0)"
        )


def _check_shard_knn(cfg: PretrainConfig) -> None:
    """Streamed shards have no random access: their k-NN needs ``eval.dataset`` (it failed only
    once the run had written its config and metrics)."""
    d, e = cfg.data, cfg.eval
    if not knn_runs(cfg) or e.dataset is not None or d.holdout or d.dataset is None:
        return
    if is_shard_spec(d.dataset, d.split):
        raise PreflightError(
            f"eval.dataset: required for a k-NN when data.dataset is shards "
            f"({d.dataset!r}: streamed, no random access); name a labeled folder or "
            "dataset, or switch the k-NN off (eval.knn_at_end=false eval.knn_every_epochs=0)"
        )


def _check_crop_sizes(cfg: PretrainConfig, backbone: torch.nn.Module) -> None:
    """The backbone takes the crops the run feeds it (global and local sizes), tried on the meta
    device: a model with a fixed input size failed at step 1, deep in timm."""
    a = cfg.augment
    sizes = [("augment.global_size", a.global_size)]
    if a.num_local:
        sizes.append(("augment.local_size", a.local_size))
    for key, size in sizes:
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                param = next(backbone.parameters(), None)
                device = param.device if param is not None else torch.device("meta")
                backbone.eval()(torch.zeros(2, 3, size, size, device=device))
        except NotImplementedError:
            return  # an op the meta device lacks: the size cannot be tried here
        except (AssertionError, RuntimeError, ValueError) as err:
            text = _first_line(err)
            if "meta" in text.lower():
                return
            raise PreflightError(
                f"{key}={size}: model.backbone={cfg.model.backbone!r} does not take "
                f"{size}x{size} images ({text}); set model.backbone_kwargs (e.g. img_size, "
                "dynamic_img_size: true) or crop sizes it takes"
            ) from None


def _build_networks(cfg: PretrainConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(student, backbone) as the run builds them, on the meta device (on the CPU for a model
    that cannot be built there), with the random number generators left as they were."""
    from ..step import build_student  # deferred: backbones are imported only when needed

    kwargs = cfg.model.backbone_kwargs
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                return build_student(cfg)
        except TypeError as err:  # e.g. an option the backbone does not take
            raise PreflightError(f"model.backbone_kwargs={kwargs!r}: {_first_line(err)}") from None
        except (RuntimeError, NotImplementedError):  # e.g. .item() of a meta tensor
            return build_student(cfg)


def checkpoint_bytes(
    cfg: PretrainConfig, networks: tuple[torch.nn.Module, torch.nn.Module] | None = None
) -> int:
    """Estimated bytes of one checkpoint: student and teacher (backbone + head), both backbones
    again (for evaluation and export), the optimizer state (AdamW: 2 tensors per trainable
    parameter, SGD/LARS: 1) and the loss centre, before the margin. The networks (``(student,
    backbone)``, else built here) are built on the meta device (no memory, no random numbers
    drawn)."""
    student, backbone = networks or _build_networks(cfg)

    def state_bytes(module: torch.nn.Module) -> int:
        return sum(t.numel() * t.element_size() for t in module.state_dict().values())

    trainable = sum(p.numel() * p.element_size() for p in student.parameters() if p.requires_grad)
    slots = _OPTIMIZER_SLOTS.get(cfg.optim.name, 2)
    center = 4 * cfg.model.head.out_dim
    return 2 * state_bytes(student) + 2 * state_bytes(backbone) + slots * trainable + center


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (``.`` for a relative path with none)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


#: Bytes a checkpoint adds below output_dir (``checkpoints/step_N.tmp-.../random_states_N.pkl``).
_CHECKPOINT_SUFFIX_BYTES = 96


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _check_path_length(value: str, path: Path) -> None:
    """Every folder name of ``path`` within its file system's name limit (255 bytes on most),
    the files a checkpoint writes below it within PATH_MAX: one line, not ENAMETOOLONG later."""
    shown = value if len(value) <= 80 else f"{value[:40]}...{value[-20:]}"
    folder, limit = Path(path.anchor), _name_max(Path(path.anchor))
    for part in path.parts[1:]:
        size = len(os.fsencode(part))
        if size > limit:
            name = part if len(part) <= 40 else f"{part[:30]}..."
            raise PreflightError(
                f"output_dir={shown!r}: the folder name {name!r} is {size} bytes, over the "
                f"{limit}-byte limit of its file system"
            )
        folder = folder / part
        if os.path.isdir(folder):
            limit = _name_max(folder)
    try:
        path_max = os.pathconf(path.anchor, "PC_PATH_MAX")
    except (OSError, ValueError):
        path_max = 4096
    size = len(os.fsencode(str(path))) + _CHECKPOINT_SUFFIX_BYTES
    if size > path_max:
        raise PreflightError(
            f"output_dir={shown!r}: {len(os.fsencode(str(path)))} bytes long, so the files of "
            f"a checkpoint inside it would exceed the {path_max}-byte path limit"
        )


def _check_output_dir(
    cfg: PretrainConfig, networks: tuple[torch.nn.Module, torch.nn.Module] | None = None
) -> None:
    value = cfg.output_dir
    path = Path(value).expanduser().absolute()
    _check_path_length(value, path)
    existing = _existing_ancestor(path)
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under {existing}, which is a file"
        raise PreflightError(f"output_dir={value!r}: {where}, not a folder")
    checkpoints = path / "checkpoints"
    if checkpoints.exists() and not checkpoints.is_dir():
        raise PreflightError(f"output_dir={value!r}: {checkpoints} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created in {existing}"
        raise PreflightError(f"output_dir={value!r}: {what} (read-only or no permission)")
    needed = int(checkpoint_bytes(cfg, networks) * (1 + MARGIN_FRACTION)) + MARGIN_BYTES
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise PreflightError(
            f"output_dir={value!r}: {free / 2**20:.1f} MB free on its file system, one "
            f"checkpoint of {cfg.model.backbone} needs ~{needed / 2**20:.0f} MB"
        )


def _check_resume(cfg: PretrainConfig, resume: str | os.PathLike | None) -> None:
    """The ``--resume`` directory exists, and the checkpoint it (or ``auto``: the newest one
    whose manifest reads) names was written with this run's ``data.batch_size`` and ``seed``."""
    if resume is None:
        return
    if os.fspath(resume) == "auto":
        candidates = reversed(list_checkpoints(Path(cfg.output_dir) / CHECKPOINTS_DIR))
    else:
        path = Path(resume).expanduser()
        if not path.is_dir():
            kind = "a file, not a checkpoint directory" if path.exists() else "no such directory"
            raise PreflightError(f"--resume {os.fspath(resume)}: {kind}")
        candidates = iter([path])
    for checkpoint in candidates:
        try:
            check_resume_settings(checkpoint, cfg.data.batch_size, cfg.seed)
        except (CheckpointError, OSError):
            continue  # unreadable: resolve_resume skips (auto) or rejects it, saying why
        except ValueError as err:
            raise PreflightError(f"--resume {os.fspath(resume)}: {err}") from None
        return


def preflight(
    cfg: PretrainConfig,
    resume: str | os.PathLike | None = None,
    *,
    own_train: bool = False,
    own_eval: bool = False,
) -> None:
    """Check every dataset and path the run will need, without writing anything.

    ``own_train`` / ``own_eval``: the caller brings its own training set / k-NN sets
    (:func:`unimix.pretrain`'s ``dataset`` / ``eval_dataset``), so the config's are not read.

    Raises:
        PreflightError: one line naming the config key (or ``--resume``) and its value.
    """
    if not own_eval:
        _check_eval_values(cfg)
        if not own_train:
            _check_shard_knn(cfg)
    knn_sets = []
    for ref, full in _data_refs(cfg):
        if not (own_eval if ref.knn else own_train):
            dataset = _check_dataset(ref, full)
            if ref.knn:
                knn_sets.append((ref, dataset))
    if not own_train and (problem := holdout_problem(cfg, own_eval)):
        raise PreflightError(problem)  # a validation k-NN on an unlabeled set, or on shards
    if knn_runs(cfg):
        for ref, dataset in knn_sets:
            _check_labeled(ref, dataset)
        if len(knn_sets) == 2:
            _check_knn_distinct(*knn_sets)
    networks = _build_networks(cfg)
    _check_crop_sizes(cfg, networks[1])
    _check_output_dir(cfg, networks)
    _check_resume(cfg, resume)
