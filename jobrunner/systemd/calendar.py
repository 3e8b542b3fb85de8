"""OnCalendar= expressions, evaluated by the real ``systemd-analyze calendar``.

Importable on its own (stdlib and ``jobrunner.errors`` only) so that ``jobrunner list`` and
``jobrunner health`` can ask for next elapses without loading the unit renderer.

systemd is the only authority on what an ``OnCalendar=`` expression means, so nothing here
re-implements the grammar: expressions are handed to ``systemd-analyze calendar`` with
``TZ=UTC`` and its ``Next elapse:`` / ``Iter. #N:`` lines are parsed. Expressions that name a
time zone (``02:15 Europe/Berlin``) are printed in UTC all the same.

>>> next_elapse("02:15", base=1700000000)
'Wed 2023-11-15 02:15:00 UTC'
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence

from jobrunner.errors import ConfigError

__all__ = [
    "CalendarError",
    "calendar_iterations",
    "invalid_schedules",
    "next_elapse",
    "next_elapse_datetime",
    "normalize",
]

_FORMAT = "%a %Y-%m-%d %H:%M:%S UTC"
_TIMEOUT = 20.0


class CalendarError(ConfigError):
    """An expression systemd does not accept, or ``systemd-analyze`` is unusable (exit 78)."""


def _tool() -> str:
    path = shutil.which("systemd-analyze") or next(
        (p for p in ("/usr/bin/systemd-analyze", "/bin/systemd-analyze") if os.access(p, os.X_OK)), None
    )
    if not path:
        raise CalendarError("systemd-analyze not found (install systemd; it validates OnCalendar= expressions)")
    return path


def _base_arg(base: float | _dt.datetime | None) -> list[str]:
    if base is None:
        return []
    if isinstance(base, _dt.datetime):
        if base.tzinfo is None:
            raise ValueError("base must be an aware datetime")
        base = base.timestamp()
    return [f"--base-time=@{int(base)}"]


def _run(specs: Sequence[str], extra: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TZ="UTC", LC_ALL="C", SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
    try:
        return subprocess.run(
            [_tool(), "--no-pager", "calendar", *extra, "--", *specs],
            capture_output=True,
            text=True,
            env=env,
            timeout=_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CalendarError(f"systemd-analyze calendar could not run: {exc}") from None


def _check_text(spec: str) -> None:
    if not isinstance(spec, str) or not spec.strip() or "\n" in spec or spec != spec.strip():
        raise CalendarError(f"{spec!r} is not a one-line OnCalendar= expression")


def _reason(stderr: str, spec: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    why = lines[-1] if lines else "rejected by systemd-analyze calendar"
    return f"{spec!r} is not a valid OnCalendar= expression ({why})"


def invalid_schedules(specs: Iterable[str]) -> dict[str, str]:
    """Check many expressions with few processes; return ``{bad expression: reason}``.

    All expressions go to one ``systemd-analyze calendar`` call; only when it fails is each
    one tried alone to name the culprits.
    """
    unique = sorted(set(specs))
    bad: dict[str, str] = {}
    for spec in unique:
        try:
            _check_text(spec)
        except CalendarError as exc:
            bad[spec] = str(exc)
    rest = [s for s in unique if s not in bad]
    if not rest or _run(rest).returncode == 0:
        return bad
    for spec in rest:
        proc = _run([spec])
        if proc.returncode != 0:
            bad[spec] = _reason(proc.stderr, spec)
    return bad


def _parse(stdout: str) -> tuple[str | None, list[str]]:
    """(normalized form, elapse strings in UTC) of one expression's block."""
    normalized: str | None = None
    elapses: list[str] = []
    for raw in stdout.splitlines():
        key, sep, value = raw.strip().partition(": ")
        if not sep:
            continue
        if key == "Normalized form":
            normalized = value.strip()
        elif key == "Next elapse" or key.startswith("Iter. #"):
            elapses.append(value.strip())
        elif key == "(in UTC)" and elapses:
            elapses[-1] = value.strip()
    return normalized, [e for e in elapses if e != "never"]


def _evaluate(spec: str, iterations: int, base: float | _dt.datetime | None) -> tuple[str | None, list[str]]:
    _check_text(spec)
    extra = _base_arg(base)
    if iterations > 1:
        extra.append(f"--iterations={iterations}")
    proc = _run([spec], extra)
    if proc.returncode != 0:
        raise CalendarError(_reason(proc.stderr, spec))
    return _parse(proc.stdout)


def normalize(spec: str) -> str:
    """systemd's normalized form of ``spec`` (``02:15`` -> ``*-*-* 02:15:00``); ``CalendarError`` if invalid."""
    normalized, _ = _evaluate(spec, 1, None)
    if normalized is None:
        raise CalendarError(f"{spec!r}: systemd-analyze printed no normalized form")
    return normalized


def _to_datetime(text: str) -> _dt.datetime:
    return _dt.datetime.strptime(text, _FORMAT).replace(tzinfo=_dt.UTC)


def calendar_iterations(
    schedule: str | Sequence[str], n: int, *, base: float | _dt.datetime | None = None
) -> list[_dt.datetime]:
    """The next ``n`` elapses (aware UTC datetimes, ascending) of one expression or several.

    Several expressions (a job's ``schedule`` tuple) are merged as a timer with several
    ``OnCalendar=`` lines would fire them. Fewer than ``n`` come back when the expression
    stops elapsing (``2030-01-01``). ``base`` (epoch seconds or aware datetime) replaces "now".
    """
    if n < 1:
        return []
    specs = [schedule] if isinstance(schedule, str) else list(schedule)
    found: set[_dt.datetime] = set()
    for spec in specs:
        _, elapses = _evaluate(spec, n, base)
        found.update(_to_datetime(e) for e in elapses)
    return sorted(found)[:n]


def next_elapse_datetime(
    schedule: str | Sequence[str], *, base: float | _dt.datetime | None = None
) -> _dt.datetime | None:
    """The next elapse as an aware UTC datetime, or ``None`` when it never elapses again."""
    found = calendar_iterations(schedule, 1, base=base)
    return found[0] if found else None


def next_elapse(schedule: str | Sequence[str], *, base: float | _dt.datetime | None = None) -> str | None:
    """systemd's ``Next elapse:`` in UTC (``'Thu 2026-11-26 02:15:00 UTC'``), or ``None`` for never.

    Raises ``CalendarError`` (a ``ConfigError``, exit 78) for an invalid expression.
    """
    when = next_elapse_datetime(schedule, base=base)
    return when.strftime(_FORMAT) if when else None
