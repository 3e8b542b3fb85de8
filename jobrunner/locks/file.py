"""File locks with flock(1)'s semantics: ``-n``, ``-w SECONDS``, ``-s``.

The lock is ``flock(2)`` on a file that is never deleted. That is what makes it safe:

- the kernel drops the lock when the holder dies, SIGKILL included, so no stale lock;
- the file is never unlinked, so two runs can never hold locks on two different inodes of
  "the same" path (the race of lock-by-unlink schemes); an inode that was replaced anyway
  (an admin's ``rm``) is detected after locking and locked again;
- it interoperates with shell scripts still using ``flock /var/lock/x.lock …``.

Why not the ``filelock`` package: its ``UnixFileLock`` has no shared mode (``flock -s``), its
``ReadWriteLock`` is SQLite-based and invisible to ``flock(1)``, and importing it costs
30-50 ms on every timer tick (bench/startup.py). The part we need is ``FileLock`` below.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from typing import Any

from jobrunner.errors import ConfigError, LockBusy
from jobrunner.files import _OPEN_DIR, poll_bounded

__all__ = ["FileLock", "SlotLock", "default_lock_dir", "lock_holders", "lock_path"]

SYSTEM_LOCK_DIR = "/run/lock/jobrunner"


def default_lock_dir() -> str:
    """``$JOBRUNNER_LOCK_DIR``; else ``/run/lock/jobrunner`` as root (or when writable),
    ``$XDG_RUNTIME_DIR/jobrunner``, or a per-user directory under the temp dir."""
    configured = os.environ.get("JOBRUNNER_LOCK_DIR")
    if configured:
        return configured
    if os.geteuid() == 0 or os.access(SYSTEM_LOCK_DIR, os.W_OK | os.X_OK):
        return SYSTEM_LOCK_DIR
    return _user_lock_dir()


def _user_lock_dir() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "jobrunner")
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"jobrunner-{os.geteuid()}")


def lock_path(name: str) -> str:
    """Where the lock called ``name`` lives: an absolute name as it is; else ``<name>.lock`` in
    the lock directory. A job user who cannot create files in the system lock directory
    (root's, mode 0755) still uses its lock file there when one was made for it (the rendered
    tmpfiles.d makes one per non-root job), so a run by hand excludes the unit's run."""
    if name.startswith("/"):
        return name
    directory = default_lock_dir()
    if directory == _user_lock_dir() and not os.environ.get("JOBRUNNER_LOCK_DIR"):
        made = os.path.join(SYSTEM_LOCK_DIR, f"{name}.lock")
        if os.access(made, os.R_OK):
            return made
    return os.path.join(directory, f"{name}.lock")


def _check_dir(directory: str, dfd: int) -> None:
    """A lock directory in which another user could add, swap or remove lock files is refused
    (a sticky one such as ``/run/lock`` is fine: nobody can touch another's files there, and a
    lock file of another user is never trusted). Root's own ``/run/lock/jobrunner`` found open
    to everyone (the 1777 of older versions) is closed to 0755."""
    info = os.fstat(dfd)
    mode = stat.S_IMODE(info.st_mode)
    sticky = bool(mode & stat.S_ISVTX)
    if directory == SYSTEM_LOCK_DIR and info.st_uid == 0 == os.geteuid() and mode & 0o022:
        os.fchmod(dfd, 0o755)
        return
    if not sticky and (mode & 0o022 or info.st_uid not in (0, os.geteuid())):
        raise ConfigError(
            f"lock directory {directory} can be changed by other users (owner uid {info.st_uid}, mode {mode:o}): "
            "they could hold or replace its locks; make it root's and 0755, or set JOBRUNNER_LOCK_DIR"
        )


def _open_lock_dir(directory: str) -> int:
    mine = directory == _user_lock_dir()
    try:
        os.makedirs(directory, mode=0o700 if mine else 0o755, exist_ok=True)
        dfd = os.open(directory, _OPEN_DIR | (os.O_NOFOLLOW if mine else 0))
    except OSError as exc:
        raise ConfigError(f"lock directory {directory}: {exc.strerror} (set JOBRUNNER_LOCK_DIR)") from None
    try:
        if mine:  # under the shared temp dir: another user may have made it first
            info = os.fstat(dfd)
            if info.st_uid != os.geteuid() or info.st_mode & 0o077:
                raise ConfigError(
                    f"lock directory {directory} is not this user's private directory (owner uid {info.st_uid}, "
                    f"mode {stat.S_IMODE(info.st_mode):o}): remove it or set JOBRUNNER_LOCK_DIR"
                )
        else:
            _check_dir(directory, dfd)
        return dfd
    except BaseException:
        os.close(dfd)
        raise


def lock_holders(path: str) -> list[dict[str, Any]]:
    """Who holds a flock on ``path`` now, from ``/proc/locks``: ``[{"pid", "uid", "user"}]``
    (empty when nobody, or when the kernel does not say)."""
    try:
        info = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            table = handle.read()
    except OSError:
        return []
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    holders: list[dict[str, Any]] = []
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->" or fields[1] != "FLOCK" or fields[5] != device:
            continue
        pid = int(fields[4])
        holders.append({"pid": pid, **_owner_of(pid)})
    return holders


