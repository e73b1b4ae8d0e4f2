"""DINOv2's KoLeo regulariser: push each feature away from its nearest neighbour in the batch.

The Kozachenko–Leonenko entropy estimator, as DINOv2 uses it on the student's pooled features
of each global view: with ``z_i`` the L2-normalised features and ``d_i = min_{j≠i} ‖z_i − z_j‖``,
``loss = −mean_i log(d_i + ε)``. Minimising it spreads the batch's features over the sphere,
the kind of spread a k-NN on those features profits from. Written here because neither timm nor
lightly has it; no DINOv2 code is imported (it is not a dependency).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["koleo_loss"]


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``features`` ``[B, D]`` (B ≥ 2) → scalar ``−mean_i log(min_{j≠i} ‖ẑ_i − ẑ_j‖ + eps)``,
    ``ẑ`` = L2-normalised rows, computed in float32 whatever the input dtype."""
    if features.shape[0] < 2:
        raise ValueError(f"koleo_loss needs at least 2 samples, got {features.shape[0]}")
    z = F.normalize(features.float(), p=2, dim=-1, eps=eps)
    # On the unit sphere the nearest neighbour is the largest inner product (self excluded).
    dots = z @ z.t()
    dots.fill_diagonal_(-2.0)
    nearest = dots.argmax(dim=1)
    distances = (z - z[nearest]).norm(dim=-1)
    return -torch.log(distances + eps).mean()
