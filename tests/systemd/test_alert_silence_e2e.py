"""alert-failure@ follows the alerting rules on a real systemd (issue 17): a silenced job
that the runner cannot report (SIGKILL) gets nothing from `jobrunner alert` either; once the
silence has ended, the next failure is sent, once, saying the job is still failing; the one
after that is held back by the throttle. A job below its `alert=2` threshold gets nothing
from it either: the killed runs count in its streak, and the second is sent.

The units are rendered by `jobrunner units render` from a package written for the test and
run inside the sandbox with the project installed at /opt/jobrunner; the HTTP receiver
listens on the host's 127.0.0.1 (the sandbox shares the host's network namespace).
"""

from __future__ import annotations

import json
import time

import pytest

from ..test_notify_receivers import HttpReceiver
from .fixtures import install_package_services

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

JOBS = """
import os, signal
from jobrunner import job

@job(name="jr_silence_kill")
def jr_silence_kill(ctx):
    ctx.log.info("about.to.die", marker="silence-marker-5521")
    os.kill(os.getpid(), signal.SIGKILL)

@job(name="jr_threshold_kill", alert=2)
def jr_threshold_kill(ctx):
    os.kill(os.getpid(), signal.SIGKILL)
"""
PKG_DIR = "/usr/local/lib/jr-silence-test"
UNIT = "jr-silence-kill.service"
THRESHOLD_UNIT = "jr-threshold-kill.service"
SILENCE_S = 25


@pytest.fixture(scope="module")
def silence_units(installed_sandbox, tmp_path_factory):
    sb = installed_sandbox
    receiver = HttpReceiver()
    install_package_services(sb, tmp_path_factory.mktemp("silencejobs"), "silencejobs", JOBS, PKG_DIR, receiver.port)
    sb.pin(UNIT, reload=False)
    sb.pin(THRESHOLD_UNIT, reload=False)
    sb.daemon_reload()
    try:
        yield sb, receiver
    finally:
        receiver.close()


def _alert_lines(sb, unit: str) -> list[str]:
    records = sb.journal_json(extra_args=["SYSLOG_IDENTIFIER=jobrunner-alert"])
    return [str(r.get("MESSAGE", "")) for r in records if unit in str(r.get("MESSAGE", ""))]


def _fail_once(sb, unit: str = UNIT) -> str:
    """Start the unit (it SIGKILLs itself) and wait for alert-failure@ to say what it did."""
    before = len(_alert_lines(sb, unit))
    state = sb.start_oneshot(unit, timeout=60)
    assert state["Result"] == "signal"
    sb.wait_for(lambda: len(_alert_lines(sb, unit)) > before, timeout=30)
    time.sleep(1.0)  # anything late would arrive now
    return _alert_lines(sb, unit)[-1]


def _jobrunner(sb, *args: str):
    return sb.run(["/opt/jobrunner/bin/jobrunner", *args, "--package", "silencejobs"], env={"JOBRUNNER_PATH": PKG_DIR})


def test_silenced_unit_gets_nothing_then_one_notification_when_the_silence_ends(silence_units):
    sb, receiver = silence_units
    silenced = _jobrunner(sb, "silence", "jr_silence_kill", "--for", f"{SILENCE_S}s", "--reason", "e2e")
    began = time.time()
    assert "jr_silence_kill: silenced until" in silenced.stdout
    listed = sb.run(["/opt/jobrunner/bin/jobrunner", "silence", "--list"]).stdout
    assert "jr_silence_kill: silenced until" in listed and "e2e" in listed

    line = _fail_once(sb)
    assert "the job is silenced" in line, line
    assert receiver.requests == []
    state = json.loads(sb.read_file("/var/lib/jobrunner/jr_silence_kill/state.json"))
    assert state["consecutive_failures"] == 1 and state["notify"]["silenced"] == 1  # counted, not sent

    time.sleep(max(0.0, began + SILENCE_S + 1 - time.time()))
    line = _fail_once(sb)
    assert "sent to 1 service" in line, line
    (got,) = receiver.wait(1)
    message = json.loads(got["body"])
    assert message["title"].startswith(f"🔔 {UNIT} still failing on") and "SIGKILL" in message["title"]
    assert "silence-marker-5521" in message["message"]

    line = _fail_once(sb)
    assert "held back" in line, line
    assert len(receiver.requests) == 1


def test_below_its_threshold_a_killed_unit_gets_nothing_then_one(silence_units):
    sb, receiver = silence_units
    before = len(receiver.requests)
    line = _fail_once(sb, THRESHOLD_UNIT)
    assert "below the job's alert threshold" in line, line
    assert len(receiver.requests) == before
    state = json.loads(sb.read_file("/var/lib/jobrunner/jr_threshold_kill/state.json"))
    assert state["consecutive_failures"] == 1 and state["alert"] == {"after": 2, "over": 10}
    assert state.get("running") is None  # the killed run was folded in as a failure
    line = _fail_once(sb, THRESHOLD_UNIT)
    assert "sent to 1 service" in line, line
    got = receiver.wait(before + 1)[before:]
    assert len(got) == 1
    message = json.loads(got[0]["body"])
    assert message["title"].startswith(f"💀 {THRESHOLD_UNIT} failed on") and "2 failures in a row" in message["message"]
    assert "held back" in _fail_once(sb, THRESHOLD_UNIT)
    assert len(receiver.requests) == before + 1
