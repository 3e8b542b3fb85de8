"""The one check of records read from a place another user can write (docs/security.md).

A job's state, its history lines, its silence, the late watcher's memory, the fleet's records
and the backup sets' manifests are written by the job's user (www-data, say) and read by root's
views. Whatever is in them, a reader gets a record whose numbers are finite and bounded, whose
timestamps lie between the epoch and 2200 and whose strings are short, or a ``ValueError`` naming the
field (``Invalid``): that record is then the job's UNKNOWN, or a skipped line, never a crash
of the whole view. Text read from such a record is shown on a terminal through ``printable``,
so nothing a job recorded can move the cursor or repaint the screen.

Standard library only; the fleet's reader (``jobrunner.fleet.stream``) shares it through
``RunRecord.from_dict``, the backup sets (``jobs/_backupsets.py``) through ``loads``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = [
    "MAX_DURATION_S",
    "MAX_TEXT",
    "MAX_WHOLE",
    "TS_MAX",
    "TS_MIN",
    "Invalid",
    "duration",
    "loads",
    "number",
    "printable",
    "sent_entry",
    "sent_entries",
    "text",
    "timestamp",
    "whole",
]

TS_MIN = 0.0  # the epoch: older is nonsense but harmless (a job looks late); negative is refused
TS_MAX = 7_258_118_400.0  # 2200-01-01T00:00:00Z
MAX_DURATION_S = 10 * 366 * 86400.0  # ten years: longer than any run or window
MAX_WHOLE = 1 << 53  # counts, exit codes, uids, pids: exact in a float, far from overflow
MAX_TEXT = 64 * 1024  # characters of one recorded string (an error, a reason)


class Invalid(ValueError):
    """A field out of its range: the message names it."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Invalid(f"number {text[:20]!r} is not finite")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > 20:
        raise Invalid(f"whole number {text[:20]}… is out of range")
    value = int(text)
    if not -MAX_WHOLE <= value <= MAX_WHOLE:
        raise Invalid(f"whole number {value} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise Invalid(f"{name} is not a number JSON allows")


def loads(data: bytes | str) -> Any:
    """``json.loads`` that refuses ``NaN``, ``Infinity``, numbers that overflow to infinity
    (``1e400``), whole numbers beyond 2**53 and nesting deeper than the interpreter's stack:
    ``ValueError`` (``Invalid``) for them (bytes that are not UTF-8 too)."""
    try:
        return json.loads(data, parse_float=_finite, parse_int=_bounded_int, parse_constant=_no_constant)
    except RecursionError:
        raise Invalid("nested too deeply") from None


def number(value: Any, name: str, low: float, high: float) -> float:
    """``value`` as a float when it is a JSON number (not a boolean) within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"field {name!r} is {type(value).__name__}, not a number")
    if not math.isfinite(value) or not low <= value <= high:
        raise Invalid(f"field {name!r} is {value!r:.40}, outside {low:g}..{high:g}")
    return float(value)


def timestamp(value: Any, name: str) -> float:
    """A Unix time between the epoch and 2200 (what ``time.gmtime`` and every view can show)."""
    return number(value, name, TS_MIN, TS_MAX)


def duration(value: Any, name: str) -> float:
    """Seconds between 0 and ten years."""
    return number(value, name, 0.0, MAX_DURATION_S)


def whole(value: Any, name: str, low: int = -MAX_WHOLE, high: int = MAX_WHOLE) -> int:
    """A whole number (not a boolean) within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"field {name!r} is {type(value).__name__}, not a whole number")
    if not low <= value <= high:
        raise Invalid(f"field {name!r} is {value}, outside {low}..{high}")
    return value


def text(value: Any, name: str, limit: int = MAX_TEXT) -> str:
    """A string of at most ``limit`` characters."""
    if not isinstance(value, str):
        raise Invalid(f"field {name!r} is {type(value).__name__}, not a string")
    if len(value) > limit:
        raise Invalid(f"field {name!r} is longer than {limit} characters")
    return value


MAX_KEY = 200  # characters of a notification memory's key (a kind, a job's name)


def sent_entry(value: Any, name: str) -> dict[str, Any]:
    """One entry of the notification memory (``jobrunner.notify.memory.Sent``): ``first``
    and ``last`` times between the epoch and 2200, ``last`` not before ``first``, ``held`` a
    count, ``since`` a time when present; the checked fields (unknown ones dropped)."""
    if not isinstance(value, dict):
        raise Invalid(f"field {name!r} is {type(value).__name__}, not an object")
    first = timestamp(value.get("first"), f"{name}.first")
    last = timestamp(value.get("last"), f"{name}.last")
    if last < first:
        raise Invalid(f"field {name!r}: last send {last:.0f} is before the first {first:.0f}")
    out: dict[str, Any] = {"first": first, "last": last, "held": whole(value.get("held", 0), f"{name}.held", 0)}
    if value.get("since") is not None:
        out["since"] = timestamp(value["since"], f"{name}.since")
    return out


def sent_entries(data: Any, name: str = "sent", *, strict: bool = False) -> dict[str, dict[str, Any]]:
    """The notification memory's records by kind (``sent_entry`` each, keys of at most
    ``MAX_KEY`` characters). ``strict``: the first bad entry raises ``Invalid`` (a job's state
    is then unreadable); else a bad entry is forgotten alone (the late watcher's memory)."""
    if not isinstance(data, dict):
        raise Invalid(f"field {name!r} is {type(data).__name__}, not an object")
    out: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        try:
            out[text(key, f"{name} key", MAX_KEY)] = sent_entry(value, f"{name}.{key[:40]}")
        except Invalid:
            if strict:
                raise
    return out


# C0 and C1 controls, DEL, and the Unicode format characters that reorder or hide text
# (bidi overrides and isolates, zero-width joiners, the line and paragraph separators).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object, *, keep_newlines: bool = False) -> str:
    """``value`` as text safe for a terminal: every control character (ESC, CR, BEL, …, and
    the newline unless ``keep_newlines``) shown as ``\\xNN``, the invisible Unicode format
    characters as ``\\uNNNN``; nothing else changes."""
    out = str(value)
    if keep_newlines:
        return "\n".join(_CONTROL.sub(_escape, line) for line in out.split("\n"))
    return _CONTROL.sub(_escape, out)
