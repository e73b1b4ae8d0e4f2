"""Typed configuration: dataclass schemas filled from named presets, YAML files and dotted overrides.

A schema is a (nested) dataclass. A config is built in three layers, later ones winning:
the schema's defaults, a preset or YAML file, then command-line overrides such as
``optim.lr=1e-3`` or ``data.crop_sizes=[32,16]``. Everything is validated before any work starts:
an unknown key, a wrong type or an out-of-range value raises :class:`ConfigError` whose message
is one line naming the dotted key, what was expected and what was given.

Ranges and choices are declared on the schema's fields (``nonempty`` refuses a blank string)::

    lr: float = field(default=5e-4, metadata={"gt": 0})
    precision: Literal["no", "bf16", "fp16"] = "no"
    output_dir: str = field(default="runs/x", metadata={"nonempty": True})

Every float, including those inside free-form mappings, must be finite (no ``.inf``/``.nan``).
A config file is untrusted input: read as UTF-8 with a safe loader, a key given twice in one
mapping is refused (rather than the last silently winning), and aliases may not expand past
:data:`MAX_EXPANDED_NODES` values (an "alias bomb" of a few hundred bytes expands to billions).

Written here rather than taken from OmegaConf because OmegaConf's structured configs neither
check ranges nor coerce YAML 1.1's ``1e-3`` (a string to PyYAML) into a float field.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
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

T = TypeVar("T")

#: Values a config may hold once its YAML aliases are expanded (a real one holds a few hundred).
MAX_EXPANDED_NODES = 100_000
#: Bytes read from a config file at most (a real one is a few kB; /dev/zero is not a config).
MAX_CONFIG_BYTES = 4 * 2**20

_RANGE_CHECKS = {
    "gt": (lambda v, b: v > b, "> {}"),
    "ge": (lambda v, b: v >= b, ">= {}"),
    "lt": (lambda v, b: v < b, "< {}"),
    "le": (lambda v, b: v <= b, "<= {}"),
}


class ConfigError(ValueError):
    """A configuration problem; the message is one line naming the key at fault."""


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
    return _build(schema, values, prefix="", origin=origin, overridden=frozenset(overridden))


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
    return _build(schema, known, prefix="", origin=os.fspath(path))


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


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass (tuples become lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML; ``load_config(type(cfg), path)`` reads it back."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# --------------------------------------------------------------------------------------------
# Reading sources


def _read_source(
    source: str | os.PathLike, presets: Mapping[str, str | os.PathLike | Mapping[str, Any]]
) -> tuple[dict[str, Any], str]:
    name = os.fspath(source)
    if name in presets:
        preset = presets[name]
        if isinstance(preset, Mapping):
            return _deep_copy(preset), f"preset {name!r}"
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


def read_yaml_file(path: str | os.PathLike) -> Any:
    """The YAML document in file ``path`` (see :func:`parse_yaml`), read as UTF-8.

    Raises:
        ConfigError: one line naming the file: missing, unreadable, over
            :data:`MAX_CONFIG_BYTES`, not UTF-8, invalid YAML, a duplicate key, an alias bomb.
    """
    where = f"config file {os.fspath(path)}"
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{where}: not found") from None
    except OSError as err:
        raise ConfigError(f"{where}: cannot read ({err.strerror or err})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: over {MAX_CONFIG_BYTES // 2**20} MiB, not a config file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{where}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "save it as UTF-8"
        ) from None
    try:
        return parse_yaml(text, where)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or getattr(err, "reason", None) or "invalid YAML"
        raise ConfigError(f"{where}{line}: {problem}") from None


def parse_yaml(text: str, where: str, key_prefix: str = "") -> Any:
    """The YAML document ``text`` as plain dicts, lists and scalars (safe loader: no Python
    objects), each alias a copy of its anchor's value (so an override of one leaves the other).

    Raises:
        ConfigError: a key twice in one mapping, aliases expanding past
            :data:`MAX_EXPANDED_NODES` values, nesting deeper than Python recurses; each one line
            starting with ``where`` (keys named as ``key_prefix.a.b``).
        yaml.YAMLError: not valid YAML.
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_nodes(node, where, key_prefix)
            data = loader.construct_document(node)
        except RecursionError:
            raise ConfigError(f"{where}: nested too deeply to be a config") from None
    finally:
        loader.dispose()
    return _deep_copy(data)


