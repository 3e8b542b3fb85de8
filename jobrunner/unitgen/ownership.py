"""Paths root makes or gives to a job's user: never one that is not already that user's.

The rendered tmpfiles.d ``d``/``f`` lines, the logrotate ``create`` line and the unit's
``ReadWritePaths=`` hand a job's ``log_file`` and ``write_paths`` to the job's user, and
tmpfiles re-owns an existing file or directory to the user it names (at every boot too).
A path written into a declaration by an import (a crontab line's ``>> FILE 2>&1``) is
chosen by whoever wrote the crontab: ``>> /etc/shadow`` in www-data's crontab would make root
give www-data the shadow file. So, for a job that does not run as root:

- an existing path must be that user's own (not a symlink; a log file a regular file);
- a missing one must not be created inside the system's own trees (``/etc``, ``/usr``,
  ``/var/lib``, ``/run`` …), where a new file or directory owned by the user is a foothold
  (a drop-in directory, a profile script), and its parent must not be a symlink; a directory
  right below ``/var/lib`` or ``/var/cache`` (``/var/lib/NAME``, what systemd's
  ``StateDirectory=`` makes) is the one exception.

The importer asks a stricter question (``may_write``): can the user write there *today*,
without jobrunner making anything for them.
"""

from __future__ import annotations

import os
import stat

__all__ = ["OWN_DIR_TREES", "SYSTEM_TREES", "foreign_path", "may_write"]

# Trees where a new path owned by an unprivileged user would be a foothold for it.
SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root", "/run",
    "/sbin", "/sys", "/usr", "/var/cache", "/var/lib", "/var/spool",
)  # fmt: skip
# Where a job may still get a new directory of its own, as systemd's StateDirectory= and
# CacheDirectory= give one: a direct child, never a path inside another program's directory.
OWN_DIR_TREES = ("/var/cache", "/var/lib")


def _uid(user: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _under(path: str, trees: tuple[str, ...]) -> bool:
    return any(path == tree or path.startswith(tree + "/") for tree in trees)


def foreign_path(path: str, user: str, *, kind: str) -> str | None:
    """Why root must not give ``path`` to ``user`` (None: it may). ``kind``: ``file`` or ``directory``."""
    path = os.path.normpath(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        return f"cannot be checked ({exc.strerror})"
    if info is None:
        if kind == "directory" and os.path.dirname(path) in OWN_DIR_TREES:
            return None  # /var/lib/NAME: a state directory of its own
        if _under(path, SYSTEM_TREES):
            return f"does not exist and lies in {_tree(path)}, where a new {kind} owned by {user} is not made"
        parent = os.path.dirname(path)
        if os.path.islink(parent):
            return f"its directory {parent} is a symbolic link"
        return None
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if kind == "file" and not stat.S_ISREG(info.st_mode):
        return "exists and is not a regular file"
    if kind == "directory" and not stat.S_ISDIR(info.st_mode):
        return "exists and is not a directory"
    uid = _uid(user)
    if uid is None:
        return f"exists, and user {user} is unknown on this machine, so it cannot be proved theirs"
    if info.st_uid != uid:
        return f"exists and belongs to {_owner_name(info.st_uid)}, not to {user}"
    return None


def may_write(path: str, user: str) -> bool:
    """Whether ``user`` can already write ``path`` without anyone making it for them: an
    existing regular file of theirs (not a symlink), or a new name in a directory of theirs.
    Root may write anywhere but into a directory another user can change."""
    path = os.path.normpath(path)
    uid = 0 if user == "root" else _uid(user)
    if uid is None:
        return False
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError:
        return False
    if info is not None:
        return stat.S_ISREG(info.st_mode) and info.st_uid == uid and _parent_safe(path, uid)
    if uid == 0:  # root's own directories may still have to be made: the nearest that exists decides
        while not os.path.lexists(os.path.dirname(path)) and path != "/":
            path = os.path.dirname(path)
    return _parent_safe(path, uid, own=uid != 0)


def _parent_safe(path: str, uid: int, *, own: bool = False) -> bool:
    """The directory holding ``path`` is a real directory of ``uid`` (``own``: of ``uid`` alone)
    or root that no one else can change."""
    try:
        info = os.lstat(os.path.dirname(path) or "/")
    except OSError:
        return False
    owners = (uid,) if own else (0, uid)
    return stat.S_ISDIR(info.st_mode) and info.st_uid in owners and not info.st_mode & 0o022


def _tree(path: str) -> str:
    return next(t for t in SYSTEM_TREES if path == t or path.startswith(t + "/"))


def _owner_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
