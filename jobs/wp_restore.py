"""Restore a WordPress backup set (files and database). Run by hand; it has no timer.

    jobrunner run jobs.wp_restore --env-file /etc/jobrunner/restore.env

Settings (besides the shared ones, WP_PATH, BACKUP_DIR, BACKUP_HMAC_KEY_FILE and WP_USER):

- ``RESTORE_SET``: a set directory, a set name in ``BACKUP_DIR``, or ``latest`` (the newest
  authenticated, verified full set of ``WP_SITE``; a database-only set if there is no full
  one). Required.
- ``RESTORE_TARGET_PATH``: where the files go (default ``WP_PATH``).
- ``RESTORE_DB``: the database to load the dump into (default DB_NAME of the restored
  wp-config.php); created if missing. The restored wp-config.php is not rewritten.
- ``RESTORE_FORCE=1``: restore a set whose manifest says it failed verification.
- ``RESTORE_KEEP_OLD=1``: keep the replaced files in ``<target>/.pre-restore-<id>/``.
- ``RESTORE_DROP_EXTRA=1``: drop the tables with the site's ``$table_prefix`` that were
  created after the backup (the set lists its tables), so the database is exactly as backed
  up. Without it they are kept and logged (``restore.extra_tables``); tables of another
  prefix are always kept.

Trust (docs/security.md, "Restore trusts nothing it did not make"): a set is used only when
it is one root made: its ``manifest.hmac`` is the HMAC of its manifest with the key only root
holds, it is not dated in the future, and it, its files and the directories above it are
root's and not writable by anyone else (``jobs._backupsets.authenticate``); anything else
stops the run with exit 78 before anything is read from it, and ``latest`` passes over such
sets (``restore.set_skipped``). The dump is loaded with ``mysql --sandbox`` (client commands
such as ``\\!`` refused) and every database name follows ``--``. The archive is unpacked by
this module, not by tar: never through a symlink, no device or fifo, no setuid/setgid bit, no
link out of the site, no owner or mode from the archive: every file and directory belongs to
``WP_USER`` (default www-data), files 0644 (wp-config.php 0640), directories 0755.

Order: the set is authenticated, then every checksum of the manifest is checked (nothing is
touched on a mismatch); the archive is unpacked into ``<target>/.restore-<id>/`` (0700 root,
same filesystem, so the switch is renames, also when the target is a mount point) and the
restored wp-config.php read (a bad one stops the run here, the site untouched); the current
entries move aside, the restored ones move in; then the dump is loaded. The target directory
keeps its owner (root or ``WP_USER``; others are refused) and loses any group/other write
bit. Every step inside the target, a directory www-data can write, goes through directory
descriptors with ``O_NOFOLLOW``. It holds the backup area lock shared, so ``backup_prune``
cannot delete the set meanwhile.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import shutil
import stat
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from jobrunner import ConfigError, JobContext, Lock, job
from jobrunner.settings import env_bool
from jobs._backupsets import (
    BACKUP_LOCK,
    BackupKey,
    UntrustedSet,
    authenticate,
    check_manifest,
    codec_for,
    list_sets,
    load_key,
    private_dir,
    read_set,
    unsafe_dir,
)
from jobs._wp import (
    DEFAULT_WP_PATH,
    INSTANCE_WP_PATH,
    SITE_INSTANCES,
    Clients,
    Database,
    Settings,
    parse_wp_config,
    read_wp_config,
    settings,
    site_owner,
    sql_ident,
)

OWN_DIRS = (".restore-", ".pre-restore-")  # restore's own entries in the target
DIR_MODE, FILE_MODE, CONFIG_MODE = 0o755, 0o644, 0o640
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class RestoreError(RuntimeError):
    """The set cannot be restored as asked; the message says why."""


@job(
    lock=Lock(name=BACKUP_LOCK, shared=True, wait="10m"),
    timeout="4h",
    hardening="strict",
    # optional ("-"): the unit must not create or re-own the live site (tmpfiles.d "d" would)
    write_paths=[f"-{DEFAULT_WP_PATH}"],
    instance_write_paths=[f"-{INSTANCE_WP_PATH}"],
    network=False,
    # Files are given to WP_USER (chown) inside www-data's directories: these capabilities and
    # the @chown system calls are needed back.
    systemd={
        "Service": {
            "+SystemCallFilter": "@chown",
            "CapabilityBoundingSet": "CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH",
        }
    },
    security_threshold=2.0,
    **SITE_INSTANCES,
)
def wp_restore(ctx: JobContext) -> None:
    """Restore a backup set's files and database (RESTORE_SET=path|name|latest)."""
    s = settings(ctx)
    force = env_bool(ctx.env, "RESTORE_FORCE")
    keep_old = env_bool(ctx.env, "RESTORE_KEEP_OLD")
    drop_extra = env_bool(ctx.env, "RESTORE_DROP_EXTRA")
    wanted = ctx.env.get("RESTORE_SET", "").strip()
    if not wanted:
        raise ConfigError("RESTORE_SET is required: a set directory, a set name in BACKUP_DIR, or 'latest'")
    owner = site_owner(s)
    key = load_key(s.key_file)
    set_dir, manifest = choose_set(ctx, s, key, wanted)
    target = Path(ctx.env.get("RESTORE_TARGET_PATH") or s.wp_path)
    ctx.log.info(
        "restore.planned",
        set=str(set_dir),
        target=str(target),
        kind=manifest.get("kind"),
        created=manifest.get("created"),
        verified=manifest.get("verified"),
        key_id=key.key_id,
    )
    problems = check_manifest(set_dir, manifest)
    if problems:
        raise RestoreError(f"{set_dir}: checksums do not match the manifest: {'; '.join(problems)}; nothing restored")
    ctx.log.info("restore.checksums_ok", files=sorted(manifest["files"]))
    if manifest.get("verified") is not True and not force:
        raise RestoreError(
            f"{set_dir} failed verification ({manifest.get('verify_error')}); set RESTORE_FORCE=1 to restore it anyway"
        )
    if ctx.dry_run:
        return
    archive = next((n for n in manifest["files"] if n.startswith("files.tar")), None)
    dump = next((n for n in manifest["files"] if n.startswith("db.sql")), None)
    if dump is None:
        raise RestoreError(f"{set_dir}: the manifest lists no database dump; nothing restored")
    if archive:
        db = restore_files(ctx, s, set_dir / archive, target, owner, keep_old=keep_old)
    else:
        # the credentials: WP_CONFIG when set, else the target's wp-config.php, else the live one
        config_dir = target if (target / "wp-config.php").is_file() and not s.wp_config else s.wp_path
        db = read_wp_config(config_dir, s.wp_config)
    clients = Clients(ctx, db)
    restore_database(
        ctx, clients, set_dir / dump, ctx.env.get("RESTORE_DB") or clients.db.name, manifest, drop_extra=drop_extra
    )
    ctx.log.info("restore.done", set=str(set_dir), target=str(target))


