"""The DINO projection head: MLP → bottleneck → L2 normalisation → weight-normalised prototypes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["DINOHead"]


class DINOHead(nn.Module):
    """``[B, in_dim]`` features → ``[B, out_dim]`` prototype scores (logits before temperature).

    ``num_layers`` linear layers (GELU between, optional BatchNorm) map to ``bottleneck_dim``;
    the result is L2-normalised and scored against ``out_dim`` weight-normalised prototypes.
    With ``norm_last_layer`` the prototypes' gain is fixed at 1 (not trained), as the reference.

    Uses ``torch.nn.utils.parametrizations.weight_norm`` (the maintained API; lightly's head
    still uses the deprecated hook version). The prototype layer is ``last_layer``; its
    parameters are ``last_layer.parametrizations.weight.original0`` (gain ``[out_dim, 1]``) and
    ``original1`` (direction ``[out_dim, bottleneck_dim]``).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < num_layers - 1:
                if use_bn:
                    layers.append(nn.BatchNorm1d(b))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad = not norm_last_layer

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2, eps=1e-6)
        return self.last_layer(x)
