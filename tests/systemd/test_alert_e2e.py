"""alert-failure@ on a real systemd: a SIGKILLed job is reported once, by `jobrunner alert`,
with its journal tail; a normal failure is reported once in total (by the runner), not twice.

The units are rendered by `jobrunner units render` from a job package written for the test,
and run inside the sandbox with the project installed at /opt/jobrunner. The HTTP receiver
listens on the host's 127.0.0.1: the sandbox shares the host's network namespace, and jobs
declared network=False may still reach localhost (IPAddressAllow=localhost).
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

@job(name="jr_alert_kill")
def jr_alert_kill(ctx):
    ctx.log.info("about.to.die", marker="kill-marker-7781")
    os.kill(os.getpid(), signal.SIGKILL)

@job(name="jr_alert_fail")
def jr_alert_fail(ctx):
    ctx.log.info("about.to.fail", marker="fail-marker-3321")
    raise RuntimeError("planned failure")
"""
PKG_DIR = "/usr/local/lib/jr-alert-test"


@pytest.fixture(scope="module")
def alert_units(installed_sandbox, tmp_path_factory):
    sb = installed_sandbox
    receiver = HttpReceiver()
    install_package_services(sb, tmp_path_factory.mktemp("alertjobs"), "alertjobs", JOBS, PKG_DIR, receiver.port)
    for unit in ("jr-alert-kill.service", "jr-alert-fail.service"):
        sb.pin(unit, reload=False)
    sb.daemon_reload()
    try:
        yield sb, receiver
    finally:
        receiver.close()


def _alert_finished(sb, unit: str) -> bool:
    records = sb.journal_json(extra_args=["SYSLOG_IDENTIFIER=jobrunner-alert"])
    return any(unit in str(r.get("MESSAGE", "")) for r in records)


def _run_and_wait(sb, unit: str) -> dict:
    state = sb.start_oneshot(unit, timeout=60)
    try:
        sb.wait_for(lambda: _alert_finished(sb, unit), timeout=30)
    except TimeoutError as timeout:
        alert = f"alert-failure@{unit}.service"
        log = sb.run(["journalctl", "--no-pager", "-n", "40", "-u", alert, "-u", unit], check=False).stdout
        status = sb.systemctl("status", alert, check=False).stdout
        raise AssertionError(f"{alert} did not report:\n{status}\n{log}") from timeout
    time.sleep(1.0)  # anything late would arrive now
    return state


def test_sigkilled_job_is_reported_by_the_alert_handler(alert_units):
    """A job SIGKILLed mid-run: exactly one alert, naming the signal, with the journal tail."""
    sb, receiver = alert_units
    before = len(receiver.requests)
    state = _run_and_wait(sb, "jr-alert-kill.service")
    assert state["Result"] == "signal"
    got = receiver.requests[before:]
    assert len(got) == 1, [r["body"][:200] for r in got]
    message = json.loads(got[0]["body"])
    assert "jr-alert-kill.service failed" in message["title"] and "SIGKILL" in message["title"]
    assert "about.to.die marker=kill-marker-7781" in message["message"]
    assert state["InvocationID"] in message["message"]


def test_normal_failure_is_reported_once_in_total(alert_units):
    """A job that raises: the runner reports it; alert-failure@ sees that and stays silent."""
    sb, receiver = alert_units
    before = len(receiver.requests)
    state = _run_and_wait(sb, "jr-alert-fail.service")
    assert state["Result"] == "exit-code" and state["ExecMainStatus"] == "1"
    got = receiver.requests[before:]
    assert len(got) == 1, [r["body"][:200] for r in got]
    message = json.loads(got[0]["body"])
    assert message["title"].startswith("❌ jr_alert_fail failed on") and "fail-marker-3321" in message["message"]
    alert_lines = [r.get("MESSAGE", "") for r in sb.journal_json(extra_args=["SYSLOG_IDENTIFIER=jobrunner-alert"])]
    assert any("already reported" in str(m) and "jr-alert-fail.service" in str(m) for m in alert_lines)
