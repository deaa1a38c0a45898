"""Values of a configuration: a raw value (from TOML, JSON, an override or Python) coerced to its field's
type, with a ConfigError that names the key; and back to plain JSON-able values."""

from __future__ import annotations

import enum
import math
import types
import typing
from typing import Any

from dimdiff.errors import ConfigError

__all__ = ["coerce", "plain"]


def coerce(key: str, hint: Any, value: Any) -> Any:
    """``value`` converted to the field type ``hint`` or a ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return coerce(key, options[0], value)
    if origin is tuple:
        (item,) = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list of {item.__name__}, got {value!r}")
        return tuple(coerce(key, item, v) for v in value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        valid = [m.value for m in hint]
        if isinstance(value, hint):
            return value
        if value not in valid:
            raise ConfigError(f"{key}: expected one of {', '.join(valid)}, got {value!r}")
        return hint(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if not math.isfinite(number):  # no setting means "infinite"; inf or nan would reach the loss as nan
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {hint!r}")  # pragma: no cover


def plain(v: Any) -> Any:
    """A JSON-able value: enums as their values, tuples as lists."""
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, tuple | list):
        return [plain(x) for x in v]
    return v
