"""An ``@reboot`` line that starts a daemon, as a plain systemd service.

``@reboot nohup node app.js &`` keeps a process running from boot on: a job cannot hold it
(a run's whole process tree ends with the run), a ``Type=simple`` service can. The line is
converted only when the service provably does what cron did:

- the command's only ``&`` (but ``&&`` and redirections such as ``2>&1``) is its last
  character, outside quotes and brackets (``a && b &``, ``a; b &``: the list is backgrounded,
  so the service runs it in the foreground; ``a & b``, ``(x &)``, ``echo "&"`` stay refused),
  or there is none; ``nohup`` and ``setsid`` (without options) at the start of a top-level
  part are dropped (systemd gives the service a session of its own and no SIGHUP);
- nothing else in it detaches (``daemonize``, ``start-stop-daemon``, ``--daemon``, a ``-d`` or
  ``--detach`` word: those fork, or may, and ``Type=forking`` would need a ``PIDFile=`` the line does not give;
  ``setsid -f``; an ``&`` inside ``( … )``);
- no ``%`` standard input.

The unit runs the command as cron does: ``ExecStart=SHELL -c 'COMMAND'`` (cron's ``\\%``
escapes undone, then ``%``, ``$`` and ``\\`` escaped for systemd), as the line's user
(``User=``, ``Group=``: the user field of a system crontab, the owner of a user's crontab:
never root for www-data's line), in cron's environment and its HOME (``WorkingDirectory=``,
which systemd enters as that user), ``Restart=on-failure``. cron's own variables (``SHELL``,
``HOME``, ``PATH``, ``LOGNAME``) are the unit's ``Environment=``; what the crontab assigns
besides (a password, a token) goes to an environment file of its own, ``/etc/default/<unit>``
(written 0600 beside the unit, installed 0600): a unit file and its ``Environment=`` are
readable by every local user (``systemctl show``), www-data included.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from jobrunner.declaration import CONDITIONS
from jobrunner.importer.cron import Entry, split_percent
from jobrunner.importer.emit import cron_environment
from jobrunner.importer.guards import background, leading_test, top_level_ops

__all__ = ["ServiceSpec", "daemon_command", "install_command", "service_from_entry", "write_services"]

SERVICES_DIR = "services"
_STRIPPED_WORDS = ("nohup", "setsid")
_REDIRECTIONS = re.compile(r"&&|[0-9]*>&[0-9-]*|&>>?|<&[0-9-]*")
_MAY_FORK = re.compile(r"(?:^|\s)(-d|--detach)(?=\s|$)")  # memcached -d, docker run -d: maybe a fork
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]*\$?$", re.I)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHELL = re.compile(r"^/[A-Za-z0-9_.+/-]+$")
RESTART_SEC = "5s"
ENV_FILE_DIR = "/etc/default"  # the Debian place of a service's EnvironmentFile=
_CRON_OWN = ("SHELL", "HOME", "PATH", "LOGNAME")  # set by cron itself: no secret, kept in the unit
START_LIMIT = ("60s", "5")  # StartLimitIntervalSec=, StartLimitBurst=: a daemon that keeps dying is given up


@dataclass
class ServiceSpec:
    """One service to write: its unit name, the unit's text, and where it came from."""

    unit: str  # cron-<file>.service
    text: str
    where: str
    user: str
    notes: list[str] = field(default_factory=list)
    env_text: str | None = None  # the crontab's own assignments, for ``env_path`` (0600), or None
    env_path: str | None = None  # /etc/default/cron-<file>: the unit's EnvironmentFile=

    @property
    def env_name(self) -> str:
        """The environment file's name beside the unit in ``--out/services``."""
        return self.unit.removesuffix(".service") + ".env"


def _strip_daemon_words(part: str) -> str | None:
    """``part`` without leading ``nohup``/``setsid`` words; None when one has options
    (``setsid -f`` forks, ``nohup --help`` is no daemon)."""
    lead = part[: len(part) - len(part.lstrip())]
    rest = part.lstrip()
    while True:
        words = rest.split(None, 1)
        if not words or words[0].rsplit("/", 1)[-1] not in _STRIPPED_WORDS:
            return lead + rest
        if len(words) == 1 or words[1].startswith("-"):
            return None
        rest = words[1]


