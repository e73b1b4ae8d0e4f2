"""The student's optimizer: parameter groups and ``optim.name`` → AdamW, SGD or LARS.

Every optimizer gets the same two groups — weight decay on weight matrices and kernels, none on
biases and norm parameters (the reference's ``get_params_groups``) — and starts at lr 0: the
trainer sets each step's lr and weight decay from the schedules.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import OptimConfig

__all__ = ["build_optimizer", "param_groups"]


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Two groups: ``decays=True`` (matrices/kernels, scheduled weight decay) and ``decays=False``
    (biases and 1-D parameters, no weight decay); frozen parameters are left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [
        {"params": decay, "decays": True},
        {"params": no_decay, "decays": False, "weight_decay": 0.0},
    ]


def _fused_ok(model: nn.Module) -> bool:
    devices = {p.device.type for p in model.parameters()}
    dtypes = {p.dtype for p in model.parameters()}
    return devices <= {"cpu", "cuda"} and dtypes <= {torch.float32, torch.float16, torch.bfloat16}


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """``cfg.name`` over :func:`param_groups` of ``model``: ``adamw`` (torch, ``betas``), ``sgd``
    (torch, heavy-ball ``momentum``) or ``lars`` (timm's ``Lars``: ``momentum``, trust
    coefficient ``trust_coeff``; groups without weight decay are not adapted)."""
    groups = param_groups(model)
    if cfg.name == "adamw":
        # fused: one kernel per tensor instead of ~10 elementwise ops (CPU and CUDA since torch
        # 2.4)
        return torch.optim.AdamW(groups, lr=0.0, betas=cfg.betas, fused=_fused_ok(model))
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=cfg.momentum)
    if cfg.name == "lars":
        from timm.optim import Lars

        return Lars(groups, lr=0.0, momentum=cfg.momentum, trust_coeff=cfg.trust_coeff)
    raise ValueError(f"optim.name: expected 'adamw', 'sgd' or 'lars', got {cfg.name!r}")
