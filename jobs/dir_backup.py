"""Back up a directory into dated, checksummed archives and keep the newest few.

Works on embedded defaults (no configuration): as root it archives ``/etc`` into
``/var/backups/jobrunner``; otherwise into ``~/backups/jobrunner``. Settings, from the
environment or ``/etc/default/dir-backup``:

- ``BACKUP_SOURCE``: the directory to archive (default ``/etc``)
- ``BACKUP_DIR``: where archives go
- ``BACKUP_KEEP``: how many archives to keep (default 7)

Each archive is written under a temporary name, checked (``gzip -t``), fsync'd, given a
``.sha256`` file, and only then renamed into place: a crash never leaves a half archive
that looks complete. Archives and checksums are 0600 and a directory made here 0700, by
hand as under the unit's ``UMask=0077`` (the archive of ``/etc`` holds ``/etc/shadow``).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

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
    archives = sorted(n for n in os.listdir(dfd) if n.startswith(f"{label}-") and n.endswith(".tar.gz"))
    for old in archives[:-keep]:
        os.unlink(old, dir_fd=dfd)
        _unlink_quietly(f"{old}.sha256", dfd)
        ctx.log.info("backup.pruned", path=str(dest / old), reason=f"more than {keep} archives")


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
