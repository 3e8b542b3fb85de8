"""The runtime's promises of docs/security.md, tried as the attacker: a real unprivileged user
(``attacker``) and www-data, real files, real runs of the CLI as root.

One test per finding of the security review (issue #13): each failed on the code before the
fix and passes after it. (Restore: tests/wp; secrets and bad input: test_security_secrets.py,
test_security_input.py; the alert handler under real systemd: tests/systemd/test_security_e2e.py.)
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .attacker import as_user, start_as_user
from .conftest import REPO, stop_group, wait_for
from .test_notify_receivers import receiver

SLEEPER = """
import time
from jobrunner import job, Lock

@job(lock=True, timeout="{timeout}")
def sleeper(ctx):
    time.sleep({sleep})
"""


HOURLY = """
from jobrunner import job

@job(schedule="hourly", lock=True)
def hourly(ctx):
    pass
"""


def _hold(path: Path) -> subprocess.Popen[bytes]:
    """Another process holding an exclusive flock on ``path`` (flock(1), as a script would);
    returned once it holds it. The caller stops it (stop_group)."""
    holder = subprocess.Popen(["flock", "-x", str(path), "sleep", "60"], start_new_session=True)
    assert wait_for(path.exists, timeout=10)
    time.sleep(0.2)  # the file exists before flock(1) has locked it
    return holder


def _skipping_since(launcher, job: str, seconds_ago: float) -> None:
    """Backdate the job's streak of skips (as if its lock had been held that long)."""
    state_file = launcher.state_dir / job / "state.json"
    state = json.loads(state_file.read_text())
    state["skipped_since"] = time.time() - seconds_ago
    state_file.write_text(json.dumps(state))


def _env(launcher, **override: str) -> dict[str, str]:
    return {**launcher.env(), **override}


def _world_open(path: Path) -> None:
    """Make ``path`` and its parents reachable by other users (pytest's tmp dirs are 0700)."""
    for parent in [path, *path.parents]:
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o711)


