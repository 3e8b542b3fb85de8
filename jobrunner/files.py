"""Durable, private files for jobs: what a backup job needs so a crash or another user never
gets a half-written file, a file of their choosing overwritten, or a look at the data.

>>> from jobrunner.files import private_dir, create_private, atomic_write, fsync_dir, sha256_file
>>> dfd = private_dir("/var/backups/site")          # made 0700 when missing; a descriptor
>>> fd, name = create_private(dfd, "db.sql.zst")     # ".db.sql.zst.<random>.part", 0600, O_EXCL
>>> ...                                              # write, then os.replace(name, final, ...)

Every name is opened relative to a directory descriptor with ``O_NOFOLLOW`` and created with
``O_EXCL`` under a random name, so a symlink or file planted in a shared directory (a backup
mount others can write) is never followed or reused; modes are set explicitly, whatever the
umask. Standard library only.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from typing import IO

__all__ = [
    "FileTooLarge",
    "NotRegularFile",
    "atomic_write",
    "create_private",
    "fsync_dir",
    "open_dir_nofollow",
    "private_dir",
    "read_regular_file",
    "read_regular_file_stat",
    "sha256_file",
]

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # a directory, for *_at calls (store/, locks/ too)


def private_dir(path: str | os.PathLike[str], mode: int = 0o700) -> int:
    """Open the directory ``path`` (made with ``mode`` when missing, parents too) and return a
    descriptor for ``*_at`` calls; the caller closes it. An existing directory keeps its mode:
    the files made in it are private on their own."""
    os.makedirs(path, mode=mode, exist_ok=True)
    return os.open(path, _OPEN_DIR)


def create_private(dir_fd: int, final_name: str, mode: int = 0o600) -> tuple[int, str]:
    """Create a new, empty file beside ``final_name`` under a random temporary name; return its
    descriptor (read-write) and that name. Rename it into place when complete."""
    name = f".{final_name}.{os.urandom(6).hex()}.part"
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    os.fchmod(fd, mode)
    return fd, name


def fsync_dir(directory: str | os.PathLike[str] | int) -> None:
    """fsync a directory (a path or a descriptor), so a rename in it survives a crash."""
    fd = directory if isinstance(directory, int) else os.open(directory, _OPEN_DIR)
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        if not isinstance(directory, int):
            os.close(fd)


def sha256_file(source: str | os.PathLike[str] | IO[bytes]) -> str:
    """The SHA-256 of a file (a path, or an open binary file read from where it stands)."""
    import hashlib  # not at import: it loads OpenSSL, and the run path writes files without hashing

    digest = hashlib.sha256()
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    else:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_MAX_LINKS = 40  # symlinks followed in one path, as the kernel's limit


def _trusted_link(dfd: int, name: str, info: os.stat_result) -> bool:
    """A symlink no other user can have planted or swapped: root's or ours, in a directory
    of root's or ours that no one else can add to (group/other write only with the sticky bit)."""

    trusted = (0, os.geteuid())
    parent = os.fstat(dfd)
    return (
        info.st_uid in trusted
        and parent.st_uid in trusted
        and (not parent.st_mode & 0o022 or bool(parent.st_mode & stat.S_ISVTX))
    )


def open_dir_nofollow(path: str) -> int:
    """Open the directory ``path`` one component at a time with ``O_NOFOLLOW``: a symlink on the
    way is followed only when no other user can have planted it (``_trusted_link``: the
    system's own, ``/var/run``, say); another's is ``OSError(ELOOP)`` naming it. The caller
    closes the descriptor."""

    pending = [c for c in path.split("/") if c not in ("", ".")]
    dfd = os.open("/" if path.startswith("/") else ".", _OPEN_DIR)
    walked = "/" if path.startswith("/") else ""
    links = 0
    try:
        while pending:
            name = pending.pop(0)
            try:
                fd = os.open(name, _OPEN_DIR | os.O_NOFOLLOW, dir_fd=dfd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                info = os.lstat(name, dir_fd=dfd)
                if not stat.S_ISLNK(info.st_mode):
                    raise
                where = os.path.join(walked, name)
                if not _trusted_link(dfd, name, info):
                    raise OSError(
                        errno.ELOOP, f"{where} is a symlink another user can change (uid {info.st_uid}); not followed"
                    ) from None
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, f"too many symlinks in {path}") from None
                target = os.readlink(name, dir_fd=dfd)
                pending[:0] = [c for c in target.split("/") if c not in ("", ".")]
                if target.startswith("/"):
                    os.close(dfd)
                    dfd = os.open("/", _OPEN_DIR)
                    walked = "/"
                continue
            os.close(dfd)
            dfd = fd
            walked = os.path.join(walked, name)
        return dfd
    except BaseException:
        os.close(dfd)
        raise