def daemon_command(command: str) -> tuple[str | None, str]:
    """``(COMMAND, "")``: the shell command a service runs in the foreground for the cron
    command ``command`` (``%`` already split off), or ``(None, why not)``."""
    text = command.rstrip()
    ops = top_level_ops(text)
    amps = [i for op, i in ops if op == "&"]
    if amps and amps != [len(text) - 1]:
        return None, "its '&' is not the last thing in the line (a part of it goes on while the rest runs)"
    if amps:
        text = text[:-1].rstrip()
    if not text:
        return None, "nothing before the '&'"
    # Each top-level part of the list (after ;, &&, ||, |, a newline) may start with nohup/setsid.
    pieces: list[str] = []
    start = 0
    for op, index in [*top_level_ops(text), ("", len(text))]:
        part = _strip_daemon_words(text[start:index])
        if part is None:
            return None, "'nohup' or 'setsid' with options (setsid -f forks again)"
        pieces.append(part + op)
        start = index + len(op)
    result = "".join(pieces).strip()
    if "&" in _REDIRECTIONS.sub("", result):
        return None, "an '&' inside quotes, ( … ) or { … }: a part of it may go on in the background"
    still = background(result)
    if still is not None:
        return None, f"it still detaches after the '&' and nohup/setsid are dropped: {still}"
    fork = _MAY_FORK.search(result)
    if fork:
        return None, f"{fork.group(1)!r}, with which many programs fork into the background (Type=forking)"
    return result, ""


def _quoted(text: str) -> str:
    """``text`` in double quotes for a unit file: C escapes for ``\\`` and ``"``, ``%%`` for a
    ``%`` (specifiers)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def _quote_word(value: str) -> str:
    """One word of a systemd command line (systemd.service(5) "Command lines"): quoted, and
    ``$$`` for a ``$`` (environment variable substitution)."""
    return _quoted(value.replace("$", "$$"))


def _quote_assignment(name: str, value: str) -> str:
    """``"NAME=VALUE"`` for ``Environment=`` (quoted; no ``$`` expansion there)."""
    return _quoted(f"{name}={value}")


def _plain(text: str) -> str:
    """Text for ``Description=`` and comments: specifiers escaped, no trailing backslash (a line
    continuation)."""
    return text.replace("%", "%%").rstrip("\\ \t")


def _group(user: str) -> str | None:
    import grp
    import pwd

    try:
        gid = pwd.getpwnam(user).pw_gid
    except KeyError:
        return None
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def service_from_entry(entry: Entry, unit: str) -> tuple[ServiceSpec | None, str]:
    """The service for the ``@reboot`` line ``entry`` (``unit``: its name without
    ``.service``), or ``(None, why not)``."""
    if not entry.schedule.reboot:
        return None, "only an @reboot line starts a daemon once; this one would start another at each firing"
    shell_command, stdin = split_percent(entry.command)
    if stdin is not None:
        return None, "its '%' standard input (a daemon's input from cron's pipe)"
    user = entry.user or "root"
    if not _USER_NAME.match(user):
        return None, f"{user!r} is no user name for User="
    env, env_notes = cron_environment(entry, user)
    bad = [name for name in env if not _ENV_NAME.match(name)]
    if bad:
        return None, f"the environment variable {bad[0]!r} is no name systemd's Environment= takes"
    shell = env["SHELL"]
    if not _SHELL.match(shell):
        return None, f"SHELL={shell!r} is not an absolute path of a program"
    home = env.get("HOME")
    if home is not None and (
        not home.startswith("/") or os.path.normpath(home) != (home.rstrip("/") or "/") or "\\" in home
    ):
        return None, f"HOME={home!r} is not a plain absolute path (cron starts the command there)"
    command, why = daemon_command(shell_command)
    if command is None:
        return None, why
    conditions: list[str] = []
    guard = leading_test(command)  # test -x X && nohup X &: the whole list was backgrounded
    if guard is not None:
        op, path, command = guard
        conditions.append(f"{CONDITIONS[op]}={_plain(path)}")
    where = f"{entry.path}:{entry.lineno}"
    notes = list(env_notes)
    lines = [
        f"# Imported by `jobrunner import crontab` from {_plain(entry.path)}, line {entry.lineno}, verbatim:",
        f"#     {_plain(entry.line)}",
        "# cron started this daemon at boot and left it running; systemd starts it at boot, restarts it when",
        "# it fails (not after 'systemctl stop') and gives up after 5 failed starts in 60s. Its output goes",
        f"# to the journal (journalctl -u {unit}), not to cron's mail.",
        "[Unit]",
        f"Description={_plain(entry.line.strip())}",
        f"StartLimitIntervalSec={START_LIMIT[0]}",
        f"StartLimitBurst={START_LIMIT[1]}",
        *conditions,
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={shell} -c {_quote_word(command)}",
        f"User={user}",
    ]
    group = _group(user)
    if group:
        lines.append(f"Group={group}")
    else:
        notes.append(f"user {user} is not on this machine: the service runs as User={user} with that user's group")
    if home:
        lines.append(f"WorkingDirectory={'' if os.path.isdir(home) else '-'}{_plain(home)}")
    lines += [f"Environment={_quote_assignment(k, v)}" for k, v in env.items() if k in _CRON_OWN]
    own = {k: v for k, v in env.items() if k not in _CRON_OWN}
    env_path = env_text = None
    if own:
        env_path = f"{ENV_FILE_DIR}/{unit}"
        env_text = "".join(f"{k}={_env_file_value(v)}\n" for k, v in own.items())
        lines.append(f"EnvironmentFile={env_path}")
    lines += [
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    text = "\n".join(lines) + "\n"
    return ServiceSpec(f"{unit}.service", text, where, user, notes, env_text, env_path), ""


def _env_file_value(value: str) -> str:
    """``value`` for an ``EnvironmentFile=`` line (systemd.exec(5)): double quotes, with
    ``\\``, ``"``, ``$`` and ````` escaped, so it is read back as it is (no expansion)."""
    escaped = "".join("\\" + c if c in '\\"$`' else c for c in value)
    return f'"{escaped}"'


