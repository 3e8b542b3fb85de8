"""Late jobs told (issue 17): a job whose timer did not start it runs no code that could say
so; `jobrunner health --notify` (what the shipped late_watch job runs) tells, once per late
episode, and once when the job starts again; never while it is silenced. The real CLI, real
Apprise, a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import os
import time

from jobrunner.store.state import StateStore

from .test_notify_receivers import receiver

JOBS = """
from jobrunner import job

@job(schedule="hourly")
def hourly(ctx):
    ctx.log.info("hourly.ran")

@job(schedule="hourly")
def quiet(ctx):
    pass
"""


def _backdate(launcher, job: str, hours: float) -> None:
    old = time.time() - hours * 3600
    StateStore(job, str(launcher.state_dir)).update(
        lambda s: s.update(last_start=old, last_finish=old + 1, last_success=old + 1, last_outcome="success")
    )


def _titles(receiver) -> list[str]:
    return [b["title"] for b in receiver.json_bodies()]


def test_a_late_job_is_told_once_then_when_it_started_again(launcher, receiver):
    launcher.write_job("latejobs", JOBS)
    env = launcher.env(JOBRUNNER_NOTIFY_URLS=f"{receiver.url()}", JOBRUNNER_NOTIFY_TIMEOUT="10s")
    _backdate(launcher, "hourly", 5)
    _backdate(launcher, "quiet", 0.2)  # on time: never told
    check = ("health", "--package", "latejobs", "--notify")

    first = launcher.run(*check, env=env)
    assert first.returncode == 2 and "late: last start 5h" in first.stdout  # CRITICAL: 2 × the limit
    assert "notified: ⏰ hourly is late on" in first.stderr
    (sent,) = receiver.wait(1)
    body = json.loads(sent["body"])
    assert body["title"].startswith("⏰ hourly is late on") and body["type"] == "warning"
    assert "late: last start 5h" in body["message"] and "systemctl list-timers hourly.timer" in body["message"]
    memory = launcher.state_dir / ".late-notified.json"
    assert oct(memory.stat().st_mode & 0o777) == "0o600"

    assert launcher.run(*check, env=env).returncode == 2  # still late, within the repeat window
    time.sleep(0.5)
    assert len(receiver.json_bodies()) == 1

    # The repeat window passed (1s, and more than 1s since the first): told again, as still late.
    time.sleep(1.1)
    launcher.run(*check, env={**env, "JOBRUNNER_NOTIFY_REPEAT": "1s"})
    assert wait_titles(receiver, 2)[-1].startswith("⏰ hourly is still late on")

    # It runs (its timer came back): told once that it started again, then nothing.
    assert launcher.run("latejobs:hourly", env={**env, "JOBRUNNER_NOTIFY_URLS": ""}).returncode == 0
    again = launcher.run(*check, env=env)
    assert again.returncode == 0, again.stdout
    assert wait_titles(receiver, 3)[-1].startswith("✅ hourly started again on")
    launcher.run(*check, env=env)
    time.sleep(0.5)
    assert len(receiver.json_bodies()) == 3
    assert not any("quiet" in t for t in _titles(receiver))


def wait_titles(receiver, n: int) -> list[str]:
    receiver.wait(n)
    return _titles(receiver)


def test_a_silenced_late_job_is_not_told_and_undelivered_is_retried(launcher, receiver):
    launcher.write_job("latejobs", JOBS)
    env = launcher.env(JOBRUNNER_NOTIFY_URLS=f"{receiver.url()}", JOBRUNNER_NOTIFY_TIMEOUT="5s")
    _backdate(launcher, "hourly", 5)
    _backdate(launcher, "quiet", 0.2)
    assert launcher.run("silence", "hourly", "--for", "1h", "--reason", "migrating", env=env).returncode == 0
    launcher.run("health", "--package", "latejobs", "--notify", env=env)
    time.sleep(0.5)
    assert receiver.json_bodies() == []
    assert launcher.run("unsilence", "hourly", env=env).returncode == 0

    # Nowhere to deliver (a closed port): nothing remembered, so the next check tells.
    closed = launcher.env(JOBRUNNER_NOTIFY_URLS="json://127.0.0.1:9/", JOBRUNNER_NOTIFY_TIMEOUT="3s")
    down = launcher.run("health", "--package", "latejobs", "--notify", env=closed)
    assert "could not notify '⏰ hourly is late on" in down.stderr
    assert not (launcher.state_dir / ".late-notified.json").exists()
    launcher.run("health", "--package", "latejobs", "--notify", env=env)
    assert _titles_after(receiver, 1)[0].startswith("⏰ hourly is late on")


def _titles_after(receiver, n: int) -> list[str]:
    receiver.wait(n)
    return _titles(receiver)


def test_the_memory_is_not_taken_from_another_user(launcher, receiver, tmp_path):
    """A memory file that is not root's own regular file is not read (the check says so and
    tells again rather than trusting it)."""
    launcher.write_job("latejobs", JOBS)
    env = launcher.env(JOBRUNNER_NOTIFY_URLS=f"{receiver.url()}", JOBRUNNER_NOTIFY_TIMEOUT="10s")
    _backdate(launcher, "hourly", 5)
    _backdate(launcher, "quiet", 0.2)
    planted = tmp_path / "planted.json"
    planted.write_text(json.dumps({"hourly": {"since": 0, "sent": time.time()}}))
    os.chown(planted, 65534, 65534)
    out = launcher.run("health", "--package", "latejobs", "--notify", "--notify-memory", str(planted), env=env)
    assert "not a regular file of this user's; starting afresh" in out.stderr
    assert "Traceback" not in out.stderr
    assert _titles_after(receiver, 1)[0].startswith("⏰ hourly is late on")  # told, not forgotten
    assert planted.stat().st_uid == 0 and json.loads(planted.read_text())["hourly"]["since"] > 0


def test_a_fifo_as_the_memory_does_not_hold_the_check(launcher, receiver, tmp_path):
    """A FIFO planted where the memory is kept is refused at once (never opened blocking)."""
    launcher.write_job("latejobs", JOBS)
    env = launcher.env(JOBRUNNER_NOTIFY_URLS=f"{receiver.url()}", JOBRUNNER_NOTIFY_TIMEOUT="10s")
    _backdate(launcher, "hourly", 5)
    _backdate(launcher, "quiet", 0.2)
    fifo = tmp_path / "memory.fifo"
    os.mkfifo(fifo)
    out = launcher.run("health", "--package", "latejobs", "--notify", "--notify-memory", str(fifo), env=env, timeout=30)
    assert "not a regular file of this user's; starting afresh" in out.stderr
    assert _titles_after(receiver, 1)[0].startswith("⏰ hourly is late on")
