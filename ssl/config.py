"""The DINO pretraining config: a nested dataclass schema, its named recipes and how to load it.

Every field has the facebookresearch/dino default (the arguments of its ``main_dino.py``)
unless a comment says otherwise; the recipes in ``ssl/recipes/*.yaml`` override what a setting
needs. Durations that the reference counts in epochs (warm-ups, the frozen last layer) stay
in epochs here and may be fractional; the schedules turn them into optimizer steps.

Load a config with :func:`load_pretrain_config` (recipe name or YAML path + dotted overrides).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import ConfigError, load_config
from ..data.config import DataConfig
from ..eval.config import EvalConfig

__all__ = [
    "RECIPES",
    "AugmentConfig",
    "CheckpointConfig",
    "DataConfig",
    "DinoConfig",
    "EvalConfig",
    "HeadConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimConfig",
    "PretrainConfig",
    "check_consistency",
    "load_pretrain_config",
]

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
#: Named recipes: name -> YAML file in ``ssl/recipes``.
RECIPES: dict[str, Path] = {p.stem: p for p in sorted(RECIPE_DIR.glob("*.yaml"))}

_POSITIVE = {"gt": 0}
_NON_NEGATIVE = {"ge": 0}
_PROBABILITY = {"ge": 0, "le": 1}


@dataclass
class AugmentConfig:
    """DINO multi-crop: two global views and ``num_local`` local views per source image."""

    global_size: int = field(default=224, metadata={"ge": 4})
    local_size: int = field(default=96, metadata={"ge": 4})
    num_local: int = field(default=8, metadata={"ge": 0})
    global_scale: tuple[float, float] = field(default=(0.4, 1.0), metadata={"gt": 0, "le": 1})
    local_scale: tuple[float, float] = field(default=(0.05, 0.4), metadata={"gt": 0, "le": 1})
    flip_p: float = field(default=0.5, metadata=_PROBABILITY)
    jitter_p: float = field(default=0.8, metadata=_PROBABILITY)
    brightness: float = field(default=0.4, metadata=_NON_NEGATIVE)
    contrast: float = field(default=0.4, metadata=_NON_NEGATIVE)
    saturation: float = field(default=0.2, metadata=_NON_NEGATIVE)
    hue: float = field(default=0.1, metadata={"ge": 0, "le": 0.5})
    grayscale_p: float = field(default=0.2, metadata=_PROBABILITY)
    #: Blur probability for (global view 1, global view 2, local views).
    blur_p: tuple[float, float, float] = field(default=(1.0, 0.1, 0.5), metadata=_PROBABILITY)
    #: Blur standard deviation range in pixels (the reference's PIL radius 0.1-2.0).
    blur_sigma: tuple[float, float] = field(default=(0.1, 2.0), metadata={"gt": 0})
    #: Solarization probability of global view 2 (view 1 is never solarized).
    solarize_p: float = field(default=0.2, metadata=_PROBABILITY)
    #: Where the views are rendered: ``loader`` (DataLoader workers, on CPU), ``device`` (the
    #: training process, on its device: workers only read uint8 sources and draw the random
    #: numbers) or ``auto`` (``device`` on a GPU, ``loader`` on CPU). The views are the same
    #: either way (bit for bit on CPU).
    placement: Literal["auto", "loader", "device"] = "auto"

    def __post_init__(self) -> None:
        for name in ("global_scale", "local_scale", "blur_sigma"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(
                    f"config key 'augment.{name}': expected low <= high, got {low}, {high}"
                )


@dataclass
class HeadConfig:
    """DINO projection head: MLP → bottleneck → L2 norm → weight-normalised ``out_dim`` layer."""

    out_dim: int = field(default=65536, metadata={"ge": 2})
    hidden_dim: int = field(default=2048, metadata={"ge": 1})
    bottleneck_dim: int = field(default=256, metadata={"ge": 1})
    num_layers: int = field(default=3, metadata={"ge": 1})
    use_bn: bool = False
    #: Fix the last layer's weight-norm gain to 1 (stabilises training; the reference default).
    norm_last_layer: bool = True


@dataclass
class ModelConfig:
    """Backbone (a unimix preset or any timm model name) and head."""

    backbone: str = "vit_small_patch16_224"
    #: Passed to create_backbone / timm.create_model (e.g. drop_path_rate, img_size).
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    head: HeadConfig = field(default_factory=HeadConfig)
    #: BatchNorm → SyncBatchNorm when distributed on GPUs (torch has no CPU SyncBatchNorm).
    sync_batchnorm: bool = True
    #: Student, teacher and crops in channels-last memory format: faster training steps for the
    #: convolutional nanos on CPU, neutral for the attention-only ones (docs/pretraining.md);
    #: outputs are the same to float rounding.
    channels_last: bool = True
    #: torch.compile student and teacher: None (as the launcher says: ``accelerate launch
    #: --dynamo_backend``), true (compile with ``compile_backend``, whatever the launcher says) or
    #: false (never). Checkpoint keys are the same either way.
    compile: bool | None = None
    #: The torch.compile backend when ``compile`` is true (``inductor``, ``aot_eager``, ...).
    compile_backend: Literal["inductor", "aot_eager", "eager"] = "inductor"
    #: The torch.compile mode of student and teacher (None: ``accelerate launch --dynamo_mode``,
    #: else ``default``); ``reduce-overhead`` replays CUDA graphs (shapes are static in a run).
    compile_mode: (
        Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None
    ) = None


@dataclass
class DinoConfig:
    """Self-distillation: temperatures, centring, teacher momentum, frozen last layer."""

    student_temp: float = field(default=0.1, metadata=_POSITIVE)
    teacher_temp: float = field(default=0.04, metadata=_POSITIVE)
    #: Teacher temperature rises linearly from this to ``teacher_temp`` over the warm-up.
    warmup_teacher_temp: float = field(default=0.04, metadata=_POSITIVE)
    warmup_teacher_temp_epochs: float = field(default=0.0, metadata=_NON_NEGATIVE)
    center_momentum: float = field(default=0.9, metadata={"ge": 0, "lt": 1})
    #: Teacher EMA momentum: cosine from this to ``momentum_teacher_end`` over all steps.
    momentum_teacher: float = field(default=0.996, metadata=_PROBABILITY)
    momentum_teacher_end: float = field(default=1.0, metadata=_PROBABILITY)
    #: The head's last layer gets no update for this many epochs.
    freeze_last_layer_epochs: float = field(default=1.0, metadata=_NON_NEGATIVE)
    #: Weight of DINOv2's KoLeo regulariser on the student's backbone features of each global
    #: view (spreads them over the sphere; DINOv2 uses 0.1). 0: off, the reference's loss.
    koleo_weight: float = field(default=0.0, metadata=_NON_NEGATIVE)


@dataclass
class OptimConfig:
    """Optimizer with linear-warm-up + cosine lr and cosine weight decay, per optimizer step.

    ``adamw`` is the reference's; ``sgd`` (with momentum) is what dino's README and lightly's
    CIFAR-10 benchmark train convnets with; ``lars`` is SGD with layer-wise trust ratios (timm's
    ``Lars``; biases and norm parameters, which get no weight decay, are not adapted).
    """

    name: Literal["adamw", "sgd", "lars"] = "adamw"
    #: Peak lr = base_lr · batch_size / 256 (the linear scaling rule).
    base_lr: float = field(default=5e-4, metadata=_POSITIVE)
    min_lr: float = field(default=1e-6, metadata=_NON_NEGATIVE)
    warmup_epochs: float = field(default=10.0, metadata=_NON_NEGATIVE)
    weight_decay: float = field(default=0.04, metadata=_NON_NEGATIVE)
    weight_decay_end: float = field(default=0.4, metadata=_NON_NEGATIVE)
    #: AdamW only.
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"ge": 0, "lt": 1})
    #: SGD and LARS only: heavy-ball momentum.
    momentum: float = field(default=0.9, metadata={"ge": 0, "lt": 1})
    #: LARS only: trust coefficient η of the layer-wise lr ``η·‖w‖ / (‖g‖ + wd·‖w‖)``.
    trust_coeff: float = field(default=0.001, metadata=_POSITIVE)
    #: Max gradient norm of each parameter tensor, as the reference clips (0: no clipping).
    clip_grad: float = field(default=3.0, metadata=_NON_NEGATIVE)
    #: Split each optimizer step's batch into this many forward/backward passes.
    grad_accum_steps: int = field(default=1, metadata={"ge": 1})


@dataclass
class CheckpointConfig:
    """When to save and how many checkpoints to keep."""

    #: Save every N optimizer steps (0: only at the end); also at the end of the run.
    every_steps: int = field(default=1000, metadata=_NON_NEGATIVE)
    keep_last: int = field(default=3, metadata={"ge": 1})


#: ``logging.trackers`` names: ``jsonl`` (always on) and Accelerate's optional trackers.
TrackerName = Literal["jsonl", "tensorboard", "wandb", "mlflow"]


@dataclass
class LoggingConfig:
    """Metrics cadence and outputs."""

    every_steps: int = field(default=10, metadata={"ge": 1})
    progress_bar: bool = True
    #: Where metrics go: ``jsonl`` (``<output_dir>/metrics.jsonl``, written even if not listed),
    #: ``tensorboard``, ``wandb``, ``mlflow`` (through Accelerate; each an optional package, checked
    #: before the run starts), e.g. ``logging.trackers=[jsonl,tensorboard]``.
    trackers: list[TrackerName] = field(default_factory=lambda: ["jsonl"])
    #: The project name trackers file the run under (W&B project, MLflow experiment, TensorBoard
    #: ``<output_dir>/tensorboard/<project>``).
    project: str = "unimix"
    #: Warn after this many consecutive logged steps whose teacher outputs look collapsed.
    collapse_patience: int = field(default=20, metadata={"ge": 1})


@dataclass
class PretrainConfig:
    """Everything one DINO pretraining run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    epochs: float = field(default=100.0, metadata=_POSITIVE)
    #: Stop after this many optimizer steps (None: ``epochs`` decides). Schedules still span
    #: ``epochs``, so a capped run is the beginning of the full one.
    max_steps: int | None = field(default=None, metadata={"ge": 1})
    #: Stop (with a checkpoint) once training has run this many wall-clock minutes (None: no
    #: limit). Schedules still span ``epochs``: set ``epochs`` to what the budget can reach.
    max_minutes: float | None = field(default=None, metadata={"gt": 0})
    seed: int = field(default=0, metadata=_NON_NEGATIVE)
    #: ``auto``: what ``accelerate launch --mixed_precision`` / ``accelerate config`` says (fp32
    #: without a launcher); an explicit value (``fp32`` = ``no``, ``bf16``, ``fp16``) wins over it.
    precision: Literal["auto", "no", "fp32", "bf16", "fp16"] = "auto"
    #: torch intra-op threads per process (0: on CPU, the machine's cores shared evenly by the
    #: processes on the node, whatever ``OMP_NUM_THREADS`` says; on GPU, torch's default).
    threads: int = field(default=0, metadata=_NON_NEGATIVE)
    output_dir: str = field(default="runs/dino", metadata={"nonempty": True})
    #: Choose crops, flips, colour, blur, mean/std, batch, epochs and warm-ups from the training
    #: images (inspected once; see :mod:`unimix.ssl.folder_recipe`) wherever the recipe file and
    #: the overrides leave them unset; prints what it chose and why.
    size_from_data: bool = False