def atomic_write(
    path: str, data: bytes, mode: int = 0o640, *, dir_fd: int | None = None, owner: tuple[int, int] | None = None
) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix.

    The temp file is created with ``O_EXCL | O_NOFOLLOW`` under a random name and given
    ``mode`` explicitly (the umask plays no part); with ``dir_fd``, ``path`` is a name in that
    directory. ``owner`` (uid, gid) is set on the temp file's descriptor before the rename
    (never chown by path). The directory of ``path`` is opened a component at a time without
    following another user's symlink (``open_dir_nofollow``): a page directory swapped for a
    link to root's files is ``OSError(ELOOP)``, never written through."""
    opened = dir_fd is None
    dfd = open_dir_nofollow(os.path.dirname(path) or ".") if dir_fd is None else dir_fd
    name = os.path.basename(path) if opened else path
    try:
        tmp = f".{name}.{os.urandom(6).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if owner is not None:
                    os.fchown(fd, *owner)
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            raise
        fsync_dir(dfd)
    finally:
        if opened:
            os.close(dfd)


class NotRegularFile(OSError):
    """``read_regular_file`` refused something else than a regular file (``EINVAL``); ``mode``
    is what it is (``stat.S_ISDIR(exc.mode)``…)."""

    def __init__(self, mode: int) -> None:
        super().__init__(errno.EINVAL, "not a regular file")
        self.mode = mode


class FileTooLarge(OSError):
    """``read_regular_file`` refused a file larger than its limit (``EFBIG``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(errno.EFBIG, f"larger than {limit} bytes")
        self.limit = limit


def read_regular_file(name: str, *, dir_fd: int | None = None, limit: int, owner: int | None = None) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (and, with ``owner``, belonging
    to that uid), opened without following a symlink and without blocking on a FIFO;
    ``OSError`` otherwise (``ELOOP``, ``EINVAL``, ``EPERM``, ``EFBIG``…)."""
    return read_regular_file_stat(name, dir_fd=dir_fd, limit=limit, owner=owner)[0]


def read_regular_file_stat(
    name: str, *, dir_fd: int | None = None, limit: int, owner: int | None = None, follow: bool = False
) -> tuple[bytes, os.stat_result]:
    """``read_regular_file``, and the file's status as checked on the open descriptor (no race
    with a rename). ``follow=True`` follows a symlink (a path the caller trusts, such as an
    env file named on the command line). The refusals are ``OSError``: ``NotRegularFile``,
    ``FileTooLarge``, ``EPERM`` for another owner; the open's own errors propagate."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(name, flags, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not _is_regular(info.st_mode):
            raise NotRegularFile(info.st_mode)
        if owner is not None and info.st_uid != owner:
            raise OSError(errno.EPERM, f"owned by uid {info.st_uid}, not {owner}")
        if info.st_size > limit:
            raise FileTooLarge(limit)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileTooLarge(limit)
        return b"".join(chunks), info
    finally:
        os.close(fd)


def _is_regular(mode: int) -> bool:

    return stat.S_ISREG(mode)


def poll_bounded(
    attempt: Callable[[], bool],
    wait: float | None,
    *,
    delay: float,
    max_delay: float,
    on_wait: Callable[[], object] | None = None,
) -> bool:
    """Call ``attempt`` (a non-blocking try, such as ``flock(LOCK_NB)``) until it returns True,
    then True; False once ``wait`` seconds have passed (``None``: no bound). It is tried at
    once, then after sleeps doubling from ``delay`` up to ``max_delay``, the last one cut to the
    deadline. ``on_wait`` is called once, when the first try fails. The one polling loop of the
    state lock, file locks and slots (a blocking flock could not be bounded or interrupted)."""
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        if attempt():
            return True
        if on_wait is not None:
            on_wait()
            on_wait = None
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False
        time.sleep(delay if left is None else min(delay, left))
        delay = min(delay * 2, max_delay)
