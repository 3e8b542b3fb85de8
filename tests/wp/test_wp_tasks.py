"""wp_cron, wp_cache_flush, wp_db_optimize, wp_db_export: the direct path on the real stack,
the wp-cli path through a recording stand-in."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from . import stack

pytestmark = pytest.mark.slow


def _schedule_event(site):
    stack.php(
        site,
        "$_SERVER['HTTP_HOST']='localhost'; require $argv[1] . '/wp-load.php';"
        "wp_schedule_single_event(time() - 60, 'jr_test_event');",
    )


def test_wp_cron_runs_due_events_with_php(site_env, site):
    """Without wp-cli, `php wp-cron.php` runs in WP_PATH and the due event fires."""
    _schedule_event(site)
    marker = site / "wp-content" / "cron-ran"
    assert not marker.exists()
    run = site_env.run("wp_cron")
    assert run.returncode == 0, run.stdout[-3000:]
    assert marker.exists()
    started = run.event("proc.started")
    assert started["argv"][-1] == "wp-cron.php"
    assert run.event("wp.cron_ran")["via"] == "php"


def test_wp_cache_flush_flushes_through_wordpress(site_env, site):
    """Without wp-cli, the PHP snippet boots WordPress and its object cache's flush() runs."""
    run = site_env.run("wp_cache_flush")
    assert run.returncode == 0, run.stdout[-3000:]
    assert (site / "wp-content" / "cache-flushed").exists()
    assert any(e.get("line") == "flushed" for e in run.events)


def test_wp_db_optimize_runs_mysqlcheck(site_env):
    """Without wp-cli, mysqlcheck --optimize covers every WordPress table, password unseen."""
    run = site_env.run("wp_db_optimize")
    assert run.returncode == 0, run.stdout[-3000:]
    argv = run.event("proc.started")["argv"]
    assert argv[0] == "mysqlcheck" and argv[1].startswith("--defaults-extra-file=") and "--optimize" in argv
    lines = " ".join(e.get("line", "") for e in run.events if e["event"] == "proc.output")
    assert "jrt_posts" in lines and "jrt_options" in lines


def test_wp_db_export_writes_a_verified_db_set(wp_env):
    """A database-only set <site>-db-<stamp> with db.sql.zst and a verified manifest."""
    run = wp_env.run("wp_db_export")
    assert run.returncode == 0, run.stdout[-3000:]
    [set_dir] = wp_env.sets()
    assert set_dir.name.startswith("testsite-db-")
    assert sorted(p.name for p in set_dir.iterdir()) == ["db.sql.zst", "manifest.hmac", "manifest.json"]
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["verified"] is True and manifest["kind"] == "db" and manifest["dump_tool"] == "mysqldump"
    started = [e for e in run.events if e["event"] == "proc.started"]
    assert all(stack.DB_PASSWORD not in " ".join(e["argv"]) for e in started)
    assert any("--single-transaction" in " ".join(e["argv"]) for e in started)


def test_gzip_is_chosen_by_config(wp_env):
    """BACKUP_COMPRESS=gzip gives db.sql.gz, verified the same way."""
    run = wp_env.run("wp_db_export", BACKUP_COMPRESS="gzip")
    assert run.returncode == 0, run.stdout[-3000:]
    [set_dir] = wp_env.sets()
    assert (set_dir / "db.sql.gz").exists()
    assert subprocess.run(["gzip", "-t", str(set_dir / "db.sql.gz")]).returncode == 0


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("wp_cron", ["cron", "event", "run", "--due-now"]),
        ("wp_cache_flush", ["cache", "flush"]),
        ("wp_db_optimize", ["db", "optimize"]),
    ],
)
def test_wp_cli_is_used_when_on_path(wp_env, wp_standin, wp_stack, module, expected):
    """With `wp` on PATH, the job runs it with --path (and --allow-root as root)."""
    wp_standin.install(wp_env)
    run = wp_env.run(module)
    assert run.returncode == 0, run.stdout[-3000:]
    [call] = wp_standin.calls()
    assert call["argv"][: len(expected)] == expected
    assert f"--path={wp_stack.site}" in call["argv"]
    assert ("--allow-root" in call["argv"]) == (os.geteuid() == 0)


def test_wp_db_export_uses_wp_cli_when_on_path(wp_env, wp_standin, wp_stack):
    """With `wp` on PATH the dump comes from `wp db export -`; the set is still verified."""
    wp_standin.install(wp_env)
    run = wp_env.run("wp_db_export")
    calls = wp_standin.calls()
    assert [c["argv"][:3] for c in calls] == [["db", "export", "-"]]
    assert "--single-transaction" in calls[0]["argv"] and not calls[0]["pwd_env"]
    # the stand-in's dump has 1 table, the source 12: verification must catch the mismatch
    assert run.returncode == 1
    assert "restored 1 tables, the source had 12" in run.event("backup.unverified")["reason"]
    [set_dir] = wp_env.sets()
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["verified"] is False and manifest["dump_tool"] == "wp-cli"


def test_wp_cli_setting_must_be_executable(wp_env, tmp_path):
    """WP_CLI naming a missing file is a configuration error (exit 78), nothing written."""
    run = wp_env.run("wp_cron", WP_CLI=str(tmp_path / "nope"))
    assert run.returncode == 78
    assert not wp_env.backup_dir.exists()


DEBIAN_DISPATCHER = "/usr/share/wordpress/wp-config.php"  # from Debian's wordpress package


def test_debian_dispatcher_layout_needs_and_uses_wp_config(site_env, site, tmp_path):
    """A site whose wp-config.php is Debian's dispatcher (the real file of the wordpress package)
    and whose credentials live in a config-<host>.php elsewhere: without WP_CONFIG the database
    jobs exit 78 naming it; with WP_CONFIG the export is verified and optimize runs."""
    if not os.path.isfile(DEBIAN_DISPATCHER):
        pytest.skip("Debian's wordpress package is not installed (see .ci/run)")
    etc = tmp_path / "etc-wordpress"
    etc.mkdir()
    host_config = etc / "config-blog.example.test.php"
    os.rename(site / "wp-config.php", host_config)
    (site / "wp-config.php").write_text(open(DEBIAN_DISPATCHER).read())

    refused = site_env.run("wp_db_export")
    assert refused.returncode == 78, refused.stdout[-2000:]
    message = refused.event("job.failed")["exception"]["message"]
    assert "Debian's wordpress dispatcher" in message and "WP_CONFIG=/etc/wordpress/config-" in message

    export = site_env.run("wp_db_export", WP_CONFIG=str(host_config))
    assert export.returncode == 0, export.stdout[-3000:]
    assert export.event("backup.verified")
    optimize = site_env.run("wp_db_optimize", WP_CONFIG=str(host_config))
    assert optimize.returncode == 0, optimize.stdout[-3000:]
    assert optimize.event("wp.db_optimized")["via"] == "mysqlcheck"
    missing = site_env.run("wp_db_export", WP_CONFIG=str(etc / "config-nope.php"))
    assert missing.returncode == 78 and "WP_CONFIG=" in missing.event("job.failed")["exception"]["message"]
