"""jobrunner.observe.health: Nagios verdicts from timers, results and staleness (no-systemd path here)."""

from __future__ import annotations

import json
import os
import re
import time
from types import SimpleNamespace

import pytest

from jobrunner.observe import health
from jobrunner.store.state import StateStore
from jobrunner.systemd.systemctl import _blocks, timestamp

HOUR = 3600.0
DAY = 86400.0
BASE = 1700000000.0  # Tue 2023-11-14 22:13:20 UTC

no_systemd_here = pytest.mark.skipif(
    os.path.isdir("/run/systemd/system"), reason="the CLI would ask the host's systemd; covered by tests/systemd"
)

JOBS = """
from jobrunner import job

@job(schedule="hourly")
def hourly_job(ctx):
    pass

@job(schedule="*-*-* 02:15:00", jitter="5m")
def nightly(ctx):
    if ctx.env.get("FAIL"):
        raise RuntimeError("disk full")

@job
def manual(ctx):
    pass
"""


def fake_job(name: str, schedule=("hourly",), jitter=None):
    return SimpleNamespace(
        name=name, unit=name.replace("_", "-"), schedule=tuple(schedule), jitter=jitter, ref=f"jobs.x:{name}"
    )


def write_state(root, name: str, **state) -> None:
    StateStore(name, str(root)).update(lambda s: s.update(state))


# ----------------------------------------------------------------------------- formulas


def test_expected_interval_is_the_longest_gap_plus_jitter():
    """The interval is the longest gap between the next elapses, so weekdays-only sees the weekend."""
    assert health.expected_interval("hourly", base=BASE) == HOUR
    assert health.expected_interval("*-*-* 02:15:00", 300, base=BASE) == DAY + 300
    assert health.expected_interval("Mon..Fri 02:00", base=BASE) == 3 * DAY
    assert health.expected_interval(["*-*-* 02:00", "*-*-* 14:00"], base=BASE) == 12 * HOUR


def test_expected_interval_none_for_a_one_off():
    """A schedule that elapses at most once more has no interval (staleness is not checked)."""
    assert health.expected_interval("2030-01-01 00:00:00", base=BASE) is None


def test_stale_after_grace_is_ten_percent_or_five_minutes():
    """Grace defaults to max(10% of the interval, 5min); recent durations widen the window."""
    assert health.stale_after(DAY) == DAY + 8640
    assert health.stale_after(HOUR) == HOUR + 360
    assert health.stale_after(900) == 900 + 300
    assert health.stale_after(HOUR, grace=60) == HOUR + 60
    assert health.stale_after(HOUR, grace=0, durations=[10, 900.0, 5]) == HOUR + 900


def test_format_age():
    """Ages print with at most two units."""
    assert health.format_age(9000) == "2h 30min"
    assert health.format_age(90061) == "1d 1h"
    assert health.format_age(0.005) == "5ms"


def test_systemctl_show_blocks_and_timestamps():
    """`systemctl show` output splits into one block per unit; @epoch and n/a parse."""
    out = "Id=a.timer\nLoadState=loaded\nResult=\n\nId=b.timer\nLoadState=not-found\n"
    assert _blocks(out) == [
        {"Id": "a.timer", "LoadState": "loaded", "Result": ""},
        {"Id": "b.timer", "LoadState": "not-found"},
    ]
    # a timer with two OnCalendar= lines: systemctl repeats TimersCalendar=, both are kept
    two = (
        "Id=b.timer\nTimersCalendar={ OnCalendar=Mon *-*-* 03:00:00 ; next_elapse=@1796007600 }\n"
        "TimersCalendar={ OnCalendar=*-*-* 02:15:00 ; next_elapse=Wed 2026-11-25 12:00:00 UTC }\n"
        "RandomizedDelayUSec=5min\n"
    )
    block = _blocks(two)[0]
    assert health.timer_calendars(block["TimersCalendar"]) == ["Mon *-*-* 03:00:00", "*-*-* 02:15:00"]
    assert health.timer_calendars("") == [] and health.timer_calendars(None) == []
    assert timestamp("@1700000000") == 1700000000.0
    assert timestamp("Wed 2026-11-25 10:00:00 UTC") == 1795600800.0  # NextElapseUSecRealtime ignores --timestamp
    assert timestamp("n/a") is None and timestamp("") is None and timestamp("0") is None


# ----------------------------------------------------------------------------- verdicts


def judge(tmp_path, job, now=BASE, **kw):
    return health.check_jobs([job], now=now, state_root=str(tmp_path), systemd=False, **kw)[0]


