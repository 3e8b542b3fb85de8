"""Back up a directory into dated, checksummed archives and keep the newest few.

Works on embedded defaults (no configuration): as root it archives ``/etc`` into
``/var/backups/jobrunner``; otherwise into ``~/backups/jobrunner``. Settings, from the
environment or ``/etc/default/dir-backup``:

- ``BACKUP_SOURCE``: the directory to archive (default ``/etc``)
- ``BACKUP_DIR``: where archives go
- ``BACKUP_KEEP``: how many archives to keep (default 7)

Each archive is written under a temporary name, checked (``gzip -t``), fsync'd, given a
``.sha256`` file, and only then renamed into place: a crash never leaves a half archive
that looks complete. Pruning keeps the newest ``BACKUP_KEEP`` of the archives this job can
prove are its own (its user's regular files, a stamp not in the future, a matching
``.sha256``): names planted in a shared directory are logged (``backup.prune_foreign``),
never counted or deleted. A directory of another user's, or one others can write without
the sticky bit, is refused (exit 78). Archives and checksums are 0600 and a directory made here 0700, by
hand as under the unit's ``UMask=0077`` (the archive of ``/etc`` holds ``/etc/shadow``).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from jobrunner import ConfigError, JobContext, job
from jobrunner.files import atomic_write, create_private, fsync_dir, private_dir, sha256_file
from jobrunner.settings import env_int

DEFAULT_DIR = "/var/backups/jobrunner"


@job(
    schedule="daily",
    persistent=True,
    jitter="10m",
    accuracy="1m",
    lock=True,
    timeout="1h",
    write_paths=[DEFAULT_DIR],
)
def dir_backup(ctx: JobContext) -> None:
    """Archive a directory (default /etc) into a dated .tar.gz with a SHA-256; keep the newest 7."""
    source = Path(ctx.env.get("BACKUP_SOURCE", "/etc"))
    default = DEFAULT_DIR if os.geteuid() == 0 else str(Path.home() / "backups" / "jobrunner")
    dest = Path(ctx.env.get("BACKUP_DIR", default))
    keep = env_int(ctx.env, "BACKUP_KEEP", 7, min=1)
    if not source.is_dir():
        raise ConfigError(f"BACKUP_SOURCE={str(source)!r} is not a directory")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    label = source.name or "root"
    final = f"{label}-{stamp}.tar.gz"
    ctx.log.info("backup.planned", source=str(source), archive=str(dest / final), keep=keep)
    if ctx.dry_run:
        return
    # The archive holds /etc/shadow: private (0700 directory when made here, 0600 files)
    # whatever the umask, and written only through descriptors of files made here, so a
    # name planted in a directory others can write is never followed.
    dfd = private_dir(dest)
    ctx.cleanup(os.close, dfd)
    _check_directory(dfd, dest)
    fd, partial = create_private(dfd, final)
    ctx.cleanup(_unlink_quietly, partial, dfd)
    with os.fdopen(fd, "w+b") as archive:
        # GNU tar exits 1 when a file changed while it was read: normal for a live /etc.
        size = _tree_bytes(source)
        with ctx.progress("archive", total=size, unit="B") as p:
            p.follow_commands(command="tar")  # tar's reads, from /proc: no byte passes through us
            result = ctx.run(
                [
                    "tar",
                    "--create",
                    "--gzip",
                    "--file",
                    "-",
                    "--ignore-failed-read",
                    "--warning=no-file-changed",
                    "-C",
                    str(source.parent),
                    source.name or ".",
                ],
                check=False,
                stdout=archive,
            )
            if result.returncode == 0:  # all read: the last bytes came after /proc's last sample
                p.update(size)
        if result.returncode not in (0, 1):
            raise RuntimeError(f"tar failed with status {result.returncode}")
        archive.flush()
        os.fsync(archive.fileno())
        archive.seek(0)
        ctx.run(["gzip", "--test"], stdin=archive)
        archive.seek(0)
        digest = sha256_file(archive)
        size = os.fstat(archive.fileno()).st_size
    atomic_write(f"{final}.sha256", f"{digest}  {final}\n".encode(), 0o600, dir_fd=dfd)
    os.replace(partial, final, src_dir_fd=dfd, dst_dir_fd=dfd)
    fsync_dir(dfd)
    ctx.log.info("backup.written", path=str(dest / final), bytes=size, sha256=digest)
    archives, foreign = own_archives(dfd, label)
    if foreign:
        ctx.log.warning(
            "backup.prune_foreign",
            directory=str(dest),
            count=len(foreign),
            names=foreign[:10],
            reason="not provably this job's (owner, regular file, stamp, checksum): neither counted nor pruned",
        )
    for old in archives[:-keep]:
        os.unlink(old, dir_fd=dfd)
        _unlink_quietly(f"{old}.sha256", dfd)
        ctx.log.info("backup.pruned", path=str(dest / old), reason=f"more than {keep} archives")


def _check_directory(dfd: int, dest: Path) -> None:
    """Refuse a directory where another user could move this job's archives around: one of
    another user's (not root's), or one others can write without the sticky bit. A shared
    1777 directory is accepted: there, no one can touch another's files, and pruning counts
    only what ``own_archives`` proves is this job's."""
    import stat

    info = os.fstat(dfd)
    if info.st_uid not in (0, os.geteuid()):
        raise ConfigError(
            f"BACKUP_DIR={str(dest)!r} belongs to uid {info.st_uid}: that user could replace the archives"
        )
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise ConfigError(
            f"BACKUP_DIR={str(dest)!r} is writable by other users without the sticky bit "
            f"(mode {stat.S_IMODE(info.st_mode):o}): make it 0700, or 1777 if it must be shared"
        )


