"""Config files are untrusted input: read as UTF-8 with a safe loader, at most
:data:`MAX_CONFIG_BYTES`; a key given twice in one mapping is refused (rather than the last
silently winning), and aliases may not expand past :data:`MAX_EXPANDED_NODES` values (an "alias
bomb" of a few hundred bytes expands to billions)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["MAX_CONFIG_BYTES", "MAX_EXPANDED_NODES", "deep_copy", "parse_yaml", "read_yaml_file"]

#: Values a config may hold once its YAML aliases are expanded (a real one holds a few hundred).
MAX_EXPANDED_NODES = 100_000
#: Bytes read from a config file at most (a real one is a few kB; /dev/zero is not a config).
MAX_CONFIG_BYTES = 4 * 2**20


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
    return deep_copy(data)


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


def deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deep_copy(v) for v in value]
    return value
