"""Restore trusts nothing it did not make (issue #13, finding 1, and the backup half of 10).

Each test is an attack of docs/security.md's threat model, made for real by a local user
(``jr-attacker``) or by www-data (who owns a live site and can read its wp-config.php) against
the real MariaDB and WordPress of the test stack, with root running the jobs. Each failed
before the fix (the attack worked: a command ran as root, a setuid-root file was restored,
the site root was handed over 0777, another user could plant in the backup area), and
passes after it. ``forge.py`` makes the sets an attacker would make; ``forge.sign`` stands
for a set that got past authentication (the layers behind the MAC must hold on their own).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from ..attacker import User, as_user, start_as_user
from ..conftest import REPO, clean_env, stop_group
from . import forge, stack

pytestmark = pytest.mark.slow

FORGE = Path(__file__).with_name("forge.py")


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture
def shared():
    """A directory other users can reach (pytest's tmp_path is 0700 root), with forge.py."""
    base = Path(tempfile.mkdtemp(prefix="jr-trust-", dir="/tmp"))
    base.chmod(0o755)
    shutil.copy(FORGE, base / "forge.py")
    (base / "forge.py").chmod(0o644)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def user_dir(shared: Path, user: User, name: str | None = None) -> Path:
    path = shared / (name or user.name)
    path.mkdir(mode=0o755)
    os.chown(path, user.uid, user.gid)
    return path


def forge_as(user: User, shared: Path, out: Path, **spec) -> Path:
    """``forge.py`` run as ``user``: the set it made in ``out``."""
    spec_file = shared / f"spec-{time.monotonic_ns()}.json"
    spec_file.write_text(json.dumps({"out": str(out), "site": "testsite", **spec}))
    spec_file.chmod(0o644)
    done = as_user(
        user,
        [
            sys.executable if sys.executable.startswith("/usr/") else "/usr/bin/python3",
            str(shared / "forge.py"),
            str(spec_file),
        ],
        cwd=str(shared),
    )
    return Path(done.stdout.strip())


def fetch_back(set_dir: Path, backup_dir: Path) -> Path:
    """Root copies a set into BACKUP_DIR (as from offsite storage): root's files from then on."""
    dest = backup_dir / set_dir.name
    shutil.copytree(set_dir, dest)
    return dest


def iso(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).isoformat()


def an_hour_ago() -> str:
    return iso(datetime.now(UTC) - timedelta(hours=1))


def failure(run) -> str:
    return run.event("job.failed")["exception"]["message"]


def tree(root: Path) -> dict[str, os.stat_result]:
    return {str(p.relative_to(root)): p.lstat() for p in [root, *root.rglob("*")]}


def table_names(wp_stack, site: Path) -> list[str]:
    from jobs._wp import read_wp_config

    return wp_stack.db.sql("SHOW TABLES", read_wp_config(site).name).split()


# --- finding 1: which sets restore takes ----------------------------------------------------


def test_latest_passes_over_planted_and_future_dated_sets(site_env, site, shared, www_data):
    """www-data (who can read the live wp-config.php) forges a full set dated 2099, whose dump
    runs ``\\! id`` and whose archive defaces the site, and a set dated 2098 that even carries a
    valid MAC; both end up in BACKUP_DIR (fetched back from storage www-data could write).
    Before: ``latest`` took the 2099 set and root ran ``id``. Now ``latest`` passes over both
    (``restore.set_skipped``: no MAC; dated in the future) and restores the real backup."""
    assert site_env.run("wp_backup").returncode == 0
    [genuine] = site_env.sets()
    pwned = shared / "pwned"
    out = user_dir(shared, www_data)
    members = [
        {"name": "./wp-config.php", "data": (site / "wp-config.php").read_text()},
        {"name": "./index.php", "data": "<?php echo 'defaced';"},
    ]
    planted = forge_as(
        www_data,
        shared,
        out,
        kind="full",
        created="2099-12-31T00:00:00+00:00",
        sql=f"\\! id > {pwned}\n",
        members=members,
    )
    future = forge_as(
        www_data,
        shared,
        out,
        kind="full",
        created="2098-12-31T00:00:00+00:00",
        sql=f"\\! id > {pwned}\n",
        members=members,
    )
    fetch_back(planted, site_env.backup_dir)
    forge.sign(fetch_back(future, site_env.backup_dir), site_env.key_file)

    run = site_env.run("wp_restore", RESTORE_SET="latest")
    assert not pwned.exists(), f"a command of the forged dump ran as root: {pwned.read_text()}"
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    assert run.event("restore.planned")["set"] == str(genuine)
    skipped = {Path(e["path"]).name: e["reason"] for e in run.events if e["event"] == "restore.set_skipped"}
    assert skipped[planted.name].startswith("no manifest.hmac")
    assert skipped[future.name].startswith("dated in the future")
    assert "defaced" not in (site / "index.php").read_text()


def test_a_tampered_set_is_refused_and_nothing_changes(site_env, site, wp_stack, shared, attacker):
    """A real set copied to storage the attacker can write; there the attacker swaps the dump
    for one that runs ``\\! id`` and drops the posts, and fixes the manifest's checksums; root
    fetches it back and restores it by name. Before: the checksums agreed, so it was restored
    (files replaced, the command run as root). Now the MAC does not match: exit 78 naming the
    set, and the site's files and database are as they were."""
    assert site_env.run("wp_backup").returncode == 0
    [genuine] = site_env.sets()
    pwned = shared / "pwned"
    storage = user_dir(shared, attacker, "storage")
    copy = storage / genuine.name
    shutil.copytree(genuine, copy)
    for path in [copy, *copy.iterdir()]:
        os.chown(path, attacker.uid, attacker.gid)
    evil = f"\\! id > {pwned}\nDROP TABLE {stack.TABLE_PREFIX}posts;\n"
    as_user(
        attacker,
        [
            "/usr/bin/python3",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import forge; from pathlib import Path; "
            "forge.rewrite(Path(sys.argv[2]), 'db.sql.zst', forge.compress(sys.argv[3].encode()))",
            str(shared),
            str(copy),
            evil,
        ],
        cwd=str(shared),
    )
    shutil.rmtree(genuine)
    fetch_back(copy, site_env.backup_dir)
    stack.add_posts(site, ["Must survive"])
    (site / "after-backup.txt").write_text("kept")
    tables = table_names(wp_stack, site)

    run = site_env.run("wp_restore", RESTORE_SET=genuine.name)
    assert not pwned.exists(), f"the tampered dump ran a command as root: {pwned.read_text()}"
    assert run.returncode == 78, run.stdout[-3000:] + run.stderr
    message = failure(run)
    assert genuine.name in message and "manifest.hmac does not match manifest.json" in message
    assert "nothing restored" in message and "restore.checksums_ok" not in run.names()
    assert (site / "after-backup.txt").read_text() == "kept"
    assert "Must survive" in stack.post_titles(site)
    assert table_names(wp_stack, site) == tables


def test_a_set_in_a_directory_the_attacker_controls_is_refused(site_env, site, shared, attacker):
    """RESTORE_SET pointing at a set in the attacker's directory (a database-only set whose
    dump runs ``\\! id``): before, it was loaded and root ran the command; now it is refused,
    exit 78, naming who owns the directory, before anything of the set is read."""
    assert site_env.run("wp_db_export").returncode == 0  # a machine with backups (and so a key)
    pwned = shared / "pwned"
    out = user_dir(shared, attacker)
    planted = forge_as(attacker, shared, out, kind="db", created=an_hour_ago(), sql=f"\\! id > {pwned}\n")
    stack.add_posts(site, ["Must survive"])
    run = site_env.run("wp_restore", RESTORE_SET=str(planted))
    assert not pwned.exists(), f"a command of the planted dump ran as root: {pwned.read_text()}"
    assert run.returncode == 78, run.stdout[-3000:] + run.stderr
    message = failure(run)
    assert str(planted) in message and f"owned by {attacker.name}" in message
    assert "Must survive" in stack.post_titles(site)


# --- finding 1: what restore does with a set's content --------------------------------------


def test_client_commands_in_a_dump_are_refused(site_env, site, shared, attacker):
    """A dump line ``\\! id > FILE`` in a set that passed authentication (forged by the
    attacker, signed here): before, ``mysql`` ran it as root; now every load is
    ``mysql --sandbox``: the load fails at that line, the command never runs."""
    assert site_env.run("wp_db_export").returncode == 0  # a machine with backups (and so a key)
    pwned = shared / "pwned"
    out = user_dir(shared, attacker)
    forged = forge_as(attacker, shared, out, kind="db", created=an_hour_ago(), sql=f"\\! id > {pwned}\nSELECT 1;\n")
    forge.sign(fetch_back(forged, site_env.backup_dir), site_env.key_file)
    run = site_env.run("wp_restore", RESTORE_SET=forged.name)
    assert not pwned.exists(), f"the dump's client command ran as root: {pwned.read_text()}"
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr
    assert "Not allowed in the sandbox mode" in run.stdout


class OwnMariaDB:
    """A MariaDB server ``user`` runs for itself (any local user can): root@localhost, no
    password, on a socket in ``base``."""

    def __init__(self, user: User, base: Path) -> None:
        self.user, self.base = user, base
        self.socket = base / "mysqld.sock"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> OwnMariaDB:
        as_user(
            self.user,
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.base / 'data'}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            timeout=120,
        )
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        self.proc = proc = start_as_user(
            self.user,
            [
                mariadbd,
                "--no-defaults",
                f"--datadir={self.base / 'data'}",
                f"--socket={self.socket}",
                "--skip-networking",
                f"--pid-file={self.base / 'mysqld.pid'}",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
            ],
        )
        assert proc.stderr is not None  # start_as_user pipes it
        end = time.monotonic() + 60
        while time.monotonic() < end:
            ping = subprocess.run(
                ["mariadb-admin", "--no-defaults", f"--socket={self.socket}", "-uroot", "ping"], capture_output=True
            )
            if ping.returncode == 0:
                return self
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        raise AssertionError("the attacker's mariadbd did not start")

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, grace=20)
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:  # start_as_user pipes both
                    pipe.close()


