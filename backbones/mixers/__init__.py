"""Token mixers: one contract (:class:`TokenMixer`: ``forward``/``trace``/``affinity`` on
``[B, C, H, W]`` maps), one file per mixer, and the :data:`MIXERS` registry blocks build from."""

from .acmix import ACmix
from .attention import Attention, RelPosAttention
from .base import MixerTrace, TokenMixer
from .container import MIX_MODES, ContainerMixer
from .dwconv import DepthwiseConv
from .mbconv import MBConv
from .pooling import Pooling
from .sepconv import SepConv
from .token_mlp import TokenMLP

__all__ = [
    "MIXERS",
    "MIX_MODES",
    "ACmix",
    "Attention",
    "ContainerMixer",
    "DepthwiseConv",
    "MBConv",
    "MixerTrace",
    "Pooling",
    "RelPosAttention",
    "SepConv",
    "TokenMLP",
    "TokenMixer",
    "mixer_class",
]

#: mixer name → class; every class is built as ``cls(dim, **kwargs)``.
MIXERS: dict[str, type[TokenMixer]] = {
    "pooling": Pooling,
    "dwconv": DepthwiseConv,
    "sepconv": SepConv,
    "mlp": TokenMLP,
    "attention": Attention,
    "container": ContainerMixer,
    "acmix": ACmix,
    "mbconv": MBConv,
}


def mixer_class(spec: str | type[TokenMixer]) -> type[TokenMixer]:
    """A mixer class from its :data:`MIXERS` name (or the class itself); unknown names raise."""
    if isinstance(spec, str):
        if spec not in MIXERS:
            raise ValueError(f"unknown mixer {spec!r}; available: {', '.join(MIXERS)}")
        return MIXERS[spec]
    return spec
