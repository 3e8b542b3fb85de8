"""Nightly full WordPress backup: files + database as one verified, checksummed set.

One set is a directory ``<BACKUP_DIR>/<site>-<UTC stamp>/`` holding ``files.tar.zst``,
``db.sql.zst``, ``manifest.json`` (sizes and SHA-256 of each file, table count, timings,
``"verified"``) and ``manifest.hmac`` (the manifest's HMAC-SHA256 with the key in
``BACKUP_HMAC_KEY_FILE``, made 0600 by the first run: restore uses no set without it). It is
built as ``.<name>.partial`` and renamed only once complete, fsync'd and verified, so a set
that has its final name is whole. ``BACKUP_DIR`` (made 0750 when missing) and every directory
above it must be root's and not writable by others, or the run stops with exit 78: nobody
else can plant a name in it, swap a set or add one. Sets are 0700, their files 0600,
whatever the umask. The write phase runs the archive and
the dump side by side: the archive is written by ``jobs._archive`` (media stored as raw
frames, never compressed; directories, links and text through one ``zstd -T0 -3``), the
dump by ``mysqldump --single-transaction | zstd``. The archive's SHA-256 is fed by its writer
as the bytes are written (``jobs._archive.Sink``: of exactly what was written, never read
back), the dump's read back from the page cache as it grows (``FileFollower``);
the verify phase reads the archive back (``tar -t``), re-checks every checksum (recomputed
from the files: for the archive a check independent of the writer's) and loads the
dump into a scratch database ``<db>_verify_<random>``, dropped at the end, whose table count
must equal the source's. A set that fails verification is kept, marked ``"verified": false``,
and the run fails: ``backup_prune`` then deletes nothing until a good backup exists.

Locks: the job's own lock stops a second run (``flock -n``, exit 75); inside, the backup area
lock ``wp-backups`` is held shared (waiting for a running prune), which ``backup_prune``
takes exclusive: a prune never runs while a set is being written or restored.

``wp_db_export`` uses the same writer for database-only sets (``<site>-db-<stamp>``).
"""

from __future__ import annotations

import errno
import os
import resource
import secrets
import shlex
import shutil
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobrunner import CommandFailed, JobContext, job
from jobrunner.files import atomic_write, fsync_dir
from jobs._backupsets import (
    CODECS,
    KEY_STATE_DIRECTORY,
    MANIFEST,
    BackupKey,
    FileFollower,
    check_manifest,
    codec_for,
    hold_backup_lock,
    json_bytes,
    load_key,
    private_dir,
    set_name,
    sign_set,
)
from jobs._wp import (
    BACKUP_SLOTS,
    DEFAULT_BACKUP_DIR,
    INSTANCE_BACKUP_DIR,
    SITE_INSTANCES,
    Clients,
    Settings,
    read_wp_config,
    require_site,
    settings,
    sql_ident,
    wp_command,
)

FILES = "files.tar"
DUMP = "db.sql"


# Root, but the strict sandbox drops every capability: reading a wp-config.php that is 0640
# www-data (and uploads of any mode) needs CAP_DAC_READ_SEARCH back. The sets' HMAC key is made
# by the first run in /var/lib/jobrunner/keys (BACKUP_HMAC_KEY_FILE's default): a state
# directory of the unit, so writable in the sandbox, and read-only for restore and prune.
SITE_READER: dict[str, Any] = {
    "systemd": {"Service": {"CapabilityBoundingSet": "CAP_DAC_READ_SEARCH", "+StateDirectory": KEY_STATE_DIRECTORY}},
    "security_threshold": 2.0,
}


class BackupError(RuntimeError):
    """A backup could not be written or verified; the message says why in one line."""


@job(
    schedule="02:15",
    persistent=True,
    jitter="5m",
    accuracy="1m",
    timeout="2h",
    lock=True,
    hardening="strict",
    write_paths=[DEFAULT_BACKUP_DIR],
    instance_write_paths=[INSTANCE_BACKUP_DIR],
    concurrency=BACKUP_SLOTS,
    network=False,
    **SITE_READER,
    **SITE_INSTANCES,
)
def wp_backup(ctx: JobContext) -> None:
    """Full WordPress backup (files + database), verified, into BACKUP_DIR."""
    run_backup(ctx, kind="full")


def run_backup(ctx: JobContext, *, kind: str) -> None:
    """The body of wp_backup (kind "full") and wp_db_export (kind "db")."""
    s = settings(ctx)
    require_site(s)
    clients = Clients(ctx, read_wp_config(s.wp_path, s.wp_config))
    if ctx.dry_run:
        ctx.log.info("backup.planned", kind=kind, site=s.site, backup_dir=str(s.backup_dir), compress=s.compress)
        return
    backup_dir = private_dir(s.backup_dir, "BACKUP_DIR", create=True)
    key = load_key(s.key_file, create=True)
    if key.created:
        ctx.log.warning(
            "backup.key_created",
            path=str(key.path),
            key_id=key.key_id,
            reason="no key yet: keep a copy apart from the backups, restore needs it",
        )
    hold_backup_lock(ctx, shared=True, wait=3600)
    backup_set(ctx, s, clients, kind=kind, key=key, backup_dir=backup_dir)


