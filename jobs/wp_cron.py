"""Run WordPress's due cron events every 15 minutes, as www-data.

Pair it with ``define('DISABLE_WP_CRON', true);`` in wp-config.php so page views stop
triggering cron. With wp-cli: ``wp cron event run --due-now``; without it, ``php wp-cron.php``
run in the WordPress directory (what a page view would have spawned over HTTP).
"""

from __future__ import annotations

from jobrunner import JobContext, job
from jobs._wp import DEFAULT_WP_PATH, INSTANCE_WP_PATH, SITE_INSTANCES, require_site, settings, wp_command


@job(
    schedule="*:0/15",
    accuracy="1m",
    timeout="14m",
    lock=True,
    user="www-data",
    hardening="strict",
    # optional ("-"): the unit must not create or re-own the live site (tmpfiles.d "d" would)
    write_paths=[f"-{DEFAULT_WP_PATH}/wp-content"],
    instance_write_paths=[f"-{INSTANCE_WP_PATH}/wp-content"],
    **SITE_INSTANCES,
    network=True,  # cron events fetch updates, send mail, ping services
)
def wp_cron(ctx: JobContext) -> None:
    """Run due WordPress cron events (wp cron event run --due-now, or php wp-cron.php)."""
    s = settings(ctx)
    require_site(s)
    if s.wp_cli:
        ctx.run(wp_command(ctx, s, "cron", "event", "run", "--due-now"), cwd=s.wp_path)
    else:  # pcre.jit=0: the JIT needs W+X memory, which MemoryDenyWriteExecute= refuses
        ctx.run(["php", "-d", "display_errors=stderr", "-d", "pcre.jit=0", "wp-cron.php"], cwd=s.wp_path)
    ctx.log.info("wp.cron_ran", via="wp-cli" if s.wp_cli else "php")