def own_archives(dfd: int, label: str, *, now: float | None = None) -> tuple[list[str], list[str]]:
    """The archives in the directory ``dfd`` this job can prove it wrote, oldest first, and the
    names that only look like them. Proof: ``LABEL-YYYYmmddTHHMMSSZ.tar.gz`` with a stamp that
    parses and is not in the future, a regular file of this user's with one link, and a
    ``.sha256`` beside it (the same checks) whose digest is the archive's. A name planted in a
    shared (1777) directory, ``etc-9999123NT000000Z.tar.gz``, is neither counted nor pruned."""
    import re
    import time

    now = time.time() if now is None else now
    pattern = re.compile(rf"{re.escape(label)}-(\d{{8}}T\d{{6}}Z)\.tar\.gz")
    mine: list[tuple[str, str]] = []
    foreign: list[str] = []
    for name in sorted(os.listdir(dfd)):
        if not (name.startswith(f"{label}-") and name.endswith(".tar.gz")):
            continue
        match = pattern.fullmatch(name)
        try:
            if match is None:
                raise ValueError("not a stamp")
            when = datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            if when.timestamp() > now + 300:
                raise ValueError("in the future")
            with _open_own(f"{name}.sha256", dfd) as sidecar:
                digest, _sep, named = sidecar.read(4096).decode("ascii", "replace").strip().partition("  ")
            if named != name:
                raise ValueError("checksum of another file")
            with _open_own(name, dfd) as archive:
                if sha256_file(archive) != digest:
                    raise ValueError("checksum does not match")
        except (ValueError, OSError):
            foreign.append(name)
            continue
        mine.append((match.group(1), name))
    return [name for _stamp, name in sorted(mine)], foreign


def _open_own(name: str, dfd: int) -> BinaryIO:
    """``name`` open for reading when it is a regular file of this user's with one link
    (never through a symlink, never blocking on a FIFO); ``ValueError`` otherwise."""
    import stat

    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_nlink != 1:
        os.close(fd)
        raise ValueError("not this user's regular file")
    return os.fdopen(fd, "rb")


def _tree_bytes(root: Path) -> int:
    """The bytes of the regular files under ``root`` (what tar reads: the progress total)."""
    total = 0
    for top, _dirs, names in os.walk(root):
        for name in names:
            try:
                info = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if info.st_mode & 0o170000 == 0o100000:
                total += info.st_size
    return total


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
