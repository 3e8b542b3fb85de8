"""crontab(5) as Debian's cron reads it, and cron's own matcher.

Debian's ``cron`` is Vixie cron 3.0 with Debian's patches; what this module does follows its
``entry.c``, ``env.c``, ``do_command.c`` and ``cron.c``:

- Five fields: minute 0-59, hour 0-23, day of month 1-31, month 1-12 (or ``jan``…),
  day of week 0-7 (0 and 7 are Sunday, or ``sun``…). A field is a list of ``*``, numbers,
  names and ranges ``a-b``, each range or ``*`` optionally ``/step``. ``5/10`` (a step
  without a range) is an error, as in Debian's cron. A backwards range (``19-7``) is an
  error here: Debian's cron accepts it and the line never runs.
- The day rule: when the day-of-month *and* the day-of-week field are both restricted
  (neither starts with ``*``), a day matches if *either* matches; otherwise both must. The
  test is the field's first character, so ``*/2`` counts as unrestricted.
- ``@reboot``, ``@yearly``/``@annually``, ``@monthly``, ``@weekly`` (Sunday),
  ``@daily``/``@midnight``, ``@hourly``.
- The system format (``/etc/crontab``, ``/etc/cron.d/*``) has a user field after the time
  fields; a user's crontab has none.
- ``NAME = value`` lines set the environment of the lines after them (quotes keep blanks);
  cron adds ``SHELL=/bin/sh``, ``HOME`` (the user's), ``PATH=/usr/bin:/bin`` unless set,
  and ``LOGNAME``. ``MAILTO`` says where output is mailed; ``CRON_TZ`` (cronie's) the time
  zone of the schedule.
- In the command, the first unescaped ``%`` ends the command: the rest is its standard
  input, each further ``%`` a newline; ``\\%`` is a literal ``%`` (and, in the command,
  ``\\\\`` a backslash).
- DST: cron runs a fixed-time line whose time falls into the hour skipped when DST starts
  right after the jump, and once (not twice) when DST ends; lines with ``*`` in the minute
  or hour field run on the clock as it is (skipped in the gap, twice in the repeated hour).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

__all__ = [
    "DEFAULT_PATH",
    "DEFAULT_SHELL",
    "SPECIALS",
    "CronError",
    "Crontab",
    "Entry",
    "Field",
    "Problem",
    "Schedule",
    "parse_crontab",
    "parse_env_line",
    "parse_schedule",
    "split_percent",
]

DEFAULT_SHELL = "/bin/sh"
DEFAULT_PATH = "/usr/bin:/bin"  # Debian's cron: _PATH_DEFPATH
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
# name, low, high, names (index + low is the value)
_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, DAYS),
)
SPECIALS = {
    "@reboot": None,
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_USER = re.compile(r"^[a-z_][a-z0-9_.-]*\$?$", re.I)
_TIME_FIELD = re.compile(r"^[*0-9][*0-9,/-]*$")
_EMPTY_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*[ \t]*=[ \t]*$")


class CronError(ValueError):
    """A line cron would reject, or one this importer cannot convert faithfully."""


@dataclass(frozen=True)
class Problem:
    """Something about one line of an input: ``path:line: message``."""

    path: str
    lineno: int
    message: str
    line: str = ""

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.message}"


@dataclass(frozen=True)
class Field:
    """One time field: its text, the values it matches, and whether it starts with ``*``."""

    text: str
    values: frozenset[int]
    star: bool


def _number(text: str, what: str, names: tuple[str, ...] | None, low: int) -> int:
    if not text or not text.isalnum():
        raise CronError(f"{what}: {text!r} is not a number{' or a name' if names else ''}")
    if names:
        lowered = text.lower()
        if lowered in names:
            return names.index(lowered) + low
    if text.isdigit():
        return int(text)
    raise CronError(f"{what}: {text!r} is not a number{' or a three-letter name' if names else ''}")


def parse_field(text: str, index: int) -> Field:
    """Parse field ``index`` (0 minute … 4 day of week) as Debian's cron does."""
    what, low, high, names = _FIELDS[index]
    values: set[int] = set()
    if not text:
        raise CronError(f"{what}: empty")
    for part in text.split(","):
        span, slash, step_text = part.partition("/")
        if span == "*":
            first, last = low, high
        else:
            a_text, dash, b_text = span.partition("-")
            first = _number(a_text, what, names, low)
            if not dash:
                if slash:
                    raise CronError(
                        f"{what}: {part!r} is a step without a range, which Debian's cron rejects "
                        f"(write {first}-{high}/{step_text} or */{step_text})"
                    )
                last = first
            else:
                last = _number(b_text, what, names, low)
        for value in (first, last):
            if not low <= value <= high:
                raise CronError(f"{what}: {value} is out of range ({low}-{high})")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{what}: step {step_text!r} in {part!r} is not a whole number above 0")
            step = int(step_text)
        if first > last:
            raise CronError(
                f"{what}: the range {span} runs backwards: Debian's cron accepts it and never runs the line"
            )
        values.update(range(first, last + 1, step))
    if index == 4:
        values = {v % 7 for v in values}  # 0 and 7 are both Sunday
    return Field(text, frozenset(values), text.startswith("*"))


