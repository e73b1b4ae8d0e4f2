"""The two DINO training loops a throughput benchmark times, each with its own data path.

- :class:`OursRunner`: unimix's trainer pieces (per-sample-seeded batched multi-crop loader and
  ``DINOStep``);
- :class:`LightlyRunner`: lightly 1.6's ``examples/pytorch/dino.py`` (``DINOTransform`` per PIL
  image, ``DINOProjectionHead``, ``DINOLoss``, ``update_momentum`` with a per-epoch
  ``cosine_schedule``, one backbone forward per view, ``cancel_last_layer_gradients``); only the
  optimiser is AdamW like ours, and with ``bf16`` its forward passes and loss run under the
  same bf16 autocast as ours. lightly is imported when a runner is built (the ``bench`` extra).

Both expose ``run(steps)``: that many optimisation steps, loading included.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["LightlyRunner", "OursRunner"]


class OursRunner:
    """unimix's trainer pieces: per-sample-seeded batched multi-crop loader + ``DINOStep``."""

    def __init__(self, cfg: Any, dataset: Any, accelerator: Any) -> None:
        from ..ssl.engine.loader import (
            BatchPlan,
            MultiCropBatches,
            jpeg_folder,
            make_loader,
            render_on,
        )
        from ..ssl.engine.run import render_on_device
        from ..ssl.multicrop import MultiCropAugment
        from ..ssl.schedules import Schedules
        from ..ssl.step import DINOStep

        self.cfg = cfg
        self.plan = BatchPlan(len(dataset), cfg.data.batch_size, 1, 1, 0, cfg.seed)
        self.schedules = Schedules(cfg, self.plan.steps_per_epoch)
        self.step_fn = DINOStep(cfg, accelerator)
        augment = MultiCropAugment(cfg.augment, cfg.data.mean, cfg.data.std, cfg.seed)
        total = 10**6 // cfg.data.batch_size
        device = accelerator.device
        on_device = render_on_device(cfg, device)
        #: where the views are rendered: the training device, or the loader workers' CPU
        self.render_device = device if on_device else torch.device("cpu")
        jpeg = cfg.data.decode == "device" and jpeg_folder(dataset)
        batches = MultiCropBatches(dataset, self.plan, augment, total, not on_device, jpeg)
        pin = device.type == "cuda" and cfg.data.num_workers > 0
        items = iter(make_loader(batches, 0, cfg.data.num_workers, cfg.seed, pin))
        self.loader = render_on(items, augment, device) if on_device else items
        self.step = 0

    def run(self, steps: int) -> None:
        for _ in range(steps):
            values = self.schedules.at(self.step % self.schedules.total_steps)
            crops = next(self.loader)["crops"]
            self.step_fn([crops], values, self.plan.local_batch, self.step)
            self.step += 1

    def count_flops(self) -> float:
        """FLOPs of one full step (teacher forward, student forward + backward) on real crops."""
        from torch.utils.flop_counter import FlopCounterMode

        values = self.schedules.at(0)
        crops = next(self.loader)["crops"]
        with FlopCounterMode(display=False) as counter:
            self.step_fn([crops], values, self.plan.local_batch, self.step)
        self.step += 1
        return float(counter.get_total_flops())


class _TransformedDataset(torch.utils.data.Dataset):
    def __init__(self, dataset: Any, transform: Any) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        image, label = self.dataset[i]
        return self.transform(image), label


class LightlyRunner:
    """lightly's documented DINO example loop (one forward per view, per-epoch schedules)."""

    def __init__(
        self,
        cfg: Any,
        dataset: Any,
        backbone: nn.Module,
        device: torch.device,
        bf16: bool = False,
    ) -> None:
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead
        from lightly.models.utils import deactivate_requires_grad
        from lightly.transforms import DINOTransform

        a, h = cfg.augment, cfg.model.head
        transform = DINOTransform(
            global_crop_size=a.global_size,
            global_crop_scale=tuple(a.global_scale),
            local_crop_size=a.local_size,
            local_crop_scale=tuple(a.local_scale),
            n_local_views=a.num_local,
            normalize={"mean": list(cfg.data.mean), "std": list(cfg.data.std)},
        )
        self.loader_def = torch.utils.data.DataLoader(
            _TransformedDataset(dataset, transform),
            batch_size=cfg.data.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=cfg.data.num_workers,
            persistent_workers=cfg.data.num_workers > 0,
        )
        self.loader = iter(self.loader_def)
        dim = backbone.num_features
        self.student_backbone = backbone.to(device)
        self.student_head = DINOProjectionHead(
            dim, h.hidden_dim, h.bottleneck_dim, h.out_dim, freeze_last_layer=1
        ).to(device)
        self.teacher_backbone = copy.deepcopy(backbone)
        self.teacher_head = DINOProjectionHead(dim, h.hidden_dim, h.bottleneck_dim, h.out_dim)
        self.teacher_head.to(device)
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(output_dim=h.out_dim, warmup_teacher_temp_epochs=5).to(device)
        params = list(self.student_backbone.parameters()) + list(self.student_head.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=1e-3)
        self.device, self.epoch, self.epochs = device, 0, 100
        #: bf16 autocast around the forward passes and the loss, as Accelerate does for ours
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def _next_batch(self) -> Any:
        try:
            return next(self.loader)
        except StopIteration:
            self.epoch += 1
            self.loader = iter(self.loader_def)
            return next(self.loader)

    def run(self, steps: int) -> None:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        for _ in range(steps):
            views = self._next_batch()[0]
            momentum = cosine_schedule(self.epoch, self.epochs, 0.996, 1)
            update_momentum(self.student_backbone, self.teacher_backbone, m=momentum)
            update_momentum(self.student_head, self.teacher_head, m=momentum)
            views = [v.to(self.device) for v in views]
            with self.autocast:
                with torch.no_grad():
                    teacher_out = [self.teacher_head(self.teacher_backbone(v)) for v in views[:2]]
                student_out = [self.student_head(self.student_backbone(v)) for v in views]
                loss = self.criterion(teacher_out, student_out, epoch=self.epoch)
            loss.backward()
            self.student_head.cancel_last_layer_gradients(current_epoch=self.epoch)
            self.optimizer.step()
            self.optimizer.zero_grad()
