"""Errors shared by every layer (configuration, process options, codecs), with no dimdiff imports."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

__all__ = ["ConfigError", "check_option", "find_kind"]


class ConfigError(ValueError):
    """A configuration file, key or value that cannot be used."""


def check_option(ok: bool, key: str, expected: str, got: Any) -> None:
    """Raise a ConfigError ``key: expected ..., got ...`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {got!r}")


def find_kind(table: Mapping[Any, Any], value: Any, key: str) -> enum.Enum:
    """The key of ``table`` (a registry keyed by enum members) that is ``value`` or has it as its value;
    else a ConfigError naming ``key`` and listing the registered kinds."""
    for kind in table:
        if kind is value or kind.value == value:
            return kind
    raise ConfigError(f"{key}: expected one of {', '.join(k.value for k in table)}, got {value!r}")