def write_services(
    specs: list[ServiceSpec], out: str | os.PathLike[str], *, force: bool = False
) -> list[tuple[Path, str]]:
    """Write each service as ``<out>/services/<unit>``, and its environment file (the crontab's
    own assignments) as ``<out>/services/<unit stem>.env``, both 0600 (``install -m 0644`` puts
    the unit in place, ``install -m 0600`` the environment). ``(path, "wrote" | "unchanged")``
    pairs; a file with other content is a ``FileExistsError`` unless ``force``."""
    if not specs:
        return []
    base = Path(out, SERVICES_DIR)
    base.mkdir(parents=True, exist_ok=True)
    done: list[tuple[Path, str]] = []
    files = [(base / spec.unit, spec.text) for spec in specs]
    files += [(base / spec.env_name, spec.env_text) for spec in specs if spec.env_text is not None]
    for path, _text in files:  # every refusal before anything is written
        if path.is_symlink():
            raise FileExistsError(f"{path} is a symbolic link: remove it")
        if path.exists() and path.read_text() != _text and not force:
            raise FileExistsError(f"{path} exists with other content (use --force to replace it)")
    for path, text in files:
        if path.exists() and path.read_text() == text:
            done.append((path, "unchanged"))
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
        done.append((path, "wrote"))
    return done


def install_command(spec: ServiceSpec, directory: str | os.PathLike[str]) -> str:
    """The shell command that puts ``spec`` (written in ``directory``) in place and starts it."""
    import shlex

    unit = shlex.quote(str(Path(directory, spec.unit)))
    steps = []
    if spec.env_path is not None:
        env = shlex.quote(str(Path(directory, spec.env_name)))
        steps.append(f"install -m 0600 {env} {spec.env_path}")
    steps += [
        f"install -m 0644 {unit} /etc/systemd/system/",
        "systemctl daemon-reload",
        f"systemctl enable --now {spec.unit}",
    ]
    return " && ".join(steps)