@dataclass(frozen=True)
class Schedule:
    """When a crontab line runs: five fields, or ``@reboot``; ``tz`` from ``CRON_TZ``."""

    minute: Field
    hour: Field
    dom: Field
    month: Field
    dow: Field
    special: str | None = None
    tz: str | None = None

    @property
    def reboot(self) -> bool:
        return self.special == "@reboot"

    @property
    def wild(self) -> bool:
        """``*`` in the minute or hour field: cron's "wildcard" line for its DST rules."""
        return self.minute.star or self.hour.star

    @property
    def days_or(self) -> bool:
        """Both day fields restricted: a day matches if either matches."""
        return not (self.dom.star or self.dow.star)

    def day_matches(self, day: dt.date) -> bool:
        if day.month not in self.month.values:
            return False
        in_dom = day.day in self.dom.values
        in_dow = (day.weekday() + 1) % 7 in self.dow.values
        return (in_dom or in_dow) if self.days_or else (in_dom and in_dow)

    def matches(self, when: dt.datetime) -> bool:
        """Whether cron's matcher fires for the wall-clock minute ``when`` (naive)."""
        if self.reboot:
            return False
        return when.minute in self.minute.values and when.hour in self.hour.values and self.day_matches(when.date())

    def candidates(self, first: dt.date, last: dt.date) -> Iterable[dt.datetime]:
        """Every wall-clock minute from ``first`` to ``last`` (dates, inclusive) that matches."""
        if self.reboot:
            return
        hours = sorted(self.hour.values)
        minutes = sorted(self.minute.values)
        day = first
        while day <= last:
            if self.day_matches(day):
                for hour in hours:
                    for minute in minutes:
                        yield dt.datetime(day.year, day.month, day.day, hour, minute)
            day += dt.timedelta(days=1)

    def firings(self, start: dt.datetime, end: dt.datetime, zone: ZoneInfo | None = None) -> list[dt.datetime]:
        """When cron runs the line in ``[start, end)`` (aware), as sorted UTC datetimes.

        ``zone``: the time zone cron's clock is in (``CRON_TZ`` wins when the line has one).
        """
        zone = ZoneInfo(self.tz) if self.tz else (zone or ZoneInfo("UTC"))
        found: set[dt.datetime] = set()
        for local in self.candidates(*_local_span(start, end, zone)):
            for instant in cron_instants(local, zone, wild=self.wild):
                if start <= instant < end:
                    found.add(instant)
        return sorted(found)

    def dst_changes(
        self, start: dt.datetime, end: dt.datetime, zone: ZoneInfo | None = None
    ) -> list[tuple[dt.datetime, str]]:
        """Wall-clock times of this line in ``[start, end)`` that a DST change skips
        (``"gap"``) or repeats (``"fold"``), with the kind."""
        zone = ZoneInfo(self.tz) if self.tz else (zone or ZoneInfo("UTC"))
        hits = []
        for local in self.candidates(*_local_span(start, end, zone)):
            kind = dst_kind(local, zone)
            if kind and start <= local.replace(tzinfo=zone).astimezone(dt.UTC) < end:
                hits.append((local, kind))
        return hits


def _local_span(start: dt.datetime, end: dt.datetime, zone: ZoneInfo) -> tuple[dt.date, dt.date]:
    one = dt.timedelta(days=1)
    return start.astimezone(zone).date() - one, end.astimezone(zone).date() + one


def dst_kind(local: dt.datetime, zone: ZoneInfo) -> str | None:
    """``"gap"``: the wall-clock time ``local`` does not exist in ``zone`` (DST starts);
    ``"fold"``: it happens twice (DST ends); ``None``: once."""
    first = local.replace(tzinfo=zone, fold=0)
    second = local.replace(tzinfo=zone, fold=1)
    back = first.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None)
    if back != local:
        return "gap"
    if first.utcoffset() != second.utcoffset():
        return "fold"
    return None


