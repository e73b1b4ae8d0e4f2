"""One DINO optimizer step — the unit :func:`~unimix.ssl.engine.trainer.pretrain` loops over and
``scripts/bench_train.py`` times.

For each micro-batch: the teacher scores the two global crops (no grad), the student scores
every crop (one backbone pass per resolution, one head pass), the objective's total (DINO's
loss plus its weighted terms, :mod:`~unimix.ssl.objective`) is backpropagated. Then: last-layer gradients dropped while it is frozen, per-parameter gradient
clipping, the optimizer (AdamW by default, see :mod:`unimix.ssl.optim`) with this step's lr and
weight decay (none on biases and norm parameters), the centre moves once over the global batch,
the teacher moves towards the student.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from accelerate import Accelerator
from accelerate.utils import DynamoBackend, set_seed
from torch import nn

from ..backbones import create_dino_backbone
from .config import PretrainConfig
from .head import DINOHead
from .loss import DINOLoss
from .model import DINOModel
from .objective import ObjectiveInputs, build_objective
from .optim import build_optimizer
from .schedules import StepValues
from .teacher import TeacherEMA, make_teacher

__all__ = ["DINOStep", "NonFiniteLossError", "StepOutput", "build_student", "clip_gradients"]

logger = logging.getLogger("unimix.ssl")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the message names the step. No update was applied."""


class StepOutput(NamedTuple):
    """One optimizer step's results, averaged over the micro-batches and the processes."""

    loss: float  # DINO's loss of the global batch
    teacher_out: torch.Tensor  # [2, batch, K] teacher logits of the last micro-batch
    terms: dict[str, float]  # every term of the objective, unweighted ("dino" = loss)


def build_student(cfg: PretrainConfig) -> tuple[DINOModel, nn.Module]:
    """(student, backbone) with fresh weights; the backbone is created first from the seed."""
    backbone = create_dino_backbone(cfg.model.backbone, **cfg.model.backbone_kwargs)
    h = cfg.model.head
    head = DINOHead(
        backbone.num_features,
        h.out_dim,
        h.hidden_dim,
        h.bottleneck_dim,
        h.num_layers,
        h.use_bn,
        h.norm_last_layer,
    )
    return DINOModel(backbone, head), backbone


def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float) -> None:
    """Scale each parameter's gradient to an L2 norm of at most ``max_norm``, separately.

    The reference's clipping (``utils.clip_gradients`` in facebookresearch/dino): every tensor
    ``g`` becomes ``g · min(1, max_norm / (‖g‖ + 1e-6))``. torch and accelerate only clip the
    global norm over all parameters, which scales every gradient down whenever the sum is large;
    this is the per-tensor rule in fused multi-tensor ops instead of a Python loop.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    coefs = torch._foreach_add(torch._foreach_norm(grads), 1e-6)  # ‖g‖ + 1e-6
    torch._foreach_reciprocal_(coefs)
    torch._foreach_mul_(coefs, max_norm)
    torch._foreach_clamp_max_(coefs, 1.0)
    torch._foreach_mul_(grads, coefs)


def disable_stochastic_layers(teacher: nn.Module) -> None:
    """The teacher stays in train mode (BatchNorm uses batch statistics, as the reference) but
    never drops: it is a deep copy of the student, whose dropout / drop-path it would inherit."""
    for m in teacher.modules():
        if (
            isinstance(m, nn.Dropout | nn.Dropout1d | nn.Dropout2d)
            or type(m).__name__ == "DropPath"
        ):
            m.eval()


def _maybe_sync_batchnorm(model: nn.Module, accelerator: Accelerator, enabled: bool) -> nn.Module:
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if not (enabled and has_bn and accelerator.num_processes > 1):
        return model
    if accelerator.device.type == "cpu":
        logger.warning("BatchNorm statistics stay per process: torch has no SyncBatchNorm on CPU")
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def _non_finite_advice(accelerator: Accelerator) -> str:
    if accelerator.device.type == "cpu" and accelerator.mixed_precision == "bf16":
        # oneDNN's bf16 backward of a strided conv on a 1×1 map (a small local crop's last
        # downsampling) returns garbage weight gradients (torch 2.14); fp32 is faster on CPU.
        return "bf16 on CPU gives non-finite gradients for convolutions on 1×1 maps: use precision=fp32"
    return "try a lower optim.base_lr or optim.clip_grad, or precision=bf16/no"


def _compiled_like_student(teacher: nn.Module, accelerator: Accelerator) -> nn.Module:
    """``teacher`` through ``torch.compile`` with the run's backend and mode, or itself."""
    plugin = accelerator.state.dynamo_plugin
    if plugin.backend == DynamoBackend.NO:
        return teacher
    return torch.compile(teacher, **plugin.to_kwargs())


