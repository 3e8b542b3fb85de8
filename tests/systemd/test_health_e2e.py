"""`jobrunner health` against a real systemd: installed timers, real runs, a stopped timer, stale state.

Jobs live in a package inside the sandbox (``/srv/jrhealth/jrh_jobs``), found by the units
through ``JOBRUNNER_PATH`` in ``/etc/jobrunner/jobrunner.env``; their units are rendered and
installed by jobrunner itself, and ``health`` runs inside the sandbox as an admin would.
"""

from __future__ import annotations

import json
import time

import pytest

from .sandbox import Sandbox

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

ROOT = "/srv/jrhealth"
PACKAGE = "jrh_jobs"
ENV = {"JOBRUNNER_PATH": ROOT}
JOBS = '''
from jobrunner import job

@job(schedule="hourly")
def jrh_fresh(ctx):
    ctx.log.info("fresh.ran")

@job(schedule="hourly")
def jrh_stopped(ctx):
    pass

@job(schedule="hourly")
def jrh_stale(ctx):
    pass

@job(schedule="hourly")
def jrh_ghost(ctx):
    """Declared, but its units are never installed."""
'''
INSTALLED = ("jrh_fresh", "jrh_stopped", "jrh_stale")
TEXTFILES = "/var/lib/jrhealth-textfiles"


def installed_python(sb: Sandbox) -> str:
    """The python of the venv installed_sandbox installed."""
    assert sb.installed is not None
    return sb.installed.python


