"""Locks: flock(1) semantics, never two holders, never a stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from jobrunner.errors import LockBusy
from jobrunner.locks.file import FileLock

from .conftest import ledger_entries, overlaps, wait_for

CRITICAL = """
    import os, time
    from jobrunner import job, Lock

    @job(lock=Lock(wait=os.environ.get("WAIT") or None, shared=bool(os.environ.get("SHARED"))))
    def critical(ctx):
        # Record entry and exit of the critical section with O_APPEND timestamps.
        fd = os.open(ctx.env["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"in {os.getpid()} {time.monotonic_ns()}\\n".encode())
        time.sleep(float(ctx.env.get("HOLD", "0.2")))
        os.write(fd, f"out {os.getpid()} {time.monotonic_ns()}\\n".encode())
        os.close(fd)
"""


@pytest.mark.slow
def test_fifty_concurrent_launches_never_overlap(launcher, tmp_path):
    """50 concurrent launches: runs never overlap; every other launch exits 75."""
    launcher.write_job("critical", CRITICAL)
    ledger = tmp_path / "ledger"
    env = launcher.env(LEDGER=str(ledger), HOLD="0.3")
    procs = [launcher.start("critical", env=env) for _ in range(50)]
    codes = [launcher.finish(p).returncode for p in procs]
    assert set(codes) <= {0, 75}
    assert codes.count(0) >= 1
    assert overlaps(ledger_entries(ledger)) == 0
    assert ledger.read_text().count("in ") == codes.count(0)


def test_sigkilled_holder_leaves_no_stale_lock(launcher, tmp_path):
    """A holder killed with SIGKILL: the next run gets the lock at once."""
    launcher.write_job("critical", CRITICAL)
    ledger = tmp_path / "ledger"
    holder = launcher.start("critical", env=launcher.env(LEDGER=str(ledger), HOLD="60"))
    assert wait_for(lambda: ledger.exists() and "in " in ledger.read_text(), 15)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    run = launcher.run("critical", env=launcher.env(LEDGER=str(ledger), HOLD="0"))
    assert run.returncode == 0, run.stdout
    assert (launcher.lock_dir / "critical.lock").exists()  # the file stays; only the flock went


def test_waiter_gets_lock_when_holder_ends(launcher, tmp_path):
    """Lock(wait=...): a waiter runs as soon as the holder finishes."""
    launcher.write_job("critical", CRITICAL)
    ledger = tmp_path / "ledger"
    holder = launcher.start("critical", env=launcher.env(LEDGER=str(ledger), HOLD="1.5"))
    assert wait_for(lambda: ledger.exists(), 15)
    waiter = launcher.run("critical", env=launcher.env(LEDGER=str(ledger), HOLD="0", WAIT="20s"))
    assert launcher.finish(holder).returncode == 0
    assert waiter.returncode == 0
    assert "lock.waiting" in waiter.names()
    assert overlaps(ledger_entries(ledger)) == 0


def test_waiter_times_out_with_75(launcher, tmp_path):
    """Lock(wait=...): a waiter gives up after its wait with exit 75."""
    launcher.write_job("critical", CRITICAL)
    ledger = tmp_path / "ledger"
    holder = launcher.start("critical", env=launcher.env(LEDGER=str(ledger), HOLD="30"))
    assert wait_for(lambda: ledger.exists(), 15)
    started = time.monotonic()
    waiter = launcher.run("critical", env=launcher.env(LEDGER=str(ledger), WAIT="1s"))
    assert waiter.returncode == 75
    assert 0.9 < time.monotonic() - started < 10
    holder.send_signal(signal.SIGTERM)
    launcher.finish(holder)


def test_shared_holders_run_together_and_exclude_exclusive(tmp_path):
    """Shared locks coexist (flock -s); an exclusive one is busy while they are held."""
    path = str(tmp_path / "x.lock")
    a = FileLock(path, shared=True).acquire()
    b = FileLock(path, shared=True).acquire()
    with pytest.raises(LockBusy):
        FileLock(path).acquire()
    a.release()
    b.release()
    FileLock(path).acquire().release()


def test_interoperates_with_flock_command(tmp_path):
    """A lock held by flock(1) in a legacy script makes the job's lock busy, and vice versa."""
    path = tmp_path / "legacy.lock"
    proc = subprocess.Popen(["flock", str(path), "sleep", "30"], start_new_session=True)
    try:
        assert wait_for(lambda: path.exists(), 5)
        time.sleep(0.2)
        with pytest.raises(LockBusy):
            FileLock(str(path)).acquire()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # flock and its sleep, which inherited the lock
        proc.wait()
    # proc.wait() reaps flock only; its sleep may take a moment longer to die and drop the lock.
    with FileLock(str(path), wait=5):
        assert subprocess.run(["flock", "-n", str(path), "true"]).returncode == 1


def test_replaced_lock_file_is_relocked(tmp_path):
    """If an admin deletes the lock file while it is held, a new run cannot be fooled into
    holding a lock on the deleted inode at the same time as the old holder's replacement."""
    path = tmp_path / "r.lock"
    first = FileLock(str(path)).acquire()
    os.unlink(path)  # the admin's rm
    second = FileLock(str(path)).acquire()  # a new inode: lockable, and it is the one at the path
    assert os.path.samestat(os.fstat(second._fd), os.stat(path))
    first.release()
    second.release()
