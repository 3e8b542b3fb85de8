"""wp_backup interrupted mid-write and mid-verify, against the real MariaDB and WordPress.

A set only ever gets its final name ``<site>-<stamp>`` once it is whole (written as
``.<name>.partial``, renamed after the manifest). Whatever stops a run — ``systemctl stop``
(SIGTERM), the OOM killer or a power cut (SIGKILL) — must not leave a manifest-less directory
under a set's name: ``backup_prune`` never deletes those, so they would pile up. And a run
stopped during verify must drop its scratch database (its cleanup needs the credentials file,
which is removed by a cleanup registered earlier: last-in-first-out matters).

The interruption points are made deterministic with the real tools, no stand-ins:

- mid-write: a root session holds ``LOCK TABLES <db>.jrt_posts WRITE``, so mysqldump blocks
  half-way through the dump (as behind a long ALTER TABLE) until the test lets it go;
- mid-verify: the ``mysql`` client loading the dump into the scratch database is stopped
  (SIGSTOP) as soon as it appears, so the run cannot get past the load.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from jobs._wp import read_wp_config

from ..conftest import wait_for
from . import stack

pytestmark = pytest.mark.slow


# --- helpers --------------------------------------------------------------------------------


def _start_backup(env):
    """``jobrunner run jobs.wp_backup`` in the background, set up exactly as ``WpEnv.run`` does."""
    env.env_file.write_text("".join(f"{k}={json.dumps(v)}\n" for k, v in env.settings.items()))
    run_env = env.launcher.env(PATH=env.path, TMPDIR=str(env.tmpdir))
    return env.launcher.start("run", "jobs.wp_backup", "--env-file", str(env.env_file), env=run_env)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _argv(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [a.decode(errors="replace") for a in handle.read().split(b"\0") if a]
    except OSError:
        return []


def _final_sets(backup_dir: Path) -> list[str]:
    """Entries under a set's (final) name: anything not hidden."""
    return sorted(p.name for p in backup_dir.iterdir() if not p.name.startswith(".")) if backup_dir.exists() else []


def _partials(backup_dir: Path) -> list[Path]:
    return sorted(p for p in backup_dir.iterdir() if p.name.endswith(".partial")) if backup_dir.exists() else []


def _next_second() -> None:
    """Set names have a one-second stamp: make the next run's name differ from the last one's."""
    time.sleep(1.05 - time.time() % 1)


