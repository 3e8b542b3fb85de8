"""Existing ``.service`` + ``.timer`` pairs as job specs.

What maps, and to what:

- ``ExecStartPre=``, ``ExecStart=`` (several, in order): ``ctx.run([...])`` with the words
  as systemd splits them; ``$VAR`` (split at whitespace) and ``${VAR}`` (one word) expanded
  from the environment as systemd does; a ``-`` prefix is ``check=False``.
- ``User=``, ``Group=``, ``WorkingDirectory=``, ``EnvironmentFile=`` (``env_files=``,
  ``-`` kept), ``Environment=`` (defaults under the files, as in systemd),
  ``TimeoutStartSec=``/``RuntimeMaxSec=`` (``timeout=``), ``ReadWritePaths=``
  (``write_paths=``, each optional), ``ReadOnlyPaths=`` (``read_paths=``).
- The timer's ``OnCalendar=`` (``schedule=``), ``Persistent=``, ``RandomizedDelaySec=``
  (``jitter=``), ``FixedRandomDelay=``, ``AccuracySec=``; its ``OnBootSec=`` and the other
  monotonic triggers beside a calendar (``systemd={"Timer": …}``).
- The sandbox and scheduling settings of ``[Service]`` and the conditions and ordering of
  ``[Unit]``: kept as they are, through ``systemd=`` (over ``hardening="basic"``).

Anything else (``ExecStop=``, ``Restart=``, ``StandardOutput=``, the units' ``[Install]``,
``@``/``+``/``!`` prefixes, templates …) is listed in the module and the report, never
dropped silently. A unit without ``ExecStart=`` is a problem naming the file and line.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobrunner.importer.cron import Problem
from jobrunner.importer.emit import _HARDENING_NOTE, JobSpec, Setting, _dict_source, _Source, literal
from jobrunner.importer.inputs import read_input  # bounded, regular files only, no control characters
from jobrunner.timespan import format_timespan, parse_timespan

__all__ = ["UnitFile", "UnitPair", "find_pairs", "read_unit", "spec_from_pair"]

# [Service] settings kept as they are (systemd= overrides): the sandbox, resources, scheduling.
_KEPT_SERVICE = {
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateNetwork",
    "PrivateUsers",
    "PrivateMounts",
    "PrivateIPC",
    "NoNewPrivileges",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "ProtectProc",
    "ProcSubset",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "SystemCallFilter",
    "SystemCallArchitectures",
    "SystemCallErrorNumber",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "RestrictAddressFamilies",
    "IPAddressDeny",
    "IPAddressAllow",
    "UMask",
    "KeyringMode",
    "DevicePolicy",
    "DeviceAllow",
    "InaccessiblePaths",
    "TemporaryFileSystem",
    "BindPaths",
    "BindReadOnlyPaths",
    "ExecPaths",
    "NoExecPaths",
    "RemoveIPC",
    "SupplementaryGroups",
    "Nice",
    "IOSchedulingClass",
    "IOSchedulingPriority",
    "CPUSchedulingPolicy",
    "CPUSchedulingPriority",
    "CPUWeight",
    "IOWeight",
    "MemoryMax",
    "MemoryHigh",
    "TasksMax",
    "CPUQuota",
    "LimitNOFILE",
    "LimitNPROC",
    "LimitCORE",
    "OOMScoreAdjust",
    "StateDirectory",
    "CacheDirectory",
    "LogsDirectory",
    "RuntimeDirectory",
    "ConfigurationDirectory",
    "StateDirectoryMode",
    "RuntimeDirectoryMode",
    "LogsDirectoryMode",
    "CacheDirectoryMode",
    "PassEnvironment",
    "UnsetEnvironment",
}
# [Unit] settings kept: conditions, assertions, ordering and requirements.
_KEPT_UNIT_PREFIXES = ("Condition", "Assert")
_KEPT_UNIT = {
    "After",
    "Before",
    "Wants",
    "Requires",
    "Requisite",
    "BindsTo",
    "PartOf",
    "Conflicts",
    "RequiresMountsFor",
    "WantsMountsFor",
    "Upholds",
}
_TIMER_MONOTONIC = ("OnBootSec", "OnStartupSec", "OnActiveSec", "OnUnitActiveSec", "OnUnitInactiveSec")
_TIMER_KEPT = {"WakeSystem", "RemainAfterElapse", *_TIMER_MONOTONIC}
_BOOL_TRUE = {"1", "yes", "true", "on"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE_VAR = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")


@dataclass
class UnitFile:
    """A unit file read with line numbers: ``{section: [(key, value, line)]}`` and its text."""

    path: Path
    sections: dict[str, list[tuple[str, str, int]]]
    text: str
    first_line: dict[str, int] = field(default_factory=dict)

    def values(self, section: str, key: str) -> list[str]:
        """Every value of ``key``, an empty assignment resetting the list (as systemd does)."""
        out: list[str] = []
        for k, v, _ in self.sections.get(section, []):
            if k == key:
                if v == "":
                    out = []
                else:
                    out.append(v)
        return out

    def last(self, section: str, key: str) -> str | None:
        found = self.values(section, key)
        return found[-1] if found else None

    def line_of(self, section: str, key: str | None = None) -> int:
        for k, _, n in self.sections.get(section, []):
            if key is None or k == key:
                return n
        return self.first_line.get(section, 1)


def read_unit(path: str | os.PathLike[str]) -> UnitFile:
    """Read a unit file: comments dropped, continuation lines joined, line numbers kept."""
    p = Path(path)
    text = read_input(str(p))
    sections: dict[str, list[tuple[str, str, int]]] = {}
    first: dict[str, int] = {}
    current: list[tuple[str, str, int]] | None = None
    pending, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if not pending:
            start = n
        line = pending + line
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1]
            current = sections.setdefault(name, [])
            first.setdefault(name, n)
            continue
        key, sep, value = line.partition("=")
        if sep and current is not None:
            current.append((key.strip(), value.strip(), start))
    return UnitFile(p, sections, text, first)


@dataclass
class UnitPair:
    """A service and the timer that starts it (None: a service run by hand)."""

    service: UnitFile
    timer: UnitFile | None


def find_pairs(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[UnitPair], list[Problem]]:
    """Pair the timers and services among ``paths`` (files or directories of them)."""
    files: list[Path] = []
    explicit: set[Path] = set()
    problems: list[Problem] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files.extend(sorted(q for q in p.iterdir() if q.suffix in (".timer", ".service") and q.is_file()))
        elif p.is_file():
            files.append(p)
            explicit.add(p)
        else:
            problems.append(Problem(str(p), 0, "no such file or directory"))
    by_name = {f.name: f for f in files}
    pairs: list[UnitPair] = []
    claimed: set[str] = set()
    for timer_path in [f for f in files if f.suffix == ".timer"]:
        if "@" in timer_path.name:
            problems.append(Problem(str(timer_path), 1, "a template timer: not imported (import an instance's units)"))
            continue
        timer = read_unit(timer_path)
        target = timer.last("Timer", "Unit") or timer_path.with_suffix(".service").name
        service_path = by_name.get(target) or (timer_path.parent / target)
        if not service_path.is_file():
            problems.append(
                Problem(str(timer_path), timer.line_of("Timer", "Unit"), f"its service {target} is not beside it")
            )
            continue
        claimed.add(service_path.name)
        pairs.append(UnitPair(read_unit(service_path), timer))
    for service_path in [f for f in files if f.suffix == ".service" and f.name not in claimed]:
        if "@" in service_path.name:
            problems.append(Problem(str(service_path), 1, "a template service: not imported"))
        elif service_path in explicit:
            pairs.append(UnitPair(read_unit(service_path), None))
    return pairs, problems


def _split_exec(value: str) -> tuple[str, list[str]]:
    """(prefixes, words) of an ``Exec*=`` value as systemd splits it."""
    match = re.match(r"^([-@:+!]*)(.*)$", value)
    assert match is not None
    prefixes, rest = match.group(1), match.group(2).strip()
    return prefixes, shlex.split(rest, posix=True)


def _word_source(word: str, expand: bool) -> tuple[str, bool]:
    """Python source for one argument, and whether it is a ``*…split()`` of several."""
    if not expand or "$" not in word:
        return literal(word), False
    whole = _WHOLE_VAR.match(word)
    if whole:
        return f'*env.get({literal(whole.group(1))}, "").split()', True
    parts: list[str] = []
    pos = 0
    for m in _VAR.finditer(word):
        if m.start() > pos:
            parts.append(literal(word[pos : m.start()].replace("$$", "$")))
        parts.append(f'env.get({literal(m.group(1))}, "")')
        pos = m.end()
    if pos < len(word):
        parts.append(literal(word[pos:].replace("$$", "$")))
    return " + ".join(parts) if parts else '""', False


def _exec_line(key: str, value: str, spec: JobSpec, env_name: str | None) -> tuple[str | None, bool]:
    """A ``ctx.run(...)`` line for one ``ExecStart(Pre)=``, or None (listed as unmapped)."""
    try:
        prefixes, words = _split_exec(value)
    except ValueError as exc:
        spec.unmapped.append(f"{key}={value}: cannot be split ({exc})")
        return None, False
    if not words:
        spec.unmapped.append(f"{key}={value}: no command")
        return None, False
    odd = set(prefixes) - {"-", ":"}
    if odd:
        spec.unmapped.append(f"{key}={value}: the {''.join(sorted(odd))} prefix (it runs without it)")
    if ";" in words:
        spec.unmapped.append(f"{key}={value}: several commands on one line (';'): write one ctx.run for each")
        return None, False
    if any("%" in w for w in words):
        spec.unmapped.append(f"{key}={value}: a %-specifier, which only systemd expands (passed as written)")
    expand = ":" not in prefixes
    sources = [_word_source(w, expand) for w in words]
    uses_env = any("env.get(" in s for s, _ in sources)
    argv = "[" + ", ".join(s for s, _ in sources) + "]"
    args = [argv]
    if env_name:
        args.append(f"env={env_name}")
    if "-" in prefixes:
        args.append("check=False")
    line = f"ctx.run({', '.join(args)})"
    if "-" in prefixes:
        line += f"  # {key}=-…: a failure is ignored"
    return line, uses_env


def _span(value: str) -> str | None:
    try:
        seconds = parse_timespan(value)
    except (ValueError, TypeError):
        return None
    return format_timespan(seconds) if seconds else "0"


def spec_from_pair(pair: UnitPair, name: str) -> tuple[JobSpec | None, list[Problem]]:
    """The job for a service (and its timer); ``None`` and a problem when it has no ``ExecStart=``."""
    service, timer = pair.service, pair.timer
    starts = service.values("Service", "ExecStart")
    if not starts:
        line = service.first_line.get("Service", 1)
        return None, [Problem(str(service.path), line, "no ExecStart= in [Service]: nothing to run, not imported")]
    origin = ["Imported by `jobrunner import units` from these units, verbatim:"]
    for unit in (timer, service):
        if unit is None:
            continue
        origin += ["", f"  {unit.path}"] + [f"    {line}".rstrip() for line in unit.text.splitlines() if line.strip()]
    description = service.last("Unit", "Description") or (timer.last("Unit", "Description") if timer else None)
    spec = JobSpec(
        name=name,
        origin=origin,
        description=description or f"{service.path.name}, imported",
        where=str(timer.path if timer else service.path),
    )
    overrides: dict[str, dict[str, Any]] = {}
    handled = {
        "ExecStart",
        "ExecStartPre",
        "User",
        "Group",
        "WorkingDirectory",
        "EnvironmentFile",
        "Environment",
        "Type",
        "TimeoutStartSec",
        "RuntimeMaxSec",
        "ReadWritePaths",
        "ReadOnlyPaths",
    }

    # [Unit]
    for key, value, _ in service.sections.get("Unit", []):
        if key in ("Description",):
            continue
        if key.startswith(_KEPT_UNIT_PREFIXES) or key in _KEPT_UNIT:
            plus = key if key.startswith(_KEPT_UNIT_PREFIXES) else f"+{key}"
            overrides.setdefault("Unit", {}).setdefault(plus, []).append(value)
        elif key == "Documentation":
            continue  # kept in the comment above
        else:
            spec.unmapped.append(f"{service.path.name}: [Unit] {key}={value}")

    # [Service]
    svc = "Service"
    kind = service.last(svc, "Type") or "simple"
    if kind == "simple" or kind == "exec":
        spec.notes.append(
            f"Type={kind}: systemd took the unit as started at once; the job runs to the command's end (oneshot)"
        )
    elif kind != "oneshot":
        spec.unmapped.append(
            f"{service.path.name}: Type={kind} (a job is a oneshot: it runs to the end of its commands)"
        )
    user = service.last(svc, "User")
    if user and user not in ("root", "0"):
        spec.set("user", user)
    group = service.last(svc, "Group")
    if group:
        spec.set("group", group)
    spec.set("hardening", "basic", "the unit's own sandbox settings are kept in systemd= below")
    spec.notes.append(_HARDENING_NOTE.format(what="The unit") + " Its own sandbox settings are kept in systemd=.")
    workdir = service.last(svc, "WorkingDirectory")
    if workdir:
        if workdir.lstrip("-").startswith("/"):
            spec.set("working_dir", workdir)
        else:
            spec.unmapped.append(f"{service.path.name}: WorkingDirectory={workdir} (not an absolute path)")
    files = service.values(svc, "EnvironmentFile")
    if files:
        spec.set("env_files", files, "the runner reads them for a run by hand too")
        if service.values(svc, "ExecStartPre"):
            spec.warnings.append(
                "systemd reads EnvironmentFile= again before each command; the job reads them once, when it starts: "
                "if an ExecStartPre= command writes one, set what it writes in the job itself"
            )
            spec.notes.append(spec.warnings[-1])
    env: dict[str, str] = {}
    for value in service.values(svc, "Environment"):
        for item in shlex.split(value, posix=True):
            key, sep, val = item.partition("=")
            if sep:
                env[key] = val
    for key in ("TimeoutStartSec", "RuntimeMaxSec"):
        limit = service.last(svc, key)
        if limit and limit not in ("infinity", "0"):
            span = _span(limit)
            if span:
                spec.set("timeout", span, f"was: {key}={limit}")
                break
    for key, target in (("ReadWritePaths", "write_paths"), ("ReadOnlyPaths", "read_paths")):
        paths = [p for v in service.values(svc, key) for p in v.split()]
        if paths:
            optional = [p if p.startswith("-") or target == "read_paths" else f"-{p}" for p in paths]
            spec.set(target, optional, f"was: {key}=")
    for key, value, _ in service.sections.get(svc, []):
        if key in handled:
            continue
        if key in _KEPT_SERVICE:
            overrides.setdefault(svc, {}).setdefault(key, []).append(value)
        elif key in ("SyslogIdentifier",):
            spec.unmapped.append(f"{service.path.name}: {key}={value} (the journal names the job's unit instead)")
        else:
            spec.unmapped.append(f"{service.path.name}: [Service] {key}={value}")
    for section in service.sections:
        if section not in ("Unit", "Service"):
            for key, value, _ in service.sections[section]:
                spec.unmapped.append(
                    f"{service.path.name}: [{section}] {key}={value}"
                    + (" (the timer starts the job)" if section == "Install" else "")
                )

    # The timer.
    if timer is not None:
        calendar = [" ".join(v.split()) for v in timer.values("Timer", "OnCalendar")]
        spec.schedule = calendar
        if len(calendar) == 1:
            spec.settings.insert(0, _setting("schedule", calendar[0]))
        elif calendar:
            spec.settings.insert(0, _setting("schedule", calendar))
        persistent = timer.last("Timer", "Persistent")
        if persistent is not None:
            spec.settings.insert(1 if calendar else 0, _setting("persistent", persistent.lower() in _BOOL_TRUE))
        for key, target in (("RandomizedDelaySec", "jitter"), ("AccuracySec", "accuracy")):
            given = timer.last("Timer", key)
            if given is not None:
                span = _span(given)
                if span is None:
                    spec.unmapped.append(f"{timer.path.name}: {key}={given} (not a time span)")
                else:
                    spec.set(target, span, f"was: {key}={given}")
        fixed = timer.last("Timer", "FixedRandomDelay")
        if fixed is not None and fixed.lower() in _BOOL_TRUE:
            spec.set("fixed_jitter", True)
        monotonic = {k: timer.values("Timer", k) for k in _TIMER_MONOTONIC if timer.values("Timer", k)}
        for key, value, _ in timer.sections.get("Timer", []):
            if key in ("OnCalendar", "Persistent", "RandomizedDelaySec", "AccuracySec", "FixedRandomDelay", "Unit"):
                continue
            if key in _TIMER_KEPT:
                overrides.setdefault("Timer", {}).setdefault(key, []).append(value)
            else:
                spec.unmapped.append(f"{timer.path.name}: [Timer] {key}={value}")
        if monotonic and not calendar:
            spec.warnings.append(
                f"{timer.path.name}: only {', '.join(monotonic)}, no OnCalendar=: a job's timer needs a schedule, "
                "so this one is not triggered (start it by hand, or give it schedule=)"
            )
            spec.unmapped.append(spec.warnings[-1])
            overrides.pop("Timer", None)
        for key, value, _ in timer.sections.get("Unit", []):
            if key != "Description":
                spec.unmapped.append(f"{timer.path.name}: [Unit] {key}={value}")
        for key, value, _ in timer.sections.get("Install", []):
            if not (key == "WantedBy" and value.split() == ["timers.target"]):
                spec.unmapped.append(
                    f"{timer.path.name}: [Install] {key}={value} (the job's timer is wanted by timers.target)"
                )

    if overrides:
        flat = {sec: {k: (v[0] if len(v) == 1 else v) for k, v in keys.items()} for sec, keys in overrides.items()}
        spec.set("systemd", _Source(_nested_source(flat)), "kept from the units as they were")

    # The body.
    env_name: str | None = None
    if env:
        spec.constants.append(
            (
                "ENVIRONMENT",
                _dict_source(env),
                ["Environment= of the unit: defaults, which its EnvironmentFile= (env_files) override, as in systemd."],
            )
        )
    lines: list[str] = []
    uses = False
    for key in ("ExecStartPre", "ExecStart"):
        for command in service.values(svc, key):
            call, used = _exec_line(key, command, spec, "env")
            uses = uses or used
            if call:
                lines.append(call)
    if env or uses:
        env_name = "env"
        spec.body.append("env = {**ENVIRONMENT, **ctx.env}" if env else "env = dict(ctx.env)")
    spec.body.extend(lines if env_name else [line.replace(", env=env", "") for line in lines])
    if not lines:
        return None, [Problem(str(service.path), service.line_of(svc, "ExecStart"), "no ExecStart= that can be run")]
    return spec, []


def _setting(key: str, value: Any) -> Any:
    return Setting(key, literal(value))


def _nested_source(value: dict[str, dict[str, Any]]) -> str:
    lines = ["{"]
    for section, keys in value.items():
        lines.append(f"        {literal(section)}: {{")
        for key, val in keys.items():
            lines.append(f"            {literal(key)}: {literal(val)},")
        lines.append("        },")
    lines.append("    }")
    return "\n".join(lines)


def pair_name(pair: UnitPair) -> str:
    """The natural name of a pair: its timer's (or service's) stem."""
    unit = pair.timer or pair.service
    return unit.path.stem


def unit_setting(spec: JobSpec, pair: UnitPair) -> None:
    """Keep the original unit name when the job's default (name with ``-``) differs."""
    stem = pair_name(pair)
    if spec.name.replace("_", "-") != stem:
        spec.set("unit", stem, "the unit's name as it was")
