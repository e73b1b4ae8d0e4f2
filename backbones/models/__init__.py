"""The skeleton (:class:`Backbone`, built from a :class:`BackboneCfg`) and one file per family
translating its paper's layout into it, with the presets."""

from .acmix_resnet import acmix_resnet_cfg, build_acmix_resnet
from .backbone import Backbone, BackboneCfg, HeadCfg, Stage, StageCfg
from .coatnet import CoAtNetCfg, build_coatnet
from .container import ContainerCfg, build_container
from .metaformer import MetaFormerCfg, build_metaformer

__all__ = [
    "Backbone",
    "BackboneCfg",
    "CoAtNetCfg",
    "ContainerCfg",
    "HeadCfg",
    "MetaFormerCfg",
    "Stage",
    "StageCfg",
    "acmix_resnet_cfg",
    "build_acmix_resnet",
    "build_coatnet",
    "build_container",
    "build_metaformer",
]
