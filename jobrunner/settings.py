"""Reading a job's settings from its environment (``ctx.env``), checked.

>>> from jobrunner.settings import env_int, env_span, env_percent, env_words, env_bool
>>> keep = env_int(ctx.env, "BACKUP_KEEP", 7, min=1)           # "7", "12"
>>> delay = env_span(ctx.env, "RETRY_DELAY", "2min")            # "90s", "2min", "1.5" (seconds)
>>> warn = env_percent(ctx.env, "DISK_WARN_PERCENT", 80)        # "80", "80%", "12.5"
>>> args = env_words(ctx.env, "RCLONE_ARGS")                    # shell-quoted words, no shell
>>> force = env_bool(ctx.env, "RESTORE_FORCE")                  # 1/yes/true/on, 0/no/false/off

A value that is not what the setting must be raises ``ConfigError`` (the run exits 78, its
alert says why) naming the variable, the value and what it must be:
``BACKUP_KEEP='0': must be a whole number of 1 or more``. A variable that is unset, or set to
nothing (``KEY=`` in an env file), takes the default; for ``env_words`` an empty value is an
empty list (no arguments), and only an unset one takes the default. Standard library only.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Mapping

from jobrunner.errors import ConfigError
from jobrunner.timespan import format_timespan, parse_timespan

__all__ = ["env_bool", "env_int", "env_percent", "env_span", "env_words"]

_INT = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_TRUE = frozenset(("1", "yes", "true", "on"))
_FALSE = frozenset(("0", "no", "false", "off"))


def _raw(env: Mapping[str, str], name: str) -> str | None:
    """The stripped value, or None when unset or blank."""
    value = env.get(name, "").strip()
    return value or None


def _number(value: float) -> str:
    return f"{value:g}"


def _range(what: str, low: float | None, high: float | None, text: Callable[[float], str] = _number) -> str:
    """What a value must be, in words: ``a whole number from 0 to 5``."""
    if low is not None and high is not None:
        return f"{what} from {text(low)} to {text(high)}"
    if low is not None:
        return f"{what} of {text(low)} or more"
    if high is not None:
        return f"{what} of {text(high)} or less"
    return what


def env_int(env: Mapping[str, str], name: str, default: int, *, min: int | None = None, max: int | None = None) -> int:
    """``env[name]`` as a whole number (``"7"``, ``"-3"``) within ``min``..``max``; ``default``
    when unset or blank."""
    raw = _raw(env, name)
    if raw is None:
        return default
    value = int(raw) if _INT.fullmatch(raw) else None
    if value is None or (min is not None and value < min) or (max is not None and value > max):
        raise ConfigError(f"{name}={raw!r}: must be {_range('a whole number', min, max)}")
    return value


def env_span(
    env: Mapping[str, str], name: str, default: str | float, *, min: float | None = None, max: float | None = None
) -> float:
    """``env[name]`` as a time span in seconds: a number of seconds (``"1.5"``) or systemd's
    syntax (``"90s"``, ``"2min"``, ``"1h 30min"``), within ``min``..``max`` seconds;
    ``default`` (a span too) when unset or blank."""
    raw = _raw(env, name)
    if raw is None:
        return parse_timespan(default)
    try:
        seconds = parse_timespan(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from None
    if (min is not None and seconds < min) or (max is not None and seconds > max):
        raise ConfigError(f"{name}={raw!r}: must be {_range('a time span', min, max, format_timespan)}")
    return seconds


def env_percent(env: Mapping[str, str], name: str, default: float, *, min: float = 0, max: float = 100) -> float:
    """``env[name]`` as a percentage (``"80"``, ``"80%"``, ``"12.5"``) within ``min``..``max``;
    ``default`` when unset or blank. A whole number comes back as an ``int``."""
    raw = _raw(env, name)
    if raw is None:
        return default
    digits = raw[:-1].rstrip() if raw.endswith("%") else raw
    value = float(digits) if _NUMBER.fullmatch(digits) else math.nan
    if not min <= value <= max:  # NaN fails too
        raise ConfigError(f"{name}={raw!r}: must be {_range('a percentage', min, max)}")
    return int(value) if value.is_integer() else value


def env_words(env: Mapping[str, str], name: str, default: str = "") -> list[str]:
    """``env[name]`` split into words as a shell would (quotes, backslashes; no expansion, no
    shell runs): a command line or extra arguments. ``default`` (a string) when unset; an
    empty value is no words."""
    raw = env.get(name)
    try:
        return shlex.split(default if raw is None else raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def env_bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    """``env[name]`` as a yes or no: ``1``/``yes``/``true``/``on`` or ``0``/``no``/``false``/``off``
    (any case); ``default`` when unset or blank. Anything else is refused, not read as no."""
    raw = _raw(env, name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r}: must be 1, yes, true, on or 0, no, false, off")