# --- which set ------------------------------------------------------------------------------


def choose_set(ctx: JobContext, s: Settings, key: BackupKey, wanted: str) -> tuple[Path, dict[str, Any]]:
    """The set to restore and its authenticated manifest (ConfigError, exit 78, otherwise)."""
    if not wanted:
        raise ConfigError("RESTORE_SET is required: a set directory, a set name in BACKUP_DIR, or 'latest'")
    if wanted == "latest":
        return _latest(ctx, s, key)
    path = Path(wanted) if "/" in wanted else s.backup_dir / wanted
    if read_set(path) is None:
        raise ConfigError(f"RESTORE_SET={wanted!r}: {path} is not a backup set directory")
    reason = unsafe_dir(path.parent)
    if reason:
        raise ConfigError(f"RESTORE_SET={wanted!r}: {path} cannot be trusted: {reason}; nothing restored")
    try:
        return path, authenticate(path, key)
    except UntrustedSet as exc:
        raise ConfigError(f"RESTORE_SET={wanted!r}: {path} cannot be trusted: {exc}; nothing restored") from None


def _latest(ctx: JobContext, s: Settings, key: BackupKey) -> tuple[Path, dict[str, Any]]:
    """The newest authenticated, verified full set of the site, else database-only set. Sets
    that fail authentication (planted, tampered, dated in the future) are passed over."""
    backup_dir = private_dir(s.backup_dir, "BACKUP_DIR")
    fallback: tuple[Path, dict[str, Any]] | None = None
    skipped = 0
    for found in reversed(list_sets(backup_dir)):
        try:
            manifest = authenticate(found.path, key)
        except UntrustedSet as exc:
            skipped += 1
            ctx.log.warning("restore.set_skipped", path=str(found.path), reason=str(exc))
            continue
        if manifest.get("site") != s.site:
            continue
        if manifest.get("verified") is not True:
            ctx.log.info("restore.set_skipped", path=str(found.path), reason="failed verification")
            continue
        if manifest.get("kind") == "full":
            return found.path, manifest
        fallback = fallback or (found.path, manifest)
    if fallback:
        return fallback
    raise ConfigError(
        f"RESTORE_SET=latest: no authenticated, verified set of site {s.site!r} in {s.backup_dir}"
        + (f" ({skipped} set(s) passed over: see restore.set_skipped)" if skipped else "")
    )


