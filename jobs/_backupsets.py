"""Backup sets of the WordPress jobs: names, manifests, checksums, compression, durable
writes, the backup area's lock, and following files as they grow.

A set is a directory ``<site>-<stamp>`` (full) or ``<site>-db-<stamp>`` (database only) in
``BACKUP_DIR`` holding its compressed files and ``manifest.json``; it is written as
``.<name>.partial`` and renamed only when complete and verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BACKUP_LOCK = "wp-backups"  # shared by writers and restore, exclusive for the pruner
MANIFEST = "manifest.json"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"


# --- compression ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    name: str
    ext: str
    compress: tuple[str, ...]
    decompress: tuple[str, ...]
    test: tuple[str, ...]


CODECS = {
    "zstd": Codec("zstd", ".zst", ("zstd", "-T0", "-3", "-q", "-c"), ("zstd", "-d", "-q", "-c"), ("zstd", "-t", "-q")),
    "gzip": Codec("gzip", ".gz", ("gzip", "-6", "-c"), ("gzip", "-d", "-c"), ("gzip", "-t")),
}


def codec_for(filename: str) -> Codec:
    for codec in CODECS.values():
        if filename.endswith(codec.ext):
            return codec
    raise ValueError(f"{filename}: unknown compression")


# --- backup sets ----------------------------------------------------------------------------


@dataclass
class BackupSet:
    """A finished set directory ``<site>-<stamp>`` (full) or ``<site>-db-<stamp>`` (database)."""

    path: Path
    manifest: dict[str, Any] | None
    created: datetime | None

    @property
    def kind(self) -> str:
        return (self.manifest or {}).get("kind") or ("db" if "-db-" in self.path.name else "full")

    @property
    def site(self) -> str | None:
        return (self.manifest or {}).get("site")

    @property
    def verified(self) -> bool:
        return bool(self.manifest and self.manifest.get("verified") is True)


def utc_stamp(when: datetime | None = None) -> str:
    return (when or datetime.now(timezone.utc)).strftime(STAMP_FORMAT)


def set_name(site: str, kind: str, when: datetime) -> str:
    return f"{site}-{utc_stamp(when)}" if kind == "full" else f"{site}-{kind}-{utc_stamp(when)}"


_SET_NAME = re.compile(r"^(?P<site>.+?)(?:-(?P<kind>db))?-(?P<stamp>\d{8}T\d{6}Z)$")


def read_set(path: Path) -> BackupSet | None:
    """The set at ``path`` (``None`` if the name is not a set's)."""
    match = _SET_NAME.match(path.name)
    if not match or not path.is_dir():
        return None
    manifest = None
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        pass
    created = datetime.strptime(match.group("stamp"), STAMP_FORMAT).replace(tzinfo=timezone.utc)
    return BackupSet(path, manifest, created)


def list_sets(backup_dir: Path, site: str | None = None) -> list[BackupSet]:
    """Finished sets, oldest first (``.partial`` directories are not sets)."""
    if not backup_dir.is_dir():
        return []
    found = [s for p in backup_dir.iterdir() if not p.name.startswith(".") and (s := read_set(p))]
    if site is not None:
        found = [s for s in found if (s.site or _SET_NAME.match(s.path.name).group("site")) == site]
    return sorted(found, key=lambda s: (s.created, s.path.name))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while n := handle.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def check_manifest(set_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems found checking each listed file's size and SHA-256 (empty: all good)."""
    problems = []
    for name, meta in manifest.get("files", {}).items():
        path = set_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != meta["bytes"]:
            problems.append(f"{name}: {path.stat().st_size} bytes, manifest says {meta['bytes']}")
        elif sha256_file(path) != meta["sha256"]:
            problems.append(f"{name}: SHA-256 mismatch")
    if not manifest.get("files"):
        problems.append("manifest lists no files")
    return problems


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_durably(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def hold_backup_lock(ctx: Any, *, shared: bool, wait: float) -> None:
    """Take the backup area's lock in the job (the declared lock is the job's own)."""
    from jobrunner.locks import FileLock, default_lock_dir

    path = os.path.join(default_lock_dir(), f"{BACKUP_LOCK}.lock")
    lock = FileLock(path, wait=wait, shared=shared)
    ctx.log.info("lock.waiting" if wait else "lock.acquiring", path=path, shared=shared)
    lock.acquire()
    ctx.cleanup(lock.release)
    ctx.log.info("lock.acquired", path=path, shared=shared)


class FileFollower:
    """Hashes a file while another process appends to it, and has the kernel write it back
    as it grows (an fdatasync every 32 MiB) instead of all at the end.

    The checksum and the disk writes then overlap the compression, and the data is read back
    from the page cache, not through another pipe: the write phase costs about what its I/O
    does. ``finish()`` (after the writer exited) reads the rest, fsyncs, returns the summary.
    """

    FLUSH_EVERY = 32 << 20

    def __init__(self, path: Path) -> None:
        import threading

        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"follow {path.name}", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        since = 0
        try:
            while True:
                finished = self._done.is_set()  # read before reading: no append is missed
                n = os.readv(self.fd, [buf])
                if n:
                    self.digest.update(view[:n])
                    self.bytes += n
                    since += n
                    if since >= self.FLUSH_EVERY:
                        os.fdatasync(self.fd)
                        since = 0
                elif finished:
                    return
                else:
                    self._done.wait(0.02)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> dict[str, Any]:
        """Stop following (the writer has exited); fsync; ``{"bytes", "sha256"}``."""
        self._done.set()
        self._thread.join()
        try:
            if self.error:
                raise self.error
            os.fsync(self.fd)
            return {"bytes": self.bytes, "sha256": self.digest.hexdigest()}
        finally:
            os.close(self.fd)

    def abandon(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        try:
            os.close(self.fd)
        except OSError:
            pass