def _check_nodes(root: yaml.Node, where: str, key_prefix: str = "") -> None:
    """Refuse aliases that expand past the cap and a key given twice in one mapping (PyYAML
    keeps the last silently), on the composed graph, where an alias is a shared node: each
    node is visited once, so an alias bomb costs no more than its file."""
    expanded: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded

    def size(node: yaml.Node) -> int:
        known = expanded.get(id(node))
        if known == -1:  # still being counted: an alias inside its own anchor
            raise ConfigError(
                f"{where} line {node.start_mark.line + 1}: an alias inside its own anchor "
                "(a structure that contains itself)"
            )
        if known is None:
            expanded[id(node)] = -1
            children = node.value if isinstance(node.value, list) else []
            if isinstance(node, yaml.MappingNode):
                children = [item for pair in children for item in pair]
            expanded[id(node)] = 1 + sum(size(child) for child in children)
        return expanded[id(node)]

    if size(root) > MAX_EXPANDED_NODES:
        raise ConfigError(
            f"{where}: its YAML aliases expand to over {MAX_EXPANDED_NODES} values (an alias "
            "bomb?); write the values out"
        )
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, key_prefix)]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            keys: set[tuple[str, str]] = set()
            for key, value in node.value:
                if key.tag == "tag:yaml.org,2002:merge":  # '<<: *base': later keys may override
                    stack.append((value, path))
                    continue
                name = f"{path}.{key.value}" if path else str(key.value)
                if isinstance(key, yaml.ScalarNode):
                    if (key.tag, key.value) in keys:
                        raise ConfigError(
                            f"{where} line {key.start_mark.line + 1}: duplicate key '{name}' "
                            "(given twice in the same mapping; keep one)"
                        )
                    keys.add((key.tag, key.value))
                stack.append((value, name))


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


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


# --------------------------------------------------------------------------------------------
# Building and validating