def load_pretrain_config(
    source: str | os.PathLike | None = None, overrides: Sequence[str] = ()
) -> PretrainConfig:
    """Load a recipe name (see :data:`RECIPES`) or YAML path, then apply ``key=value`` overrides.

    Raises:
        ConfigError: one line naming the key, the expected type/range and the value given.
    """
    cfg = load_config(PretrainConfig, source, overrides, presets=RECIPES)
    if cfg.size_from_data:
        from .folder_recipe import size_from_data

        cfg = size_from_data(cfg, source, overrides, presets=RECIPES)
    check_consistency(cfg)
    return cfg


def check_consistency(cfg: PretrainConfig, own_dataset: bool = False) -> None:
    """Cross-field checks the per-field ranges cannot express (``own_dataset``: the caller
    brings the training images, so ``data.dataset`` may be unset)."""
    if cfg.data.dataset is None and not own_dataset:
        raise ConfigError(
            "config key 'data.dataset': required by this recipe: add data.dataset=<folder of "
            "images> (and eval.dataset=<labeled folder with train/ and test/> for the k-NN)"
        )
    if cfg.optim.min_lr > cfg.optim.base_lr * cfg.data.batch_size / 256:
        raise ConfigError(
            f"config key 'optim.min_lr': {cfg.optim.min_lr} exceeds the peak lr "
            f"base_lr·batch_size/256 = {cfg.optim.base_lr * cfg.data.batch_size / 256:g}"
        )
    if cfg.data.decode == "device" and (cfg.augment.placement == "loader" or cfg.data.cache):
        raise ConfigError(
            "config key 'data.decode': device decodes JPEG files where the views are rendered: "
            "it needs augment.placement=device (or auto on a GPU) and data.cache=false"
        )
    if cfg.data.batch_size % cfg.optim.grad_accum_steps:
        raise ConfigError(
            f"config key 'optim.grad_accum_steps': {cfg.optim.grad_accum_steps} does not divide "
            f"data.batch_size={cfg.data.batch_size}"
        )
