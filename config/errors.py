"""The one exception of the config system."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration problem; the message is one line naming the key at fault."""


# raised and caught as unimix.config.ConfigError (where it is imported from): tracebacks say so
ConfigError.__module__ = "unimix.config"
