"""wp_backup and wp_cron under real systemd: the rendered, hardened units (strict sandbox,
IP denied but localhost, capabilities dropped but CAP_DAC_READ_SEARCH) on Debian's own
mariadb.service and a WordPress site in /var/www/html whose wp-config.php is 0640 www-data.

Uses the systemd sandbox of tests/systemd (a throwaway systemd over an overlay of /).
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC
from pathlib import Path

import pytest

from . import stack

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

SITE = "/var/www/html"
UNITS = ("wp-backup", "wp-cron", "wp-db-export", "wp-db-optimize", "wp-cache-flush", "backup-prune", "wp-restore")


@pytest.fixture(scope="module")
def wp_sandbox(installed_sandbox):
    if stack.missing_tools():
        pytest.skip(f"WordPress stack not installed: {stack.missing_tools()}")
    sb = installed_sandbox
    sb.systemctl("start", "mariadb.service", timeout=120)
    pw = stack.MariaDB.quote(stack.DB_PASSWORD)
    sb.run(
        [
            "mariadb",
            "-e",
            f"CREATE DATABASE IF NOT EXISTS wordpress; CREATE USER IF NOT EXISTS '{stack.DB_USER}'@'localhost' IDENTIFIED BY {pw};"
            f"GRANT ALL ON wordpress.* TO '{stack.DB_USER}'@'localhost';"
            f"GRANT ALL ON `wordpress\\_verify\\_%`.* TO '{stack.DB_USER}'@'localhost';",
        ]
    )
    sb.run(
        f"rm -rf {SITE} && mkdir -p /var/www && cp -rL /usr/share/wordpress {SITE} && "
        f"rm -rf {SITE}/wp-content/languages {SITE}/wp-config.php"
    )
    with tempfile.TemporaryDirectory() as tmp:
        stack.write_wp_config(Path(tmp), "localhost")
        config = (Path(tmp) / "wp-config.php").read_text()
    # written through the container (sb.write_file writes the overlay's upper layer from outside,
    # which does not mix with directories just made inside)
    sb.run(["sh", "-c", f"umask 027 && cat > {SITE}/wp-config.php"], input=config)
    sb.run(
        ["sh", "-c", f"mkdir -p {SITE}/wp-content/mu-plugins && cat > {SITE}/wp-content/mu-plugins/jobrunner-test.php"],
        input=stack.MU_PLUGIN,
    )
    sb.run(
        [
            "php",
            "-r",
            "define('WP_INSTALLING', true); $_SERVER['HTTP_HOST']='localhost';"
            "require '/var/www/html/wp-load.php'; require_once ABSPATH . 'wp-admin/includes/upgrade.php';"
            "wp_install('e2e', 'admin', 'admin@example.com', true, '', 'admin-pw');"
            "wp_schedule_single_event(time() - 60, 'jr_test_event');",
        ],
        timeout=120,
    )
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
    return sb.run(
        [
            "mariadb",
            "-N",
            "-B",
            "wordpress",
            "-e",
            f"SELECT option_value FROM {stack.TABLE_PREFIX}options WHERE option_name = 'blogname'",
        ]
    ).stdout.strip()


def test_wp_restore_unit_brings_back_files_and_database(wp_sandbox):
    """The manual wp-restore unit (root, strict sandbox, only the capabilities that restoring
    owners and modes needs) puts back the latest verified set: the database as it was, deleted
    files back, files added since gone, wp-config.php still 0640 www-data, the site dir as it was."""
    sb = wp_sandbox
    assert sb.start_oneshot("wp-backup.service", timeout=300)["Result"] == "success"
    assert _blogname(sb) == "e2e"
    sb.run(
        [
            "mariadb",
            "wordpress",
            "-e",
            f"UPDATE {stack.TABLE_PREFIX}options SET option_value = 'defaced' WHERE option_name = 'blogname'",
        ]
    )
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


# --- the restore attacks (docs/security.md, "Restore trusts nothing it did not make") -------
# The sets are forged as www-data inside the sandbox (tests/wp/forge.py), copied into
# /mnt/backups by root (as sets fetched back from storage); those standing for a set that got
# past authentication are signed with the shipped `python -m jobs._backupsets sign`. The unit
# can write only /var/www/html, so that is where a command run as root would leave its mark.

PWNED = f"{SITE}/pwned"
FORGE_IN = "/var/tmp/jr_forge.py"


def _forge(sb, **spec) -> str:
    """forge.py run as www-data in the sandbox; the set is then copied into /mnt/backups."""
    sb.run(
        ["sh", "-c", f"cat > {FORGE_IN} && chmod 644 {FORGE_IN} && install -d -o www-data -m 755 /var/tmp/jr-www"],
        input=(Path(__file__).with_name("forge.py")).read_text(),
    )
    spec = {"out": "/var/tmp/jr-www", "site": "e2e", **spec}
    sb.run(
        [
            "sh",
            "-c",
            "f=$(mktemp /var/tmp/jr-spec-XXXXXX) && cat > $f && chmod 644 $f && "
            "setpriv --reuid=www-data --regid=www-data --init-groups python3 /var/tmp/jr_forge.py $f "
            "> /var/tmp/jr-forged && rm $f",
        ],
        input=json.dumps(spec),
    )
    made = sb.run(["cat", "/var/tmp/jr-forged"]).stdout.strip()
    name = made.rsplit("/", 1)[1]
    sb.run(["cp", "-r", made, f"/mnt/backups/{name}"])
    return name


def _sign(sb, name: str) -> None:
    sb.run(["/opt/jobrunner/bin/python", "-m", "jobs._backupsets", "sign", f"/mnt/backups/{name}"])


def _restore(sb, restore_set: str) -> tuple[dict, list[dict]]:
    sb.write_file("/etc/default/wp-restore", f"RESTORE_SET={restore_set}\n")
    # many starts in a few seconds: clear systemd's start rate limit (5 in 10 s) and any failure
    sb.systemctl("reset-failed", "wp-restore.service", check=False)
    try:
        st = sb.start_oneshot("wp-restore.service", timeout=300)
    finally:
        sb.run(["rm", "-f", "/etc/default/wp-restore"])
    return st, sb.job_events(st["InvocationID"], "wp-restore.service")


def _failure(events: list[dict]) -> str:
    return [e for e in events if e["event"] == "job.failed"][-1]["exception"]["message"]


def _an_hour_ago() -> str:
    from datetime import datetime, timedelta, timezone

    return (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0).isoformat()


@pytest.fixture
def forged_sets(wp_sandbox):
    """Removes what the attacks planted: forged sets, the forger's files, a restored marker."""
    sb = wp_sandbox
    assert sb.start_oneshot("wp-backup.service", timeout=300)["Result"] == "success"
    before = set(sb.run("ls /mnt/backups").stdout.split())
    yield sb
    after = set(sb.run("ls /mnt/backups").stdout.split())
    sb.run(
        ["rm", "-rf", *[f"/mnt/backups/{n}" for n in after - before], "/var/tmp/jr-www", "/var/tmp/jr-forged", PWNED],
        check=False,
    )