def cron_instants(local: dt.datetime, zone: ZoneInfo, *, wild: bool) -> list[dt.datetime]:
    """When cron runs a line matching the wall-clock minute ``local`` (UTC datetimes).

    Once normally. In a DST gap: a fixed-time line runs at the jump (cron catches up the
    minutes it skipped), a wildcard line not at all. In a DST fold: a fixed-time line runs
    the first time only, a wildcard line both times.
    """
    utc = dt.UTC
    kind = dst_kind(local, zone)
    if kind is None:
        return [local.replace(tzinfo=zone).astimezone(utc)]
    if kind == "fold":
        first = local.replace(tzinfo=zone, fold=0).astimezone(utc)
        second = local.replace(tzinfo=zone, fold=1).astimezone(utc)
        return sorted({first, second}) if wild else [min(first, second)]
    if wild:
        return []
    # The gap: the first instant whose wall-clock time is past ``local`` is the jump.
    low = local.replace(tzinfo=zone, fold=1).astimezone(utc)
    high = local.replace(tzinfo=zone, fold=0).astimezone(utc)
    low, high = min(low, high), max(low, high)
    instant = low
    while instant <= high:
        if instant.astimezone(zone).replace(tzinfo=None) > local:
            return [instant]
        instant += dt.timedelta(minutes=1)
    return [high]


def parse_schedule(fields: list[str], tz: str | None = None) -> Schedule:
    """``["30", "4", "1,15", "*", "5"]`` or ``["@daily"]`` as a ``Schedule``."""
    special = None
    if len(fields) == 1 and fields[0].startswith("@"):
        special = fields[0]
        if special not in SPECIALS:
            known = ", ".join(SPECIALS)
            raise CronError(f"unknown {special!r} (cron knows {known})")
        expansion = SPECIALS[special]
        fields = (expansion or "* * * * *").split()
    if len(fields) != 5:
        raise CronError(f"expected five time fields, got {len(fields)}")
    parsed = [parse_field(text, i) for i, text in enumerate(fields)]
    minute, hour, dom, month, dow = parsed
    return Schedule(minute, hour, dom, month, dow, special=special, tz=tz)


def parse_env_line(line: str) -> tuple[str, str] | None:
    """``NAME = value`` as Debian's cron's ``load_env`` reads it, or ``None`` if the line is
    not an environment setting (then it is a cron line)."""
    NAMEI, NAME, EQ1, EQ2, VALUEI, VALUE, FINI, ERROR = range(8)
    state, quote, i = NAMEI, "", 0
    name: list[str] = []
    value: list[str] = []
    out = name
    text = line.strip("\n").lstrip(" \t")  # cron skips leading blanks first
    while state != ERROR and i < len(text):
        c = text[i]
        if state in (NAMEI, VALUEI):
            if c in "'\"":
                quote = c
                i += 1
            state += 1
            continue
        if state in (NAME, VALUE):
            if quote:
                if c == quote:
                    state += 1
                    i += 1
                    continue
                if state == NAME and c == "=":
                    state = ERROR
                    continue
            elif state == NAME:
                if c.isspace():
                    i += 1
                    state += 1
                    continue
                if c == "=":
                    state += 1
                    continue
            out.append(c)
            i += 1
            continue
        if state == EQ1:
            if c == "=":
                state, out, quote = EQ2, value, ""
            elif not c.isspace():
                state = ERROR
            i += 1
            continue
        # EQ2, FINI: skip blanks; anything else moves on (FINI -> ERROR)
        if c.isspace():
            i += 1
        else:
            state += 1
    if not (state == FINI or (state == VALUE and not quote)):
        return None
    val = "".join(value)
    if state == VALUE:
        val = val.rstrip()
    if len(val) >= 2 and val[0] in "'\"" and val[-1] == val[0]:
        val = val[1:-1]
    return "".join(name), val


def split_percent(command: str) -> tuple[str, str | None]:
    """(the shell command, its standard input or None), as cron's ``do_command`` splits
    them: the first unescaped ``%`` ends the command; in the command ``\\%`` is ``%`` and
    ``\\\\`` is ``\\``; in the input each ``%`` is a newline, ``\\%`` a ``%``, and a newline
    ends the input if it does not."""
    out: list[str] = []
    escaped = False
    rest: str | None = None
    for i, ch in enumerate(command):
        if escaped:
            escaped = False
            if ch in "%\\":
                out[-1] = ch
                continue
            out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            out.append(ch)
            continue
        if ch == "%":
            rest = command[i + 1 :]
            break
        out.append(ch)
    if rest is None or rest == "":
        return "".join(out), None
    data: list[str] = []
    escaped = need_newline = False
    for ch in rest:
        if escaped:
            if ch != "%":
                data.append("\\")
        elif ch == "%":
            ch = "\n"
        escaped = ch == "\\"
        if not escaped:
            data.append(ch)
            need_newline = ch != "\n"
    if escaped:
        data.append("\\")
    if need_newline:
        data.append("\n")
    text = "".join(data)
    return "".join(out), text