def _owner_of(pid: int) -> dict[str, Any]:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as handle:
            uid = next(int(line.split()[1]) for line in handle if line.startswith("Uid:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return {}
    try:
        import pwd

        return {"uid": uid, "user": pwd.getpwuid(uid).pw_name}
    except KeyError:
        return {"uid": uid, "user": str(uid)}


class FileLock:
    """One flock on ``path``: ``acquire()`` or raise ``LockBusy``; ``release()`` always safe.

    >>> lock = FileLock("/tmp/example.lock", wait=0)
    >>> with lock:
    ...     pass

    The file is opened relative to its directory without following a symlink, made 0600 (the
    lock's group may share it as 0660, set up by the rendered tmpfiles.d) and never left open to
    other users: a user who cannot open the file cannot take the lock, so cannot make the job
    skip. A lock file owned by another user is replaced by root (atomically, by rename) and
    refused otherwise.
    """

    def __init__(self, path: str, *, wait: float | None = None, shared: bool = False) -> None:
        self.path = path
        self.wait = wait
        self.shared = shared
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def name(self) -> str:
        """The lock file's path (``jobrunner.types.HeldLock``)."""
        return self.path

    @property
    def fencing_token(self) -> None:
        """No fencing token: a file lock is local (``jobrunner.types.HeldLock``)."""
        return None

    def _open(self) -> int:
        directory, name = os.path.split(self.path)
        dfd = _open_lock_dir(directory or ".")
        try:
            return self._open_in(dfd, name)
        finally:
            os.close(dfd)

    def _open_in(self, dfd: int, name: str) -> int:
        flags = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            try:
                fd = os.open(name, flags | os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dfd)
                os.fchmod(fd, 0o600)  # whatever the umask
                return fd
            except FileExistsError:
                pass
            try:
                fd = os.open(name, flags | os.O_RDWR, dir_fd=dfd)
            except PermissionError:  # a group-shared lock made by root's tmpfiles: reading is enough
                fd = os.open(name, flags | os.O_RDONLY, dir_fd=dfd)
        except OSError as exc:
            raise ConfigError(f"lock file {self.path}: {exc.strerror} (set JOBRUNNER_LOCK_DIR)") from None
        try:
            return self._trusted(fd, dfd, name)
        except BaseException:
            os.close(fd)
            raise

    def _trusted(self, fd: int, dfd: int, name: str) -> int:
        info = os.fstat(fd)
        uid = os.geteuid()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"lock file {self.path} is not a regular file: remove it")
        if info.st_uid not in (uid, 0):
            if uid != 0:
                raise ConfigError(f"lock file {self.path} belongs to uid {info.st_uid}, not this user: remove it")
            os.close(fd)
            return self._replace(dfd, name)
        if info.st_mode & 0o007 and info.st_uid == uid:  # left open to everyone by an older version
            os.fchmod(fd, stat.S_IMODE(info.st_mode) & 0o770)
        return fd

    def _replace(self, dfd: int, name: str) -> int:
        """Root's answer to a lock file another user made: a new one of root's, renamed over it
        (whoever held the old inode holds nothing; ``_lock_current_file`` re-checks the path)."""
        tmp = f".{name}.{os.urandom(6).hex()}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            os.fchmod(fd, 0o600)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            raise
        return fd

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
            same = os.path.samestat(os.fstat(fd), os.lstat(self.path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None
        self._fd = fd
        return True

    def acquire(self) -> FileLock:
        """Take the lock; wait up to ``wait`` seconds (``None``/0: not at all); else ``LockBusy``."""
        if self._fd is not None:
            return self
        if poll_bounded(self._try_once, self.wait or 0.0, delay=0.01, max_delay=0.2):
            return self
        kind = "shared" if self.shared else "exclusive"
        waited = f" after waiting {self.wait:g}s" if self.wait else ""
        raise LockBusy(f"{kind} lock {self.path} is held by another run{waited}", self.path)

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases the flock). The file stays."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class SlotLock:
    """A counting lock: at most ``slots`` holders of ``name`` at once on this host.

    Slot ``i`` is the file lock ``<lock dir>/<name>.slot<i>.lock``; a holder holds one of them
    (flock, exclusive), so a holder that dies frees its slot, ``flock(1)`` scripts can take a
    slot too (``flock -n /run/lock/jobrunner/backup.slot0.lock …``), and who holds which slot
    is in ``/proc/locks``. ``acquire`` tries every slot, then polls (10 ms doubling to 200 ms)
    until one is free or ``wait`` seconds have passed (``None``: no limit), then ``LockBusy``.
    ``on_wait()`` is called once, when every slot was taken at the first try.
    """

    def __init__(self, name: str, slots: int, *, wait: float | None = None) -> None:
        self.name = name
        self.slots = slots
        self.wait = wait
        self.paths = [lock_path(f"{name}.slot{i}") for i in range(slots)]
        self.held: FileLock | None = None

    @property
    def pattern(self) -> str:
        return lock_path(f"{self.name}.slot*")

    def _try_all(self) -> bool:
        for path in self.paths:
            lock = FileLock(path, wait=0)
            try:
                lock.acquire()
            except LockBusy:
                continue
            self.held = lock
            return True
        return False

    def acquire(self, on_wait: Any = None) -> SlotLock:
        if self.held is not None:
            return self
        if poll_bounded(self._try_all, self.wait, delay=0.01, max_delay=0.2, on_wait=on_wait):
            return self
        waited = f" after waiting {self.wait:g}s" if self.wait else ""
        raise LockBusy(f"all {self.slots} slots of {self.name} are taken{waited}", self.pattern)

    def release(self) -> None:
        held, self.held = self.held, None
        if held is not None:
            held.release()
