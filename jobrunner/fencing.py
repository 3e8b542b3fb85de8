"""Fencing that reaches the work: a write that a newer lease holder's writes make impossible.

A Redis lease's holder can be paused past its TTL (a frozen VM, SIGSTOP, a C call holding the
GIL) and act once more after another server took the lease. The lease cannot stop that; the
storage can, if every write carries the lease's fencing token and the storage refuses a token
smaller than the largest it has seen. The run's token is ``ctx.lock.fencing_token``, and
``$JOBRUNNER_FENCING_TOKEN`` in the environment of every command the run starts (``ctx.run``,
``jobrunner exec``).

``fenced_write(path, data)`` is that check for the common case of a file: the highest token
that wrote ``path`` is kept beside it (``path + ".fence"``, 0600), checked and raised under an
exclusive ``flock`` in one step with the write (which replaces ``path`` atomically). For a
database, keep the token in the row: ``UPDATE … SET …, fence = :token WHERE id = :id AND fence
<= :token`` and treat 0 rows as ``StaleToken`` (docs/fleets.md).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping

from jobrunner.errors import JobrunnerError

__all__ = ["ENV", "StaleToken", "current_token", "fenced_write"]

ENV = "JOBRUNNER_FENCING_TOKEN"


class StaleToken(JobrunnerError):
    """A newer holder of the lease wrote already: this write is refused."""


def current_token(env: Mapping[str, str] | None = None) -> int:
    """The run's fencing token from ``$JOBRUNNER_FENCING_TOKEN``; ``StaleToken`` without one
    (a write that must be fenced is not made unfenced)."""
    env = os.environ if env is None else env
    raw = env.get(ENV, "").strip()
    if not raw.isdigit():
        raise StaleToken(f"no fencing token (${ENV} is not set: run this under a Redis lease)")
    return int(raw)


def fenced_write(path: str, data: bytes, token: int | None = None, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` if ``token`` (default: ``$JOBRUNNER_FENCING_TOKEN``) is at
    least the highest token that wrote it; else raise ``StaleToken`` and change nothing."""
    token = current_token() if token is None else token
    fence = path + ".fence"
    fd = os.open(fence, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        raw = os.pread(fd, 64, 0).strip()
        highest = int(raw) if raw.isdigit() else -1
        if token < highest:
            raise StaleToken(f"fencing token {token} is older than {highest}: a newer lease holder wrote {path}")
        tmp = f"{path}.{os.getpid()}.tmp"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            os.write(out, data)
            os.fsync(out)
        finally:
            os.close(out)
        os.replace(tmp, path)
        text = str(token).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
        os.fsync(fd)
    finally:
        os.close(fd)  # the flock goes with it