# --- files ----------------------------------------------------------------------------------


def restore_files(
    ctx: JobContext, s: Settings, archive: Path, target: Path, owner: tuple[int, int], *, keep_old: bool = False
) -> Database:
    """Unpack ``archive`` beside the target's entries, read the restored wp-config.php, then
    swap the entries (``keep_old``: the replaced ones stay in ``.pre-restore-<id>/``). Returns
    the database settings to load the dump with."""
    tag = ctx.run_id.replace("-", "")[:12]
    target_fd = open_target(ctx, target, owner)
    ctx.cleanup(os.close, target_fd)
    staging, aside = f".restore-{tag}", f".pre-restore-{tag}"
    staging_fd = _private_subdir(target_fd, staging, target)
    ctx.cleanup(os.close, staging_fd)
    ctx.cleanup(shutil.rmtree, staging, dir_fd=target_fd, ignore_errors=True)
    summary = unpack(ctx, archive, staging_fd, owner)
    ctx.log.info(
        "restore.unpacked",
        target=str(target),
        files=summary.files,
        dirs=summary.dirs,
        symlinks=summary.symlinks,
        owner=s.wp_user,
    )
    if summary.skipped:
        ctx.log.warning(
            "restore.members_skipped",
            count=len(summary.skipped),
            members=summary.skipped[:20],
            reason="not restored: outside the site, a device or fifo, under a symlink, or a link out of the site",
        )
    if summary.mode_bits_dropped:
        ctx.log.warning(
            "restore.mode_bits_dropped",
            count=len(summary.mode_bits_dropped),
            members=summary.mode_bits_dropped[:20],
            reason="setuid/setgid/sticky in the archive: not restored",
        )
    db = _staged_config(staging_fd, target) if s.wp_config is None else None
    if db is None:  # WP_CONFIG, or no wp-config.php in the archive: the live settings
        db = read_wp_config(s.wp_path, s.wp_config)

    aside_fd = _private_subdir(target_fd, aside, target)
    ctx.cleanup(os.close, aside_fd)
    moved = 0
    for name in os.listdir(target_fd):
        if name.startswith(OWN_DIRS):
            continue
        os.rename(name, name, src_dir_fd=target_fd, dst_dir_fd=aside_fd)
        moved += 1
    try:
        for name in os.listdir(staging_fd):
            os.rename(name, name, src_dir_fd=staging_fd, dst_dir_fd=target_fd)
    except OSError as exc:
        ctx.log.error("restore.switch_failed", target=str(target), previous_files=str(target / aside), error=str(exc))
        raise
    if keep_old:
        ctx.log.info("restore.previous_kept", path=str(target / aside), entries=moved)
    else:
        shutil.rmtree(aside, dir_fd=target_fd)
    ctx.log.info("restore.files_done", target=str(target), replaced_entries=moved)
    return db