def test_a_restored_db_name_is_never_a_mysql_option(site_env, site, wp_stack, shared, www_data):
    """www-data writes a wp-config.php whose DB_NAME is ``--execute=\\! id > FILE`` and whose
    DB_HOST is a MariaDB server of its own (where it may create any database), into a set that
    passed authentication. Before: the restore handed DB_NAME to ``mysql`` as its last argument,
    an option, and root ran ``id``. Now such a name is refused (exit 78) while the files are
    still staged, the site untouched; and every name follows ``--`` anyway."""
    assert site_env.run("wp_db_export").returncode == 0  # a machine with backups (and so a key)
    pwned = shared / "pwned"
    out = user_dir(shared, www_data)
    own = OwnMariaDB(www_data, user_dir(shared, www_data, "own-db")).start()
    try:
        db_name = stack.php_quote("--execute=\\! id > " + str(pwned))
        db_host = stack.php_quote(f"localhost:{own.socket}")
        wp_config = (
            f"<?php\ndefine('DB_NAME', {db_name});\ndefine('DB_USER', 'root');\n"
            f"define('DB_PASSWORD', '');\ndefine('DB_HOST', {db_host});\n$table_prefix = 'wp_';\n"
        )
        forged = forge_as(
            www_data,
            shared,
            out,
            kind="full",
            created=an_hour_ago(),
            sql="SELECT 1;\n",
            members=[
                {"name": "./wp-config.php", "data": wp_config},
                {"name": "./index.php", "data": "<?php // forged"},
            ],
        )
        forge.sign(fetch_back(forged, site_env.backup_dir), site_env.key_file)
        before = (site / "wp-config.php").read_text()
        run = site_env.run("wp_restore", RESTORE_SET=forged.name)
    finally:
        own.stop()
    assert not pwned.exists(), f"DB_NAME became a mysql option and ran as root: {pwned.read_text()}"
    assert run.returncode == 78, run.stdout[-3000:] + run.stderr
    assert "DB_NAME '--execute=" in failure(run) and "refused" in failure(run)
    assert (site / "wp-config.php").read_text() == before
    assert "forged" not in (site / "index.php").read_text()
    assert not [p.name for p in site.iterdir() if p.name.startswith((".restore-", ".pre-restore-"))]


