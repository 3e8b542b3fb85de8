"""wp_backup and wp_cron under real systemd: the rendered, hardened units (strict sandbox,
IP denied but localhost, capabilities dropped but CAP_DAC_READ_SEARCH) on Debian's own
mariadb.service and a WordPress site in /var/www/html whose wp-config.php is 0640 www-data.

Uses the systemd sandbox of tests/systemd (a throwaway systemd over an overlay of /).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from . import stack

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

SITE = "/var/www/html"
UNITS = ("wp-backup", "wp-cron", "wp-db-export", "wp-db-optimize", "wp-cache-flush", "backup-prune", "wp-restore")


@pytest.fixture(scope="module")
def wp_sandbox(installed_sandbox):  # noqa: F811
    if stack.missing_tools():
        pytest.skip(f"WordPress stack not installed: {stack.missing_tools()}")
    sb = installed_sandbox
    sb.systemctl("start", "mariadb.service", timeout=120)
    pw = stack.MariaDB.quote(stack.DB_PASSWORD)
    sb.run(["mariadb", "-e",
            f"CREATE DATABASE IF NOT EXISTS wordpress; CREATE USER IF NOT EXISTS '{stack.DB_USER}'@'localhost' IDENTIFIED BY {pw};"
            f"GRANT ALL ON wordpress.* TO '{stack.DB_USER}'@'localhost';"
            f"GRANT ALL ON `wordpress\\_verify\\_%`.* TO '{stack.DB_USER}'@'localhost';"])
    sb.run(f"rm -rf {SITE} && mkdir -p /var/www && cp -rL /usr/share/wordpress {SITE} && "
           f"rm -rf {SITE}/wp-content/languages {SITE}/wp-config.php")
    with tempfile.TemporaryDirectory() as tmp:
        stack.write_wp_config(Path(tmp), "localhost")
        config = (Path(tmp) / "wp-config.php").read_text()
    # written through the container (sb.write_file writes the overlay's upper layer from outside,
    # which does not mix with directories just made inside)
    sb.run(["sh", "-c", f"umask 027 && cat > {SITE}/wp-config.php"], input=config)
    sb.run(["sh", "-c", f"mkdir -p {SITE}/wp-content/mu-plugins && cat > {SITE}/wp-content/mu-plugins/jobrunner-test.php"],
           input=stack.MU_PLUGIN)
    sb.run(["php", "-r", "define('WP_INSTALLING', true); $_SERVER['HTTP_HOST']='localhost';"
            "require '/var/www/html/wp-load.php'; require_once ABSPATH . 'wp-admin/includes/upgrade.php';"
            "wp_install('e2e', 'admin', 'admin@example.com', true, '', 'admin-pw');"
            "wp_schedule_single_event(time() - 60, 'jr_test_event');"], timeout=120)
    sb.run(f"chown -R www-data:www-data {SITE} && chmod 755 {SITE} && mkdir -p /mnt/backups")
    sb.write_file("/etc/jobrunner/jobrunner.env", f"WP_PATH={SITE}\nWP_SITE=e2e\nBACKUP_DIR=/mnt/backups\n")
    sb.run(["jobrunner", "units", "render", "--out", "/root/wp-units", *(u.replace("-", "_") for u in UNITS)])
    sb.run(["jobrunner", "units", "install", "--dir", "/root/wp-units"], timeout=120)
    for unit in UNITS:
        sb.systemctl("stop", f"{unit}.timer", check=False)  # none may fire amid other tests (wp-restore has none)
        sb.pin(f"{unit}.service")
    yield sb
    sb.run(f"rm -rf {SITE} /mnt/backups /etc/jobrunner/jobrunner.env", check=False)
    sb.systemctl("stop", "mariadb.service", check=False, timeout=120)


def test_wp_backup_unit_writes_a_verified_set(wp_sandbox):
    """Under the hardened unit the backup reads the 0640 wp-config.php, reaches MariaDB's
    socket, writes and verifies a set in /mnt/backups; the password is not in the journal."""
    sb = wp_sandbox
    st = sb.start_oneshot("wp-backup.service", timeout=300)
    events = sb.job_events(st["InvocationID"], "wp-backup.service")
    assert st["Result"] == "success", json.dumps(events[-15:], indent=1)
    assert [e for e in events if e["event"] == "backup.verified"]
    listing = sb.run("ls /mnt/backups/*/").stdout
    assert "files.tar.zst" in listing and "db.sql.zst" in listing and "manifest.json" in listing
    journal = sb.run(["journalctl", "-u", "wp-backup.service", "--no-pager", "-o", "cat"]).stdout
    assert stack.DB_PASSWORD not in journal


def test_wp_cron_unit_runs_due_events_as_www_data(wp_sandbox):
    """php wp-cron.php runs as www-data under MemoryDenyWriteExecute= and the event fires."""
    sb = wp_sandbox
    st = sb.start_oneshot("wp-cron.service", timeout=300)
    events = sb.job_events(st["InvocationID"], "wp-cron.service")
    assert st["Result"] == "success", json.dumps(events[-15:], indent=1)
    owner = sb.run(["stat", "-c", "%U", f"{SITE}/wp-content/cron-ran"]).stdout.strip()
    assert owner == "www-data"
    assert [e["user"] for e in events if e["event"] == "job.started"] == ["www-data"]
    # installing the units left the live site's directory as it was (no tmpfiles.d re-own)
    assert sb.run(["stat", "-c", "%a %U", SITE]).stdout.split() == ["755", "www-data"]


@pytest.mark.parametrize("unit", ["wp-db-export", "wp-db-optimize", "wp-cache-flush", "backup-prune"])
def test_other_wp_units_succeed_in_their_sandbox(wp_sandbox, unit):
    """The other shipped WordPress jobs run to success in their hardened units on the real stack."""
    sb = wp_sandbox
    st = sb.start_oneshot(f"{unit}.service", timeout=300)
    events = sb.job_events(st["InvocationID"], f"{unit}.service")
    assert st["Result"] == "success", json.dumps(events[-15:], indent=1)
    assert [e["outcome"] for e in events if e["event"] == "job.finished"] == ["success"]



def _blogname(sb) -> str:
    return sb.run(["mariadb", "-N", "-B", "wordpress", "-e",
                   f"SELECT option_value FROM {stack.TABLE_PREFIX}options WHERE option_name = 'blogname'"]).stdout.strip()


def test_wp_restore_unit_brings_back_files_and_database(wp_sandbox):
    """The manual wp-restore unit (root, strict sandbox, only the capabilities that restoring
    owners and modes needs) puts back the latest verified set: the database as it was, deleted
    files back, files added since gone, wp-config.php still 0640 www-data, the site dir as it was."""
    sb = wp_sandbox
    assert sb.start_oneshot("wp-backup.service", timeout=300)["Result"] == "success"
    assert _blogname(sb) == "e2e"
    sb.run(["mariadb", "wordpress", "-e", f"UPDATE {stack.TABLE_PREFIX}options SET option_value = 'defaced' WHERE option_name = 'blogname'"])
    sb.run(f"rm {SITE}/wp-content/mu-plugins/jobrunner-test.php && echo '<?php // dropped' > {SITE}/stray.php")
    sb.write_file("/etc/default/wp-restore", "RESTORE_SET=latest\n")
    try:
        st = sb.start_oneshot("wp-restore.service", timeout=300)
    finally:
        sb.run(["rm", "-f", "/etc/default/wp-restore"])
    events = sb.job_events(st["InvocationID"], "wp-restore.service")
    assert st["Result"] == "success", json.dumps(events[-15:], indent=1)
    assert [e["event"] for e in events if e["event"].startswith("restore.")][-1] == "restore.done"
    assert _blogname(sb) == "e2e"
    assert sb.exists(f"{SITE}/wp-content/mu-plugins/jobrunner-test.php") and not sb.exists(f"{SITE}/stray.php")
    assert sb.run(["stat", "-c", "%a %U %G", f"{SITE}/wp-config.php"]).stdout.split() == ["640", "www-data", "www-data"]
    assert sb.run(["stat", "-c", "%a %U", SITE]).stdout.split() == ["755", "www-data"]
    assert not sb.run(f"ls -A {SITE} | grep restore", check=False).stdout  # no staging or aside dir left