def backup_set(ctx: JobContext, s: Settings, clients: Clients, *, kind: str, key: BackupKey, backup_dir: Path) -> Path:
    """Write, verify, sign and publish one set (``kind`` "full" or "db") in ``backup_dir`` (a
    directory only root can change); return its directory."""
    when = datetime.now(UTC)
    name = set_name(s.site, kind, when)
    final = backup_dir / name
    partial = backup_dir / f".{name}.partial"
    partial.mkdir(mode=0o700)  # fails if it exists; no one but root can make names here
    ctx.cleanup(shutil.rmtree, partial, ignore_errors=True)  # gone after the rename; else a failure
    manifest: dict[str, Any] = {
        "format": 1,
        "site": s.site,
        "kind": kind,
        "created": when.isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "run_id": ctx.run_id,
        "wp_path": str(s.wp_path),
        "database": clients.db.name,
        "table_prefix": clients.db.prefix,
        "compress": s.compress,
        "dump_tool": "wp-cli" if s.wp_cli else "mysqldump",
        "verified": False,
    }
    ctx.log.info("backup.started", kind=kind, set=str(final), compress=s.compress, dump_tool=manifest["dump_tool"])
    started = time.monotonic()
    try:
        manifest["table_names"] = clients.table_names(clients.db.name)
        manifest["tables"] = len(manifest["table_names"])
        manifest["files"], archive = write_files(ctx, s, clients, partial, with_files=(kind == "full"))
        if archive:
            manifest["archive"] = archive
    except (CommandFailed, OSError) as exc:
        _fail_write(ctx, s, partial, exc)
    manifest["write_s"] = round(time.monotonic() - started, 3)
    total = sum(f["bytes"] for f in manifest["files"].values())
    ctx.log.info("backup.written", set=str(final), bytes=total, write_s=manifest["write_s"], tables=manifest["tables"])

    started = time.monotonic()
    try:
        verify(ctx, partial, manifest, clients)
        manifest["verified"] = True
    except (CommandFailed, BackupError, OSError) as exc:
        manifest["verify_error"] = str(exc)
    manifest["verify_s"] = round(time.monotonic() - started, 3)
    atomic_write(str(partial / MANIFEST), json_bytes(manifest), 0o600)
    sign_set(partial, key)
    os.replace(partial, final)
    fsync_dir(backup_dir)
    if not manifest["verified"]:
        ctx.log.error(
            "backup.unverified", set=str(final), reason=manifest["verify_error"], verify_s=manifest["verify_s"]
        )
        raise BackupError(f"backup {final} failed verification: {manifest['verify_error']}")
    ctx.log.info(
        "backup.verified",
        set=str(final),
        verified=True,
        verify_s=manifest["verify_s"],
        write_s=manifest["write_s"],
        bytes=total,
    )
    return final