def _canary(shared: Path) -> tuple[Path, Path]:
    """A directory of root's with a 0600 file, outside the site: nothing may reach them."""
    canary = shared / "canary"
    canary.mkdir(mode=0o700)
    secret = canary / "secret"
    secret.write_text("root's")
    secret.chmod(0o600)
    return canary, secret


def _canary_untouched(canary: Path, secret: Path) -> None:
    assert sorted(p.name for p in canary.iterdir()) == ["secret"]
    st = secret.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode), st.st_nlink, secret.read_text()) == (0, 0o600, 1, "root's")


def _restore_forged(site_env, shared, attacker, members):
    assert site_env.run("wp_db_export").returncode == 0  # a machine with backups (and so a key)
    out = user_dir(shared, attacker)
    forged = forge_as(attacker, shared, out, kind="full", created=an_hour_ago(), sql="SELECT 1;\n", members=members)
    forge.sign(fetch_back(forged, site_env.backup_dir), site_env.key_file)
    return site_env.run("wp_restore", RESTORE_SET=forged.name)


def test_restored_files_belong_to_the_site_user_not_to_the_archive(site_env, site, shared, attacker, www_data):
    """An archive (forged by the attacker, signed here) with a setuid-root file, a setgid one,
    a character device, a fifo, members owned by the attacker and world-writable, the site
    root 0777 and the attacker's. Before:
    tar --same-owner --preserve-permissions restored them as they were (a setuid-root file in
    the site), and the site root was handed to the attacker 0777. Now: everything belongs to
    WP_USER (www-data), files 0644 (wp-config.php 0640), directories 0755, no setuid/setgid
    bit, no device or fifo, the site root keeps its owner."""
    a = attacker.uid
    root_before = site.stat()
    run = _restore_forged(
        site_env,
        shared,
        attacker,
        [
            {"name": ".", "type": "dir", "mode": 0o777, "uid": a, "gid": a},
            {"name": "./wp-config.php", "data": (site / "wp-config.php").read_text(), "mode": 0o666, "uid": a},
            {"name": "./index.php", "data": "<?php // restored", "mode": 0o777, "uid": a},
            {"name": "./evil", "data": "#!/bin/sh\nid\n", "mode": 0o4755, "uid": 0, "gid": 0},
            {"name": "./wp-content", "type": "dir", "mode": 0o2777, "uid": a},
            {"name": "./wp-content/sgid", "data": "x", "mode": 0o2755, "uid": 0, "gid": 0},
            {"name": "./null", "type": "chr", "major": 1, "minor": 3, "mode": 0o666},
            {"name": "./fifo", "type": "fifo", "mode": 0o666},
        ],
    )
    found = tree(site)
    assert not [n for n, st in found.items() if st.st_mode & (stat.S_ISUID | stat.S_ISGID)], "setuid/setgid restored"
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    top = found.pop(".")
    assert (top.st_uid, stat.S_IMODE(top.st_mode)) == (root_before.st_uid, stat.S_IMODE(root_before.st_mode) & 0o7755)
    assert sorted(found) == ["evil", "index.php", "wp-config.php", "wp-content", "wp-content/sgid"]
    for name, st in found.items():
        assert (st.st_uid, st.st_gid) == (www_data.uid, www_data.gid), name
    modes = {name: stat.S_IMODE(st.st_mode) for name, st in found.items()}
    assert modes == {
        "evil": 0o644,
        "index.php": 0o644,
        "wp-config.php": 0o640,
        "wp-content": 0o755,
        "wp-content/sgid": 0o644,
    }
    skipped = run.event("restore.members_skipped")["members"]
    for name in ("./null", "./fifo"):
        assert any(s.startswith(f"{name} (") for s in skipped), (name, skipped)
    assert sorted(run.event("restore.mode_bits_dropped")["members"]) == ["./evil", "./wp-content", "./wp-content/sgid"]


