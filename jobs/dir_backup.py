"""Back up a directory into dated, checksummed archives and keep the newest few.

Works on embedded defaults (no configuration): as root it archives ``/etc`` into
``/var/backups/jobrunner``; otherwise into ``~/backups/jobrunner``. Settings, from the
environment or ``/etc/default/dir-backup``:

- ``BACKUP_SOURCE``: the directory to archive (default ``/etc``)
- ``BACKUP_DIR``: where archives go
- ``BACKUP_KEEP``: how many archives to keep (default 7)

Each archive is written under a temporary name, checked (``gzip -t``), fsync'd, given a
``.sha256`` file, and only then renamed into place: a crash never leaves a half archive
that looks complete.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path

from jobrunner import ConfigError, job

DEFAULT_DIR = "/var/backups/jobrunner"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@job(
    schedule="daily",
    persistent=True,
    jitter="10m",
    accuracy="1m",
    lock=True,
    timeout="1h",
    write_paths=[DEFAULT_DIR],
)
def dir_backup(ctx):
    """Archive a directory (default /etc) into a dated .tar.gz with a SHA-256; keep the newest 7."""
    source = Path(ctx.env.get("BACKUP_SOURCE", "/etc"))
    default = DEFAULT_DIR if os.geteuid() == 0 else str(Path.home() / "backups" / "jobrunner")
    dest = Path(ctx.env.get("BACKUP_DIR", default))
    try:
        keep = int(ctx.env.get("BACKUP_KEEP", "7"))
        if keep < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(f"BACKUP_KEEP={ctx.env.get('BACKUP_KEEP')!r}: must be a whole number of 1 or more") from None
    if not source.is_dir():
        raise ConfigError(f"BACKUP_SOURCE={str(source)!r} is not a directory")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    label = source.name or "root"
    final = dest / f"{label}-{stamp}.tar.gz"
    partial = dest / f".{final.name}.part"
    ctx.log.info("backup.planned", source=str(source), archive=str(final), keep=keep)
    if ctx.dry_run:
        return
    dest.mkdir(parents=True, exist_ok=True)
    ctx.cleanup(lambda: partial.unlink(missing_ok=True))
    # GNU tar exits 1 when a file changed while it was read: normal for a live /etc.
    result = ctx.run(
        ["tar", "--create", "--gzip", "--file", str(partial), "--ignore-failed-read",
         "--warning=no-file-changed", "-C", str(source.parent), source.name or "."],
        check=False,
    )
    if result.returncode not in (0, 1):
        raise RuntimeError(f"tar failed with status {result.returncode}")
    ctx.run(["gzip", "--test", str(partial)])
    _fsync(partial)
    digest = _sha256(partial)
    Path(f"{final}.sha256").write_text(f"{digest}  {final.name}\n")
    os.replace(partial, final)
    _fsync(dest)
    ctx.log.info("backup.written", path=str(final), bytes=final.stat().st_size, sha256=digest)
    archives = sorted(dest.glob(f"{label}-*.tar.gz"))
    for old in archives[:-keep]:
        old.unlink()
        Path(f"{old}.sha256").unlink(missing_ok=True)
        ctx.log.info("backup.pruned", path=str(old), reason=f"more than {keep} archives")
