"""Typed readers for environment variables; a bad value raises ConfigError naming the variable.

Shared by every settings reader of the project (the handler's, the provisioner's, the GPU
wait's), so all accept the same spellings (1/0, true/false, yes/no, on/off for flags) and fail
with the same kind of message. A variable that is unset or empty takes its default, flags
included; numbers must be finite (`inf`, `nan` and `1e400` are refused).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from wan_worker.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def number(
    env: Mapping[str, str], name: str, default: float, minimum: float, unit: str = ""
) -> float:
    """A number at least `minimum`; `unit` (e.g. "seconds") names what it counts in errors."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    what = f"a number of {unit}" if unit else "a number"
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {what}; unset it or give {what}") from None
    if not math.isfinite(value):
        raise ConfigError(
            f"{name}={raw!r} is not a finite number; unset it or give {what} (at least {minimum:g})"
        )
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum:g}")
    return value


def integer(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    value = number(env, name, default, minimum)
    if value != int(value):
        raise ConfigError(f"{name}={env.get(name)!r} must be a whole number")
    return int(value)


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} must be one of 1/0, true/false, yes/no, on/off")


def choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = text(env, name, default).lower()
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of: {', '.join(choices)}")
    return value
