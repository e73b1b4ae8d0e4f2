"""Typed configuration: dataclass schemas filled from named presets, YAML files and dotted overrides.

A schema is a (nested) dataclass. A config is built in three layers, later ones winning: the
schema's defaults, a preset or YAML file (:mod:`.yaml_file`: untrusted input, read safely), then
command-line overrides such as ``optim.lr=1e-3``. Everything is checked before any work starts
(:mod:`.schema`): an unknown key, a wrong type or an out-of-range value is a :class:`ConfigError`
whose message is one line naming the dotted key, what was expected and what was given. Ranges
and choices are declared on the fields::

    lr: float = field(default=5e-4, metadata={"gt": 0})
    output_dir: str = field(default="runs/x", metadata={"nonempty": True})

Written here rather than taken from OmegaConf, whose structured configs neither check ranges nor
coerce YAML 1.1's ``1e-3`` (a string to PyYAML) into a float field.
"""

from .errors import ConfigError
from .load import load_config, load_sections, parse_overrides, save_config
from .schema import to_dict
from .yaml_file import MAX_CONFIG_BYTES, MAX_EXPANDED_NODES, parse_yaml, read_yaml_file

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_EXPANDED_NODES",
    "ConfigError",
    "load_config",
    "load_sections",
    "parse_overrides",
    "parse_yaml",
    "read_yaml_file",
    "save_config",
    "to_dict",
]
