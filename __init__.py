"""unimix: DINO pretraining of unified token-mixer vision backbones.

Importing ``unimix`` registers every backbone preset with timm under the ``unimix_`` prefix,
so ``timm.create_model("unimix_container_light", num_classes=0)`` works afterwards.

Subpackages: ``unimix.backbones`` (mixers, skeleton, presets), ``unimix.ssl`` (DINO),
``unimix.eval`` (k-NN, linear probe, export), ``unimix.data`` (datasets), ``unimix.config``.
"""

__version__ = "0.1.0"

from unimix import backbones  # noqa: E402,F401  (registers the timm presets)
