"""The two imports as library calls: inputs in, job specs and a report out.

``import_crontabs`` and ``import_units`` never raise for what is in their inputs: a line or
unit that cannot be converted is a ``Problem`` (``path:line: message``) and the rest are
still converted. ``jobrunner import`` is a thin shell over these.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from jobrunner.errors import ConfigError, UsageError
from jobrunner.importer.check import local_zone
from jobrunner.importer.cron import Crontab, Entry, Problem, parse_crontab
from jobrunner.importer.emit import JobSpec, spec_from_entry, unique_names
from jobrunner.importer.guards import background, native_timers, package_root, systemd_guard, unit_exists
from jobrunner.importer.inputs import read_input
from jobrunner.importer.services import ServiceSpec, service_from_entry
from jobrunner.importer.units import find_pairs, pair_name, spec_from_pair, unit_setting

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
    entries: list[Entry] = field(default_factory=list)  # the crontab line of each spec (import_crontabs)
    skipped: list[str] = field(default_factory=list)  # lines left out on purpose, and why
    services: list[ServiceSpec] = field(default_factory=list)  # @reboot daemons, as plain services


# Control characters but tab: a \r in a line makes a terminal (and a reviewer) see less than
# what is compiled; NUL, ESC and the rest have no place in a crontab or a unit.


_SHELL_WORDS = frozenset(
    "cd test [ [[ . source exec export eval set unset if for while until case command env nice "
    "nohup timeout flock true false echo printf sleep umask ulimit trap wait".split()
)
_SPOOL = ("/var/spool/cron/crontabs", "/var/spool/cron")
DEFAULT_NAME = "cron-{file}"


def _is_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _command_not_user(entry: Entry) -> bool:
    """The user field of a system-format line is a command (and no user here): the line is
    from a user's crontab, whose first command word was read as a user."""
    who = entry.user or ""
    if _is_user(who):
        return False
    if who in _SHELL_WORDS:
        return True
    path = entry.environment.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return any(os.access(os.path.join(d, who), os.X_OK) for d in (path + ":/usr/sbin:/sbin").split(":") if d)


def _file_field(path: str, user: str | None) -> str:
    if path == "-":
        return user or "crontab"
    return os.path.basename(path.rstrip("/")) or "crontab"


def _names(rule: str, found: list[tuple[Entry, int, str]]) -> list[str]:
    """A name for each ``(entry, n, file)`` from ``rule`` (``{file}``, ``{user}``, ``{n}``, ``{line}``);
    a name several lines share gets ``-1``, ``-2`` … (``unique_names``)."""
    bases = []
    for entry, n, file in found:
        try:
            bases.append(rule.format(file=file, user=entry.user or "root", n=n, line=entry.lineno))
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"--name {rule!r}: {exc}: use {{file}}, {{user}}, {{n}} and {{line}}") from None
    return unique_names(bases)