def test_fresh_success_is_ok(tmp_path):
    """A success within the interval is OK, and the no-systemd note says the timer is unknown."""
    write_state(tmp_path, "a", last_outcome="success", last_success=BASE - 600, consecutive_failures=0)
    result = judge(tmp_path, fake_job("a"))
    assert result.status == health.OK, result
    assert health.NO_SYSTEMD in result.notes
    assert result.facts["expected_interval_s"] == HOUR
    assert result.facts["stale_after_s"] == HOUR + 360


def test_stale_warning_then_critical(tmp_path):
    """No success for stale_after is WARNING, for twice that CRITICAL."""
    limit = HOUR + 360
    write_state(tmp_path, "a", last_outcome="success", last_success=BASE - limit - 10)
    assert judge(tmp_path, fake_job("a")).status == health.WARNING
    write_state(tmp_path, "a", last_success=BASE - 2 * limit - 10)
    result = judge(tmp_path, fake_job("a"))
    assert result.status == health.CRITICAL
    assert "last success" in result.reasons[0] and "expected every 1h" in result.reasons[0]


def test_grace_option_moves_the_threshold(tmp_path):
    """--grace replaces the default grace."""
    write_state(tmp_path, "a", last_outcome="success", last_success=BASE - HOUR - 200)
    assert judge(tmp_path, fake_job("a")).status == health.OK
    assert judge(tmp_path, fake_job("a"), grace=60).status == health.WARNING


def test_failures(tmp_path):
    """A failed last run is WARNING; consecutive failures at the threshold are CRITICAL."""
    write_state(
        tmp_path,
        "a",
        last_outcome="failure",
        last_exit_code=1,
        last_success=BASE - 60,
        last_finish=BASE - 30,
        consecutive_failures=2,
        last_error="RuntimeError: x",
    )
    result = judge(tmp_path, fake_job("a"))
    assert result.status == health.WARNING
    assert "failure (exit 1): RuntimeError: x" in result.reasons[0]
    assert judge(tmp_path, fake_job("a"), fail_threshold=2).status == health.CRITICAL


def test_never_ran_without_systemd_is_warning(tmp_path, monkeypatch):
    """Without systemd there is no timer to measure from: a job whose unit file is installed
    and that never ran is WARNING; without its unit file it is OK "not installed"."""
    units = tmp_path / "units"
    units.mkdir()
    monkeypatch.setenv("SYSTEMD_UNIT_PATH", str(units))
    result = judge(tmp_path, fake_job("ghost"))
    assert result.status == health.OK and result.notes[0].startswith("not installed"), result
    (units / "ghost.timer").write_text("[Timer]\nOnCalendar=hourly\n")
    result = judge(tmp_path, fake_job("ghost"))
    assert (result.status, result.reasons) == (health.WARNING, ["never ran"])


def test_manual_job_is_not_stale(tmp_path):
    """A job without a schedule is never stale."""
    assert judge(tmp_path, fake_job("m", schedule=())).status == health.OK


def test_unreadable_state_is_unknown(tmp_path):
    """An unreadable state file makes the job UNKNOWN with the reason, not a traceback."""
    os.makedirs(tmp_path / "a")
    (tmp_path / "a" / "state.json").write_text("{not json")
    result = judge(tmp_path, fake_job("a"))
    assert result.status == health.UNKNOWN
    assert "unreadable" in result.reasons[0]


def test_systemd_timer_facts(tmp_path, monkeypatch):
    """With systemd: a missing timer is OK "not installed", a disabled inactive one too, an
    enabled inactive one CRITICAL, a fresh one OK with its elapses."""
    write_state(tmp_path, "a", last_outcome="success", last_success=BASE - 60)
    answers = {}

    def fake_show(units, props):
        return {
            u: answers.get(u, {"LoadState": "loaded", "ActiveState": "inactive", "Result": "success"}) for u in units
        }

    monkeypatch.setattr("jobrunner.systemd.systemctl.show_units", fake_show)
    run = lambda: health.check_jobs([fake_job("a")], now=BASE, state_root=str(tmp_path), systemd=True)[0]  # noqa: E731
    answers["a.timer"] = {"LoadState": "not-found", "ActiveState": "inactive"}
    result = run()
    assert result.status == health.OK and result.notes[0].startswith("not installed (no a.timer")
    answers["a.timer"] = {"LoadState": "loaded", "ActiveState": "inactive", "UnitFileState": "disabled"}
    result = run()
    assert result.status == health.OK and "a.timer is not enabled" in result.notes[0]
    answers["a.timer"] = {"LoadState": "loaded", "ActiveState": "inactive", "SubState": "dead"}
    assert run().status == health.CRITICAL
    answers["a.timer"] = {
        "LoadState": "loaded",
        "ActiveState": "active",
        "SubState": "waiting",
        "LastTriggerUSec": f"@{int(BASE - 60)}",
        "NextElapseUSecRealtime": f"@{int(BASE + 3540)}",
        "ActiveEnterTimestamp": f"@{int(BASE - DAY)}",
    }
    result = run()
    assert result.status == health.OK, result
    assert result.facts["timer"]["next_elapse"] == BASE + 3540
    assert "next in 59min" in result.notes
    # the service failed in a way the runner never recorded (SIGKILL, OOM)
    answers["a.service"] = {"LoadState": "loaded", "ActiveState": "failed", "Result": "signal", "ExecMainStatus": "9"}
    result = run()
    assert result.status == health.WARNING and "Result=signal" in result.reasons[0]


