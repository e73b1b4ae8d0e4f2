"""Blocks, one per family, with one constructor interface:
``Block(dim, dim_out, stride, drop_path, proj_drop, **block_kwargs)``. The skeleton
(:class:`~unimix.backbones.models.Backbone`) builds every stage from :data:`BLOCKS`."""

from torch import nn

from .bottleneck import ACmixBottleneck
from .container import ContainerBlock
from .mbconv import MBConvBlock
from .metaformer import MetaFormerBlock
from .transformer import TransformerBlock

__all__ = [
    "BLOCKS",
    "ACmixBottleneck",
    "ContainerBlock",
    "MBConvBlock",
    "MetaFormerBlock",
    "TransformerBlock",
]

#: block name → class; ``cls(dim, dim_out, stride=..., drop_path=..., proj_drop=..., **kwargs)``.
BLOCKS: dict[str, type[nn.Module]] = {
    "metaformer": MetaFormerBlock,
    "container": ContainerBlock,
    "mbconv": MBConvBlock,
    "transformer": TransformerBlock,
    "acmix_bottleneck": ACmixBottleneck,
}