def test_wp_restore_unit_takes_only_sets_it_made(forged_sets):
    """Under wp-restore.service: a full set www-data forged, dated 2099, whose dump runs
    ``\\! id`` and whose archive defaces the site, and a signed one dated 2098. ``latest``
    passes over both and restores the real backup; asked for by name, the forged one is
    refused (exit 78) and the site and database stay as they are."""
    sb = forged_sets
    config = sb.read_file(f"{SITE}/wp-config.php")
    members = [{"name": "./wp-config.php", "data": config}, {"name": "./index.php", "data": "<?php echo 'defaced';"}]
    planted = _forge(sb, kind="full", created="2099-12-31T00:00:00+00:00", sql=f"\\! id > {PWNED}\n", members=members)
    future = _forge(sb, kind="full", created="2098-12-31T00:00:00+00:00", sql=f"\\! id > {PWNED}\n", members=members)
    _sign(sb, future)

    st, events = _restore(sb, "latest")
    assert not sb.exists(PWNED), sb.read_file(PWNED)
    assert st["Result"] == "success", json.dumps(events[-15:], indent=1)
    skipped = {e["path"].rsplit("/", 1)[1]: e["reason"] for e in events if e["event"] == "restore.set_skipped"}
    assert skipped[planted].startswith("no manifest.hmac") and skipped[future].startswith("dated in the future")
    assert "defaced" not in sb.read_file(f"{SITE}/index.php")

    sb.run(
        [
            "mariadb",
            "wordpress",
            "-e",
            f"UPDATE {stack.TABLE_PREFIX}options SET option_value = 'changed since' WHERE option_name = 'blogname'",
        ]
    )
    try:
        st, events = _restore(sb, planted)
        assert not sb.exists(PWNED), sb.read_file(PWNED)
        assert (st["Result"], st["ExecMainStatus"]) == ("exit-code", "78"), json.dumps(events[-15:], indent=1)
        assert f"/mnt/backups/{planted} cannot be trusted: no manifest.hmac" in _failure(events)
        assert _blogname(sb) == "changed since"
        assert "defaced" not in sb.read_file(f"{SITE}/index.php")
    finally:
        sb.run(
            [
                "mariadb",
                "wordpress",
                "-e",
                f"UPDATE {stack.TABLE_PREFIX}options SET option_value = 'e2e' WHERE option_name = 'blogname'",
            ]
        )