def health(sb: Sandbox, *args: str) -> tuple[int, str]:
    proc = sb.run(
        [installed_python(sb), "-m", "jobrunner", "health", "--package", PACKAGE, *args],
        check=False,
        env=ENV,
        timeout=60,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout


@pytest.fixture(scope="module")
def jobs_installed(installed_sandbox: Sandbox) -> Sandbox:
    sb = installed_sandbox
    probe = sb.run([installed_python(sb), "-c", "import jobrunner.systemd.calendar"], check=False)
    if probe.returncode != 0:
        pytest.fail(
            "the installed wheel lacks jobrunner.unitgen (pyproject.toml [tool.setuptools] packages must "
            "list it; health needs it for schedules, units render/install for everything)",
            pytrace=False,
        )
    sb.write_file(f"{ROOT}/{PACKAGE}/__init__.py", "")
    sb.write_file(f"{ROOT}/{PACKAGE}/health_jobs.py", JOBS)
    sb.write_file("/etc/jobrunner/jobrunner.env", f"JOBRUNNER_PATH={ROOT}\n")
    py = installed_python(sb)
    sb.run(["mkdir", "-p", TEXTFILES])
    sb.run(
        [
            py,
            "-m",
            "jobrunner",
            "units",
            "render",
            "--out",
            f"{ROOT}/units",
            "--package",
            PACKAGE,
            "--metrics-dir",
            TEXTFILES,
            *INSTALLED,
        ],
        env=ENV,
        timeout=120,
    )
    sb.run([py, "-m", "jobrunner", "units", "install", "--dir", f"{ROOT}/units"], env=ENV, timeout=120)
    for name in INSTALLED:
        unit = name.replace("_", "-")
        assert sb.show(f"{unit}.timer", "ActiveState")["ActiveState"] == "active"
        sb.systemctl("start", f"{unit}.service", timeout=120)  # a oneshot: returns when it finished
        assert sb.show(f"{unit}.service", "Result")["Result"] == "success"
    return sb


def test_healthy_timers_are_ok(jobs_installed: Sandbox):
    """Active timers whose jobs just succeeded: exit 0, with the timers' elapses in the facts."""
    code, out = health(jobs_installed, "jrh_fresh", "jrh_stale")
    assert code == 0, out
    assert out.splitlines()[0] == "OK: 2 jobs ok | jobs=2 ok=2 warning=0 critical=0 unknown=0"
    assert "next in" in out and "systemd not running" not in out
    code, out = health(jobs_installed, "jrh_fresh", "--json")
    doc = json.loads(out)
    assert (code, doc["status"]) == (0, "OK")
    fact = doc["jobs"][0]
    assert fact["systemd"] is True
    assert fact["timer"]["active_state"] == "active" and fact["timer"]["load_state"] == "loaded"
    now = time.time()
    assert now < fact["timer"]["next_elapse"] <= now + 3600 + 60
    assert fact["service"]["result"] == "success" and fact["service"]["exec_main_status"] == 0
    assert fact["state"]["last_outcome"] == "success" and fact["state"]["runs"] == {"success": 1}
    assert fact["expected_interval_s"] == 3600


def test_sandboxed_unit_writes_its_metrics(jobs_installed: Sandbox):
    """Under the units' hardening the runner still writes <job>.prom, 0644, expected interval included."""
    sb = jobs_installed
    text = sb.read_file(f"{TEXTFILES}/jrh_fresh.prom")
    assert 'jobrunner_runs_total{job_name="jrh_fresh",host="' in text
    assert 'jobrunner_expected_interval_seconds{job_name="jrh_fresh",' in text and text.count(" 3600\n") >= 1
    assert sb.run(["stat", "-c", "%a", f"{TEXTFILES}/jrh_fresh.prom"]).stdout.strip() == "644"


def test_stopped_timer_is_critical(jobs_installed: Sandbox):
    """A timer that was stopped is CRITICAL (2), even though its job's last run succeeded."""
    sb = jobs_installed
    sb.systemctl("stop", "jrh-stopped.timer")
    try:
        code, out = health(sb, "jrh_stopped")
        assert code == 2, out
        assert out.startswith("CRITICAL: jrh_stopped: jrh-stopped.timer is inactive (dead)")
        code, out = health(sb)  # every job: the worst one decides
        assert code == 2 and "critical=1" in out.splitlines()[0]
    finally:
        sb.systemctl("start", "jrh-stopped.timer")
    assert health(sb, "jrh_stopped")[0] == 0


def test_stale_last_success_is_warning_then_critical(jobs_installed: Sandbox):
    """A last success older than the hourly interval + grace is WARNING; twice that, CRITICAL."""
    sb = jobs_installed
    path = "/var/lib/jobrunner/jrh_stale/state.json"
    state = json.loads(sb.read_file(path))
    try:
        for age, expected in ((5400, 1), (3 * 3600, 2)):
            sb.write_file(path, json.dumps({**state, "last_success": time.time() - age}))
            code, out = health(sb, "jrh_stale")
            assert code == expected, out
            assert "last success 1h 30min ago" in out if expected == 1 else "last success 3h ago" in out
    finally:
        sb.write_file(path, json.dumps(state))
    assert health(sb, "jrh_stale")[0] == 0


def test_staleness_follows_a_drop_in_that_moved_the_timer(jobs_installed: Sandbox):
    """An admin moved jrh_stale from hourly to every 4 hours with a drop-in: a success 3 h ago
    is OK (it would be CRITICAL against the declared hourly), measured against the timer's
    OnCalendar= in force, and the job's line says the timer overrides the declaration."""
    sb = jobs_installed
    path = "/var/lib/jobrunner/jrh_stale/state.json"
    dropin = "/etc/systemd/system/jrh-stale.timer.d/zz-every-4h.conf"
    state = json.loads(sb.read_file(path))
    sb.write_file(dropin, "[Timer]\nOnCalendar=\nOnCalendar=*-*-* 00/4:00:00\n")
    sb.daemon_reload()
    try:
        sb.write_file(path, json.dumps({**state, "last_success": time.time() - 3 * 3600}))
        code, out = health(sb, "jrh_stale", "--json")
        doc = json.loads(out)["jobs"][0]
        assert (code, doc["status"]) == (0, "OK"), out
        assert doc["schedule_source"] == "timer" and doc["timer"]["calendar"] == ["*-*-* 00/4:00:00"]
        assert doc["expected_interval_s"] == 4 * 3600
        assert any("a drop-in overrides it" in note for note in doc["notes"]), doc["notes"]
    finally:
        sb.run(["rm", "-rf", "/etc/systemd/system/jrh-stale.timer.d"])
        sb.daemon_reload()
        sb.write_file(path, json.dumps(state))
    code, out = health(sb, "jrh_stale", "--json")
    doc = json.loads(out)["jobs"][0]
    assert code == 0 and doc["expected_interval_s"] == 3600 and doc["schedule_source"] == "timer"
    assert not [n for n in doc["notes"] if "drop-in" in n]  # the timer and the declaration agree again


def test_missing_unit_is_not_installed(jobs_installed: Sandbox):
    """A declared job whose units are not installed is OK "not installed" (issue 29: a fresh
    install is not a wall of warnings), saying so when named."""
    code, out = health(jobs_installed, "jrh_ghost")
    assert code == 0, out
    assert out.splitlines()[1].startswith("OK jrh_ghost: not installed (no jrh-ghost.timer")


def test_unknown_job_name_is_unknown(jobs_installed: Sandbox):
    """A JOB that the package does not declare: exit 3 and one line."""
    code, out = health(jobs_installed, "nope")
    assert code == 3 and out.startswith("UNKNOWN: no job 'nope'") and len(out.splitlines()) == 1


def test_failure_the_runner_could_not_record(jobs_installed: Sandbox):
    """A run killed by SIGKILL leaves the runner's state at success; the service's Result makes it WARNING."""
    sb = jobs_installed
    sb.write_file(
        "/etc/systemd/system/jrh-fresh.service.d/zz-kill.conf",
        "[Service]\nExecStart=\nExecStart=/bin/sh -c 'kill -KILL $$$$'\n",
    )
    sb.daemon_reload()
    try:
        sb.systemctl("start", "jrh-fresh.service", check=False, timeout=60)
        code, out = health(sb, "jrh_fresh")
        assert code == 1, out
        assert "Result=signal" in out.splitlines()[0] and "not recorded by the runner" in out
    finally:
        sb.run(["rm", "-rf", "/etc/systemd/system/jrh-fresh.service.d/zz-kill.conf"])
        sb.daemon_reload()
        sb.systemctl("reset-failed", "jrh-fresh.service", check=False)
        sb.systemctl("start", "jrh-fresh.service", timeout=120)
    assert health(sb, "jrh_fresh")[0] == 0