def open_target(ctx: JobContext, target: Path, owner: tuple[int, int]) -> int:
    """A descriptor of the target directory. The directories above it must be root's only
    (``unsafe_dir``); the target itself root's or ``WP_USER``'s (made, ``WP_USER``'s and 0755,
    when missing), and it loses group/other write permission."""
    real = Path(os.path.realpath(target))
    what = f"restore target {str(target)!r}"
    if not real.exists():
        private_dir(real.parent, what, create=True, mode=0o755)
        os.mkdir(real, DIR_MODE)
        fd = os.open(real, _DIR)
        os.fchmod(fd, DIR_MODE)
        os.fchown(fd, *owner)
        return fd
    reason = unsafe_dir(real.parent)
    if reason:
        raise ConfigError(f"{what}: {reason}; another user could swap the target")
    try:
        fd = os.open(real, _DIR)
    except OSError as exc:
        raise ConfigError(f"{what}: {exc.strerror}") from None
    st = os.fstat(fd)
    if st.st_uid not in (0, os.geteuid(), owner[0]):
        os.close(fd)
        raise ConfigError(f"{what} is owned by uid {st.st_uid}, neither root nor WP_USER's; refused")
    if st.st_mode & 0o022:
        os.fchmod(fd, st.st_mode & 0o7755)
        ctx.log.warning(
            "restore.target_mode_fixed",
            target=str(target),
            was=f"{st.st_mode & 0o7777:04o}",
            now=f"{st.st_mode & 0o7755:04o}",
        )
    return fd