def import_crontabs(
    paths: Sequence[str],
    *,
    user: str | None = None,
    system: bool = False,
    texts: dict[str, str] | None = None,
    name: str = DEFAULT_NAME,
    unit_roots: Sequence[str] = ("/",),
) -> ImportResult:
    """Parse each crontab and convert its lines.

    ``user``: the crontabs are that user's (no user field). ``system``: they are in the
    system format. Neither: the system format, unless the file is in cron's spool
    (``/var/spool/cron/crontabs/USER``: USER's) or a line's user field is a command (then
    ``UsageError``, one line: a user's crontab needs ``--user``). An ``@reboot`` line that starts
    a daemon (``nohup X &``) becomes a service (``services``) when ``service_from_entry`` can
    prove it equivalent; other lines that leave a process running are problems. Each job (and
    service) is named by ``name``
    (``cron-{file}``: never the name of a package's own unit); a name that is a unit in the
    unit search path under ``unit_roots`` (or in the input's package tree) is refused.
    """
    result = ImportResult()
    found: list[tuple[Entry, int, str]] = []
    daemons: set[int] = set()  # indexes in found of the lines that become services
    roots = list(unit_roots)
    for path in paths:
        text = texts[path] if texts and path in texts else read_input(path)
        owner = user
        if owner is None and not system and path != "-" and os.path.dirname(os.path.abspath(path)) in _SPOOL:
            owner = os.path.basename(path)  # cron's spool: the file is its user's crontab
        tab = parse_crontab(text, path=path, user=owner)
        if owner is None and not system:
            wrong = next((e for e in tab.entries if _command_not_user(e)), None)
            if wrong is not None:  # never a guessed user: the whole import stops with the hint
                raise UsageError(
                    f"{path}:{wrong.lineno}: this looks like a user's crontab, not the system format: the user "
                    f"field {wrong.user!r} is a command and no user here; import it with --user USER (whose "
                    "crontab it is), or --system to read it as /etc/crontab"
                )
        result.crontabs.append(tab)
        result.problems.extend(tab.problems)
        result.warnings.extend(str(w) for w in tab.warnings)
        parent = os.path.basename(os.path.dirname(os.path.abspath(path))) if path != "-" else ""
        if parent == "cron.d" and not _CRON_D_NAME.match(os.path.basename(path)):
            result.warnings.append(
                f"{path}: Debian's cron ignores files in /etc/cron.d whose names have characters other than "
                "letters, digits, '_' and '-': these lines never ran"
            )
        root = package_root(path) if path != "-" else None
        if root and root not in roots:
            roots.append(root)
        timers = native_timers(path) if path != "-" else []
        if timers and tab.entries:
            result.skipped.append(
                f"{path}: skipped, all {len(tab.entries)} line(s): the package ships the native timer(s) "
                f"{', '.join(timers)} for this work (systemd runs them; this cron.d file is for hosts without systemd)"
            )
            continue
        n = 0
        for entry in tab.entries:
            command = entry.command
            if systemd_guard(command):
                result.skipped.append(
                    f"{entry.path}:{entry.lineno}: skipped: the line works only where systemd is not running "
                    "(its /run/systemd/system guard): on a systemd host it never does anything "
                    "(the package's own systemd unit does the work)"
                )
                continue
            leftover = background(command)
            if leftover is not None and entry.schedule.reboot:
                why = _daemon_refusal(entry)
                if why is None:
                    n += 1
                    daemons.add(len(found))
                    found.append((entry, n, _file_field(path, owner)))
                    continue
                result.problems.append(
                    Problem(
                        entry.path,
                        entry.lineno,
                        f"not imported: it leaves a process running ({leftover}), which cron kept but a job's run "
                        f"kills when it ends, and it is no daemon a plain service can run as cron did: {why}; write "
                        "that service by hand (ExecStart=, Restart=, Type=forking with PIDFile= for a program that "
                        "forks), or import the line without it",
                        entry.line,
                    )
                )
                continue
            if leftover is not None:
                result.problems.append(
                    Problem(
                        entry.path,
                        entry.lineno,
                        f"not imported: it leaves a process running ({leftover}), which cron kept but a job's run "
                        "kills when it ends, and a child left at every firing is no service; run the daemon as a "
                        "service (a .service with ExecStart= and Restart=; an @reboot line is imported as one), "
                        "or import the line without it",
                        entry.line,
                    )
                )
                continue
            n += 1
            found.append((entry, n, _file_field(path, owner)))
    names = _names(name, found)
    for index, ((entry, _n, _file), job) in enumerate(zip(found, names, strict=True)):
        unit = job.replace("_", "-")
        taken = unit_exists(unit, tuple(roots))
        if taken:
            result.problems.append(
                Problem(
                    entry.path,
                    entry.lineno,
                    f"not imported: its unit {unit} would take over {taken}; choose other names with --name "
                    f"(default {DEFAULT_NAME!r})",
                    entry.line,
                )
            )
            continue
        if index in daemons:
            service, _why = service_from_entry(entry, unit)
            assert service is not None, _why  # _daemon_refusal said it converts
            result.services.append(service)
            result.warnings.extend(f"{service.where}: {w}" for w in service.notes)
            continue
        spec = spec_from_entry(entry, job)
        result.specs.append(spec)
        result.entries.append(entry)
        result.warnings.extend(f"{spec.where}: {w}" for w in spec.warnings)
    return result


def _daemon_refusal(entry: Entry) -> str | None:
    """Why the ``@reboot`` line ``entry`` cannot be a service (None: it can)."""
    service, why = service_from_entry(entry, "cron-check")
    return None if service is not None else why


def import_units(paths: Sequence[str]) -> ImportResult:
    """Pair the timers and services among ``paths`` and convert each pair."""
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
    if not name:
        return local_zone()
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        raise ConfigError(f"--tz {name!r}: not a time zone this machine knows") from None
