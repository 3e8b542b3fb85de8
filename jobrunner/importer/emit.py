"""Job specs, and job modules a person could have written.

A ``JobSpec`` is what an import found for one crontab line or one unit: the job's settings
(as Python source), module-level constants, the function's body, and comments: where it came
from (the line or unit lines verbatim), what each conversion did, and what did not map.
``render_module`` writes it as a module that imports only the public API
(``from jobrunner import job, JobContext, Lock``); ``write_modules`` puts modules in a
package directory.

``spec_from_entry`` turns a crontab line into a spec: its schedule as ``OnCalendar=``
lines, its command unchanged (run by the crontab's ``SHELL`` with ``-c``, in cron's
environment, its ``%`` input on standard input), its wrappers as settings.
"""

from __future__ import annotations

import ast
import keyword
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobrunner.importer.cron import DEFAULT_PATH, DEFAULT_SHELL, Entry, split_percent
from jobrunner.importer.guards import leading_test
from jobrunner.importer.oncalendar import to_oncalendar
from jobrunner.importer.wrappers import unwrap

__all__ = ["JobSpec", "job_name", "literal", "render_module", "spec_from_entry", "unique_names", "write_modules"]

_HARDENING_NOTE = (
    "hardening='basic': jobrunner's loosest sandbox (NoNewPrivileges=, PrivateTmp=, kernel and "
    "clock protection; see docs/units.md). {what} ran without it: if the command needs one of "
    "them off (sudo, a setuid mailer, a shared /tmp), drop it with "
    "systemd={{'Service': {{'PrivateTmp': None}}}}; tighten to 'standard' or 'strict' with "
    "write_paths= once you know what it writes."
)


@dataclass
class Setting:
    key: str
    source: str  # Python source of the value
    comment: str = ""


@dataclass
class JobSpec:
    """One job to write: settings and body as Python source, plus its comments."""

    name: str
    origin: list[str]
    description: str
    settings: list[Setting] = field(default_factory=list)
    constants: list[tuple[str, str, list[str]]] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    public: set[str] = field(default_factory=lambda: {"job", "JobContext"})
    stdlib: set[str] = field(default_factory=set)
    schedule: list[str] = field(default_factory=list)
    where: str = ""

    def set(self, key: str, value: Any, comment: str = "") -> None:
        self.settings.append(Setting(key, value if isinstance(value, _Source) else literal(value), comment))


class _Source(str):
    """Python source to emit as it is (not a value to quote)."""