def _private_subdir(parent_fd: int, name: str, where: Path) -> int:
    """Make ``name`` (0700, ours) in ``parent_fd`` and open it, checking it is the one made."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        raise RestoreError(f"{where / name} already exists; nothing restored") from None
    fd = os.open(name, _DIR, dir_fd=parent_fd)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        os.close(fd)
        raise RestoreError(f"{where / name} was replaced while restoring; stopped")
    return fd


def _staged_config(staging_fd: int, target: Path) -> Database | None:
    """The restored wp-config.php's settings (never through a symlink); None without one."""
    try:
        fd = os.open("wp-config.php", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=staging_fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = handle.read(4 << 20).decode(errors="replace")
    return parse_wp_config(text, target / "wp-config.php (restored)")


@dataclass
class Unpacked:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    skipped: list[str] = field(default_factory=list)
    mode_bits_dropped: list[str] = field(default_factory=list)


class _Skip(Exception):
    pass


class Unpacker:
    """Writes a tar stream's members under a directory descriptor, trusting none of them:
    names are relative and stay inside (no ``..``); every directory on the way is opened with
    ``O_NOFOLLOW`` (a member under a symlink is skipped, never written through it); files are
    created with ``O_EXCL | O_NOFOLLOW``; symlinks only point inside the tree; hard links only
    to files unpacked before; devices, fifos and other types are skipped. Owners and modes
    are the site's (``owner``; DIR_MODE, FILE_MODE, CONFIG_MODE for the top wp-config.php),
    never the archive's; mtimes of files are kept."""

    def __init__(self, root_fd: int, owner: tuple[int, int]) -> None:
        self.root_fd = root_fd
        self.uid, self.gid = owner
        self.done = Unpacked()
        self._files: set[tuple[str, ...]] = set()
        self._not_dirs: set[tuple[str, ...]] = set()  # skipped links: nothing goes "under" them

    @staticmethod
    def split(name: str) -> tuple[str, ...] | None:
        """The path components of a member name, ``()`` for the top, None if unsafe."""
        if name.startswith("/") or "\0" in name:
            return None
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if ".." in parts:
            return None
        return parts

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = self.split(member.name)
        try:
            if parts is None:
                raise _Skip("outside the site")
            if not parts:
                return  # the target directory itself: its owner and mode are not the archive's
            if parts[0].startswith(OWN_DIRS):
                raise _Skip("restore's own directory")
            if any(parts[:i] in self._not_dirs for i in range(1, len(parts))):
                raise _Skip("under a symlink or a file")
            if member.mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
                self.done.mode_bits_dropped.append(member.name)
            parent = self._walk(parts[:-1])
            try:
                self._create(tar, member, parent, parts)
            finally:
                os.close(parent)
        except _Skip as why:
            self.done.skipped.append(f"{member.name} ({why})")
            if parts and not member.isdir():
                self._not_dirs.add(parts)

    def _walk(self, parts: tuple[str, ...], *, create: bool = True) -> int:
        fd = os.dup(self.root_fd)
        try:
            for part in parts:
                try:
                    nxt = os.open(part, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise _Skip("links to a missing file") from None
                    os.mkdir(part, 0o700, dir_fd=fd)
                    nxt = os.open(part, _DIR, dir_fd=fd)
                    self._own(nxt, DIR_MODE)
                    self.done.dirs += 1
                except OSError:  # ELOOP (a symlink), ENOTDIR (a file)
                    raise _Skip("under a symlink or a file") from None
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _own(self, fd: int, mode: int) -> None:
        os.fchmod(fd, mode)  # before the chown: the owner (root) may change the mode
        os.fchown(fd, self.uid, self.gid)

    def _clear(self, parent: int, name: str, *, keep_dir: bool = False) -> bool:
        """Remove what ``name`` is now (a later member replaces an earlier one); True if it is
        a directory that stays."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            raise _Skip("a directory of that name exists")
        os.unlink(name, dir_fd=parent)
        return False

    def _create(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int, parts: tuple[str, ...]) -> None:
        name = parts[-1]
        if member.isdir():
            if not self._clear(parent, name, keep_dir=True):
                os.mkdir(name, 0o700, dir_fd=parent)
                self.done.dirs += 1
            fd = os.open(name, _DIR, dir_fd=parent)
            try:
                self._own(fd, DIR_MODE)
            finally:
                os.close(fd)
        elif member.isreg():
            self._clear(parent, name)
            fd = os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent
            )
            with os.fdopen(fd, "wb") as out:
                source = tar.extractfile(member)
                if source is not None:
                    shutil.copyfileobj(source, out, 1 << 20)
                out.flush()
                os.utime(fd, (member.mtime, member.mtime))
                self._own(fd, CONFIG_MODE if parts == ("wp-config.php",) else FILE_MODE)
            self._files.add(parts)
            self.done.files += 1
        elif member.issym():
            link = member.linkname
            inside = posixpath.normpath(posixpath.join(*parts[:-1], link) if len(parts) > 1 else link)
            if not link or link.startswith("/") or inside == ".." or inside.startswith("../"):
                raise _Skip("a symlink out of the site")
            self._clear(parent, name)
            os.symlink(link, name, dir_fd=parent)
            os.chown(name, self.uid, self.gid, dir_fd=parent, follow_symlinks=False)
            self.done.symlinks += 1
        elif member.islnk():
            linked = self.split(member.linkname)
            if not linked or linked not in self._files:
                raise _Skip("a hard link to a file not restored before it")
            self._clear(parent, name)
            src_parent = self._walk(linked[:-1], create=False)
            try:
                os.link(linked[-1], name, src_dir_fd=src_parent, dst_dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(src_parent)
            self._files.add(parts)
            self.done.files += 1
        else:
            raise _Skip("a device, fifo or other special file")


def unpack(ctx: JobContext, archive: Path, staging_fd: int, owner: tuple[int, int]) -> Unpacked:
    """Decompress ``archive`` (through ``ctx.run``, so the deadline stops it) and unpack the
    tar stream into ``staging_fd`` with ``Unpacker``."""
    archive_fd = os.open(archive, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    read_end, write_end = os.pipe()
    failed: list[BaseException] = []

    def decompress() -> None:
        try:
            ctx.run(list(codec_for(archive.name).decompress), stdin=archive_fd, stdout=write_end)
        except BaseException as exc:  # reported below, unless unpacking failed first
            failed.append(exc)
        finally:
            os.close(write_end)

    worker = threading.Thread(target=decompress, name=f"decompress {archive.name}", daemon=True)
    size = os.fstat(archive_fd).st_size
    unpacker = Unpacker(staging_fd, owner)
    # The decompressor reads the archive through the descriptor it inherited: its offset,
    # shared with ours, is how far it got (read from here, never a byte through us).
    with ctx.progress("files", total=size, unit="B") as p:
        p.follow(lambda: os.lseek(archive_fd, 0, os.SEEK_CUR))
        worker.start()
        try:
            with os.fdopen(read_end, "rb") as stream:
                _unpack_stream(stream, unpacker)
                while stream.read(1 << 20):  # the tar's padding: let the decompressor finish
                    pass
        finally:
            worker.join()
            p.update(os.lseek(archive_fd, 0, os.SEEK_CUR))
            os.close(archive_fd)
    if failed:
        raise failed[0]
    return unpacker.done


def _unpack_stream(stream: IO[bytes], unpacker: Unpacker) -> None:
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                unpacker.add(tar, member)
    except tarfile.TarError as exc:
        raise RestoreError(f"the files archive is not a readable tar: {exc}; nothing restored") from None


# --- database -------------------------------------------------------------------------------


def restore_database(
    ctx: JobContext, clients: Clients, dump: Path, database: str, manifest: dict[str, Any], *, drop_extra: bool = False
) -> None:
    clients.query(f"CREATE DATABASE IF NOT EXISTS {sql_ident(database)}")
    mysql = clients.load_argv(database)  # --sandbox: a "\!" in the dump is refused, not run
    unzip = codec_for(dump.name).decompress
    dump_fd = os.open(dump, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        # how far the decompressor read: the offset of the descriptor it shares with us
        with ctx.progress("database", total=os.fstat(dump_fd).st_size, unit="B") as p:
            p.follow(lambda: os.lseek(dump_fd, 0, os.SEEK_CUR))
            ctx.sh(f"{shlex.join(unzip)} | {shlex.join(mysql)}", stdin=dump_fd)
            p.update(os.lseek(dump_fd, 0, os.SEEK_CUR))
    finally:
        os.close(dump_fd)
    tables = clients.table_names(database)
    expected = manifest.get("tables")
    ctx.log.info("restore.db_done", database=database, tables=len(tables), expected=expected)
    backed_up = manifest.get("table_names")
    if backed_up is not None:
        missing = sorted(set(backed_up) - set(tables))
        if missing:
            raise RestoreError(
                f"database {database} lacks {len(missing)} table(s) of the backup after the restore: "
                f"{', '.join(missing[:10])}"
            )
        drop_extra_tables(ctx, clients, database, sorted(set(tables) - set(backed_up)), drop=drop_extra)
    elif expected is not None and len(tables) < expected:
        raise RestoreError(f"database {database} has {len(tables)} tables after the restore, the backup had {expected}")
    elif expected is not None and len(tables) > expected:
        ctx.log.warning(
            "restore.extra_tables",
            database=database,
            extra=len(tables) - expected,
            reason="tables created after the backup were left in place (this set lists no table names)",
        )


def drop_extra_tables(
    ctx: JobContext, clients: Clients, database: str, extra: list[str], *, drop: bool = False
) -> None:
    """Tables that exist now but were not in the backup: created after it (a plugin installed
    since, say). With ``drop`` (RESTORE_DROP_EXTRA=1) those with the site's ``$table_prefix`` are dropped,
    so the database is as it was; tables of other prefixes (another site sharing the database)
    are never touched. Without it they are kept and listed."""
    if not extra:
        return
    prefix = clients.db.prefix
    ours = [t for t in extra if t.startswith(prefix)]
    if drop and ours:
        clients.query(f"DROP TABLE IF EXISTS {', '.join(sql_ident(t) for t in ours)}", database)
        ctx.log.info("restore.extra_dropped", database=database, tables=ours)
        extra = [t for t in extra if t not in ours]
    if extra:
        hint = (
            "not this site's prefix: kept"
            if drop
            else f"kept; RESTORE_DROP_EXTRA=1 drops those with the prefix {prefix!r}"
        )
        ctx.log.warning("restore.extra_tables", database=database, extra=len(extra), tables=extra[:20], reason=hint)
