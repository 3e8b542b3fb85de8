"""Nightly WordPress database export: a consistent dump as its own verified set.

The set is ``<BACKUP_DIR>/<site>-db-<UTC stamp>/`` with ``db.sql.zst`` and ``manifest.json``,
written, checked and published exactly like ``wp_backup``'s (same code): built as a
``.partial`` directory, dumped with ``--single-transaction --quick`` (``wp db export`` when
wp-cli is installed, else ``mysqldump`` with wp-config.php's credentials), fsync'd,
checksummed, loaded into a scratch database to prove it restores, then renamed.
"""

from __future__ import annotations

from jobrunner import job

from jobs._wp import DEFAULT_BACKUP_DIR, Clients, hold_backup_lock, read_wp_config, require_site, settings
from jobs.wp_backup import backup_set


@job(
    schedule="02:30",
    persistent=True,
    jitter="5m",
    accuracy="1m",
    timeout="1h",
    lock=True,
    hardening="strict",
    write_paths=[DEFAULT_BACKUP_DIR],
    network=False,
    # root, but the strict sandbox drops every capability: reading a wp-config.php that is
    # 0640 www-data (and uploads of any mode) needs CAP_DAC_READ_SEARCH back.
    systemd={"Service": {"CapabilityBoundingSet": "CAP_DAC_READ_SEARCH"}},
    security_threshold=2.0,
)
def wp_db_export(ctx):
    """WordPress database dump (--single-transaction), verified, into BACKUP_DIR."""
    s = settings(ctx)
    require_site(s)
    clients = Clients(ctx, read_wp_config(s.wp_path))
    if ctx.dry_run:
        ctx.log.info("backup.planned", kind="db", site=s.site, backup_dir=str(s.backup_dir), compress=s.compress)
        return
    hold_backup_lock(ctx, shared=True, wait=3600)
    backup_set(ctx, s, clients, kind="db")
