"""Many sites on one server (issue 19, docs/sites.md) on the real stack under real systemd:
three WordPress sites (three trees under /var/www, three databases in Debian's one
mariadb.service), each added with ``jobrunner instances add wp SITE --set …``, the template
units ``wp-backup@.service``/``wp-cron@.service`` (rendered and installed with the project's
commands) run per site to success; each site's sets land under its own /mnt/backups/<site>;
one site's broken database fails only that site's unit, with one notification naming it;
``health``/``status`` show one row per site; the "at most 2 backups" limit (the shipped
``Slots("backup", 2)``) holds when all three start at once.

Uses the systemd sandbox of tests/systemd. The notification receiver listens on the host's
127.0.0.1 (the sandbox shares the host's network; network=False units may reach localhost).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest

from ..test_notify_receivers import HttpReceiver
from . import stack

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

SITES = ("shop.example", "blog.example", "news.example")
DBS = {site: f"wordpress_{site.split('.')[0]}" for site in SITES}


def _install_site(sb, site: str) -> None:
    path = f"/var/www/{site}"
    db = DBS[site]
    pw = stack.MariaDB.quote(stack.DB_PASSWORD)
    sb.run(
        [
            "mariadb",
            "-e",
            f"CREATE DATABASE IF NOT EXISTS `{db}`; CREATE USER IF NOT EXISTS '{stack.DB_USER}'@'localhost' "
            f"IDENTIFIED BY {pw}; GRANT ALL ON `{db}`.* TO '{stack.DB_USER}'@'localhost';"
            f"GRANT ALL ON `{db}\\_verify\\_%`.* TO '{stack.DB_USER}'@'localhost';",
        ]
    )
    sb.run(
        f"rm -rf {path} && mkdir -p /var/www && cp -rL /usr/share/wordpress {path} && "
        f"rm -rf {path}/wp-content/languages {path}/wp-config.php"
    )
    with tempfile.TemporaryDirectory() as tmp:
        stack.write_wp_config(Path(tmp), "localhost", db_name=db)
        config = (Path(tmp) / "wp-config.php").read_text()
    sb.run(["sh", "-c", f"umask 027 && cat > {path}/wp-config.php"], input=config)
    sb.run(
        ["sh", "-c", f"mkdir -p {path}/wp-content/mu-plugins && cat > {path}/wp-content/mu-plugins/jobrunner-test.php"],
        input=stack.MU_PLUGIN,
    )
    sb.run(
        [
            "php",
            "-r",
            "define('WP_INSTALLING', true); $_SERVER['HTTP_HOST']='localhost';"
            f"require '{path}/wp-load.php'; require_once ABSPATH . 'wp-admin/includes/upgrade.php';"
            f"wp_install('{site}', 'admin', 'admin@example.com', true, '', 'admin-pw');"
            "wp_schedule_single_event(time() - 60, 'jr_test_event');",
        ],
        timeout=120,
    )
    sb.run(f"chown -R www-data:www-data {path} && chmod 755 {path}")


@pytest.fixture(scope="module")
def wp_sites(installed_sandbox):
    if stack.missing_tools():
        pytest.skip(f"WordPress stack not installed: {stack.missing_tools()}")
    sb = installed_sandbox
    receiver = HttpReceiver()
    sb.systemctl("start", "mariadb.service", timeout=120)
    for site in SITES:
        _install_site(sb, site)
    sb.write_file(
        "/etc/jobrunner/jobrunner.env",
        f"JOBRUNNER_NOTIFY_URLS=json://127.0.0.1:{receiver.port}/hook\nJOBRUNNER_NOTIFY_TIMEOUT=5s\n",
    )
    sb.run(["jobrunner", "units", "render", "--out", "/root/wp-sites-units", "wp_backup", "wp_cron"])
    sb.run(["jobrunner", "units", "install", "--dir", "/root/wp-sites-units"], timeout=120)
    added = {}
    for site in SITES:
        if site == SITES[1]:  # after the first site's note: the single-site timers go
            for unit in ("wp-backup", "wp-cron"):
                sb.systemctl("disable", "--now", f"{unit}.timer", check=False)
        added[site] = sb.run(
            ["jobrunner", "instances", "add", "wp", site, "--set", f"WP_PATH=/var/www/{site}"], timeout=120
        )
        for unit in ("wp-backup", "wp-cron", "wp-db-export", "backup-prune"):
            sb.systemctl("stop", f"{unit}@{site}.timer", check=False)  # none may fire amid the tests
        for unit in ("wp-backup", "wp-cron"):
            sb.pin(f"{unit}@{site}.service", reload=False)
    sb.daemon_reload()
    try:
        yield sb, receiver, added
    finally:
        receiver.close()
        for site in SITES:
            sb.run(["jobrunner", "instances", "remove", "wp", site, "--force"], check=False, timeout=120)
        sb.run("rm -rf /var/www/*.example /mnt/backups /etc/jobrunner/jobrunner.env", check=False)
        sb.systemctl("stop", "mariadb.service", check=False, timeout=120)


def _start_all(sb, units: list[str]) -> dict[str, dict]:
    for unit in units:
        sb.systemctl("reset-failed", unit, check=False)
    sb.systemctl("start", "--no-block", *units)
    return {unit: sb.wait_unit_inactive(unit, timeout=300) for unit in units}


def _ts(event: dict) -> float:
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


def test_instances_add_writes_each_site_and_enables_its_timers(wp_sites):
    sb, _, added = wp_sites
    for site, result in added.items():
        assert f"wrote /etc/jobrunner/instances/wp/{site}.env" in result.stdout
        mode = sb.run(["stat", "-c", "%a %U", f"/etc/jobrunner/instances/wp/{site}.env"]).stdout.split()
        assert mode == ["640", "root"]
        assert "wp-backup@" + site + ".timer" in result.stdout and "wp-cron@" + site + ".timer" in result.stdout
        # made by the instance's tmpfiles.d: the backup dir, and www-data's lock file for wp_cron
        assert sb.run(["stat", "-c", "%a %U", f"/mnt/backups/{site}"]).stdout.split() == ["750", "root"]
        assert sb.run(["stat", "-c", "%U", f"/run/lock/jobrunner/wp_cron@{site}.lock"]).stdout.strip() == "www-data"
        for unit in ("wp-backup", "wp-cron"):
            assert sb.systemctl("is-enabled", f"{unit}@{site}.timer").stdout.strip() == "enabled"
    # the first add saw the single-site timers that units install enabled, and said so
    assert "note: the single-site timers are enabled too (wp-backup.timer wp-cron.timer)" in added[SITES[0]].stdout
    assert "single-site timers" not in added[SITES[1]].stdout


def test_each_sites_backup_and_cron_succeed_and_two_slots_hold(wp_sites):
    sb, _, _ = wp_sites
    units = [f"wp-backup@{site}.service" for site in SITES]
    states = _start_all(sb, units)
    intervals = []
    for site, unit in zip(SITES, units, strict=True):
        events = sb.job_events(states[unit]["InvocationID"], unit)
        assert states[unit]["Result"] == "success", json.dumps(events[-15:], indent=1)
        assert {e.get("instance") for e in events} == {site}
        slot = next(e for e in events if e["event"] == "lock.acquired" and e.get("slots") == 2)
        work = [e for e in events if e["event"].startswith("backup.")]
        intervals.append((_ts(slot), _ts(work[-1])))
        # the set landed under the site's own directory, named for the site
        listing = sb.run(["ls", f"/mnt/backups/{site}"]).stdout.split()
        assert len(listing) == 1 and listing[0].startswith(site), listing
        manifest = json.loads(sb.read_file(f"/mnt/backups/{site}/{listing[0]}/manifest.json"))
        assert manifest["site"] == site
    # measured: the moments with 3 backups at work (between taking a slot and the last backup.* event)
    points = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda p: (p[0], p[1]))
    inside, worst = 0, 0
    for _, step in points:
        inside += step
        worst = max(worst, inside)
    assert worst <= 2, intervals
    for site in SITES:
        state = sb.start_oneshot(f"wp-cron@{site}.service", timeout=300)
        events = sb.job_events(state["InvocationID"], f"wp-cron@{site}.service")
        assert state["Result"] == "success", json.dumps(events[-15:], indent=1)
        assert sb.run(["stat", "-c", "%U", f"/var/www/{site}/wp-content/cron-ran"]).stdout.strip() == "www-data"


def test_health_and_status_show_one_row_per_site(wp_sites):
    sb, _, _ = wp_sites
    health = json.loads(sb.run(["jobrunner", "health", "--json", "wp_backup"], check=False).stdout)
    rows = sorted(r["job"] for r in health["jobs"] if "@" in r["job"])
    assert rows == sorted(f"wp_backup@{s}" for s in SITES)
    status = [json.loads(line) for line in sb.run(["jobrunner", "status", "--json"]).stdout.splitlines()]
    assert sorted(r["job"] for r in status if r["job"].startswith("wp_backup@")) == sorted(
        f"wp_backup@{s}" for s in SITES
    )
    listed = sb.run(["jobrunner", "instances", "list", "wp"]).stdout
    for site in SITES:
        assert re.search(rf"wp_backup@{re.escape(site)}\s+success", listed), listed


def test_one_sites_broken_database_fails_only_its_unit(wp_sites):
    sb, receiver, _ = wp_sites
    broken = "blog.example"
    sb.run(["mariadb", "-e", f"REVOKE ALL ON `{DBS[broken]}`.* FROM '{stack.DB_USER}'@'localhost'"])
    try:
        before = len(receiver.requests)
        states = _start_all(sb, [f"wp-backup@{site}.service" for site in SITES])

        def alert_done() -> bool:
            lines = sb.journal_json(extra_args=["SYSLOG_IDENTIFIER=jobrunner-alert"])
            return any(f"wp-backup@{broken}.service" in str(r.get("MESSAGE", "")) for r in lines)

        sb.wait_for(alert_done, timeout=60)
        time.sleep(1.0)  # a second notification would arrive now
    finally:
        sb.run(["mariadb", "-e", f"GRANT ALL ON `{DBS[broken]}`.* TO '{stack.DB_USER}'@'localhost'"])
    assert states[f"wp-backup@{broken}.service"]["Result"] == "exit-code"
    for site in SITES:
        if site != broken:
            assert states[f"wp-backup@{site}.service"]["Result"] == "success"
    got = receiver.requests[before:]
    assert len(got) == 1, [r["body"][:200] for r in got]
    title = json.loads(got[0]["body"])["title"]
    assert f"wp_backup@{broken} failed" in title
    assert stack.DB_PASSWORD not in got[0]["body"].decode()