def test_overall_order():
    """The overall status is the worst: CRITICAL > WARNING > UNKNOWN > OK."""
    mk = lambda s: health.JobHealth("j", "j", status=s)  # noqa: E731
    assert health.overall([mk(0), mk(3), mk(1)]) == health.WARNING
    assert health.overall([mk(0), mk(3)]) == health.UNKNOWN
    assert health.overall([mk(2), mk(3), mk(1)]) == health.CRITICAL
    assert health.overall([]) == health.OK


# ----------------------------------------------------------------------------- the command


@no_systemd_here
def test_cli_ok_with_perfdata(launcher):
    """Fresh successes: exit 0, first line 'OK: … | perfdata', then one line per job."""
    launcher.write_job("hjobs", JOBS)
    assert launcher.run("run", "hjobs:hourly_job").returncode == 0
    assert launcher.run("run", "hjobs:nightly").returncode == 0
    run = launcher.run("health", "--package", "hjobs", "hourly_job", "nightly")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "OK: 2 jobs ok | jobs=2 ok=2 warning=0 critical=0 unknown=0"
    assert lines[1].startswith("OK hourly_job: last success") and health.NO_SYSTEMD in lines[1]
    assert len(lines) == 3


@no_systemd_here
def test_cli_stale_and_failures(launcher):
    """A success older than the interval is WARNING (1), much older CRITICAL (2); failures add up."""
    launcher.write_job("hjobs", JOBS)
    assert launcher.run("run", "hjobs:hourly_job").returncode == 0
    write_state(launcher.state_dir, "hourly_job", last_success=time.time() - 2 * HOUR)
    run = launcher.run("health", "--package", "hjobs", "hourly_job")
    assert run.returncode == 1, run.stdout
    # "2h ago", or "2h 1s ago" when the machine is slow to start the command (the age is exact)
    assert re.match(r"WARNING: hourly_job: last success 2h( \d+s)? ago \(expected every 1h", run.stdout), run.stdout
    write_state(launcher.state_dir, "hourly_job", last_success=time.time() - 3 * HOUR)
    assert launcher.run("health", "--package", "hjobs", "hourly_job").returncode == 2

    env = launcher.env(FAIL="1")
    for _ in range(3):
        assert launcher.run("run", "hjobs:nightly", env=env).returncode == 1
    run = launcher.run("health", "--package", "hjobs", "nightly", "--json")
    assert run.returncode == 2
    doc = json.loads(run.stdout)
    assert doc["status"] == "CRITICAL" and doc["counts"]["critical"] == 1
    job = doc["jobs"][0]
    assert job["state"]["consecutive_failures"] == 3
    assert job["state"]["last_error"] == "RuntimeError: disk full"
    assert any("3 consecutive failures" in r for r in job["reasons"])
    assert job["expected_interval_s"] == DAY + 300


@no_systemd_here
def test_cli_never_ran_and_unknown_job(launcher):
    """A job that never ran is WARNING; an unknown JOB or bad option is UNKNOWN (3) in one line."""
    launcher.write_job("hjobs", JOBS)
    units = launcher.tmp / "units"
    units.mkdir()
    (units / "hourly-job.timer").write_text("[Timer]\nOnCalendar=hourly\n")
    run = launcher.run("health", "--package", "hjobs", "hourly_job", env=launcher.env(SYSTEMD_UNIT_PATH=str(units)))
    assert run.returncode == 1 and "never ran" in run.stdout.splitlines()[0]
    run = launcher.run("health", "--package", "hjobs", "nope")
    assert run.returncode == 3
    assert run.stdout == "UNKNOWN: no job 'nope' in package 'hjobs' (jobs: hourly_job, manual, nightly)\n"
    assert launcher.run("health", "--package", "hjobs", "--fail-threshold", "x").returncode == 3
    assert launcher.run("health", "--package", "hjobs", "--grace", "soon").returncode == 3
    run = launcher.run("health", "--package", "no_such_pkg", "--json")
    assert run.returncode == 3 and json.loads(run.stdout)["status"] == "UNKNOWN"
