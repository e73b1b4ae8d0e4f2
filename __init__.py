"""unimix: DINO pretraining of unified token-mixer vision backbones.

Importing ``unimix`` registers every backbone preset with timm under the ``unimix_`` prefix,
so ``timm.create_model("unimix_container_light", num_classes=0)`` works afterwards.

Subpackages, bottom to top (imports run one way, see tests/test_import_direction.py):
``unimix.config``; ``unimix.data`` (datasets), ``unimix.backbones`` (mixers, skeleton, presets);
``unimix.checkpoint`` (the checkpoint format); ``unimix.eval`` (k-NN, linear probe, export);
``unimix.ssl`` (DINO); ``unimix.bench``, ``unimix.viz`` (affinity plots), ``unimix.cli``.
"""

__version__ = "0.1.0"

from unimix import backbones  # noqa: E402,F401  (registers the timm presets)