def test_links_and_names_never_leave_the_site(site_env, site, shared, attacker, www_data):
    """The unpacker's own guards (GNU tar had its own before): a hard link to a file of root's
    outside the site, a ``../`` name, an absolute name, a symlink to an absolute path, a symlink
    out of the site with a file "under" it: all skipped and listed, nothing written through a
    symlink; links inside the site are restored as links, owned by WP_USER."""
    canary, secret = _canary(shared)
    run = _restore_forged(
        site_env,
        shared,
        attacker,
        [
            {"name": "./wp-config.php", "data": (site / "wp-config.php").read_text()},
            {"name": "./index.php", "data": "<?php // restored"},
            {"name": "./secret", "type": "hardlink", "link": str(secret)},
            {"name": "./up", "type": "hardlink", "link": "../escape"},
            {"name": "../escape", "data": "outside"},
            {"name": str(canary / "abs"), "data": "absolute"},
            {"name": "./abs-link", "type": "symlink", "link": "/etc/shadow"},
            {"name": "./wp-content/up-link", "type": "symlink", "link": "../../escape"},
            {"name": "./out", "type": "symlink", "link": str(canary)},
            {"name": "./out/planted", "data": "through the symlink"},
            {"name": "./inside", "type": "symlink", "link": "index.php"},
            {"name": "./wp-content/copy", "type": "hardlink", "link": "./index.php"},
        ],
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    found = tree(site)
    found.pop(".")
    assert sorted(found) == ["index.php", "inside", "wp-config.php", "wp-content", "wp-content/copy"]
    assert os.readlink(site / "inside") == "index.php"
    assert found["wp-content/copy"].st_ino == found["index.php"].st_ino
    assert all((st.st_uid, st.st_gid) == (www_data.uid, www_data.gid) for st in found.values())
    _canary_untouched(canary, secret)
    assert not (site.parent / "escape").exists()
    skipped = run.event("restore.members_skipped")["members"]
    for name in (
        "./secret",
        "./up",
        "../escape",
        str(canary / "abs"),
        "./abs-link",
        "./wp-content/up-link",
        "./out",
        "./out/planted",
    ):
        assert any(s.startswith(f"{name} (") for s in skipped), (name, skipped)


# --- finding 10 (the backups' part) and secrets at rest -------------------------------------


def test_a_backup_dir_others_can_write_is_refused(site_env, site, shared, attacker):
    """BACKUP_DIR made world-writable (the admin's mistake finding 10 found): the attacker
    plants ``.testsite-<stamp>.partial`` symlinks to a directory of root's for the coming
    minutes, and a set dated 2099. Before: the backup tripped over (or wrote through) the
    planted names. Now wp_backup, backup_prune and wp_restore all stop with exit 78 naming
    the directory, and write nothing anywhere."""
    assert site_env.run("wp_backup").returncode == 0
    backups = shared / "backups"
    shutil.copytree(site_env.backup_dir, backups)
    backups.chmod(0o777)
    victim = shared / "victim"
    victim.mkdir(mode=0o700)
    (victim / "keep").write_text("root's")
    now = int(time.time())
    as_user(
        attacker,
        [
            "/usr/bin/python3",
            "-c",
            "import os, sys, time\n"
            "for t in range(int(sys.argv[3]) - 5, int(sys.argv[3]) + 300):\n"
            "    stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(t))\n"
            "    os.symlink(sys.argv[2], os.path.join(sys.argv[1], f'.testsite-{stamp}.partial'))\n"
            "    os.symlink(sys.argv[2], os.path.join(sys.argv[1], f'.testsite-db-{stamp}.partial'))\n",
            str(backups),
            str(victim),
            str(now),
        ],
    )
    pwned = shared / "pwned"
    forge_as(
        attacker,
        shared,
        backups,
        kind="full",
        created="2099-12-31T00:00:00+00:00",
        sql=f"\\! id > {pwned}\n",
        members=[{"name": "./wp-config.php", "data": (site / "wp-config.php").read_text()}],
    )
    planted = sorted(p.name for p in backups.iterdir())

    for module, extra in (
        ("wp_backup", {}),
        ("wp_db_export", {}),
        ("backup_prune", {}),
        ("wp_restore", {"RESTORE_SET": "latest"}),
    ):
        run = site_env.run(module, BACKUP_DIR=str(backups), **extra)
        assert run.returncode == 78, (module, run.stdout[-3000:] + run.stderr)
        assert f"BACKUP_DIR={str(backups)!r}" in failure(run) and "writable by others" in failure(run), module
    assert sorted(p.name for p in backups.iterdir()) == planted
    assert sorted(p.name for p in victim.iterdir()) == ["keep"]
    assert not pwned.exists()


def test_backups_and_the_key_are_private_whatever_the_umask(wp_env, shared, attacker):
    """Run by hand under umask 000: BACKUP_DIR is made 0750, the set 0700, its files (dump,
    archive, manifest, MAC) 0600, the key's directory 0700 and the key 0600. Before, the
    directory came out 0777 (anyone could plant in it) and the manifest 0666."""
    backups, key = shared / "backups", shared / "keys" / "backup.key"
    old = os.umask(0)
    try:
        run = wp_env.run("wp_backup", BACKUP_DIR=str(backups), BACKUP_HMAC_KEY_FILE=str(key))
    finally:
        os.umask(old)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    assert run.event("backup.key_created")["path"] == str(key)
    [set_dir] = [p for p in backups.iterdir()]

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert (mode(backups), mode(set_dir), mode(key.parent), mode(key)) == (0o750, 0o700, 0o700, 0o600)
    assert {p.name: mode(p) for p in set_dir.iterdir()} == {
        "db.sql.zst": 0o600,
        "files.tar.zst": 0o600,
        "manifest.json": 0o600,
        "manifest.hmac": 0o600,
    }
    for argv in (["ls", str(backups)], ["touch", str(backups / "planted")], ["cat", str(key)]):
        assert as_user(attacker, argv, check=False).returncode != 0, argv


def test_the_key_file_must_be_roots_and_private(wp_env, tmp_path, attacker):
    """A key file that is world-readable, a symlink, or someone else's is refused (exit 78),
    before anything is written."""
    keys = tmp_path / "keys"
    keys.mkdir()
    readable = keys / "readable.key"
    readable.write_text("k" * 64)
    readable.chmod(0o644)
    theirs = keys / "theirs.key"
    theirs.write_text("k" * 64)
    theirs.chmod(0o600)
    os.chown(theirs, attacker.uid, attacker.gid)
    link = keys / "link.key"
    link.symlink_to(theirs)
    for path, why in (
        (readable, "readable or writable by group or others"),
        (theirs, f"owned by {attacker.name}"),
        (link, "a symlink"),
    ):
        run = wp_env.run("wp_backup", BACKUP_HMAC_KEY_FILE=str(path))
        assert run.returncode == 78, run.stdout[-3000:]
        assert why in failure(run) and str(path) in failure(run)
    assert not wp_env.backup_dir.exists() or not wp_env.sets()


def test_a_set_made_before_signing_needs_root_to_vouch_for_it(site_env, site):
    """A set without manifest.hmac (made before sets were signed) is refused with the way out
    in the message; ``python -m jobs._backupsets sign`` (root, with the key) makes it usable."""
    assert site_env.run("wp_backup").returncode == 0
    [old] = site_env.sets()
    (old / "manifest.hmac").unlink()
    refused = site_env.run("wp_restore", RESTORE_SET="latest")
    assert refused.returncode == 78
    assert "no authenticated, verified set" in failure(refused)
    assert "jobs._backupsets sign" in refused.event("restore.set_skipped")["reason"]
    signed = subprocess.run(
        [sys.executable, "-m", "jobs._backupsets", "sign", str(old)],
        capture_output=True,
        text=True,
        env=clean_env(PYTHONPATH=str(REPO), BACKUP_HMAC_KEY_FILE=str(site_env.key_file)),
    )
    assert signed.returncode == 0, signed.stderr
    assert site_env.run("wp_restore", RESTORE_SET="latest").returncode == 0