def test_wp_restore_unit_runs_no_client_command_and_no_option_from_a_set(forged_sets):
    """Sets that got past authentication (signed here), forged by www-data: a dump whose first
    line is ``\\! id > FILE`` fails under ``mysql --sandbox`` (exit 1, nothing run); a
    wp-config.php whose DB_NAME is ``--execute=\\! id > FILE`` is refused before the site is
    touched (exit 78)."""
    sb = forged_sets
    dump = _forge(sb, kind="db", created=_an_hour_ago(), sql=f"\\! id > {PWNED}\nSELECT 1;\n")
    _sign(sb, dump)
    st, events = _restore(sb, dump)
    assert not sb.exists(PWNED), sb.read_file(PWNED)
    assert (st["Result"], st["ExecMainStatus"]) == ("exit-code", "1"), json.dumps(events[-15:], indent=1)
    assert any("Not allowed in the sandbox mode" in e.get("line", "") for e in events)

    bad_name = stack.php_quote("--execute=\\! id > " + PWNED)
    config = (
        f"<?php\ndefine('DB_NAME', {bad_name});\ndefine('DB_USER', 'root');\ndefine('DB_PASSWORD', '');\n"
        "define('DB_HOST', 'localhost');\n$table_prefix = 'wp_';\n"
    )
    option = _forge(
        sb,
        kind="full",
        created=_an_hour_ago(),
        sql="SELECT 1;\n",
        members=[{"name": "./wp-config.php", "data": config}, {"name": "./index.php", "data": "<?php // forged"}],
    )
    _sign(sb, option)
    st, events = _restore(sb, option)
    assert not sb.exists(PWNED), sb.read_file(PWNED)
    assert (st["Result"], st["ExecMainStatus"]) == ("exit-code", "78"), json.dumps(events[-15:], indent=1)
    assert "DB_NAME '--execute=" in _failure(events)
    assert "forged" not in sb.read_file(f"{SITE}/index.php")
    assert not sb.run(f"ls -A {SITE} | grep restore", check=False).stdout


def test_wp_restore_unit_gives_the_files_to_www_data_not_to_the_archive(forged_sets):
    """A signed set whose archive holds a setuid-root file, a setgid one, a device, a fifo, and
    members of another owner, world-writable, with the site root 0777: restored under the unit,
    everything is www-data's with 0644/0755 (wp-config.php 0640), no setuid/setgid bit, no
    device or fifo, the site root still 755 www-data. Then the real backup is put back."""
    sb = forged_sets
    config = sb.read_file(f"{SITE}/wp-config.php")
    nobody = 65534
    name = _forge(
        sb,
        kind="full",
        created=_an_hour_ago(),
        sql="SELECT 1;\n",
        members=[
            {"name": ".", "type": "dir", "mode": 0o777, "uid": nobody, "gid": nobody},
            {"name": "./wp-config.php", "data": config, "mode": 0o666, "uid": nobody},
            {"name": "./index.php", "data": "<?php // restored", "mode": 0o777, "uid": nobody},
            {"name": "./evil", "data": "#!/bin/sh\nid\n", "mode": 0o4755, "uid": 0, "gid": 0},
            {"name": "./wp-content", "type": "dir", "mode": 0o2777, "uid": nobody},
            {"name": "./wp-content/sgid", "data": "x", "mode": 0o2755, "uid": 0, "gid": 0},
            {"name": "./null", "type": "chr", "major": 1, "minor": 3, "mode": 0o666},
            {"name": "./fifo", "type": "fifo", "mode": 0o666},
        ],
    )
    _sign(sb, name)
    try:
        st, events = _restore(sb, name)
        assert st["Result"] == "success", json.dumps(events[-15:], indent=1)
        assert not sb.run(f"find {SITE} -perm /6000", check=False).stdout.strip()
        assert not sb.run(f"find {SITE} -type c -o -type b -o -type p", check=False).stdout.strip()
        assert not sb.run(f"find {SITE} -mindepth 1 ! -user www-data -o -mindepth 1 ! -group www-data").stdout.strip()
        listing = sb.run(f"cd {SITE} && stat -c '%n %a' evil index.php wp-config.php wp-content wp-content/sgid").stdout
        assert listing.split("\n")[:5] == [
            "evil 644",
            "index.php 644",
            "wp-config.php 640",
            "wp-content 755",
            "wp-content/sgid 644",
        ]
        assert sb.run(["stat", "-c", "%a %U", SITE]).stdout.split() == ["755", "www-data"]
    finally:
        st, events = _restore(sb, "latest")
        assert st["Result"] == "success", json.dumps(events[-15:], indent=1)
    assert sb.exists(f"{SITE}/wp-content/mu-plugins/jobrunner-test.php") and not sb.exists(f"{SITE}/evil")