class DINOStep:
    """Student, EMA teacher, loss and optimizer, prepared by ``accelerator``; call once per step.

    The student's weights come from ``cfg.seed`` (its backbone is the first thing built after
    seeding); the teacher is a deep copy of it.
    """

    def __init__(self, cfg: PretrainConfig, accelerator: Accelerator) -> None:
        self.cfg = cfg
        self.accelerator = accelerator
        device = accelerator.device
        set_seed(cfg.seed)
        student, _ = build_student(cfg)
        student = _maybe_sync_batchnorm(student, accelerator, cfg.model.sync_batchnorm)
        self.memory_format = (
            torch.channels_last if cfg.model.channels_last else torch.contiguous_format
        )
        student = student.to(memory_format=self.memory_format)
        self.teacher = make_teacher(student).to(device)
        optimizer = build_optimizer(student, cfg.optim)
        h, d = cfg.model.head, cfg.dino
        self.loss_fn = DINOLoss(h.out_dim, d.student_temp, d.center_momentum).to(device)
        self.objective = build_objective(cfg, self.loss_fn)
        self.student, self.optimizer = accelerator.prepare(student, optimizer)
        #: The teacher's forward, compiled like the student when the run compiles (Accelerate
        #: compiles only what ``prepare`` gets, and the teacher takes no optimizer).
        self.teacher_forward = _compiled_like_student(self.teacher, accelerator)
        self.ema = TeacherEMA(self.teacher, self.student)
        self.last_layer_params = list(
            accelerator.unwrap_model(self.student).head.last_layer.parameters()
        )
        self.train()

    def train(self) -> None:
        """Student and teacher in train mode; the teacher's dropout / drop-path stay off."""
        self.student.train()
        self.teacher.train()
        disable_stochastic_layers(self.teacher)

    def __call__(
        self,
        micro_batches: Iterable[Sequence[torch.Tensor]],
        values: StepValues,
        batch: int,
        step: int = 0,
    ) -> tuple[float, torch.Tensor]:
        """:meth:`update`'s ``(loss, teacher_out)``."""
        out = self.update(micro_batches, values, batch, step)
        return out.loss, out.teacher_out

    def update(
        self,
        micro_batches: Iterable[Sequence[torch.Tensor]],
        values: StepValues,
        batch: int,
        step: int = 0,
    ) -> StepOutput:
        """Run one optimizer step.

        Args:
            micro_batches: ``grad_accum_steps`` lists of crops, one tensor per resolution,
                ``[V_r·batch, 3, S_r, S_r]`` view-major, globals first.
            values: this step's schedule values.
            batch: source images per micro-batch on this process.
            step: 0-based step number (for the error message).

        Raises:
            NonFiniteLossError: before any update when a term is NaN/inf.
        """
        acc, cfg = self.accelerator, self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = values.lr
            if group["decays"]:
                group["weight_decay"] = values.weight_decay
        step_terms, teacher_out = self._backward(micro_batches, values, batch)
        # one all-reduce and one host transfer for every term
        means = acc.reduce(torch.stack(list(step_terms.values())), reduction="mean").tolist()
        global_terms = dict(zip(step_terms, means, strict=True))
        self._check_finite(global_terms, values, step)
        if values.freeze_last_layer:
            for p in self.last_layer_params:
                p.grad = None
        if cfg.optim.clip_grad > 0:
            acc.unscale_gradients()  # fp16 loss scaling: clip the true gradients
            clip_gradients(self.student.parameters(), cfg.optim.clip_grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss_fn.apply_center_update()
        self.ema.update(values.momentum)
        return StepOutput(global_terms["dino"], teacher_out, global_terms)

    def _backward(
        self, micro_batches: Iterable[Sequence[torch.Tensor]], values: StepValues, batch: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Forward and backward of every micro-batch (gradients synchronised on the last one),
        the centre's batch sums accumulated. Returns (each term's mean over the micro-batches,
        this process only; the last teacher output ``[2, batch, K]``)."""
        acc, accum = self.accelerator, self.cfg.optim.grad_accum_steps
        step_terms: dict[str, torch.Tensor] = {}
        teacher_out = torch.empty(0)
        for micro, crops in enumerate(micro_batches):
            crops = [
                c.to(acc.device, non_blocking=True, memory_format=self.memory_format) for c in crops
            ]
            last = micro == accum - 1
            with contextlib.nullcontext() if last else acc.no_sync(self.student):
                with torch.no_grad(), acc.autocast():
                    teacher_out = self.teacher_forward(crops[:1], batch)  # [2, b, K]: globals
                features = None
                if self.objective.needs_features:
                    student_out, features = self.student(crops, batch, return_features=True)
                else:
                    student_out = self.student(crops, batch)  # [V, b, K]
                inputs = ObjectiveInputs(
                    student_out, teacher_out, features, batch, values.teacher_temp
                )
                total, terms = self.objective(inputs)
                acc.backward(total / accum)
            self.loss_fn.accumulate_center(teacher_out)
            for name, value in terms.items():
                if name not in step_terms:
                    step_terms[name] = torch.zeros((), device=acc.device)
                step_terms[name] += value.detach() / accum
        return step_terms, teacher_out

    def _check_finite(self, terms: dict[str, float], values: StepValues, step: int) -> None:
        bad = [name for name, value in terms.items() if not math.isfinite(value)]
        if not bad:
            return
        self.optimizer.zero_grad(set_to_none=True)
        acc = self.accelerator
        what = (
            f"loss is {terms['dino']}" if bad[0] == "dino" else f"{bad[0]} term is {terms[bad[0]]}"
        )
        raise NonFiniteLossError(
            f"{what} at step {step + 1} (lr {values.lr:.3g}, precision "
            f"{acc.mixed_precision}); {_non_finite_advice(acc)}"
        )
