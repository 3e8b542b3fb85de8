"""The two imports as library calls: inputs in, job specs and a report out.

``import_crontabs`` and ``import_units`` never raise for what is in their inputs: a line or
unit that cannot be converted is a ``Problem`` (``path:line: message``) and the rest are
still converted. ``jobrunner import`` is a thin shell over these.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from jobrunner.errors import ConfigError
from jobrunner.importer.cron import Crontab, Entry, Problem, parse_crontab
from jobrunner.importer.emit import JobSpec, spec_from_entry, unique_names

__all__ = ["ImportResult", "import_crontabs", "import_units", "read_input"]

_CRON_D_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class ImportResult:
    """What an import made: the specs, the inputs' problems and warnings, and (``--check``)
    the comparisons."""

    specs: list[JobSpec] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    crontabs: list[Crontab] = field(default_factory=list)
    pairs: list[tuple[JobSpec, object]] = field(default_factory=list)


MAX_INPUT_BYTES = 1 << 20  # a crontab or a unit file: far more than any real one
# Control characters but tab: a \r in a line makes a terminal (and a reviewer) see less than
# what is compiled; NUL, ESC and the rest have no place in a crontab or a unit.
_CONTROL_IN_LINE = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def read_input(path: str) -> str:
    """A crontab's or a unit file's text: a regular file (a FIFO, ``/dev/zero``, a directory
    are refused, never waited on or read on), or standard input for ``-``; at most
    ``MAX_INPUT_BYTES``, UTF-8, no control character but tab in a line. ``ConfigError`` (one
    line naming the file, and the line) otherwise."""
    import stat

    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise ConfigError(f"{path}: not a regular file")
                with os.fdopen(os.dup(fd), "rb") as handle:
                    data = handle.read(MAX_INPUT_BYTES + 1)
            finally:
                os.close(fd)
        if len(data) > MAX_INPUT_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_INPUT_BYTES} bytes")
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    for number, line in enumerate(text.split("\n"), 1):
        found = _CONTROL_IN_LINE.search(line)
        if found:
            raise ConfigError(f"{path}:{number}: control character {found.group()!r} in a line: remove it")
    return text


def _base(path: str, user: str | None) -> str:
    if path == "-":
        return f"{user}_crontab" if user else "crontab"
    return os.path.basename(path.rstrip("/")) or "crontab"


def import_crontabs(
    paths: Sequence[str], *, user: str | None = None, texts: dict[str, str] | None = None
) -> ImportResult:
    """Parse each crontab (``user=None``: the system format) and convert its lines."""
    result = ImportResult()
    entries: list[tuple[Crontab, Entry]] = []
    for path in paths:
        text = texts[path] if texts and path in texts else read_input(path)
        tab = parse_crontab(text, path=path, user=user)
        result.crontabs.append(tab)
        result.problems.extend(tab.problems)
        result.warnings.extend(str(w) for w in tab.warnings)
        parent = os.path.basename(os.path.dirname(os.path.abspath(path))) if path != "-" else ""
        if parent == "cron.d" and not _CRON_D_NAME.match(os.path.basename(path)):
            result.warnings.append(
                f"{path}: Debian's cron ignores files in /etc/cron.d whose names have characters other than "
                "letters, digits, '_' and '-': these lines never ran"
            )
        entries.extend((tab, e) for e in tab.entries)
    names = unique_names([_base(tab.path, user) for tab, _ in entries])
    for (_tab, entry), name in zip(entries, names, strict=True):
        spec = spec_from_entry(entry, name)
        result.specs.append(spec)
        result.warnings.extend(f"{spec.where}: {w}" for w in spec.warnings)
    return result


def import_units(paths: Sequence[str]) -> ImportResult:
    """Pair the timers and services among ``paths`` and convert each pair."""
    from jobrunner.importer.units import find_pairs, pair_name, spec_from_pair, unit_setting

    result = ImportResult()
    pairs, problems = find_pairs(paths)
    result.problems.extend(problems)
    names = unique_names([pair_name(p) for p in pairs])
    for pair, name in zip(pairs, names, strict=True):
        try:
            spec, trouble = spec_from_pair(pair, name)
        except (OSError, ValueError) as exc:
            result.problems.append(Problem(str(pair.service.path), 1, f"cannot be imported: {exc}"))
            continue
        result.problems.extend(trouble)
        if spec is None:
            continue
        unit_setting(spec, pair)
        result.specs.append(spec)
        result.warnings.extend(f"{spec.where}: {w}" for w in spec.warnings)
    return result


def check_window(start: str | None, days: int) -> tuple[dt.datetime, dt.datetime]:
    """``[start, start + days)``: ``start`` as ``YYYY-MM-DD`` (UTC midnight), else now (to the minute)."""
    if start:
        try:
            begin = dt.datetime.strptime(start, "%Y-%m-%d").replace(tzinfo=dt.UTC)
        except ValueError:
            raise ConfigError(f"--from {start!r}: use YYYY-MM-DD") from None
    else:
        begin = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    return begin, begin + dt.timedelta(days=days)


def zone_named(name: str | None) -> ZoneInfo:
    from jobrunner.importer.check import local_zone

    if not name:
        return local_zone()
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        raise ConfigError(f"--tz {name!r}: not a time zone this machine knows") from None
