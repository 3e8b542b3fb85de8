"""Flush the WordPress object cache every six hours, as www-data.

With wp-cli: ``wp cache flush``. Without it, a few lines of PHP load WordPress (wp-load.php,
so the site's object-cache.php drop-in — Redis, Memcached, APCu — is the one flushed) and call
``wp_cache_flush()``; a false return fails the run.
"""

from __future__ import annotations

from jobrunner import JobContext, job
from jobs._wp import DEFAULT_WP_PATH, INSTANCE_WP_PATH, SITE_INSTANCES, require_site, settings, wp_command

# The path comes in as an argument, never interpolated into code.
FLUSH_PHP = (
    "define('WP_USE_THEMES', false);"
    "if (!isset($_SERVER['HTTP_HOST'])) { $_SERVER['HTTP_HOST'] = 'localhost'; }"
    "require $argv[1] . '/wp-load.php';"
    "$ok = wp_cache_flush();"
    'fwrite(STDOUT, $ok ? "flushed\\n" : "flush returned false\\n");'
    "exit($ok ? 0 : 1);"
)


@job(
    schedule="00/6:00",
    accuracy="1m",
    timeout="5m",
    lock=True,
    user="www-data",
    hardening="strict",
    # optional ("-"): the unit must not create or re-own the live site (tmpfiles.d "d" would)
    write_paths=[f"-{DEFAULT_WP_PATH}/wp-content"],
    instance_write_paths=[f"-{INSTANCE_WP_PATH}/wp-content"],
    **SITE_INSTANCES,
    network=False,  # object caches on localhost (Redis, Memcached) stay reachable
)
def wp_cache_flush(ctx: JobContext) -> None:
    """Flush the WordPress object cache (wp cache flush, or wp_cache_flush() via PHP)."""
    s = settings(ctx)
    require_site(s)
    if s.wp_cli:
        ctx.run(wp_command(ctx, s, "cache", "flush"), cwd=s.wp_path)
    else:  # pcre.jit=0: the JIT needs W+X memory, which MemoryDenyWriteExecute= refuses
        ctx.run(
            ["php", "-d", "display_errors=stderr", "-d", "pcre.jit=0", "-r", FLUSH_PHP, "--", str(s.wp_path)],
            cwd=s.wp_path,
        )
    ctx.log.info("wp.cache_flushed", via="wp-cli" if s.wp_cli else "php")
