"""The shipped late_watch unit under a real systemd (issue 17: "late" is told): a job whose
timer stopped, and whose last start is hours old, runs no code that could say so; the
late-watch unit (root, strict sandbox with CAP_DAC_READ_SEARCH, installed by jobrunner
itself) runs `jobrunner health --notify` and sends one "⏰ … is late" notification, nothing
more on its next run, and one "✅ … started again" once the job has run. The HTTP receiver
listens on the host's 127.0.0.1 (the sandbox shares the host's network namespace)."""

from __future__ import annotations

import json

import pytest

from ..test_notify_receivers import HttpReceiver
from .sandbox import Sandbox

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

ROOT = "/usr/local/lib/jrlw"
PACKAGE = "jrlw_jobs"
ENV = {"JOBRUNNER_PATH": ROOT}
JOBS = """
from jobrunner import job

@job(schedule="hourly")
def jrlw_hourly(ctx):
    ctx.log.info("hourly.ran")
"""
BACKDATE = """
import sys, time
from jobrunner.store.state import StateStore
old = time.time() - 5 * 3600
StateStore("jrlw_hourly", "/var/lib/jobrunner").update(
    lambda s: s.update(last_start=old, last_finish=old + 1, last_success=old + 1, last_outcome="success")
)
"""


@pytest.fixture(scope="module")
def watched(installed_sandbox: Sandbox):
    sb = installed_sandbox
    assert sb.installed is not None
    py = sb.installed.python
    receiver = HttpReceiver()
    sb.write_file(f"{ROOT}/{PACKAGE}/__init__.py", "")
    sb.write_file(f"{ROOT}/{PACKAGE}/hourly.py", JOBS)
    sb.write_file(
        "/etc/jobrunner/jobrunner.env",
        f"JOBRUNNER_PATH={ROOT}\nJOBRUNNER_NOTIFY_URLS=json://127.0.0.1:{receiver.port}/hook\n"
        "JOBRUNNER_NOTIFY_TIMEOUT=5s\n",
    )
    sb.write_file("/etc/default/late-watch", f"LATE_WATCH_PACKAGE={PACKAGE}\n")
    render = [py, "-m", "jobrunner", "units", "render", "--out", f"{ROOT}/units", "--package", PACKAGE]
    sb.run([*render, "jrlw_hourly", "jobs.late_watch:late_watch"], env=ENV, timeout=120)
    sb.run([py, "-m", "jobrunner", "units", "install", "--dir", f"{ROOT}/units"], env=ENV, timeout=120)
    for unit in ("jrlw-hourly", "late-watch"):
        sb.systemctl("stop", f"{unit}.timer")  # jrlw-hourly's timer "did not fire"; late-watch by hand
        sb.pin(f"{unit}.service", reload=False)
    sb.daemon_reload()
    try:
        yield sb, receiver
    finally:
        receiver.close()


def _watch(sb: Sandbox) -> dict[str, str]:
    state = sb.start_oneshot("late-watch.service", timeout=120)
    log = sb.run(["journalctl", "-u", "late-watch.service", "-n", "40", "--no-pager"], check=False).stdout
    assert (state["Result"], state["ExecMainStatus"]) == ("success", "0"), log
    return state


def test_the_late_watch_unit_tells_of_a_late_job_once_and_of_its_return(watched):
    sb, receiver = watched
    assert sb.start_oneshot("jrlw-hourly.service")["Result"] == "success"
    assert sb.installed is not None
    sb.run([sb.installed.python, "-c", BACKDATE], env=ENV)

    _watch(sb)
    (first,) = receiver.wait(1)
    body = json.loads(first["body"])
    assert body["title"].startswith("⏰ jrlw_hourly is late on"), body
    assert "late: last start 5h" in body["message"] and "jrlw-hourly.timer is inactive" in body["message"]
    assert "systemctl list-timers jrlw-hourly.timer" in body["message"]

    _watch(sb)  # still late, within the repeat window: nothing new
    assert len(receiver.json_bodies()) == 1

    assert sb.start_oneshot("jrlw-hourly.service")["Result"] == "success"  # it runs again
    _watch(sb)
    bodies = receiver.wait(2)
    assert json.loads(bodies[1]["body"])["title"].startswith("✅ jrlw_hourly started again on")
    _watch(sb)
    assert len(receiver.json_bodies()) == 2
    # what it told is kept in its own state directory, root's and private
    mode = sb.run(["stat", "-c", "%U %a", "/var/lib/jobrunner/late_watch/late-notified.json"]).stdout.split()
    assert mode == ["root", "600"]
