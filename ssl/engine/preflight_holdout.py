"""What ``data.holdout`` asks of the training set, checked by
:func:`~unimix.ssl.engine.preflight.preflight` before anything is built or written.

With ``data.holdout > 0`` the run's k-NN is a validation k-NN: bank = the other training images,
queries = the held-out ones (``eval.dataset`` is then not read; see
:func:`~unimix.eval.eval_datasets`), so the training set itself must be labeled. An unlabeled
folder trained to the end and then failed at the k-NN ("train_labels: negative label -1"); a run
without any k-NN, or with the caller's own ``eval_dataset``, only trains on fewer images and is
left alone. Streamed shards cannot hold images out at all, and a holdout as large as the
training set cannot work (both failed after ``output_dir`` was made).
"""

from __future__ import annotations

from ...data import TORCHVISION_SPLITS, build_training_set, unlabeled
from ...data.shards import is_shard_spec
from ..config import PretrainConfig

__all__ = ["holdout_notice", "holdout_problem", "knn_runs"]


def knn_runs(cfg: PretrainConfig) -> bool:
    """Whether the run does a k-NN at all (online, at the end, or both)."""
    return cfg.eval.knn_every_epochs > 0 or cfg.eval.knn_at_end


def holdout_problem(cfg: PretrainConfig, own_eval: bool = False) -> str | None:
    """One line saying why ``cfg``'s ``data.holdout`` cannot work with its ``data.dataset``, or
    None. ``own_eval``: the caller brings the k-NN sets (the held-out images are not queries)."""
    d, e = cfg.data, cfg.eval
    if not d.holdout or d.dataset is None:
        return None
    if is_shard_spec(d.dataset, d.split):
        return (
            f"data.holdout={d.holdout}: not supported for streaming shards (data.dataset="
            f"{d.dataset!r}); hold images out when writing the shards instead"
        )
    if d.dataset.lower() in TORCHVISION_SPLITS:
        return None  # labeled, and tens of thousands of images: not worth loading twice
    label = f"data.dataset={d.dataset!r} (split {d.split!r})"
    try:
        training_set = build_training_set(d, cfg.seed)  # listed as the run lists it
    except (OSError, ValueError) as err:
        return f"{label}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    if d.holdout >= len(training_set):  # failed after output_dir was made, leaving it empty
        return (
            f"data.holdout={d.holdout}: {label} has only {len(training_set)} images; hold out "
            "fewer than that"
        )
    if own_eval or not knn_runs(cfg):
        return None  # no k-NN reads the held-out images: the run trains on the rest
    if not unlabeled(training_set):
        return None
    unread = " (eval.dataset is not read while data.holdout > 0)" if e.dataset is not None else ""
    return (
        f"data.holdout={d.holdout}: {label} has no labels (a flat folder of images), and the "
        f"k-NN's queries would be {d.holdout} of its images{unread}; give it class folders, "
        "root/<split>/<class>/<image>, or use data.holdout=0 with a labeled eval.dataset, or "
        "switch the k-NN off (eval.knn_at_end=false eval.knn_every_epochs=0)"
    )


def holdout_notice(cfg: PretrainConfig, own_eval: bool = False) -> str | None:
    """One line for a run whose ``eval.dataset`` the k-NN will not read because ``data.holdout``
    makes it a validation k-NN (it used to be ignored without a word), or None."""
    d, e = cfg.data, cfg.eval
    if not d.holdout or e.dataset is None or own_eval or not knn_runs(cfg):
        return None
    return (
        f"data.holdout={d.holdout}: the k-NN queries are {d.holdout} held-out training images; "
        f"eval.dataset={e.dataset!r} is not read (set data.holdout=0 to evaluate on it)"
    )