def test_dir_backup_by_hand_is_private_whatever_the_umask(launcher, attacker, tmp_path):
    """Finding 3: `jobrunner run jobs.dir_backup` by hand as root with umask 022 makes a 0700
    directory and 0600 archive and checksum: another user can read neither (the archive of
    /etc holds /etc/shadow)."""
    dest = tmp_path / "pub" / "backups"
    _world_open(tmp_path)
    source = tmp_path / "etc"
    source.mkdir()
    (source / "shadow").write_text("root:$6$secret-hash:19000:0:99999:7:::\n")
    env = launcher.env(BACKUP_SOURCE=str(source), BACKUP_DIR=str(dest))
    old = os.umask(0o022)
    try:
        run = launcher.run("run", "jobs.dir_backup", env=env)
    finally:
        os.umask(old)
    assert run.returncode == 0, run.stdout + run.stderr
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    files = sorted(dest.iterdir())
    assert [f.suffix for f in files] == [".gz", ".sha256"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        peek = as_user(attacker, ["cat", str(path)], check=False)
        assert peek.returncode != 0 and "Permission denied" in peek.stderr


def test_dir_backup_never_follows_a_planted_part_symlink(launcher, attacker, tmp_path):
    """Finding 10: in a backup directory others can write (a shared mount, 1777), the attacker
    plants `.part` symlinks for the names the next runs would use, pointing at a root-owned
    file; root's backup never writes through them."""
    shared = tmp_path / "mnt" / "backups"
    shared.mkdir(parents=True)
    shared.chmod(0o1777)
    _world_open(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("root's own file\n")
    victim.chmod(0o644)
    source = tmp_path / "data"
    source.mkdir()
    (source / "f").write_text("x\n")
    now = int(time.time())
    for second in range(now - 2, now + 30):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        for name in (f".data-{stamp}.tar.gz.part", f"data-{stamp}.tar.gz.sha256"):
            as_user(attacker, ["ln", "-s", str(victim), str(shared / name)])
    env = launcher.env(BACKUP_SOURCE=str(source), BACKUP_DIR=str(shared))
    run = launcher.run("run", "jobs.dir_backup", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert victim.read_text() == "root's own file\n"
    archives = [p for p in shared.iterdir() if p.name.endswith(".tar.gz") and not p.is_symlink()]
    assert len(archives) == 1 and archives[0].stat().st_uid == 0
    assert stat.S_IMODE(archives[0].stat().st_mode) == 0o600


def test_another_user_cannot_hold_roots_lock(launcher, attacker, tmp_path):
    """Finding 4: the lock file of root's job is 0600 in a directory only root can add to, so
    another user can neither open it (to flock it) nor plant one: root's run is not skipped."""
    lock_dir = tmp_path / "locks"
    _world_open(tmp_path)
    launcher.write_job("sleeper", SLEEPER.format(timeout="30s", sleep="0"))
    env = _env(launcher, JOBRUNNER_LOCK_DIR=str(lock_dir))
    old = os.umask(0o000)  # even with the loosest umask
    try:
        first = launcher.run("run", "sleeper", env=env)
    finally:
        os.umask(old)
    assert first.returncode == 0, first.stderr
    lock = lock_dir / "sleeper.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600 and lock.stat().st_uid == 0
    assert stat.S_IMODE(lock_dir.stat().st_mode) & 0o022 == 0
    hold = as_user(attacker, ["flock", "-n", str(lock), "true"], check=False)
    assert hold.returncode != 0 and "Permission denied" in hold.stderr
    plant = as_user(attacker, ["touch", str(lock_dir / "other.lock")], check=False)
    assert plant.returncode != 0
    again = launcher.run("run", "sleeper", env=env)
    assert again.returncode == 0 and "lock.acquired" in again.names()


def test_a_lock_file_planted_by_another_user_is_not_trusted(launcher, attacker, tmp_path):
    """Finding 4: in a sticky shared directory (/run/lock-like, 1777) the attacker creates the
    lock file first and holds it; root replaces it with its own and runs instead of skipping."""
    lock_dir = tmp_path / "shared-locks"
    lock_dir.mkdir()
    lock_dir.chmod(0o1777)
    _world_open(tmp_path)
    lock = lock_dir / "sleeper.lock"
    holder = start_as_user(attacker, ["flock", "-x", str(lock), "sleep", "60"])
    try:
        assert wait_for(lock.exists, timeout=10)
        assert lock.stat().st_uid == attacker.uid
        launcher.write_job("sleeper", SLEEPER.format(timeout="30s", sleep="0"))
        run = launcher.run("run", "sleeper", env=_env(launcher, JOBRUNNER_LOCK_DIR=str(lock_dir)))
        assert run.returncode == 0, run.stdout + run.stderr
        assert "lock.acquired" in run.names()
        assert lock.stat().st_uid == 0 and stat.S_IMODE(lock.stat().st_mode) == 0o600
    finally:
        stop_group(holder)


def test_skipping_past_the_schedule_is_a_warning_naming_the_holder(launcher, tmp_path):
    """Finding 4 (the silent-skip hole): a job whose lock stays held logs lock.busy with the
    holder's PID and user; once it has been skipping longer than its schedule allows it logs
    lock.skipping at warning, health says 'skipped since …, held by PID …', and the metrics
    carry the streak."""
    launcher.write_job("hourly", HOURLY)
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = _env(launcher, JOBRUNNER_LOCK_DIR=str(lock_dir), JOBRUNNER_METRICS_DIR=str(metrics))
    holder = _hold(lock_dir / "hourly.lock")
    try:
        first = launcher.run("run", "hourly", env=env)
        assert first.returncode == 75
        busy = first.event("lock.busy")
        assert busy["holder_pid"] == holder.pid and busy["holder_user"] == "root"
        assert "lock.skipping" not in first.names()
        # The streak began two hours ago: longer than an hourly schedule allows.
        _skipping_since(launcher, "hourly", 7200)
        second = launcher.run("run", "hourly", env=env)
        assert second.returncode == 75
        warning = second.event("lock.skipping")
        assert warning["level"] == "warning" and warning["holder_pid"] == holder.pid
        assert "held by PID" in warning["reason"]
        health = launcher.run("health", "hourly", "--package", "hourly", env=env)
        assert health.returncode in (1, 2), health.stdout
        assert "skipped since" in health.stdout and f"held by PID {holder.pid} (user root)" in health.stdout
        prom = (metrics / "hourly.prom").read_text()
        assert "jobrunner_consecutive_skips{" in prom and 'jobrunner_consecutive_skips{job_name="hourly"' in prom
        since = [line for line in prom.splitlines() if line.startswith("jobrunner_skipping_since_timestamp_seconds{")]
        assert since and float(since[0].split()[-1]) > 0
    finally:
        stop_group(holder)
    after = launcher.run("run", "hourly", env=env)
    assert after.returncode == 0
    assert "skipped_since" not in launcher.state("hourly")


def test_a_held_state_lock_does_not_hang_a_run(launcher, tmp_path):
    """Finding 5: another process holding the job's `.state.lock` costs a bounded wait, never
    a hang: a `timeout="3s"` job ends within seconds, reporting state.write_failed."""
    launcher.write_job("sleeper", SLEEPER.format(timeout="3s", sleep="0"))
    state_dir = launcher.state_dir / "sleeper"
    state_dir.mkdir(parents=True)
    holder = _hold(state_dir / ".state.lock")
    try:
        started = time.monotonic()
        run = launcher.run("run", "sleeper", timeout=60)
        took = time.monotonic() - started
    finally:
        stop_group(holder)
    assert took < 15, took
    assert run.returncode == 0
    assert "state.write_failed" in run.names()


def test_a_planted_state_lock_symlink_is_not_followed(launcher, www_data, tmp_path):
    """Finding 5: the job user (www-data owns its state directory) plants `.state.lock` as a
    symlink to a path root would create (/etc/nologin-like); root's run creates nothing there."""
    launcher.write_job("sleeper", SLEEPER.format(timeout="30s", sleep="0"))
    _world_open(tmp_path)
    state_dir = launcher.state_dir / "sleeper"
    state_dir.mkdir(parents=True)
    os.chown(state_dir, www_data.uid, www_data.gid)
    target = tmp_path / "nologin"
    as_user(www_data, ["ln", "-s", str(target), str(state_dir / ".state.lock")])
    run = launcher.run("run", "sleeper")
    assert not target.exists() and not target.is_symlink() or target.is_symlink() is False
    assert not os.path.lexists(target)
    assert run.returncode == 0  # the state could not be written; the job still ran
    assert "state.write_failed" in run.names()


@pytest.mark.parametrize(
    "planted",
    [
        {"runs": "x"},
        {"last_success": "yesterday", "consecutive_failures": "3"},
        {"running": {"since": "now"}},
        {"durations_s": ["fast"]},
        [1, 2, 3],
    ],
)
def test_state_with_wrong_types_is_unreadable_not_a_crash(launcher, planted):
    """Finding 6: valid JSON with wrong types (written by the job's user) never crashes a run or
    `health` with a traceback: health says UNKNOWN "unreadable", the run completes and
    replaces the record."""
    launcher.write_job("sleeper", SLEEPER.format(timeout="30s", sleep="0"))
    state_dir = launcher.state_dir / "sleeper"
    state_dir.mkdir(parents=True)
    (state_dir / "state.json").write_text(json.dumps(planted))
    health = launcher.run("health", "sleeper", "--package", "sleeper")
    assert health.returncode == 3, health.stdout + health.stderr
    assert "Traceback" not in health.stderr and "unreadable" in health.stdout
    run = launcher.run("run", "sleeper")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    state = launcher.state("sleeper")
    assert state["last_outcome"] == "success" and state.get("recovered_from_unreadable_state") is True
    status = launcher.run("status", "--package", "sleeper")
    assert "Traceback" not in status.stderr


def test_a_state_file_that_is_a_fifo_or_huge_is_refused(launcher, tmp_path):
    """Finding 6: a state.json swapped for a FIFO or a huge file is unreadable at once (no hang,
    no memory blow-up)."""
    launcher.write_job("sleeper", SLEEPER.format(timeout="30s", sleep="0"))
    state_dir = launcher.state_dir / "sleeper"
    state_dir.mkdir(parents=True)
    os.mkfifo(state_dir / "state.json")
    health = launcher.run("health", "sleeper", "--package", "sleeper", timeout=30)
    assert health.returncode == 3 and "unreadable" in health.stdout
    os.unlink(state_dir / "state.json")
    with open(state_dir / "state.json", "wb") as handle:
        handle.truncate(64 << 20)
    health = launcher.run("health", "sleeper", "--package", "sleeper", timeout=30)
    assert health.returncode == 3 and "unreadable" in health.stdout


def test_non_root_lock_fallback_refuses_a_directory_made_by_another_user(launcher, attacker, www_data, tmp_path):
    """Finding 10: the per-user lock directory under the shared temp dir, pre-created by another
    user, is refused (exit 78, the reason in the run's log, no traceback), never used."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    _world_open(tmp_path)
    as_user(attacker, ["mkdir", "-m", "0777", str(tmp / f"jobrunner-{www_data.uid}")])
    jobs = tmp_path / "jobmods"
    _world_open(jobs)
    launcher.write_job("sleeper", SLEEPER.format(timeout="30s", sleep="0"))
    for path in jobs.iterdir():
        path.chmod(0o644)
    state = tmp_path / "www-state"
    state.mkdir()
    os.chown(state, www_data.uid, www_data.gid)
    env = {
        "JOBRUNNER_PATH": str(jobs),
        "PYTHONPATH": str(REPO),
        "TMPDIR": str(tmp),
        "JOBRUNNER_STATE_DIR": str(state),
        "JOBRUNNER_LOG_FORMAT": "json",
    }
    run = as_user(www_data, [sys.executable, "-m", "jobrunner", "run", "sleeper"], env=env, check=False)
    assert run.returncode == 78, run.stdout + run.stderr
    said = run.stdout + run.stderr
    assert "lock directory" in said and "not this user's private directory" in said
    assert "Traceback" not in said


def test_skipping_too_long_notifies_once_per_window(launcher, receiver, tmp_path):
    """Finding 4: a job kept from running past what its schedule allows sends one notification
    naming the holder, then holds back within JOBRUNNER_NOTIFY_REPEAT (no flood every tick)."""
    launcher.write_job("hourly", HOURLY)
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    env = _env(launcher, JOBRUNNER_LOCK_DIR=str(lock_dir), JOBRUNNER_NOTIFY_URLS=receiver.url())
    holder = _hold(lock_dir / "hourly.lock")
    try:
        assert launcher.run("run", "hourly", env=env).returncode == 75
        assert receiver.requests == []  # one skip: the usual overlap, nothing to say
        _skipping_since(launcher, "hourly", 7200)
        for _ in range(3):
            assert launcher.run("run", "hourly", env=env).returncode == 75
    finally:
        stop_group(holder)
    sent = receiver.wait(1)
    time.sleep(0.5)
    assert len(receiver.requests) == 1
    message = json.loads(sent[0]["body"])
    assert "hourly" in message["title"] and "not running" in message["title"]
    assert f"held by PID {holder.pid} (user root)" in message["message"]


def test_a_planted_log_file_symlink_is_not_followed(launcher, www_data, tmp_path):
    """Root never follows a path the job's user controls: a root job's log_file in a directory
    www-data can write, planted as a symlink to root's file, is refused (log.file_unavailable),
    the file it points at is untouched, and the run still logs to stdout."""
    logs = tmp_path / "logs"
    logs.mkdir()
    os.chown(logs, www_data.uid, www_data.gid)
    _world_open(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    as_user(www_data, ["ln", "-s", str(victim), str(logs / "job.log")])
    launcher.write_job(
        "logged",
        f"""
        from jobrunner import job

        @job(log_file={str(logs / "job.log")!r})
        def logged(ctx):
            ctx.log.info("hello")
    """,
    )
    run = launcher.run("logged")
    assert run.returncode == 0
    assert victim.read_text() == "root's file\n"
    assert "log.file_unavailable" in run.names() and "hello" in run.names()


def test_a_secret_in_an_event_name_is_masked(launcher):
    """A job that formats a secret into the event name itself (f-string) still logs it masked."""
    launcher.write_job(
        "leaky",
        """
        from jobrunner import job

        @job
        def leaky(ctx):
            ctx.log.info(f"connecting with {ctx.env['API_TOKEN']}")
    """,
    )
    run = launcher.run("leaky", env=_env(launcher, API_TOKEN="tok-9f8e7d6c5b4a"))
    assert run.returncode == 0
    assert "tok-9f8e7d6c5b4a" not in run.stdout + run.stderr
    assert "connecting with ***" in run.names()
