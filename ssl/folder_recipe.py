"""A recipe sized from the data: with ``size_from_data: true`` (the ``folder`` recipe), the run's
training images are inspected once (:func:`unimix.data.image_stats.image_stats`: count, size,
colour, brightness, where the content sits, whether a mirror image looks like the set) and the
crops, flips, colour operations, blur, normalisation, batch, epochs and warm-ups are chosen
from what was found, one rule each (:func:`choose`). What was chosen, and why, is printed as
one short block.

Precedence, highest first: a ``KEY=VALUE`` override, a value written in the recipe file, the
choice made here, the schema's default. So ``-c folder augment.flip_p=0.5`` keeps the flips
whatever the data says, and a YAML recipe that sets ``augment.global_size`` keeps its size.

The rules and their thresholds are listed in docs/pretraining.md (measured in
``results/recipes/README.md``; each rule is tested against sets built to trip it,
``tests/ssl/test_folder_recipe.py``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import load_config, parse_overrides, read_yaml_file

__all__ = [
    "SIZED_KEYS",
    "Choice",
    "choose",
    "given_keys",
    "inspect_training_images",
    "size_from_data",
    "sizing_block",
]

#: Range of the view side (px); larger images are resized to MAX_SIZE (CPU-sized steps).
MIN_SIZE, MAX_SIZE = 16, 32
#: Source images a sized run sees (epochs × images): a few CPU minutes for a nano backbone.
TARGET_IMAGES = 12_000
EPOCHS_RANGE = (2.0, 60.0)
#: Mirror score at and above which flips are off (0.5 ± 0.02 for mirror-invariant sets at 1,024 images).
MIRROR_THRESHOLD = 0.58
#: Range of the smallest global crop's share of the image (set from the content's centring).
SCALE_RANGE = (0.3, 0.7)
#: Share of the epochs spent in each warm-up (learning rate; the head's frozen last layer).
WARMUP_SHARE = 0.1


@dataclass(frozen=True)
class Choice:
    """One sized key: its value, the reason, and whether the user's value was kept instead."""

    key: str
    value: Any
    reason: str
    given: bool = False


#: Every key the sizing may set (the ``folder`` recipe leaves them out of its file).
SIZED_KEYS: tuple[str, ...] = (
    "augment.global_size",
    "augment.local_size",
    "augment.num_local",
    "augment.global_scale",
    "augment.flip_p",
    "augment.jitter_p",
    "augment.brightness",
    "augment.contrast",
    "augment.saturation",
    "augment.hue",
    "augment.grayscale_p",
    "augment.blur_p",
    "augment.blur_sigma",
    "data.mean",
    "data.std",
    "data.batch_size",
    "epochs",
    "optim.warmup_epochs",
    "dino.freeze_last_layer_epochs",
)


def _round_half(value: float) -> float:
    return round(value * 2) / 2


def _rule(reason: str, **values: Any) -> list[Choice]:
    """One rule's keys (``augment__flip_p`` for ``augment.flip_p``), all sharing its reason."""
    return [Choice(key.replace("__", "."), value, reason) for key, value in values.items()]


