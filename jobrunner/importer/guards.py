"""What a cron command tests before it runs, and what it leaves running after it.

- ``systemd_guard``: the command does its work only where systemd is *not* running
  (``[ ! -d /run/systemd/system ]``, ``test -e /run/systemd/system || …``): Debian's packages
  write this when they also ship a native timer. On a systemd host the line never does
  anything: the import skips it, with a note.
- ``leading_test``: ``test -x X && REST``, ``[ -x X ] && REST``, ``if [ -x X ]; then REST; fi``
  (also ``-e``, ``-d``): the package's program may be gone (removed, not purged). Under cron
  the line then failed or did nothing, silently; as a job it becomes ``condition=`` (the
  unit's ``Condition…=``, and the same test in a run by hand: skipped, exit 0) and the
  command is REST.
- ``background``: the command leaves a process running (``&``, ``nohup``, ``setsid``,
  ``--daemon``): cron kept it; a job's leftovers are killed when the run ends.
- ``native_timers``: the timer units a package ships for the work of its ``cron.d`` file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["UNIT_DIRS", "background", "leading_test", "native_timers", "systemd_guard", "top_level_ops", "unit_exists"]

_SYSTEMD_DIR = r"/run/systemd/system/?"
_NOT_SYSTEMD = re.compile(
    rf"(?:\\?!\s*-[de]\s+{_SYSTEMD_DIR}(?=[\s\];]|$))"  # [ ! -d /run/systemd/system ], test ... \! -d ...
    rf"|(?:(?:^|&&|;|\|\|)\s*(?:test\s+-[de]\s+{_SYSTEMD_DIR}|\[\s+-[de]\s+{_SYSTEMD_DIR}\s+\])\s*\|\|)"  # test -e … ||
)
_PATH = r"(/[A-Za-z0-9_.+/@:-]+)"
_TEST = rf"(?:test\s+(-[xed])\s+{_PATH}|\[\s+(-[xed])\s+{_PATH}\s+\])"
_AND_FORM = re.compile(rf"^{_TEST}\s*&&\s*(?P<rest>.+)$", re.S)
_IF_FORM = re.compile(rf"^if\s+{_TEST}\s*;\s*then\s+(?P<rest>.+?)\s*;?\s*fi$", re.S)
_COMPOUND_WORDS = re.compile(r"(?:^|[\s;&|(])(?:if|then|elif|else|fi|case|esac|while|until|for|do|done)(?=[\s;]|$)")
_DAEMON_WORDS = ("nohup", "setsid", "daemon", "daemonize", "start-stop-daemon")
_DAEMON_OPTIONS = re.compile(r"(?:^|\s)(?:--daemon|--daemonize|-daemon|--background|--fork)(?=[\s=]|$)")

# systemd's unit search path for system units (systemd.unit(5)), highest first.
UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
)


def _top_level(text: str) -> list[str]:
    """The operators of ``text`` outside quotes, ``$(…)``, ``{…}`` and ``(…)``: ``;``, ``&&``,
    ``||``, ``&``, ``|`` and newlines (what decides what a leading test guards)."""
    return [op for op, _ in top_level_ops(text)]


def top_level_ops(text: str, *, nested: bool = False) -> list[tuple[str, int]]:
    """``_top_level``'s operators with the index where each starts; ``nested``: also those
    inside ``( … )``, ``{ … }`` and ``$( … )`` (still not in quotes)."""
    ops: list[tuple[str, int]] = []
    depth, quote, i = 0, "", 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c == "\\":
            i += 2
            continue
        elif c in "'\"`":
            quote = c
        elif c in "({":
            depth += 1
        elif c in ")}":
            depth -= 1
        elif (depth == 0 or nested) and c in ";&|\n":
            pair = text[i : i + 2]
            if pair in ("&&", "||"):
                ops.append((pair, i))
                i += 2
                continue
            if c == "&" and (text[i - 1 : i] in (">", "<") or text[i + 1 : i + 2] == ">"):
                pass  # 2>&1, &>FILE: redirections
            else:
                ops.append((c, i))
        i += 1
    return ops


def systemd_guard(command: str) -> bool:
    """The command does its work only when ``/run/systemd/system`` is absent (no systemd)."""
    return bool(_NOT_SYSTEMD.search(command))


def leading_test(command: str) -> tuple[str, str, str] | None:
    """``(op, path, rest)`` when ``command`` is ``test OP PATH && REST`` (or ``[ … ]``, or
    ``if [ OP PATH ]; then REST; fi``) and the test guards all of REST; else None."""
    text = command.strip()
    match = _AND_FORM.match(text)
    if match:
        rest = match.group("rest").strip()
        if any(op in (";", "||", "&", "\n") for op in _top_level(rest)):
            return None  # a part of REST runs whatever the test says
    else:
        match = _IF_FORM.match(text)
        if not match:
            return None
        rest = match.group("rest").strip().rstrip(";").strip()
        if _COMPOUND_WORDS.search(rest) or any(op in ("&", "\n") for op in _top_level(rest)):
            return None
    op = match.group(1) or match.group(3)
    path = match.group(2) or match.group(4)
    return op, path, rest


def background(command: str) -> str | None:
    """What in ``command`` leaves a process running after it ends, or None."""
    if "&" in _top_level(command):
        return "'&' (a background process)"
    if any(op == "&" for op, _ in top_level_ops(command, nested=True)):
        return "'&' in ( … ) or { … } (a background process)"
    words = command.strip().lstrip("({ \t\n").split(None, 1)  # (nohup x), { setsid x; }
    first = words[0].rsplit("/", 1)[-1] if words else ""
    if first in _DAEMON_WORDS:
        return f"{first!r} (a process meant to outlive the command)"
    for op_word in re.split(r"&&|\|\||;|\|", command):
        words = op_word.split()
        if words and words[0].rsplit("/", 1)[-1] in _DAEMON_WORDS:
            return f"{words[0]!r} (a process meant to outlive the command)"
    option = _DAEMON_OPTIONS.search(command)
    if option:
        return f"{option.group(0).strip()!r} (a program that forks into the background)"
    return None


def unit_exists(name: str, roots: tuple[str, ...] = ("/",)) -> str | None:
    """The path of ``<name>.service`` or ``<name>.timer`` in the unit search path under any of
    ``roots`` (``/``: this machine; an unpacked package's tree), or None."""
    for root in roots:
        for directory in UNIT_DIRS:
            for suffix in (".service", ".timer"):
                path = Path(root, directory.lstrip("/"), name + suffix)
                if path.exists():
                    return str(path)
    return None


def package_root(path: str) -> str | None:
    """``R`` for a file ``R/etc/cron.d/NAME`` (``/`` on a real host), else None."""
    parts = Path(os.path.abspath(path)).parts
    if len(parts) >= 4 and parts[-3:-1] == ("etc", "cron.d"):
        return str(Path(*parts[:-3]))
    return None


def native_timers(path: str) -> list[str]:
    """The timer units that do the work of the ``cron.d`` file ``path``: in the unit search
    path of its tree, named as the file (``certbot.timer``) or starting with its name and a
    separator (``sysstat-collect.timer``)."""
    root = package_root(path)
    if root is None:
        return []
    stem = os.path.basename(path)
    found: set[str] = set()
    for directory in UNIT_DIRS:
        folder = Path(root, directory.lstrip("/"))
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            base = name.removesuffix(".timer")
            if (
                name.endswith(".timer")
                and "@" not in name
                and (base == stem or re.match(rf"^{re.escape(stem)}[-_.]", base))
            ):
                found.add(name)
    return sorted(found)
