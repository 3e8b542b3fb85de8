"""Nightly WordPress database export: a consistent dump as its own verified set.

The set is ``<BACKUP_DIR>/<site>-db-<UTC stamp>/`` with ``db.sql.zst`` and ``manifest.json``,
written, checked and published exactly like ``wp_backup``'s (same code): built as a
``.partial`` directory, dumped with ``--single-transaction --quick`` (``wp db export`` when
wp-cli is installed, else ``mysqldump`` with wp-config.php's credentials), fsync'd,
checksummed, loaded into a scratch database to prove it restores, then renamed.
"""

from __future__ import annotations

from jobrunner import JobContext, job
from jobs._wp import BACKUP_SLOTS, DEFAULT_BACKUP_DIR, INSTANCE_BACKUP_DIR, SITE_INSTANCES
from jobs.wp_backup import SITE_READER, run_backup


@job(
    schedule="02:30",
    persistent=True,
    jitter="5m",
    accuracy="1m",
    timeout="1h",
    lock=True,
    hardening="strict",
    write_paths=[DEFAULT_BACKUP_DIR],
    instance_write_paths=[INSTANCE_BACKUP_DIR],
    concurrency=BACKUP_SLOTS,
    network=False,
    **SITE_READER,
    **SITE_INSTANCES,
)
def wp_db_export(ctx: JobContext) -> None:
    """WordPress database dump (--single-transaction), verified, into BACKUP_DIR."""
    run_backup(ctx, kind="db")
