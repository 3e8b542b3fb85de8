"""Restore a WordPress backup set (files and database). Run by hand; it has no timer.

    jobrunner run jobs.wp_restore --env-file /etc/jobrunner/restore.env

Settings (besides the shared ones, WP_PATH and BACKUP_DIR):

- ``RESTORE_SET``: a set directory, a set name in ``BACKUP_DIR``, or ``latest`` (the newest
  verified full set of ``WP_SITE``; a database-only set if there is no full one). Required.
- ``RESTORE_TARGET_PATH``: where the files go (default ``WP_PATH``).
- ``RESTORE_DB``: the database to load the dump into (default DB_NAME of the target's
  wp-config.php); created if missing. The restored wp-config.php is not rewritten.
- ``RESTORE_FORCE=1``: restore a set whose manifest says it failed verification.
- ``RESTORE_KEEP_OLD=1``: keep the replaced files in ``<target>/.pre-restore-<id>/``.
- ``RESTORE_DROP_EXTRA=1``: drop the tables with the site's ``$table_prefix`` that were
  created after the backup (the set lists its tables), so the database is exactly as backed
  up. Without it they are kept and logged (``restore.extra_tables``); tables of another
  prefix are always kept.

Order: every checksum of the manifest is checked first (nothing is touched on a mismatch);
the archive is extracted into ``<target>/.restore-<id>/`` (same filesystem, so the switch is
renames, also when the target is a mount point); the current entries move aside, the restored
ones move in; then the dump is loaded with the credentials of the restored wp-config.php.
It holds the backup area lock shared, so ``backup_prune`` cannot delete the set meanwhile.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

from jobrunner import ConfigError, Lock, job

from jobs._backupsets import BACKUP_LOCK, MANIFEST, check_manifest, codec_for, list_sets, read_set
from jobs._wp import DEFAULT_WP_PATH, Clients, Settings, read_wp_config, settings, sql_ident


class RestoreError(RuntimeError):
    """The set cannot be restored as asked; the message says why."""


@job(
    lock=Lock(name=BACKUP_LOCK, shared=True, wait="10m"),
    timeout="4h",
    hardening="strict",
    # optional ("-"): the unit must not create or re-own the live site (tmpfiles.d "d" would)
    write_paths=[f"-{DEFAULT_WP_PATH}"],
    network=False,
    # Files are restored with their owners and modes (tar --same-owner): chown and writing into
    # www-data's directories need these capabilities and the @chown system calls back.
    systemd={"Service": {"+SystemCallFilter": "@chown",
                         "CapabilityBoundingSet": "CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH"}},
    security_threshold=2.0,
)
def wp_restore(ctx):
    """Restore a backup set's files and database (RESTORE_SET=path|name|latest)."""
    s = settings(ctx)
    set_dir = choose_set(s, ctx.env.get("RESTORE_SET", "").strip())
    try:
        manifest = json.loads((set_dir / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise RestoreError(f"{set_dir}: unreadable {MANIFEST}: {exc}") from None
    target = Path(ctx.env.get("RESTORE_TARGET_PATH") or s.wp_path)
    ctx.log.info("restore.planned", set=str(set_dir), target=str(target), kind=manifest.get("kind"),
                 created=manifest.get("created"), verified=manifest.get("verified"))
    problems = check_manifest(set_dir, manifest)
    if problems:
        raise RestoreError(f"{set_dir}: checksums do not match the manifest: {'; '.join(problems)}; nothing restored")
    ctx.log.info("restore.checksums_ok", files=sorted(manifest["files"]))
    if manifest.get("verified") is not True and ctx.env.get("RESTORE_FORCE") != "1":
        raise RestoreError(f"{set_dir} failed verification ({manifest.get('verify_error')}); set RESTORE_FORCE=1 to restore it anyway")
    if ctx.dry_run:
        return
    archive = next((n for n in manifest["files"] if n.startswith("files.tar")), None)
    if archive:
        restore_files(ctx, set_dir / archive, target)
    # the credentials: WP_CONFIG when set, else the restored wp-config.php, else the live one
    config_dir = target if (target / "wp-config.php").is_file() and not s.wp_config else s.wp_path
    clients = Clients(ctx, read_wp_config(config_dir, s.wp_config))
    dump = next(n for n in manifest["files"] if n.startswith("db.sql"))
    restore_database(ctx, clients, set_dir / dump, ctx.env.get("RESTORE_DB") or clients.db.name, manifest)
    ctx.log.info("restore.done", set=str(set_dir), target=str(target))


def choose_set(s: Settings, wanted: str) -> Path:
    if not wanted:
        raise ConfigError("RESTORE_SET is required: a set directory, a set name in BACKUP_DIR, or 'latest'")
    if wanted == "latest":
        sets = [x for x in list_sets(s.backup_dir, s.site) if x.verified]
        full = [x for x in sets if x.kind == "full"]
        if not (full or sets):
            raise ConfigError(f"RESTORE_SET=latest: no verified set of site {s.site!r} in {s.backup_dir}")
        return (full or sets)[-1].path
    path = Path(wanted) if "/" in wanted else s.backup_dir / wanted
    if read_set(path) is None:
        raise ConfigError(f"RESTORE_SET={wanted!r}: {path} is not a backup set directory")
    return path


def restore_files(ctx: Any, archive: Path, target: Path) -> None:
    tag = ctx.run_id.replace("-", "")[:12]
    target.mkdir(parents=True, exist_ok=True)
    staging, aside = target / f".restore-{tag}", target / f".pre-restore-{tag}"
    ctx.cleanup(shutil.rmtree, staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    unzip = shlex.join(codec_for(archive.name).decompress)
    ctx.sh(f"{unzip} {shlex.quote(str(archive))} | tar --extract --file=- --same-owner --preserve-permissions "
           f"-C {shlex.quote(str(staging))}")
    aside.mkdir(mode=0o700)
    moved = 0
    for entry in list(target.iterdir()):
        if entry.name.startswith((".restore-", ".pre-restore-")):
            continue
        os.rename(entry, aside / entry.name)
        moved += 1
    try:
        for entry in list(staging.iterdir()):
            os.rename(entry, target / entry.name)
    except OSError as exc:
        ctx.log.error("restore.switch_failed", target=str(target), previous_files=str(aside), error=str(exc))
        raise
    st = staging.stat()
    os.chown(target, st.st_uid, st.st_gid)
    os.chmod(target, st.st_mode & 0o7777)
    if ctx.env.get("RESTORE_KEEP_OLD") == "1":
        ctx.log.info("restore.previous_kept", path=str(aside), entries=moved)
    else:
        shutil.rmtree(aside)
    ctx.log.info("restore.files_done", target=str(target), replaced_entries=moved)


def restore_database(ctx: Any, clients: Clients, dump: Path, database: str, manifest: dict[str, Any]) -> None:
    clients.query(f"CREATE DATABASE IF NOT EXISTS {sql_ident(database)}")
    mysql = shlex.join(clients.argv("mysql", database))
    ctx.sh(f"{shlex.join(codec_for(dump.name).decompress)} {shlex.quote(str(dump))} | {mysql}")
    tables = clients.table_names(database)
    expected = manifest.get("tables")
    ctx.log.info("restore.db_done", database=database, tables=len(tables), expected=expected)
    backed_up = manifest.get("table_names")
    if backed_up is not None:
        missing = sorted(set(backed_up) - set(tables))
        if missing:
            raise RestoreError(f"database {database} lacks {len(missing)} table(s) of the backup after the restore: "
                               f"{', '.join(missing[:10])}")
        drop_extra_tables(ctx, clients, database, sorted(set(tables) - set(backed_up)))
    elif expected is not None and len(tables) < expected:
        raise RestoreError(f"database {database} has {len(tables)} tables after the restore, the backup had {expected}")
    elif expected is not None and len(tables) > expected:
        ctx.log.warning("restore.extra_tables", database=database, extra=len(tables) - expected,
                        reason="tables created after the backup were left in place (this set lists no table names)")


def drop_extra_tables(ctx: Any, clients: Clients, database: str, extra: list[str]) -> None:
    """Tables that exist now but were not in the backup: created after it (a plugin installed
    since, say). With RESTORE_DROP_EXTRA=1 those with the site's ``$table_prefix`` are dropped,
    so the database is as it was; tables of other prefixes (another site sharing the database)
    are never touched. Without it they are kept and listed."""
    if not extra:
        return
    prefix = clients.db.prefix
    ours = [t for t in extra if t.startswith(prefix)]
    if ctx.env.get("RESTORE_DROP_EXTRA") == "1" and ours:
        clients.query(f"DROP TABLE IF EXISTS {', '.join(sql_ident(t) for t in ours)}", database)
        ctx.log.info("restore.extra_dropped", database=database, tables=ours)
        extra = [t for t in extra if t not in ours]
    if extra:
        hint = ("not this site's prefix: kept" if ctx.env.get("RESTORE_DROP_EXTRA") == "1"
                else f"kept; RESTORE_DROP_EXTRA=1 drops those with the prefix {prefix!r}")
        ctx.log.warning("restore.extra_tables", database=database, extra=len(extra), tables=extra[:20], reason=hint)