def literal(value: Any) -> str:
    """A Python literal for ``value`` that reads well: raw strings for backslashes."""
    if isinstance(value, _Source):
        return str(value)
    if isinstance(value, str):
        text = _string(value)
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(literal(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    else:
        text = repr(value)
    assert ast.literal_eval(text) == (list(value) if isinstance(value, tuple) else value), text
    return text


def _string(value: str) -> str:
    printable = all(c == "\t" or (ord(c) >= 32 and c != "\x7f") for c in value)
    if printable and "\\" in value and not value.endswith("\\"):
        for quote in ('"', "'"):
            if quote not in value:
                return f"r{quote}{value}{quote}"
    if printable and '"' not in value:
        return '"' + value.replace("\\", "\\\\") + '"' if "\\" in value else f'"{value}"'
    return repr(value)


def _comment(lines: Iterable[str], indent: str = "") -> list[str]:
    return [f"{indent}# {line}".rstrip() if line else f"{indent}#" for line in lines]


def _wrap(text: str, width: int = 88) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width - 2, break_long_words=False, break_on_hyphens=False) or [""]


def render_module(spec: JobSpec) -> str:
    """The module's text (it compiles; ``tests`` import it and render its units)."""
    out: list[str] = _comment(spec.origin)
    if spec.notes:
        out.append("#")
        out.append("# What changed on the way:")
        for note in spec.notes:
            wrapped = _wrap(note, 84)
            out.append(f"# - {wrapped[0]}")
            out.extend(f"#   {line}" for line in wrapped[1:])
    if spec.unmapped:
        out.append("#")
        out.append("# Not mapped (left out; do these by hand if they matter):")
        for item in spec.unmapped:
            wrapped = _wrap(item, 84)
            out.append(f"# - {wrapped[0]}")
            out.extend(f"#   {line}" for line in wrapped[1:])
    out.append(f'"""{_docstring(spec.description)}"""')
    out.append("")
    out.append("from __future__ import annotations")
    out.append("")
    if spec.stdlib:
        out.extend(f"import {name}" for name in sorted(spec.stdlib))
        out.append("")
    public = sorted(spec.public, key=lambda n: (n != "JobContext", n.lower()))
    out.append(f"from jobrunner import {', '.join(sorted(public))}")
    out.append("")
    for name, source, comments in spec.constants:
        out.extend(_comment(line for text in comments for line in _wrap(text)))
        out.append(f"{name} = {source}")
    if spec.constants:
        out.append("")
    out.append("")
    out.append("@job(")
    for setting in spec.settings:
        line = f"    {setting.key}={setting.source},"
        if setting.comment:
            wrapped = _wrap(setting.comment, 84)
            if len(line) + 2 + len(wrapped[0]) <= 100 and len(wrapped) == 1:
                line += f"  # {wrapped[0]}"
            else:
                out.extend(f"    # {text}" for text in wrapped)
        out.append(line)
    out.append(")")
    out.append(f"def {spec.name}(ctx: JobContext) -> None:")
    out.append(f'    """{_docstring(spec.description)}"""')
    out.extend(f"    {line}" if line else "" for line in spec.body)
    text = "\n".join(out) + "\n"
    compile(text, f"{spec.name}.py", "exec")
    return text


def _docstring(text: str) -> str:
    clean = " ".join(text.replace("\\", "/").replace('"""', "'''").split())
    clean = clean.rstrip('"')
    return clean[:100] or "Imported job."


def job_name(text: str, taken: Iterable[str] = ()) -> str:
    """A job (and module, and function) name from a file or unit name: ``[a-z0-9_]``, not
    starting with a digit or ``_``, not a keyword, not in ``taken``."""
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "job"
    if name[0].isdigit():
        name = f"cron_{name}"
    if keyword.iskeyword(name) or name in ("jobrunner", "job"):
        name += "_job"
    base, n, used = name, 2, set(taken)
    while name in used:
        name = f"{base}_{n}"
        n += 1
    return name


def unique_names(bases: Sequence[str]) -> list[str]:
    """Names for items whose natural names are ``bases``: ``x`` alone, ``x_1``, ``x_2`` … when shared."""
    counts: dict[str, int] = {}
    for base in bases:
        counts[base] = counts.get(base, 0) + 1
    seen: dict[str, int] = {}
    names: list[str] = []
    for base in bases:
        if counts[base] == 1:
            names.append(job_name(base, names))
            continue
        seen[base] = seen.get(base, 0) + 1
        names.append(job_name(f"{base}_{seen[base]}", names))
    return names


def _home(user: str) -> str | None:
    import pwd

    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        return "/root" if user == "root" else None


def _mail_tag(address: str) -> str:
    return "mail-" + (re.sub(r"[^a-z0-9]+", "-", address.lower()).strip("-") or "owner")


# What systemd itself gives a service's processes (systemd.exec(5), "Environment Variables in
# Spawned Processes") and a locale: kept for the command; everything else of the runner's
# environment (JOBRUNNER_*, the notification URLs, PYTHONPATH …) is not cron's and is left out.
SYSTEMD_VARIABLES = (
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "SYSTEMD_EXEC_PID",
    "RUNTIME_DIRECTORY",
    "STATE_DIRECTORY",
    "CACHE_DIRECTORY",
    "LOGS_DIRECTORY",
    "CONFIGURATION_DIRECTORY",
    "CREDENTIALS_DIRECTORY",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "LC_COLLATE",
    "LC_NUMERIC",
    "LC_TIME",
)
_TMP_DIRS = ("/tmp/", "/var/tmp/")
_TIMEOUT_NOTE = (
    "no timeout: cron let a run go on for ever; the unit stops one after 6h (TimeoutStartSec=6h, "
    "jobrunner's backstop for a job without timeout=): set timeout= if a run can take longer"
)


def cron_environment(entry: Entry, user: str) -> tuple[dict[str, str], list[str]]:
    """The environment cron gives the command (Debian's ``load_entry``), and notes."""
    notes: list[str] = []
    env = dict(entry.env)
    if "SHELL" not in env:
        env["SHELL"] = DEFAULT_SHELL
    if "HOME" not in env:
        home = _home(user)
        if home:
            env["HOME"] = home
        else:
            notes.append(f"user {user} is not on this machine: cron sets HOME from its passwd entry; set HOME in ENV")
    if "PATH" not in env:
        env["PATH"] = DEFAULT_PATH
    env["LOGNAME"] = user
    ordered: dict[str, str] = {k: env[k] for k in ("SHELL", "HOME", "PATH", "LOGNAME") if k in env}
    ordered.update((k, v) for k, v in env.items() if k not in ordered)
    return ordered, notes


def spec_from_entry(entry: Entry, name: str, *, command_name: str = "jobrunner import crontab") -> JobSpec:
    """The job for one crontab line."""
    user = entry.user or "root"
    env, env_notes = cron_environment(entry, user)
    spec = JobSpec(
        name=name,
        origin=[
            f"Imported by `{command_name}` from {entry.path}, line {entry.lineno}, verbatim:",
            "",
            f"    {entry.line}",
        ],
        description=f"{os.path.basename(entry.path) if entry.path != '-' else 'crontab'} line {entry.lineno}, imported from cron.",
        where=f"{entry.path}:{entry.lineno}",
    )
    spec.notes.extend(env_notes)
    command, stdin = split_percent(entry.command)
    home = env.get("HOME")
    guard = leading_test(command)
    if guard is not None:
        op, guarded, command = guard
        what = {"-x": "is executable", "-e": "exists", "-d": "is a directory"}[op]
        spec.set("condition", _Source(f"({literal(op)}, {literal(guarded)})"), f"was: test {op} {guarded} && …")
        spec.notes.append(
            f"test {op} {guarded}: the line's guard is condition=: the run is skipped (exit 0, a 'skipped' "
            f"record naming it) unless {guarded} {what}, by systemd (Condition…=) and in a run by hand; "
            "cron ran the test and the line failed or did nothing, silently"
        )
    unwrapped = unwrap(command, home=home, user=user)
    if command != entry.command:
        spec.notes.append(
            "COMMAND is the line's command as cron hands it to the shell: "
            + ("up to the first %, " if stdin is not None else "")
            + "with cron's \\% (and \\\\) escapes undone"
            + ("; the rest of the line, each % a newline, is its standard input (STDIN)" if stdin is not None else "")
        )
    if unwrapped.taken or unwrapped.log_file or unwrapped.notes:
        spec.notes.extend(unwrapped.notes)
    command = unwrapped.command
    spec.notes.append(
        "a non-zero exit now fails the job and notifies (cron only mailed the output); "
        "each output line is a proc.output event in the journal"
    )

    # The schedule.
    sched = entry.schedule
    lines = to_oncalendar(sched)
    spec.schedule = lines
    if sched.reboot:
        spec.set(
            "on_boot", "0", "was: @reboot (OnBootSec=0: once at boot; also once when the timer is first installed)"
        )
    elif len(lines) > 1:
        spec.set("schedule", lines, "cron runs it when either day field matches: one line for each")
    else:
        spec.set(
            "schedule",
            lines[0],
            f"cron: {' '.join(f.text for f in (sched.minute, sched.hour, sched.dom, sched.month, sched.dow)) if not sched.special else sched.special}",
        )
    if not sched.reboot and _persistent(sched.special, env.get("PERSISTENT")):
        why = (
            f"was: {sched.special}: a run missed while the machine was off runs when it is back, "
            "as anacron and Debian's systemd-cron do"
            if sched.special
            else "PERSISTENT=yes in the crontab (systemd-cron's switch): a missed run is caught up"
        )
        spec.set("persistent", True, why)
    if sched.tz:
        spec.notes.append(f"CRON_TZ={sched.tz}: the schedule is in that time zone, and so are its OnCalendar= lines")
    elif "TZ" in env:
        spec.notes.append(
            f"TZ={env['TZ']} is the command's time zone: cron reads the schedule in the machine's (CRON_TZ= "
            "would set the schedule's), and so does the timer"
        )

    if unwrapped.lock is not None:
        lock = unwrapped.lock
        if set(lock) == {"name"}:
            spec.set("lock", lock["name"], "flock -n on the same file")
        else:
            spec.public.add("Lock")
            args = ", ".join(f"{k}={literal(v)}" for k, v in lock.items())
            spec.set("lock", _Source(f"Lock({args})"))
    if unwrapped.timeout:
        spec.set("timeout", unwrapped.timeout, "was: timeout")
    else:
        spec.notes.append(_TIMEOUT_NOTE)
    if unwrapped.kill_grace:
        spec.set("kill_grace", unwrapped.kill_grace, "was: timeout -k")
    if user != "root":
        spec.set(
            "user", user, "the crontab's user" if entry.path == "-" or not _system(entry) else "the line's user field"
        )
    spec.set("hardening", "basic", "cron ran it unsandboxed: see the note above")
    spec.notes.append(_HARDENING_NOTE.format(what="cron"))
    if home:
        spec.set("working_dir", home if os.path.isdir(home) else f"-{home}", "cron starts commands in HOME")
    if unwrapped.log_file:
        spec.set("log_file", unwrapped.log_file, "was: >> FILE 2>&1")
    mailto = entry.mailto
    if mailto:
        addresses = [a.strip() for a in mailto.split(",") if a.strip()]
        tag = _mail_tag(mailto)
        to = ",".join(a if "@" in a else f"{a}@localhost" for a in addresses)
        spec.set("notify", tag, f"was: MAILTO={mailto}")
        spec.notes.append(
            f"MAILTO={mailto}: cron mailed each run's output there; jobrunner notifies failures and "
            f"recoveries to the Apprise URLs tagged {tag}, e.g. in /etc/jobrunner/jobrunner.env: "
            f'JOBRUNNER_NOTIFY_URLS="{tag}=mailto://localhost:25?from=jobrunner@localhost&to={to}" '
            "(docs/notifications.md)"
        )
    elif mailto == "":
        spec.notes.append(
            'MAILTO="": cron mailed nothing; jobrunner still notifies failures (to every URL, as jobs without notify= do)'
        )
    overrides: dict[str, dict[str, Any]] = {}
    if unwrapped.service:
        overrides["Service"] = dict(unwrapped.service)
    why = "was: nice/ionice"
    if unwrapped.lock is not None and str(unwrapped.lock["name"]).startswith(_TMP_DIRS):
        overrides.setdefault("Service", {})["PrivateTmp"] = None
        why = "the lock file is in the shared /tmp" + (" (and nice/ionice)" if unwrapped.service else "")
        spec.notes.append(
            f"the lock {unwrapped.lock['name']} is in /tmp: with PrivateTmp= (hardening='basic') it would be a "
            "file in the unit's own /tmp and exclude nobody, so PrivateTmp= is dropped for this job "
            "(better: move the lock to /run/lock, in the cron line and here, and drop the override)"
        )
    if overrides:
        spec.set("systemd", overrides, why)

    # The body.
    spec.constants.append(("COMMAND", literal(command), ["The command, unchanged: cron ran it with ENV['SHELL'] -c."]))
    if stdin is not None:
        spec.constants.append(
            ("STDIN", literal(stdin), ["What cron wrote to its standard input (the line after the first %)."])
        )
    spec.constants.append(
        (
            "ENV",
            _dict_source(env),
            ["cron's environment for this line: its defaults and the crontab's assignments above it."],
        )
    )
    spec.constants.append(
        (
            "SYSTEMD_VARIABLES",
            "(\n" + "".join(f"    {literal(v)},\n" for v in SYSTEMD_VARIABLES) + ")",
            ["What systemd gives the unit's processes, kept; nothing else of the runner's environment."],
        )
    )
    spec.notes.append(
        "the command's environment is cron's (ENV) and what systemd gives every service (SYSTEMD_VARIABLES): "
        "nothing of the runner's own (JOBRUNNER_*, the notification URLs, the env files' settings)"
    )
    spec.body.append("env = {k: v for k, v in ctx.env.items() if k in SYSTEMD_VARIABLES} | ENV")
    run = 'ctx.run([ENV["SHELL"], "-c", COMMAND], env=env, inherit_env=False{})'
    if stdin is None:
        spec.body.append(run.format(""))
    else:
        spec.stdlib.add("tempfile")
        spec.body += [
            "with tempfile.TemporaryFile() as stdin:",
            "    stdin.write(STDIN.encode())",
            "    stdin.seek(0)",
            "    " + run.format(", stdin=stdin"),
        ]
    return spec


def _system(entry: Entry) -> bool:
    return entry.user is not None and entry.path != "-"


def _dict_source(values: dict[str, str]) -> str:
    if not values:
        return "{}"
    lines = ["{"] + [f"    {literal(k)}: {literal(v)}," for k, v in values.items()] + ["}"]
    return "\n".join(lines)


def write_modules(
    specs: Sequence[JobSpec], out: str | os.PathLike[str], *, force: bool = False
) -> list[tuple[Path, str]]:
    """Write each spec as ``<out>/<name>.py`` (and ``__init__.py`` when missing).

    Returns ``(path, "wrote" | "unchanged")`` pairs. A file that exists with other content is
    an ``OSError`` unless ``force``.
    """
    base = Path(out)
    base.mkdir(parents=True, exist_ok=True)
    done: list[tuple[Path, str]] = []
    init = base / "__init__.py"
    if not init.exists():
        init.write_text('"""Jobs imported by `jobrunner import`."""\n')
        done.append((init, "wrote"))
    for spec in specs:
        path = base / f"{spec.name}.py"
        text = render_module(spec)
        if path.exists():
            if path.read_text() == text:
                done.append((path, "unchanged"))
                continue
            if not force:
                raise FileExistsError(f"{path} exists with other content (use --force to replace it)")
        path.write_text(text)
        done.append((path, "wrote"))
    return done


def _persistent(special: str | None, switch: str | None) -> bool:
    """Whether a line's timer catches up a run missed while the machine was off, by the rule
    of Debian's ``systemd-cron`` (the import's peer, which reads the same files): ``@hourly``,
    ``@daily``… do unless the crontab says ``PERSISTENT=no``; a line of five fields does only
    with ``PERSISTENT=yes`` (``true``, ``1``)."""
    value = (switch or "").strip().lower()
    if special:
        return value in ("yes", "true", "1", "auto", "")
    return value in ("yes", "true", "1")
