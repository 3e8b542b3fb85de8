"""Optimize the WordPress database's tables every Monday at 03:00.

With wp-cli: ``wp db optimize``; without it, ``mysqlcheck --optimize`` on the database named
in wp-config.php (credentials from an option file, never the command line). On InnoDB this
rebuilds each table ("doing recreate + analyze instead" in the log is normal).
"""

from __future__ import annotations

from jobrunner import JobContext, job
from jobs._wp import SITE_INSTANCES, Clients, read_wp_config, require_site, settings, wp_command


@job(
    schedule="Mon 03:00",
    accuracy="1m",
    timeout="1h",
    lock=True,
    hardening="strict",
    network=False,
    # root, but the strict sandbox drops every capability: reading a wp-config.php that is
    # 0640 www-data needs CAP_DAC_READ_SEARCH back.
    systemd={"Service": {"CapabilityBoundingSet": "CAP_DAC_READ_SEARCH"}},
    security_threshold=2.0,
    **SITE_INSTANCES,
)
def wp_db_optimize(ctx: JobContext) -> None:
    """Optimize WordPress's tables (wp db optimize, or mysqlcheck --optimize)."""
    s = settings(ctx)
    require_site(s)
    if s.wp_cli:
        ctx.run(wp_command(ctx, s, "db", "optimize"), cwd=s.wp_path)
        ctx.log.info("wp.db_optimized", via="wp-cli")
        return
    clients = Clients(ctx, read_wp_config(s.wp_path, s.wp_config))
    ctx.run(clients.argv("mysqlcheck", "--optimize", "--", clients.db.name))  # never an option
    ctx.log.info("wp.db_optimized", via="mysqlcheck", database=clients.db.name)