@dataclass(frozen=True)
class Entry:
    """One crontab line that runs something."""

    path: str
    lineno: int
    line: str
    schedule: Schedule
    command: str
    user: str | None
    env: tuple[tuple[str, str], ...] = ()

    @property
    def environment(self) -> dict[str, str]:
        """The crontab's assignments above this line (later ones win), in order."""
        return dict(self.env)

    @property
    def shell(self) -> str:
        return self.environment.get("SHELL", DEFAULT_SHELL)

    @property
    def mailto(self) -> str | None:
        return self.environment.get("MAILTO")


@dataclass
class Crontab:
    """A parsed crontab: its entries, the lines it could not take, and warnings."""

    path: str
    system: bool
    user: str | None
    entries: list[Entry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def _split_fields(line: str, count: int) -> tuple[list[str], str]:
    """The first ``count`` blank-separated words and the rest of the line (its blanks kept)."""
    words: list[str] = []
    rest = line.lstrip(" \t")
    for _ in range(count):
        if not rest:
            break
        match = re.match(r"([^ \t]+)[ \t]*", rest)
        assert match is not None
        words.append(match.group(1))
        rest = rest[match.end() :]
    return words, rest


def _on_path(program: str, path: str) -> bool:
    import os

    return any(os.access(os.path.join(d, program), os.X_OK) for d in path.split(":") if d)


def _check_user_line(fields: list[str], command: str, system: bool, path: str, user: str | None) -> str | None:
    """Why a line looks like the other format (a user field where none belongs, a sixth
    time field), or None."""
    first = command.split(None, 1)[0] if command.strip() else ""
    if not system and first and _TIME_FIELD.match(first):
        return f"six time fields ({' '.join(fields)} {first}): cron has five, and would run {first!r} as the command"
    if not system and first in ("root", user) and " " in command.strip() and not _on_path(first, path):
        return (
            f"{first!r} after the five time fields looks like the user field of the system format "
            f"(/etc/crontab, /etc/cron.d), which a user's crontab does not have: cron would run {first!r} "
            "as the command (import it without --user, or drop the user)"
        )
    return None


def parse_crontab(text: str, *, path: str = "-", user: str | None = None) -> Crontab:
    """Parse a crontab's text. ``user=None``: the system format (a user field on each
    line); else the crontab of ``user``. Lines that cannot be taken become ``problems``."""
    system = user is None
    tab = Crontab(path=path, system=system, user=user)
    env: list[tuple[str, str]] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines and text:
        tab.warnings.append(
            Problem(
                path, len(lines), "no newline at the end of the file: Debian's cron ignores the whole file", lines[-1]
            )
        )
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\r")
        stripped = line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        assignment = parse_env_line(stripped)
        if assignment is not None:
            name, value = assignment
            if not name:
                tab.problems.append(Problem(path, lineno, "an environment line without a name", line))
                continue
            env = [(k, v) for k, v in env if k != name] + [(name, value)]
            continue
        try:
            entry = _parse_entry(path, lineno, line, stripped, system, user, tuple(env))
        except CronError as exc:
            tab.problems.append(Problem(path, lineno, str(exc), line))
            continue
        tab.entries.append(entry)
    return tab


def _parse_entry(
    path: str, lineno: int, line: str, stripped: str, system: bool, user: str | None, env: tuple[tuple[str, str], ...]
) -> Entry:
    if _EMPTY_ASSIGNMENT.match(stripped):
        name = stripped.split("=")[0].strip()
        raise CronError(f'{stripped!r}: Debian\'s cron does not take an empty assignment (write {name}="")')
    count = 1 if stripped.startswith("@") else 5
    fields, rest = _split_fields(stripped, count)
    if len(fields) < count or not rest.strip():
        raise CronError(
            f"not a cron line: expected {count} time field{'s' if count > 1 else ''}"
            f"{', a user' if system else ''} and a command"
        )
    tz = dict(env).get("CRON_TZ")
    if tz:
        try:
            ZoneInfo(tz)
        except (KeyError, ValueError, OSError):
            raise CronError(f"CRON_TZ={tz!r} is not a time zone this machine knows") from None
    schedule = parse_schedule(fields, tz or None)
    if system:
        words, command = _split_fields(rest, 1)
        who = words[0] if words else ""
        if not _USER.match(who) or not command.strip():
            raise CronError(
                f"{who!r} is not a user name: the system format (/etc/crontab, /etc/cron.d) has a user field "
                "after the time fields (for a user's own crontab, use --user USER)"
            )
        line_user: str | None = who
    else:
        command = rest
        why = _check_user_line(fields, command, system, dict(env).get("PATH", DEFAULT_PATH), user)
        if why:
            raise CronError(why)
        line_user = user
    command = command.rstrip(" \t")
    return Entry(path, lineno, line, schedule, command, line_user, env)
