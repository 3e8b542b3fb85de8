"""What an import reads: a crontab or a unit file, refused whole when it is not plain text.

A regular file only (a FIFO, ``/dev/zero`` or a directory is refused, never waited on or read
on), or standard input for ``-``; at most ``MAX_INPUT_BYTES``; UTF-8; no control character
but tab in a line (a ``\\r`` would hide the rest of a line on a terminal). Below the cron and
unit importers, which both read through it.
"""

from __future__ import annotations

import os
import re
import sys

from jobrunner.errors import ConfigError

__all__ = ["MAX_INPUT_BYTES", "read_input"]

MAX_INPUT_BYTES = 1 << 20  # a crontab or a unit file: far more than any real one
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
