"""Building a config dataclass from plain values, checking each one: unknown keys (with a
did-you-mean), types (YAML 1.1's ``1e-3`` string coerced into a float field), ranges and choices
declared in field metadata, finite floats. Every problem is one :class:`ConfigError` line naming
the dotted key, what was expected, what was given and where it came from."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

__all__ = ["build", "to_dict"]

T = TypeVar("T")

_RANGE_CHECKS = {
    "gt": (lambda v, b: v > b, "> {}"),
    "ge": (lambda v, b: v >= b, ">= {}"),
    "lt": (lambda v, b: v < b, "< {}"),
    "le": (lambda v, b: v <= b, "<= {}"),
}


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


def build(
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
        return build(tp, value, prefix=key + ".", origin=origin, overridden=overridden)
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
