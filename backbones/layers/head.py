"""The pooled classifier head every family ends with.

``pool → norm → flatten → pre_logits → dropout → classifier``; each family switches parts on:
MetaFormer a LayerNorm on the pooled features and a linear or timm ``MlpHead`` classifier,
CoAtNet a LayerNorm and a ``tanh`` pre-logits layer (timm's ``NormMlpClassifierHead``), Container
and ACmix-ResNet only the linear classifier.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models.metaformer import MlpHead
from torch import nn

__all__ = ["PoolHead"]


class PoolHead(nn.Module):
    """``[B, C, H, W] → [B, num_classes]`` (or ``[B, num_features]`` with ``pre_logits``).

    Args:
        in_features: channels of the last map.
        num_classes: classifier outputs; 0: no classifier.
        pool_type: timm pool type (``"avg"``, ``"max"``, ``"avgmax"``...; ``""``: no pooling).
        norm: norm of the pooled ``[B, C, 1, 1]`` map (None: none).
        hidden_size: a ``Linear → tanh`` pre-logits layer of this width (None: none).
        mlp_classifier: timm's MetaFormer ``MlpHead`` instead of one linear layer.
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        pool_type: str = "avg",
        norm: Callable[[int], nn.Module] | None = None,
        hidden_size: int | None = None,
        mlp_classifier: bool = False,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.mlp_classifier = mlp_classifier
        self.global_pool = SelectAdaptivePool2d(pool_type=pool_type)
        self.norm = norm(in_features) if norm else nn.Identity()
        self.flatten = nn.Flatten(1) if pool_type else nn.Identity()
        self.num_features = in_features
        self.pre_logits: nn.Module = nn.Identity()
        if hidden_size:
            fc = nn.Linear(in_features, hidden_size)
            self.pre_logits = nn.Sequential(OrderedDict(fc=fc, act=nn.Tanh()))
            self.num_features = hidden_size
        self.drop = nn.Dropout(drop_rate)
        self.fc = self._classifier(num_classes)

    def _classifier(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        if self.mlp_classifier:
            return MlpHead(self.num_features, num_classes)
        return nn.Linear(self.num_features, num_classes)

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        """A new classifier with ``num_classes`` outputs (0: none); optionally a new pool type."""
        if pool_type is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=pool_type)
            self.flatten = nn.Flatten(1) if pool_type else nn.Identity()
        self.fc = self._classifier(num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.norm(self.global_pool(x)))
        x = self.drop(self.pre_logits(x))
        return x if pre_logits else self.fc(x)
