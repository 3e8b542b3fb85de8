"""Environment files in systemd's ``EnvironmentFile=`` syntax.

What a line may hold (systemd.exec(5)): ``KEY=value``; blank lines; comments that start a
line with ``#`` or ``;``; values in single quotes (literal) or double quotes (``\\"``, ``\\\\``,
``\\$`` and ``\\``` escaped); a backslash at the end of a line continues it; unquoted values lose
surrounding white space. Stricter than systemd where systemd silently ignores a mistake: a
line with no ``=``, ``export KEY=...``, a bad name or an unclosed quote is an error naming the
file and line, so a manual run fails the same way every time instead of half-configured.
An error never quotes the line: it may hold a secret.

What a file may be (``load_env_file``): a regular file (not a FIFO, a device or a
directory: ``--env-file /dev/zero`` is refused at once, never read) of at most 1 MiB, owned
by root or the running user, not writable by other users (by root: not by the group
either), and not readable by every user when it holds a secret (a variable whose name says
so, or a URL with credentials). Each refusal is a ``ConfigError`` (exit 78) naming the file
and the command that fixes it (docs/security.md).
"""

from __future__ import annotations

import os
import stat

from jobrunner.errors import ConfigError
from jobrunner.files import FileTooLarge, NotRegularFile, read_regular_file_stat
from jobrunner.redact import Redactor

__all__ = ["MAX_ENV_FILE", "load_env_file", "parse_env", "read_regular_file"]

MAX_ENV_FILE = 1024 * 1024

_DOUBLE_ESCAPES = '"\\`$'


def _valid_name(key: str) -> bool:
    return bool(key) and not key[0].isdigit() and all(c == "_" or (c.isascii() and c.isalnum()) for c in key)


def parse_env(text: str, source: str = "<env>") -> dict[str, str]:
    """Parse the text of an environment file; raise ``ConfigError`` naming ``source:line``."""
    result: dict[str, str] = {}
    i, n, line = 0, len(text), 1

    def fail(msg: str, at_line: int) -> ConfigError:
        return ConfigError(f"{source}:{at_line}: {msg}")

    while i < n:
        # Skip white space (and blank lines) before a key.
        while i < n and text[i] in " \t\r\n":
            if text[i] == "\n":
                line += 1
            i += 1
        if i >= n:
            break
        if text[i] in "#;":
            while i < n and text[i] != "\n":
                i += 1
            continue
        start_line = line
        eol = text.find("\n", i)
        eol = n if eol < 0 else eol
        eq = text.find("=", i, eol)
        if eq < 0:
            raise fail("expected KEY=value (the line is not shown: it may hold a secret)", start_line)
        key = text[i:eq].strip()
        if key.startswith("export ") or key.startswith("export\t"):
            raise fail("'export' is not allowed in an EnvironmentFile: remove it", start_line)
        if not _valid_name(key):
            raise fail(
                "not a valid variable name before '=' (letters, digits and '_', not starting with a digit)", start_line
            )
        i = eq + 1
        while i < n and text[i] in " \t":
            i += 1
        value: list[str] = []
        pending_ws = 0  # unquoted trailing white space, dropped at the end of the value
        while i < n and text[i] != "\n":
            c = text[i]
            if c == "'":
                close = text.find("'", i + 1)
                if close < 0:
                    raise fail(f"unclosed single quote in {key}", start_line)
                value.append(text[i + 1 : close])
                line += text.count("\n", i, close)
                i, pending_ws = close + 1, 0
            elif c == '"':
                i += 1
                while True:
                    if i >= n:
                        raise fail(f"unclosed double quote in {key}", start_line)
                    c = text[i]
                    if c == '"':
                        i += 1
                        break
                    if c == "\\" and i + 1 < n:
                        nxt = text[i + 1]
                        if nxt == "\n":
                            line += 1
                        elif nxt in _DOUBLE_ESCAPES:
                            value.append(nxt)
                        else:
                            value.append(c + nxt)
                        i += 2
                        continue
                    if c == "\n":
                        line += 1
                    value.append(c)
                    i += 1
                pending_ws = 0
            elif c == "\\":
                if i + 1 < n:
                    nxt = text[i + 1]
                    if nxt == "\n":
                        line += 1
                    elif nxt != "\r":
                        value.append(nxt)
                i, pending_ws = i + 2, 0
            else:
                if c in " \t\r":
                    pending_ws += 1
                else:
                    pending_ws = 0
                value.append(c)
                i += 1
        joined = "".join(value)
        if pending_ws:
            joined = joined[: len(joined) - pending_ws] if pending_ws <= len(joined) else ""
        if "\x00" in joined:
            raise fail(f"NUL byte in {key}", start_line)
        result[key] = joined
    return result


def read_regular_file(path: str, *, limit: int, what: str) -> tuple[bytes, os.stat_result]:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes, and its status.

    ``jobrunner.files.read_regular_file_stat``, following a symlink (the path is the caller's):
    opened without blocking (a FIFO with no writer does not hang) and checked on the open
    descriptor (no race with a rename): anything else than a regular file, or a bigger one,
    is a ``ConfigError`` naming ``what`` and the path. ``OSError`` of the open propagates.
    """
    try:
        return read_regular_file_stat(path, limit=limit, follow=True)
    except NotRegularFile as exc:
        kind = "a directory" if stat.S_ISDIR(exc.mode) else "a FIFO, device or socket"
        raise ConfigError(f"{path}: cannot read {what}: not a regular file ({kind})") from None
    except FileTooLarge:
        raise ConfigError(f"{path}: {what} is larger than {limit // 1024} KiB: not read") from None


def _check_access(path: str, st: os.stat_result, env: dict[str, str]) -> None:
    """Refuse a file another user controls, or one that shows its secrets to every user."""
    euid = os.geteuid()
    if st.st_uid not in (0, euid):
        raise ConfigError(
            f"{path}: env file is owned by uid {st.st_uid}, not by root or the running user: whoever owns it "
            f"sets this run's environment (chown root: {path})"
        )
    writable = st.st_mode & (0o022 if euid == 0 else 0o002)
    if writable:
        who = "every user" if st.st_mode & 0o002 else "its group"
        raise ConfigError(
            f"{path}: env file is writable by {who}, who would set this run's environment (chmod go-w {path})"
        )
    if st.st_mode & 0o004:
        for key, value in env.items():
            probe = Redactor()
            probe.add_env({key: value})
            if probe.registered():
                raise ConfigError(
                    f"{path}: env file holds a secret ({key}) and is readable by every user (chmod 600 {path}, "
                    f"or 640 with the group of the job's user)"
                )


def load_env_file(path: str, *, optional: bool = False) -> dict[str, str]:
    """Read and parse ``path``. ``optional=True`` (systemd's ``-path``): a missing file is empty.

    The file must be a regular file of at most ``MAX_ENV_FILE`` bytes that no other user can
    change, and not readable by every user if it holds secrets (see the module's doc)."""
    try:
        data, st = read_regular_file(path, limit=MAX_ENV_FILE, what="env file")
    except FileNotFoundError:
        if optional:
            return {}
        raise ConfigError(f"{path}: env file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read env file: {os.strerror(exc.errno or 0)}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: env file is not UTF-8 text") from None
    env = parse_env(text, path)
    _check_access(path, st, env)
    return env