def write_files(
    ctx: JobContext, s: Settings, clients: Clients, out: Path, *, with_files: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Archive and dump side by side; fsync and checksum each file (the archive's SHA-256 fed
    by its writer as it writes, the dump's read back as it grows). Returns the files'
    ``{"bytes", "sha256"}`` and what went into the archive (``jobs._archive``; None without)."""
    codec = CODECS[s.compress]
    dump = out / (DUMP + codec.ext)
    if s.wp_cli:
        dump_cmd = shlex.join(
            wp_command(ctx, s, "db", "export", "-", "--single-transaction", "--quick", "--add-drop-table")
        )
    else:
        dump_cmd = shlex.join(clients.dump_argv())
    # appended to a file made (and followed) beforehand
    dump_script = f"{dump_cmd} | {shlex.join(codec.compress)} >> {shlex.quote(str(dump))}"
    outputs = [dump]
    if with_files:
        outputs.insert(0, out / (FILES + codec.ext))
    for path in outputs:
        path.touch(mode=0o600, exist_ok=False)
    # the dump is hashed as it grows (read back from the page cache); the archive by its
    # writer, as the bytes pass
    followers = [FileFollower(dump)]
    summary = None
    files: dict[str, Any] = {}
    archive_s = dump_s = 0.0
    cpu = _cpu_s()
    try:
        if with_files:  # the archive in this thread, the dump beside it
            from jobs._archive import ArchiveWriter

            writer = ArchiveWriter(ctx, s.wp_path, outputs[0], codec.name, codec.compress)
            dumper = _Background("dump", lambda: ctx.sh(dump_script))
            tree = _tree_bytes(s.wp_path)
            with ctx.progress("files + dump", total=tree, unit="B") as p:
                p.follow(lambda: writer.read)
                started = time.monotonic()
                dumper.start()
                summary = writer.write(check=dumper.check)
                files[outputs[0].name] = writer.written
                archive_s = time.monotonic() - started
                dumper.wait()
                dump_s = dumper.ended - started
                p.update(tree)
        else:  # the compressed dump as it grows: its final size is not known beforehand
            with ctx.progress("dump", unit="B") as p:
                p.follow_file(dump)
                ctx.sh(dump_script)
    except BaseException:
        for follower in followers:
            follower.abandon()
        raise
    synced = time.monotonic()
    files.update({f.path.name: r for f, r in zip(followers, FileFollower.finish_all(followers), strict=True)})
    sync_s = time.monotonic() - synced
    for path in outputs:
        if files[path.name]["bytes"] != path.stat().st_size:
            raise BackupError(f"{path}: {path.stat().st_size} bytes on disk, {files[path.name]['bytes']} read back")
    fsync_dir(out)
    if summary is None:
        return files, None
    if summary.changed or summary.vanished:  # as tar's "file changed as we read it": routine on a live site
        ctx.log.warning(
            "backup.files_changed",
            changed=len(summary.changed),
            vanished=len(summary.vanished),
            files=(summary.changed + summary.vanished)[:20],
        )
    record = summary.record()
    ctx.log.info(
        "backup.archive",
        **record,
        archive_s=round(archive_s, 3),
        dump_s=round(dump_s, 3),
        sync_s=round(sync_s, 3),
        cpu_s=round(_cpu_s() - cpu, 3),
    )
    return files, record


class _Background(threading.Thread):
    """A command run beside the job's thread; ``check()`` raises its failure once it failed."""

    def __init__(self, name: str, fn: Callable[[], object]) -> None:
        super().__init__(name=name, daemon=True)
        self.fn = fn
        self.error: BaseException | None = None
        self.ended = 0.0  # time.monotonic() when it ended

    def run(self) -> None:
        try:
            self.fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def wait(self) -> None:
        while self.is_alive():
            self.join(0.2)
        self.check()


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process's threads and of the commands it waited for."""
    own, waited = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + waited.ru_utime + waited.ru_stime


def _tree_bytes(root: Path) -> int:
    """The bytes of the regular files tar will read under ``root`` (for the progress total)."""
    total = 0
    for top, dirs, names in os.walk(root):
        if top == str(root):
            dirs[:] = [d for d in dirs if not d.startswith((".restore-", ".pre-restore-"))]
        for name in names:
            try:
                info = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if info.st_mode & 0o170000 == 0o100000:
                total += info.st_size
    return total


def _fail_write(ctx: JobContext, s: Settings, partial: Path, exc: BaseException) -> None:
    shutil.rmtree(partial, ignore_errors=True)
    free = shutil.disk_usage(s.backup_dir).free if s.backup_dir.exists() else 0
    text = " ".join(getattr(exc, "tail", ())) + " " + str(exc)
    full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left" in text
    ctx.log.error("backup.partial_removed", path=str(partial), reason="no space left" if full else "write failed")
    if full:
        raise BackupError(
            f"no space left on device in {s.backup_dir} ({free // 1024} KiB free); "
            "the partial set was removed, older sets are untouched"
        ) from None
    raise BackupError(f"writing the backup failed: {exc}; the partial set was removed") from exc


def verify(ctx: JobContext, set_dir: Path, manifest: dict[str, Any], clients: Clients) -> None:
    """Read the archive back, re-check checksums, load the dump into a scratch database."""
    problems = check_manifest(set_dir, manifest)
    if problems:
        raise BackupError("; ".join(problems))
    dump = next(n for n in manifest["files"] if n.startswith(DUMP))
    # The decompressors' reads, against the set's compressed bytes: the archive, then the dump.
    compressed = sum(f["bytes"] for f in manifest["files"].values())
    with ctx.progress("verify", total=compressed, unit="B") as p:
        p.follow_commands(command=codec_for(dump).decompress[0])
        for name in manifest["files"]:
            path = shlex.quote(str(set_dir / name))
            unzip = shlex.join(codec_for(name).decompress)
            if name.startswith(FILES):
                ctx.sh(f"{unzip} {path} | tar --list --file=- > /dev/null")
        scratch = f"{clients.db.name}_verify_{secrets.token_hex(4)}"
        ctx.cleanup(lambda: clients.query(f"DROP DATABASE IF EXISTS {sql_ident(scratch)}"))
        clients.query(f"CREATE DATABASE {sql_ident(scratch)}")
        mysql = shlex.join(clients.load_argv(scratch))
        ctx.sh(f"{shlex.join(codec_for(dump).decompress)} {shlex.quote(str(set_dir / dump))} | {mysql}")
        p.update(compressed)
    restored = clients.table_names(scratch)
    ctx.log.info("backup.restore_checked", scratch_db=scratch, tables=len(restored), expected=manifest["tables"])
    if restored != manifest["table_names"]:
        missing = sorted(set(manifest["table_names"]) - set(restored))
        raise BackupError(
            f"the dump restored {len(restored)} tables, the source had {manifest['tables']}"
            + (f" (missing: {', '.join(missing[:10])})" if missing else "")
        )
    clients.query(f"DROP DATABASE IF EXISTS {sql_ident(scratch)}")