def _view_size(stats: Any, fixed: dict[str, Any]) -> int:
    return int(fixed.get("augment.global_size", max(MIN_SIZE, min(MAX_SIZE, stats.side // 4 * 4))))


def _views(stats: Any, fixed: dict[str, Any]) -> list[Choice]:
    """The global view size, and local crops only where they still hold a part."""
    side = stats.side
    size = _view_size(stats, fixed)
    local = max(8, size // 2 // 4 * 4)
    if "augment.global_size" in fixed:
        why = f"images of {side} px, your {size}-px views"
    elif size == side:
        why = f"images of {side} px: views at their own size"
    elif side > MAX_SIZE:
        why = (
            f"images of {side} px: {size}-px views keep a step CPU-sized (set "
            "augment.global_size for more detail)"
        )
    else:
        why = f"images of {side} px: a multiple of 4 within {MIN_SIZE}-{MAX_SIZE} px"
    if size >= 48:
        why += f", {local}-px local crops still hold a part"
    else:
        why += f", no local crops (at {local} px one mostly misses the object)"
    return _rule(
        why,
        augment__global_size=size,
        augment__local_size=local,
        augment__num_local=2 if size >= 48 else 0,
    )


def _crop_scale(stats: Any, fixed: dict[str, Any]) -> list[Choice]:
    """The smallest global crop: as much of the image as the content's centring asks for."""
    share = stats.centre_share
    low = min(SCALE_RANGE[1], max(SCALE_RANGE[0], round(share, 1)))
    kind = "centred" if share >= 0.45 else "spread"
    return _rule(
        f"content {kind} ({share:.0%} in the central quarter): crops keep at least {low:.0%} "
        "of the image",
        augment__global_scale=[low, 1.0],
    )


def _flips(stats: Any, fixed: dict[str, Any]) -> list[Choice]:
    """No flips when a mirror image is unlike the set (text, digits)."""
    mirror = stats.mirror_score
    if mirror >= MIRROR_THRESHOLD:
        return _rule(
            f"mirror images unlike the set (score {mirror:.2f} >= {MIRROR_THRESHOLD}: text, "
            "digits): no flips",
            augment__flip_p=0.0,
        )
    return _rule(
        f"mirror images look like the set (score {mirror:.2f} < {MIRROR_THRESHOLD})",
        augment__flip_p=0.5,
    )


def _colour(stats: Any, fixed: dict[str, Any]) -> list[Choice]:
    """Brightness and contrast only for grayscale sets; any hue for colour ones."""
    if stats.grayscale:
        return _rule(
            f"grayscale ({stats.gray_share:.0%} of the sample): brightness and contrast only",
            augment__jitter_p=0.8,
            augment__brightness=0.4,
            augment__contrast=0.4,
            augment__saturation=0.0,
            augment__hue=0.0,
            augment__grayscale_p=0.0,
        )
    return _rule(
        f"colour ({1 - stats.gray_share:.0%} of the sample): any hue, so views do not "
        "match by colour",
        augment__jitter_p=0.8,
        augment__brightness=0.4,
        augment__contrast=0.4,
        augment__saturation=0.8,
        augment__hue=0.5,
        augment__grayscale_p=0.2,
    )


def _blur(stats: Any, fixed: dict[str, Any]) -> list[Choice]:
    """A mild blur scaled to the view size."""
    size = _view_size(stats, fixed)
    sigma = round(size / 32, 3)
    return _rule(
        f"mild blur, sigma up to {sigma:g} px at {size} px",
        augment__blur_p=[0.5, 0.1, 0.2],
        augment__blur_sigma=[0.1, sigma],
    )


def _normalisation(stats: Any, fixed: dict[str, Any]) -> list[Choice]:
    """The sample's per-channel mean and std."""
    return _rule(
        "the sample's per-channel mean and std",
        data__mean=[round(v, 3) for v in stats.mean],
        data__std=[round(max(v, 1e-3), 3) for v in stats.std],
    )


def _length(stats: Any, fixed: dict[str, Any]) -> list[Choice]:
    """Batch by the set's size, epochs for about TARGET_IMAGES source images, warm-ups."""
    n = stats.count
    batch = int(fixed.get("data.batch_size", 64 if n < 16_384 else 128 if n < 131_072 else 256))
    low, high = EPOCHS_RANGE
    epochs = float(fixed.get("epochs", min(high, max(low, _round_half(TARGET_IMAGES / n)))))
    warm = round(WARMUP_SHARE * epochs, 3)
    aim = "" if "epochs" in fixed else f", aiming at ~{TARGET_IMAGES:,}"
    return _rule(
        f"{n:,} images: {max(1, n // batch)} steps per epoch, {epochs * n:,.0f} source images"
        f"{aim}; warm-ups {WARMUP_SHARE:.0%} of the epochs",
        data__batch_size=batch,
        epochs=epochs,
        optim__warmup_epochs=warm,
        dino__freeze_last_layer_epochs=warm,
    )


#: The sizing rules, in the order of :data:`SIZED_KEYS`.
_RULES = (_views, _crop_scale, _flips, _colour, _blur, _normalisation, _length)


def choose(stats: Any, fixed: dict[str, Any] | None = None) -> list[Choice]:
    """The sized values for a set described by ``stats`` (an
    :class:`~unimix.data.image_stats.ImageStats`), one :class:`Choice` per key of
    :data:`SIZED_KEYS`, in that order; keys decided by one rule share its reason. ``fixed``:
    values the user set, which the rules that depend on them follow (``augment.global_size``
    for the local crops and the blur, ``data.batch_size`` and ``epochs`` for the warm-ups)."""
    fixed = fixed or {}
    return [choice for rule in _RULES for choice in rule(stats, fixed)]


# ------------------------------------------------------------------------------ precedence
def _flatten(values: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(values, dict):
        for key, value in values.items():
            yield from _flatten(value, f"{prefix}{key}.")
    elif prefix:
        yield prefix[:-1]


def given_keys(
    source: str | os.PathLike | None,
    overrides: Sequence[str],
    presets: Mapping[str, str | os.PathLike] | None = None,
) -> frozenset[str]:
    """Dotted keys the user set: those written in the recipe file ``source`` (a name in
    ``presets``, e.g. :data:`unimix.ssl.config.RECIPES`, or a YAML path) and those of
    ``overrides``."""
    keys = {key for key, _ in parse_overrides(overrides)}
    if source is not None:
        name = os.fspath(source)
        values = read_yaml_file((presets or {}).get(name, name))
        keys.update(_flatten(values or {}))
    return frozenset(keys)


def _is_given(key: str, given: frozenset[str]) -> bool:
    """``key`` or a section above it (``augment={...}``) was set."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in given for i in range(1, len(parts) + 1))


# ------------------------------------------------------------------------------ inspection
def inspect_training_images(cfg: Any, images: Any = None) -> Any:
    """:func:`~unimix.data.image_stats.image_stats` of the images the run trains on (``images``:
    the caller's own dataset; else ``data.dataset`` minus its ``data.holdout`` held-out images,
    listed without decoding, then a fixed sample decoded). Raises ValueError when they cannot
    be inspected (shards, a missing folder), naming why."""
    from ..data import build_dataset, dataset_options, split_holdout
    from ..data.image_stats import image_stats
    from ..data.shards import is_shard_spec

    if images is not None:
        from ..data.user_datasets import check_image_dataset

        check_image_dataset(images, "dataset")  # the one-line TypeError pretrain gives
    else:
        d = cfg.data
        if d.dataset is None:
            raise ValueError("no data.dataset")
        if is_shard_spec(d.dataset, d.split):
            raise ValueError("shards are streamed, not inspected")
        options = dataset_options(
            d.dataset,
            root=d.root,
            num_samples=d.num_samples,
            image_size=d.image_size,
            seed=cfg.seed,
        )
        try:
            images = build_dataset(d.dataset, d.split, download=False, **options)
        except (OSError, ValueError) as err:
            raise ValueError(str(err).splitlines()[0]) from None
        if 0 < d.holdout < len(images):
            images = split_holdout(images, d.holdout)[0]
    return image_stats(images)


def _describe(stats: Any) -> str:
    colour = "grayscale" if stats.grayscale else "colour"
    sides = (
        f"{stats.side} px"
        if stats.min_side == stats.max_side
        else (f"{stats.side} px median ({stats.min_side}-{stats.max_side})")
    )
    return (
        f"{stats.count:,} images, {sides}, {colour}, {stats.centre_share:.0%} of the content in "
        f"the central quarter, mirror score {stats.mirror_score:.2f}, quarter-turn score "
        f"{stats.rotation_score:.2f} (sample of {stats.sampled})"
    )


def sizing_block(where: str, stats: Any, choices: Sequence[Choice]) -> str:
    """The printed block: what was inspected, then one line per rule (its keys and values, a
    value the user set marked ``(yours)``, then the rule's reason)."""
    groups: list[tuple[str, list[str]]] = []
    for c in choices:
        setting = f"{c.key}={_show(c.value)}" + (" (yours)" if c.given else "")
        if groups and groups[-1][0] == c.reason:
            groups[-1][1].append(setting)
        else:
            groups.append((c.reason, [setting]))
    lines = [f"sized from the data ({where}): {_describe(stats)}"]
    lines += [f"  {' '.join(settings)}: {reason}" for reason, settings in groups]
    return "\n".join(lines)


def _show(value: Any) -> str:
    return (
        json.dumps(value).replace(" ", "")
        if isinstance(value, list)
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def size_from_data(
    cfg: Any,
    source: str | os.PathLike | None,
    overrides: Sequence[str] = (),
    *,
    presets: Mapping[str, str | os.PathLike] | None = None,
    images: Any = None,
    stream: Any = None,
) -> Any:
    """``cfg`` (a :class:`~unimix.ssl.config.PretrainConfig` loaded from ``source`` — a name in
    ``presets`` or a YAML path — and ``overrides``) with every key of :data:`SIZED_KEYS` that
    the user did not set (see :func:`given_keys`) chosen from the training images
    (:func:`choose`); the block saying
    what was chosen goes to ``stream`` (stderr; main process only). ``cfg`` unchanged when
    ``size_from_data`` is off or every key was given. Images that cannot be inspected leave
    the keys to the recipe and the schema, with a ``warning:`` line."""
    if not cfg.size_from_data:
        return cfg
    given = given_keys(source, overrides, presets)
    if all(_is_given(key, given) for key in SIZED_KEYS):
        return cfg
    stream = sys.stderr if stream is None else stream
    where = "your dataset" if images is not None else f"data.dataset={cfg.data.dataset}"
    if images is None and cfg.data.dataset is None:
        return cfg  # the config check asks for data.dataset
    try:
        stats = inspect_training_images(cfg, images)
    except ValueError as err:
        if _is_main_process():
            stream.write(
                f"warning: size_from_data: cannot inspect {where} ({err}); the recipe's values "
                "and the defaults stay: set the crop sizes, batch and epochs yourself\n"
            )
        return cfg
    fixed = {key: _value(cfg, key) for key in SIZED_KEYS if _is_given(key, given)}
    choices = [
        Choice(c.key, c.value, c.reason, given=_is_given(c.key, given))
        for c in choose(stats, fixed)
    ]
    decided = [f"{c.key}={json.dumps(c.value)}" for c in choices if not c.given]
    sized = load_config(type(cfg), source, [*decided, *overrides], presets=presets)
    kept = [
        Choice(c.key, _value(sized, c.key), c.reason, c.given) for c in choices
    ]  # what the run will use (a kept value shows the user's)
    if _is_main_process():
        stream.write(sizing_block(where, stats, kept) + "\n")
        stream.flush()
    return sized


def _value(cfg: Any, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return list(value) if isinstance(value, tuple) else value
