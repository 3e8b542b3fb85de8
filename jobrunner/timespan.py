"""Time spans in systemd's syntax (systemd.time(7)): ``90s``, ``5m``, ``2h 30min``, ``1d``.

A bare number means seconds, as in unit files. ``parse_timespan`` gives seconds as a float;
``format_timespan`` writes seconds back in a form systemd reads, for rendered units.

Spans are capped at ``MAX_SPAN`` (100 years): a longer one is a mistake (``"300y"`` for
``"300s"``), and past about 292 years Python's clocks cannot even hold it (a deadline of
``timeout="300y"`` used to fail at run time with ``OverflowError``). Refused when parsed, so a
declaration fails at import (exit 78) and an ``exec --timeout`` flag at once (exit 64).
"""

from __future__ import annotations

import re

__all__ = ["MAX_SPAN", "format_timespan", "parse_timespan"]

MAX_SPAN = 100 * 31557600.0  # 100 years, in seconds

# The unit names systemd accepts, in seconds (systemd.time(7), "PARSING TIME SPANS").
_UNITS: dict[str, float] = {}
for _names, _seconds in (
    (("usec", "us", "µs", "μs"), 1e-6),
    (("msec", "ms"), 1e-3),
    (("seconds", "second", "sec", "s", ""), 1.0),
    (("minutes", "minute", "min", "m"), 60.0),
    (("hours", "hour", "hr", "h"), 3600.0),
    (("days", "day", "d"), 86400.0),
    (("weeks", "week", "w"), 604800.0),
    (("months", "month", "M"), 2629800.0),
    (("years", "year", "y"), 31557600.0),
):
    for _name in _names:
        _UNITS[_name] = _seconds

_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([A-Za-zµμ]*)")


def _shown(value: object) -> str:
    """The value as quoted in an error: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def parse_timespan(value: str | int | float) -> float:
    """Return the seconds in a systemd time span.

    >>> parse_timespan("2h 30min")
    9000.0
    >>> parse_timespan(90)
    90.0

    Raises ``ValueError`` naming what is wrong (negative, unknown unit, empty, over 100 years).
    """
    seconds = _parse(value)
    if seconds > MAX_SPAN:
        raise ValueError(f"{_shown(value)} is too long: a time span is at most 100 years")
    return seconds


def _parse(value: str | int | float) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{_shown(value)} is not a time span")
    if isinstance(value, (int, float)):
        if value != value or value < 0 or value == float("inf"):
            raise ValueError(f"{_shown(value)} is not a time span of zero or more seconds")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{_shown(value)} is not a time span")
    text = value.strip()
    if not text:
        raise ValueError("empty time span")
    if text.startswith("-"):
        raise ValueError(f"{_shown(value)} is negative")
    total = 0.0
    pos = 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"{_shown(value)} is not a time span (e.g. 90s, 5m, 2h 30min, 1d)")
        number, unit = match.groups()
        if not unit and match.end() < len(text) and text[match.end()] == ".":
            raise ValueError(f"{_shown(value)} is not a time span (e.g. 90s, 5m, 2h 30min, 1d)")
        if unit not in _UNITS:
            raise ValueError(f"{_shown(value)}: unknown time unit {unit[:20]!r} (use us, ms, s, min, h, d, w, M, y)")
        total += float(number) * _UNITS[unit]
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return total


def format_timespan(seconds: float) -> str:
    """Write seconds the way systemd prints them: ``9000`` -> ``"2h 30min"``.

    Sub-second remainders are kept in ``ms``; zero is ``"0"``.
    """
    if seconds < 0:
        raise ValueError(f"{seconds!r} is negative")
    millis = round(seconds * 1000)
    if millis == 0:
        return "0"
    parts = []
    for name, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{name}")
    return " ".join(parts)