def _build(
    schema: type[T], values: Any, prefix: str, origin: str, overridden: frozenset[str] = frozenset()
) -> T:
    where = prefix.rstrip(".") or "config"
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a section (mapping), got {_show(values)} ({origin})")
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    hints = typing.get_type_hints(schema)
    unknown = [k for k in values if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
        raise ConfigError(
            f"unknown config key '{prefix}{key}' ({origin}){hint} "
            f"valid keys{' under ' + where if prefix else ''}: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in values.items():
        key = prefix + name
        here = "command line" if key in overridden else origin
        kwargs[name] = _check(hints[name], value, key, here, overridden)
        _check_range(fields[name], kwargs[name], key, here)
    try:
        return schema(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err} ({origin})") from None


def _check(
    tp: Any, value: Any, key: str, origin: str, overridden: frozenset[str] = frozenset()
) -> Any:
    """Return ``value`` coerced to ``tp`` or raise a ConfigError naming ``key``."""
    origin_tp = typing.get_origin(tp)
    if tp is Any:
        _check_finite(value, key, origin)
        return value
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        return _build(tp, value, prefix=key + ".", origin=origin, overridden=overridden)
    if origin_tp in (typing.Union, types.UnionType):
        return _check_union(tp, value, key, origin)
    if origin_tp is typing.Literal:
        if value in typing.get_args(tp):
            return value
        choices = ", ".join(repr(a) for a in typing.get_args(tp))
        raise ConfigError(
            f"config key '{key}': expected one of {choices}, got {_show(value)} ({origin})"
        )
    if origin_tp in (list, tuple, Sequence) or tp in (list, tuple):
        return _check_sequence(tp, value, key, origin)
    if origin_tp in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise _type_error(key, "mapping", value, origin)
        _check_finite(value, key, origin)
        return dict(value)
    if isinstance(tp, type) and tp in _SCALARS:
        converted = _SCALARS[tp](value)
        if converted is _INVALID:
            raise _type_error(key, _SCALAR_NAMES.get(tp, tp.__name__), value, origin)
        _check_finite(converted, key, origin)
        return converted
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _type_error(key, _type_name(tp), value, origin)


def _check_union(tp: Any, value: Any, key: str, origin: str) -> Any:
    """``X | None`` and other unions: null words give None when allowed, else the first member
    type that accepts ``value``."""
    args = typing.get_args(tp)
    is_null = value is None or (isinstance(value, str) and value.lower() in {"null", "none", "~"})
    if is_null and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _check(arg, value, key, origin)
        except ConfigError as err:
            errors.append(err)
    raise errors[0] if len(errors) == 1 else _type_error(key, _type_name(tp), value, origin)


def _check_sequence(tp: Any, value: Any, key: str, origin: str) -> list | tuple:
    """Lists and tuples (fixed-length tuples checked item by item against their types)."""
    origin_tp, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise _type_error(key, _type_name(tp), value, origin)
    if origin_tp is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(
                f"config key '{key}': expected {len(args)} values, got {len(value)} ({origin})"
            )
        return tuple(
            _check(a, v, f"{key}[{i}]", origin)
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    item_tp = args[0] if args else Any
    items = [_check(item_tp, v, f"{key}[{i}]", origin) for i, v in enumerate(value)]
    return tuple(items) if origin_tp is tuple or tp is tuple else items


_INVALID = object()  # what a scalar converter returns for a value it does not accept


def _to_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false", "yes", "no", "on", "off"}:
        return value.lower() in {"true", "yes", "on"}
    return _INVALID


def _to_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.replace("_", ""))
        except ValueError:
            pass
    return _INVALID


def _to_float(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    return _INVALID


def _to_str(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return _INVALID


def _to_path(value: Any) -> Any:
    return Path(value) if isinstance(value, str | Path) else _INVALID


_SCALARS: dict[type, Any] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
    Path: _to_path,
}
_SCALAR_NAMES = {Path: "path"}


def _check_finite(value: Any, key: str, origin: str) -> None:
    """Raise a ConfigError naming the key of the first inf/nan float in ``value`` (a scalar, or
    the mappings and lists of a free-form field such as ``model.backbone_kwargs``)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}': expected a finite number, got {value} ({origin})")
    if isinstance(value, Mapping):
        for name, item in value.items():
            _check_finite(item, f"{key}.{name}", origin)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_finite(item, f"{key}[{i}]", origin)


def _check_range(f: dataclasses.Field, value: Any, key: str, origin: str) -> None:
    meta = f.metadata
    if value is None:
        return
    if meta.get("nonempty") and isinstance(value, str | Path) and not str(value).strip():
        raise ConfigError(
            f"config key '{key}': expected a non-empty value, got {value!r} ({origin})"
        )
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if "choices" in meta and item not in meta["choices"]:
            choices = ", ".join(repr(c) for c in meta["choices"])
            raise ConfigError(
                f"config key '{key}': expected one of {choices}, got {_show(item)} ({origin})"
            )
        for name, (ok, _) in _RANGE_CHECKS.items():
            if name in meta and isinstance(item, int | float) and not ok(item, meta[name]):
                bounds = " and ".join(
                    t.format(meta[n]) for n, (_, t) in _RANGE_CHECKS.items() if n in meta
                )
                raise ConfigError(
                    f"config key '{key}': expected a value {bounds}, got {_show(item)} ({origin})"
                )


def _type_error(key: str, expected: str, value: Any, origin: str) -> ConfigError:
    return ConfigError(f"config key '{key}': expected {expected}, got {_show(value)} ({origin})")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _show(value: Any) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"