class TableLock:
    """A root session holding ``LOCK TABLES db.table WRITE`` until ``release()``."""

    def __init__(self, db: stack.MariaDB, database: str, table: str) -> None:
        self.db, self.database = db, database
        self.proc = subprocess.Popen(
            db.client("--unbuffered", "-N", "-B"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both piped
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.stdin.write(f"LOCK TABLES `{database}`.`{table}` WRITE; SELECT 'locked';\n")
        self.stdin.flush()
        assert self.stdout.readline().strip() == "locked"

    def waiters(self) -> int:
        """Sessions of the site's database user blocked behind the lock."""
        out = self.db.sql(
            "SELECT COUNT(*) FROM information_schema.processlist "
            f"WHERE user = '{stack.DB_USER}' AND state LIKE 'Waiting for table metadata lock%'"
        )
        return int(out.strip() or 0)

    def release(self) -> None:
        if self.proc.poll() is None:
            try:
                self.stdin.write("UNLOCK TABLES;\n")
                self.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stdout.close()


@pytest.fixture
def posts_locked(site, wp_stack):
    """The site copy's ``jrt_posts`` write-locked by root: a dump blocks in the middle."""
    lock = TableLock(wp_stack.db, read_wp_config(site).name, f"{stack.TABLE_PREFIX}posts")
    try:
        yield lock
    finally:
        lock.release()  # before the site fixture drops the database


def _wait_mid_write(proc, env, lock) -> Path:
    """Until mysqldump is blocked half-way; return the directory being written (whatever its
    name: the tests then check what that name is)."""
    assert wait_for(lambda: lock.waiters() >= 1 or proc.poll() is not None, 60), "the dump never reached the lock"
    assert proc.poll() is None, "the backup ended before it was interrupted"
    [writing] = list(env.backup_dir.iterdir())
    assert (writing / "db.sql.zst").exists() and not (writing / "manifest.json").exists()
    return writing


# --- tests ----------------------------------------------------------------------------------


def test_sigterm_mid_write_leaves_no_set_and_the_next_backup_and_prune_work(site_env, posts_locked):
    """systemctl stop while the dump is being written: exit 143, the partial set removed by the
    cleanup, nothing under a set's name, the credentials file gone; then a backup and a prune
    run as usual."""
    proc = _start_backup(site_env)
    _wait_mid_write(proc, site_env, posts_locked)
    proc.send_signal(signal.SIGTERM)
    run = site_env.launcher.finish(proc, timeout=60)
    posts_locked.release()
    assert run.returncode == 143, run.stdout[-3000:] + run.stderr
    assert run.event("job.finished")["outcome"] == "terminated"
    assert _final_sets(site_env.backup_dir) == [], "an interrupted backup left a set under its final name"
    assert _partials(site_env.backup_dir) == []
    assert list(site_env.tmpdir.iterdir()) == [], "the credentials file outlived the run"
    assert stack.DB_PASSWORD not in run.stdout + run.stderr

    _next_second()
    again = site_env.run("wp_backup")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    [good] = site_env.sets()
    assert json.loads((good / "manifest.json").read_text())["verified"] is True
    pruned = site_env.run("backup_prune")
    assert pruned.returncode == 0, pruned.stdout[-3000:]
    done = pruned.event("prune.done")
    assert (done["deleted"], done["kept"]) == (0, 1)
    assert "prune.skipped" not in pruned.names() and "prune.refused" not in pruned.names()
    assert site_env.sets() == [good]


def test_sigkill_mid_write_leaves_only_a_hidden_partial_that_prune_removes_once_stale(site_env, posts_locked):
    """A crash (SIGKILL of the run and everything it started, as systemd kills a cgroup) while
    the dump is being written: no cleanup can run, yet nothing carries a set's name, only the
    hidden ``.partial``. The next backup works; prune keeps the partial while it may still be
    written, and removes it once it is a day old."""
    proc = _start_backup(site_env)
    partial = _wait_mid_write(proc, site_env, posts_locked)
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run = site_env.launcher.finish(proc, timeout=30)
    assert run.returncode == -signal.SIGKILL
    posts_locked.release()
    assert _final_sets(site_env.backup_dir) == [], "a crashed backup left a set under its final name"
    assert _partials(site_env.backup_dir) == [partial]
    # No cleanup ran: the credentials file is left in TMPDIR (PrivateTmp= discards it under
    # systemd). Remove it so that the next runs' leak check sees only their own files.
    leaked = list(site_env.tmpdir.iterdir())
    assert [p.name.startswith("jobrunner-my-") for p in leaked] == [True]
    leaked[0].unlink()

    _next_second()
    again = site_env.run("wp_backup")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    [good] = site_env.sets()
    assert json.loads((good / "manifest.json").read_text())["verified"] is True

    young = site_env.run("backup_prune")
    assert young.returncode == 0, young.stdout[-3000:]
    assert young.event("prune.partial_kept")["path"] == str(partial)
    assert "prune.skipped" not in young.names() and "prune.refused" not in young.names()
    assert site_env.sets() == [good] and partial.exists()

    old = time.time() - 2 * 86400
    os.utime(partial, (old, old))
    stale = site_env.run("backup_prune")
    assert stale.returncode == 0, stale.stdout[-3000:]
    assert [e["path"] for e in stale.events if e["event"] == "prune.deleted"] == [str(partial)]
    assert not partial.exists() and site_env.sets() == [good]


def test_sigterm_mid_verify_drops_the_scratch_database(site_env, site: Path, wp_stack) -> None:
    """Stopped while the dump is loaded into the scratch database ``<db>_verify_<random>``: the
    cleanup drops it (while the credentials file still exists), no set is published."""
    database = read_wp_config(site).name
    # Bulk (25 MB of post meta): the load then lasts a second or two instead of ~40 ms, so it is
    # seen (and stopped) reliably.
    wp_stack.db.sql(
        f"INSERT INTO {stack.TABLE_PREFIX}postmeta (post_id, meta_key, meta_value) "
        "SELECT 1, CONCAT('bulk_', seq), REPEAT(MD5(seq), 16) FROM seq_1_to_50000",
        database,
    )
    proc = _start_backup(site_env)
    loader: list[int] = []

    def loading() -> bool:
        for pid in _descendants(proc.pid):
            argv = _argv(pid)
            if argv and os.path.basename(argv[0]) == "mysql" and argv[-1].startswith(f"{database}_verify_"):
                os.kill(pid, signal.SIGSTOP)  # the run cannot get past the load now
                loader.append(pid)
                return True
        return proc.poll() is not None

    assert wait_for(loading, 120, interval=0.002) and loader, "the verify load was never seen running: " + (
        site_env.launcher.finish(proc).stdout[-3000:] if proc.poll() is not None else ""
    )
    scratch = [d for d in wp_stack.db.sql("SHOW DATABASES").split() if d.startswith(f"{database}_verify_")]
    assert len(scratch) == 1, scratch
    proc.send_signal(signal.SIGTERM)
    run = site_env.launcher.finish(proc, timeout=60)
    assert run.returncode == 143, run.stdout[-3000:] + run.stderr
    assert run.event("job.finished")["outcome"] == "terminated"
    left = [d for d in wp_stack.db.sql("SHOW DATABASES").split() if "_verify_" in d]
    assert left == [], f"the scratch database leaked: {left}"
    assert "cleanup.failed" not in run.names(), [e for e in run.events if e["event"] == "cleanup.failed"]
    assert _final_sets(site_env.backup_dir) == [] and _partials(site_env.backup_dir) == []
    assert list(site_env.tmpdir.iterdir()) == [], "the credentials file outlived the run"
