"""Environment files in systemd's ``EnvironmentFile=`` syntax.

What a line may hold (systemd.exec(5)): ``KEY=value``; blank lines; comments that start a
line with ``#`` or ``;``; values in single quotes (literal) or double quotes (``\\"``, ``\\\\``,
``\\$`` and ``\\``` escaped); a backslash at the end of a line continues it; unquoted values lose
surrounding white space. Stricter than systemd where systemd silently ignores a mistake: a
line with no ``=``, ``export KEY=...``, a bad name or an unclosed quote is an error naming the
file and line, so a manual run fails the same way every time instead of half-configured.
"""

from __future__ import annotations

import os

from .errors import ConfigError

__all__ = ["load_env_file", "parse_env"]

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
            raise fail(f"expected KEY=value, found {text[i:eol].strip()[:40]!r}", start_line)
        key = text[i:eq].strip()
        if key.startswith("export ") or key.startswith("export\t"):
            raise fail("'export' is not allowed in an EnvironmentFile: remove it", start_line)
        if not _valid_name(key):
            raise fail(f"{key[:40]!r} is not a valid variable name", start_line)
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


def load_env_file(path: str, *, optional: bool = False) -> dict[str, str]:
    """Read and parse ``path``. ``optional=True`` (systemd's ``-path``): a missing file is empty."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        if optional:
            return {}
        raise ConfigError(f"{path}: env file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: env file is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read env file: {os.strerror(exc.errno or 0)}") from None
    return parse_env(text, path)
