"""Loading a config: a schema's defaults, then a named preset or YAML file, then dotted
command-line overrides, later layers winning; and writing one back."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError
from .schema import build, to_dict
from .yaml_file import deep_copy, parse_yaml, read_yaml_file

__all__ = ["load_config", "load_sections", "parse_overrides", "save_config"]

T = TypeVar("T")


def load_config(
    schema: type[T],
    source: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    presets: Mapping[str, str | os.PathLike | Mapping[str, Any]] | None = None,
) -> T:
    """Build and validate a ``schema`` instance.

    Args:
        schema: dataclass type describing the config.
        source: ``None`` (defaults only), a preset name (key of ``presets``) or a YAML file path.
        overrides: dotted ``key=value`` strings; values are parsed as YAML (``lr=1e-3``,
            ``sizes=[32,16]``, ``name=null``).
        presets: named presets, each a YAML path or a mapping.

    Raises:
        ConfigError: unknown preset/file, bad YAML, unknown key, wrong type, value out of range.
    """
    values: dict[str, Any] = {}
    origin = "defaults"
    if source is not None:
        values, origin = _read_source(source, presets or {})
    overridden = set()
    for key, value in parse_overrides(overrides):
        _set_dotted(values, key, value)
        overridden.add(key)
    return build(schema, values, prefix="", origin=origin, overridden=frozenset(overridden))


def load_sections(schema: type[T], path: str | os.PathLike) -> T:
    """The top-level keys of ``schema`` read from the config file ``path``, written for a larger
    schema (a run's ``config.yaml``, read by a layer that knows only some of its sections): the
    other top-level keys are left unread, those read are checked as :func:`load_config` does.

    Raises:
        ConfigError: as :func:`load_config`, naming the file.
    """
    values = _read_mapping(Path(path))
    names = {f.name for f in dataclasses.fields(schema) if f.init}
    known = {key: value for key, value in values.items() if key in names}
    return build(schema, known, prefix="", origin=os.fspath(path))


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """Parse ``["a.b=1", ...]`` into ``[("a.b", 1), ...]`` (values parsed as YAML)."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"override {item!r}: expected KEY=VALUE with a dotted key, e.g. optim.lr=1e-3"
            )
        try:
            value = parse_yaml(raw, f"override {key}=", key_prefix=key) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw  # not YAML (e.g. a path with ':'); the schema's type decides
        parsed.append((key, value))
    return parsed


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML; ``load_config(type(cfg), path)`` reads it back."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _read_source(
    source: str | os.PathLike, presets: Mapping[str, str | os.PathLike | Mapping[str, Any]]
) -> tuple[dict[str, Any], str]:
    name = os.fspath(source)
    if name in presets:
        preset = presets[name]
        if isinstance(preset, Mapping):
            return deep_copy(preset), f"preset {name!r}"
        return _read_mapping(Path(preset)), f"preset {name!r} ({preset})"
    path = Path(name)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        return _read_mapping(path), str(path)
    choices = ", ".join(sorted(presets)) or "none"
    raise ConfigError(f"config {name!r}: not a preset (choices: {choices}) nor a YAML file")


def _read_mapping(path: Path) -> dict[str, Any]:
    data = read_yaml_file(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path}: expected a mapping at top level, got {type(data).__name__}"
        )
    return data


def _set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    node = values
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(
                f"override {key}: '{'.'.join(parts[: i + 1])}' is a value, not a section"
            )
        node = child
    node[parts[-1]] = value
