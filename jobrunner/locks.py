"""File locks with flock(1)'s semantics: ``-n``, ``-w SECONDS``, ``-s``.

The lock is ``flock(2)`` on a file that is never deleted. That is what makes it safe:

- the kernel drops the lock when the holder dies, SIGKILL included, so no stale lock;
- the file is never unlinked, so two runs can never hold locks on two different inodes of
  "the same" path (the race of lock-by-unlink schemes); an inode that was replaced anyway
  (an admin's ``rm``) is detected after locking and locked again;
- it interoperates with shell scripts still using ``flock /var/lock/x.lock …``.

Why not the ``filelock`` package: its ``UnixFileLock`` has no shared mode (``flock -s``), its
``ReadWriteLock`` is SQLite-based and invisible to ``flock(1)``, and importing it costs
30-50 ms on every timer tick (bench/startup.py). The part we need is the 60 lines below.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from .errors import ConfigError, LockBusy

__all__ = ["FileLock", "default_lock_dir"]


def default_lock_dir() -> str:
    """``$JOBRUNNER_LOCK_DIR``; else ``/run/lock/jobrunner`` as root (or when writable),
    ``$XDG_RUNTIME_DIR/jobrunner``, or a per-user directory under the temp dir."""
    configured = os.environ.get("JOBRUNNER_LOCK_DIR")
    if configured:
        return configured
    system = "/run/lock/jobrunner"
    if os.geteuid() == 0 or os.access(system, os.W_OK | os.X_OK):
        return system
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "jobrunner")
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"jobrunner-{os.geteuid()}")


class FileLock:
    """One flock on ``path``: ``acquire()`` or raise ``LockBusy``; ``release()`` always safe.

    >>> lock = FileLock("/tmp/example.lock", wait=0)
    >>> with lock:
    ...     pass
    """

    def __init__(self, path: str, *, wait: float | None = None, shared: bool = False) -> None:
        self.path = path
        self.wait = wait
        self.shared = shared
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"lock directory {directory}: {exc.strerror} (set JOBRUNNER_LOCK_DIR)") from None
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return os.open(self.path, flags)
            # Units run with UMask=0077: without this, a lock file made by one user could not
            # even be opened by a job of another user (or root without capabilities) sharing it.
            os.fchmod(fd, 0o644)
            return fd
        except PermissionError:
            # A lock file made by another user in a sticky directory: reading is enough for flock.
            try:
                return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except OSError as exc:
                raise ConfigError(f"lock file {self.path}: {exc.strerror}") from None
        except OSError as exc:
            raise ConfigError(f"lock file {self.path}: {exc.strerror} (set JOBRUNNER_LOCK_DIR)") from None

    def _try_once(self) -> bool:
        for _ in range(5):
            locked = self._lock_current_file()
            if locked is not None:
                return locked
        return False

    def _lock_current_file(self) -> bool | None:
        """True: locked; False: busy; None: the path now names another file, try again."""
        fd = self._open()
        mode = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        try:
            fcntl.flock(fd, mode)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise ConfigError(f"lock file {self.path}: {exc.strerror}") from None
        except BaseException:
            os.close(fd)
            raise
        # Locked; but is it still the file at the path? (deleted or replaced meanwhile)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None
        self._fd = fd
        return True

    def acquire(self) -> "FileLock":
        """Take the lock; wait up to ``wait`` seconds (``None``/0: not at all); else ``LockBusy``."""
        if self._fd is not None:
            return self
        deadline = time.monotonic() + (self.wait or 0.0)
        delay = 0.01
        while True:
            if self._try_once():
                return self
            if time.monotonic() >= deadline:
                kind = "shared" if self.shared else "exclusive"
                waited = f" after waiting {self.wait:g}s" if self.wait else ""
                raise LockBusy(f"{kind} lock {self.path} is held by another run{waited}", self.path)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.2)

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases the flock). The file stays."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
