"""Alerting rules end to end (issue 17): thresholds, silences, durations out of the ordinary,
late vs running long. The real CLI, real Apprise, real HTTP and SMTP receivers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import sys
import time

import pytest

from jobrunner.store.state import StateStore

from .conftest import wait_for
from .test_notify_receivers import HttpReceiver, receiver, smtp

JOBS = """
import os, time
from jobrunner import Alert, job

@job(alert=Alert(after=3))
def stormy(ctx):
    if os.path.exists(ctx.env["FAIL_FLAG"]):
        raise RuntimeError("storm")

@job
def silenced_job(ctx):
    if os.path.exists(ctx.env["FAIL_FLAG"]):
        raise RuntimeError("still broken")

@job(alert=Alert(min_duration="30s"))
def backup(ctx):
    time.sleep(float(ctx.env.get("SLEEP", "1")))

@job(alert=Alert(slower_than_p95=3))
def usual(ctx):
    time.sleep(float(ctx.env.get("SLEEP", "0")))

@job(alert=Alert(max_duration="1s"))
def long_one(ctx):
    time.sleep(float(ctx.env.get("SLEEP", "0")))

@job(schedule="hourly")
def hourly(ctx):
    pass
"""


def _subject(message) -> str:
    from email.header import decode_header, make_header

    return str(make_header(decode_header(message["Subject"])))


def _titles(http: HttpReceiver) -> list[str]:
    return [b["title"] for b in http.json_bodies()]


@pytest.fixture
def alerting(launcher, receiver, smtp):
    launcher.write_job("alertjobs", JOBS)
    flag = launcher.tmp / "fail.flag"
    env = launcher.env(
        JOBRUNNER_NOTIFY_URLS=f"{receiver.url()} {smtp.url()}", FAIL_FLAG=str(flag), JOBRUNNER_NOTIFY_TIMEOUT="10s"
    )
    return launcher, receiver, smtp, flag, env


@pytest.mark.slow
def test_storm_of_a_hundred_failures_after_three(alerting):
    """after=3: failures 1-2 are counted, not sent; the 3rd sends one; the other 97 are held
    (JOBRUNNER_NOTIFY_REPEAT); the success sends one recovery. HTTP and SMTP alike."""
    launcher, http, mail, flag, env = alerting
    flag.touch()
    held = []
    for i in range(100):
        run = launcher.run("alertjobs:stormy", env=env)
        assert run.returncode == 1
        held.append(run.event("notify.held")["reason"] if "notify.held" in run.names() else "sent")
        if i == 2:
            assert len(http.wait(1)) == 1 and len(mail.wait(1)) == 1
    assert held[:3] == ["below-threshold", "below-threshold", "sent"]
    assert set(held[3:]) == {"JOBRUNNER_NOTIFY_REPEAT"}
    flag.unlink()
    assert launcher.run("alertjobs:stormy", env=env).returncode == 0
    http.wait(2)
    mail.wait(2)
    time.sleep(0.5)  # anything late would arrive now
    titles = _titles(http)
    assert len(titles) == 2, titles
    assert titles[0].startswith("❌ stormy failed on") and titles[1].startswith("✅ stormy recovered")
    assert "3 failures in a row" in http.json_bodies()[0]["message"]
    assert "97 failure(s) were not notified" in http.json_bodies()[1]["message"]
    assert [_subject(m) for m in mail.messages] == titles
    state = launcher.state("stormy")
    assert state["consecutive_failures"] == 0 and state["runs"] == {"failure": 100, "success": 1}


@pytest.mark.slow
def test_silence_expiring_during_a_failure_streak_sends_exactly_one(alerting):
    """Failures during a silence are recorded and counted, not sent; the first failure after it
    ends says so, once; the next is held by the throttle as usual."""
    launcher, http, mail, flag, env = alerting
    assert launcher.run("alertjobs:silenced_job", env=env).returncode == 0  # the job has a state
    silence = launcher.run("silence", "silenced_job", "--for", "4s", "--reason", "migrating", env=env)
    assert silence.returncode == 0, silence.stderr
    assert "silenced_job: silenced until" in silence.stdout
    listed = launcher.run("silence", "--list", "--json", env=env)
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["job"] == "silenced_job" and row["reason"] == "migrating" and row["by"]
    flag.touch()
    began = time.time()
    for _ in range(2):
        run = launcher.run("alertjobs:silenced_job", env=env)
        assert run.returncode == 1 and run.event("notify.held")["reason"] == "silenced"
    assert launcher.state("silenced_job")["consecutive_failures"] == 2
    assert http.requests == [] and mail.messages == []
    time.sleep(max(0.0, began + 4.5 - time.time()))
    for _ in range(2):
        assert launcher.run("alertjobs:silenced_job", env=env).returncode == 1
    http.wait(1)
    mail.wait(1)
    time.sleep(0.5)
    titles = _titles(http)
    assert len(titles) == 1 and "still failing" in titles[0] and "silence ended" in titles[0], titles
    assert len(mail.messages) == 1
    assert "2 earlier failure(s) were not notified" in http.json_bodies()[0]["message"]


def test_unsilence_ends_it_at_once(alerting):
    """unsilence: the next failure is sent (once)."""
    launcher, http, _mail, flag, env = alerting
    launcher.run("alertjobs:silenced_job", env=env)
    assert launcher.run("silence", "silenced_job", "--for", "1h", env=env).returncode == 0
    flag.touch()
    assert launcher.run("alertjobs:silenced_job", env=env).returncode == 1
    assert http.requests == []
    out = launcher.run("unsilence", "silenced_job", env=env)
    assert out.returncode == 0 and "silence ended" in out.stdout
    assert launcher.run("silence", "--list", env=env).stdout.startswith("no silence in force")
    launcher.run("alertjobs:silenced_job", env=env)
    launcher.run("alertjobs:silenced_job", env=env)
    http.wait(1)
    time.sleep(0.3)
    assert len(http.requests) == 1
    assert launcher.run("alertjobs:hourly", env=env).returncode == 0
    every = launcher.run("silence", "--all", "--for", "10min", env=env)
    assert every.returncode == 0 and every.stdout.count("silenced until") == 2
    listed = launcher.run("silence", "--list", env=env).stdout
    assert "hourly: silenced until" in listed and "silenced_job: silenced until" in listed
    ended = launcher.run("unsilence", "--all", env=env)
    assert ended.returncode == 0 and ended.stdout.count("silence ended") == 2


def test_one_second_backup_against_a_thirty_second_minimum(alerting):
    """Too short: a warning event, one warning notification, outcome success; the next one is held."""
    launcher, http, mail, _flag, env = alerting
    run = launcher.run("alertjobs:backup", env={**env, "SLEEP": "1"})
    assert run.returncode == 0 and run.event("job.finished")["outcome"] == "success"
    anomaly = run.event("job.duration_anomaly")
    assert anomaly["level"] == "warning" and anomaly["kind"] == "too_short" and anomaly["limit_s"] == 30
    (got,) = http.wait(1)
    body = json.loads(got["body"])
    assert body["type"] == "warning" and body["title"].startswith("⚠️ backup finished too fast")
    assert "under its minimum of 30s" in body["message"]
    assert len(mail.wait(1)) == 1
    again = launcher.run("alertjobs:backup", env={**env, "SLEEP": "0"})
    assert again.returncode == 0 and again.event("notify.held")["kind"] == "duration"
    time.sleep(0.3)
    assert len(http.requests) == 1
    state = launcher.state("backup")
    assert state["anomaly"]["kind"] == "too_short" and state["anomalies"] == {"too_short": 2}
    assert state["last_outcome"] == "success"
    ordinary = launcher.run("alertjobs:backup", env={**env, "JOBRUNNER_ALERT_BACKUP": "min_duration=none"})
    assert ordinary.returncode == 0 and "job.duration_anomaly" not in ordinary.names()
    assert "anomaly" not in launcher.state("backup") and "anomaly" not in launcher.state("backup").get("notify", {})
    third = launcher.run("alertjobs:backup", env={**env, "SLEEP": "0"})  # news again after an ordinary run
    assert third.event("notify.sent")["kind"] == "duration"
    assert len(http.wait(2)) == 2


def _seed_history(state_dir, job: str, durations: list[float]) -> None:
    directory = state_dir / job
    directory.mkdir(parents=True, exist_ok=True)
    start = time.time() - 86400
    lines = [
        json.dumps(
            {
                "job": job,
                "host": "h",
                "run_id": f"seed{i}",
                "start": start + i * 60,
                "duration_s": d,
                "outcome": "success",
                "exit_code": 0,
                "attempts": 1,
            }
        )
        for i, d in enumerate(durations)
    ]
    (directory / "history.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_slower_than_usual_after_a_seeded_history(alerting):
    """slower_than_p95=3: not judged with fewer than 10 successful runs; then 3 × p95 is the limit."""
    launcher, http, _mail, _flag, env = alerting
    _seed_history(launcher.state_dir, "usual", [0.1] * 5)
    few = launcher.run("alertjobs:usual", env={**env, "SLEEP": "1"})
    assert few.returncode == 0 and "job.duration_anomaly" not in few.names()
    # p95 2s, so the limit is 6s (a run's duration includes the interpreter's start, ~0.5s).
    _seed_history(launcher.state_dir, "usual", [1.0] * 9 + [2.0] * 3)
    ordinary = launcher.run("alertjobs:usual", env={**env, "SLEEP": "1"})
    assert ordinary.returncode == 0 and "job.duration_anomaly" not in ordinary.names()
    slow = launcher.run("alertjobs:usual", env={**env, "SLEEP": "6.5"})
    assert slow.returncode == 0
    event = slow.event("job.duration_anomaly")
    assert event["kind"] == "slower_than_usual" and event["limit_s"] == pytest.approx(6.0)
    (got,) = http.wait(1)
    assert json.loads(got["body"])["title"].startswith("⚠️ usual was slower than usual")


def test_health_json_tells_late_from_running_long(alerting):
    """A scheduled job that has not started for hours is late; a job running past its
    max_duration is running long; both show in health --json (and status)."""
    launcher, _http, _mail, _flag, env = alerting
    old = time.time() - 5 * 3600
    StateStore("hourly", str(launcher.state_dir)).update(
        lambda s: s.update(last_start=old, last_finish=old + 1, last_success=old + 1, last_outcome="success")
    )
    proc = launcher.start("alertjobs:long_one", env={**env, "SLEEP": "30"})
    assert wait_for(lambda: (launcher.state_dir / "long_one" / "state.json").exists(), timeout=30)
    assert wait_for(lambda: launcher.state("long_one").get("running"), timeout=30)
    time.sleep(1.5)
    out = launcher.run("health", "--json", "--package", "alertjobs", "hourly", "long_one", env=env)
    doc = json.loads(out.stdout)
    jobs = {j["job"]: j for j in doc["jobs"]}
    assert jobs["hourly"]["condition"] == "late", jobs["hourly"]
    assert any(r.startswith("late: last start 5h") for r in jobs["hourly"]["reasons"])
    assert jobs["long_one"]["condition"] == "running_long", jobs["long_one"]
    assert jobs["long_one"]["status"] == "WARNING"
    os.killpg(proc.pid, 15)
    launcher.finish(proc)


def test_health_silenced_failing_job_is_warning_not_ok(alerting):
    """A silenced failing job is WARNING (not CRITICAL, never OK), condition silenced."""
    launcher, _http, _mail, flag, env = alerting
    flag.touch()
    for _ in range(3):
        launcher.run("alertjobs:silenced_job", "--no-notify", env=env)
    before = json.loads(launcher.run("health", "--json", "--package", "alertjobs", "silenced_job", env=env).stdout)
    assert before["jobs"][0]["status"] == "CRITICAL" and before["jobs"][0]["condition"] == "failing"
    assert launcher.run("silence", "silenced_job", "--for", "1h", "--reason", "disk swap", env=env).returncode == 0
    out = launcher.run("health", "--json", "--package", "alertjobs", "silenced_job", env=env)
    job = json.loads(out.stdout)["jobs"][0]
    assert out.returncode == 1 and job["status"] == "WARNING"
    assert job["conditions"] == ["silenced", "failing"] and job["reasons"][0].endswith(": disk swap")


# ----------------------------------------------------------------------------- bad input


def _one_line(run, code: int, *words: str) -> None:
    assert run.returncode == code, (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_bad_input_is_one_line_with_its_exit_code(launcher):
    launcher.write_job("alertjobs", JOBS)
    launcher.write_job(
        "badalert",
        """
        from jobrunner import Alert, job

        @job(alert=Alert(min_duration="1h", max_duration="30min"))
        def inverted(ctx):
            pass
        """,
    )
    env = launcher.env()
    _one_line(launcher.run("silence", "nosuchjob", "--for", "1h", env=env), 78, "no job 'nosuchjob'")
    _one_line(launcher.run("silence", "hourly", "--for=-1h", "--package", "alertjobs", env=env), 64, "negative")
    _one_line(launcher.run("silence", "hourly", "--for", "0", "--package", "alertjobs", env=env), 64, "more than 0")
    _one_line(launcher.run("silence", "hourly", "--package", "alertjobs", env=env), 64, "--for SPAN is required")
    _one_line(launcher.run("unsilence", env=env), 64, "--all")
    _one_line(launcher.run("badalert:inverted", env=env), 78, "'inverted'", "min_duration", "max_duration")
    override = {**env, "JOBRUNNER_ALERT_BACKUP": "after=3, min_duration=2h, max_duration=1h"}
    _one_line(launcher.run("alertjobs:backup", env=override), 78, "'backup'", "JOBRUNNER_ALERT_BACKUP", "min_duration")
    typo = {**env, "JOBRUNNER_ALERT_BACKUP": "aftr=3"}
    _one_line(launcher.run("alertjobs:backup", env=typo), 78, "'backup'", "aftr=3")
    assert not (launcher.state_dir / "backup").exists()  # checked before anything is written


def test_env_override_changes_the_rules_at_run_time(launcher, receiver):
    """$JOBRUNNER_ALERT_<JOB> overrides the declaration on this host (no code edited), and the
    rules the run applied are recorded for alert-failure@ and health."""
    launcher.write_job("alertjobs", JOBS)
    env = launcher.env(JOBRUNNER_NOTIFY_URLS=receiver.url(), SLEEP="0", JOBRUNNER_ALERT_BACKUP="min_duration=none")
    run = launcher.run("alertjobs:backup", env=env)
    assert run.returncode == 0 and "job.duration_anomaly" not in run.names()
    assert launcher.state("backup")["alert"] == {"after": 1, "over": 10}
    env["JOBRUNNER_ALERT_BACKUP"] = "after=2, rate=50%, over=4"
    assert receiver.requests == []
    run = launcher.run("alertjobs:backup", env=env)  # the declaration's min_duration=30s is back
    assert run.event("job.duration_anomaly")["kind"] == "too_short"
    assert launcher.state("backup")["alert"] == {"after": 2, "over": 4, "rate": 0.5, "min_duration_s": 30.0}


def test_a_user_who_cannot_write_the_state_cannot_silence(launcher, attacker):
    """Only root or the owner of the job's state may silence it: another user gets one line, 78."""
    from .attacker import as_user

    launcher.write_job("alertjobs", JOBS)
    env = launcher.env()
    assert launcher.run("alertjobs:hourly", env=env).returncode == 0
    for parent in [launcher.jobs, *launcher.jobs.parents]:  # pytest's tmp dirs are 0700
        if str(parent) == "/":
            break
        parent.chmod(parent.stat().st_mode | 0o711)
    proc = as_user(
        attacker,
        [sys.executable, "-m", "jobrunner", "silence", "hourly", "--for", "1h"],
        env={k: v for k, v in env.items() if k.startswith(("JOBRUNNER_", "PYTHONPATH"))},
        check=False,
    )
    assert proc.returncode == 78, (proc.stdout, proc.stderr)
    assert "cannot change the silence of hourly" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "silence" not in launcher.state("hourly")


def test_a_planted_silence_in_another_users_directory_is_ignored(alerting, attacker):
    """The runner honours a silence only from a state directory that is its own user's."""
    launcher, http, _mail, flag, env = alerting
    launcher.run("alertjobs:silenced_job", env=env)
    StateStore("silenced_job", str(launcher.state_dir)).update(
        lambda s: s.update(silence={"until": time.time() + 3600, "since": time.time(), "by": "mallory", "uid": 9})
    )
    os.chown(launcher.state_dir / "silenced_job", attacker.uid, attacker.gid)
    flag.touch()
    run = launcher.run("alertjobs:silenced_job", env=env)
    assert run.returncode == 1 and run.event("notify.silence_ignored")["owner"] == attacker.uid
    assert len(http.wait(1)) == 1


# ----------------------------------------------------------------------------- the rules, in process


def _record(outcome: str, i: int = 0):
    from jobrunner.store.history import RunRecord

    return RunRecord(job="j", host="h", run_id=f"r{i}", start=float(i), duration_s=1.0, outcome=outcome, exit_code=0)


def test_failure_due_after_n_or_at_a_rate():
    from jobrunner import Alert
    from jobrunner.rules.alerting import failure_due

    assert failure_due(None, failures=1)[0]
    assert not failure_due(Alert(after=3), failures=2)[0]
    assert failure_due(Alert(after=3), failures=3) == (True, "3 failures in a row")
    runs = [_record(o, i) for i, o in enumerate(["success", "failure", "skipped", "success", "failure", "success"])]
    alert = Alert(after=5, rate="30%", over=5)  # 2 of the last 5 that ran (skips left out): 30 % of 5 rounds up to 2
    due, why = failure_due(alert, failures=1, recent=lambda n: runs)
    assert due and why == "2 of the last 5 runs failed (rate 30%)"
    assert not failure_due(Alert(after=5, rate=0.6, over=5), failures=1, recent=lambda n: runs)[0]
    assert failure_due(Alert(after=5, rate=0.6, over=5), failures=1, recent=lambda n: runs, extra_failure=True)[0]


def test_overrides_and_records_are_checked():
    from jobrunner import Alert
    from jobrunner.errors import ConfigError
    from jobrunner.rules.alerting import alert_from_dict, parse_override

    base = Alert(after=3, min_duration="30s")
    assert parse_override(base, "", where="x") is base
    assert parse_override(base, "off", where="x") is None
    changed = parse_override(base, "after=1, max_duration=2h 30min, min_duration=none", where="x")
    assert changed is not None and (changed.after, changed.min_seconds, changed.max_seconds) == (1, None, 9000.0)
    for bad, word in (("after=0", "after"), ("rate=2", "rate"), ("slower_than_p95=0.5", "slower_than_p95")):
        with pytest.raises(ConfigError, match=f"^x: .*{word}"):
            parse_override(base, bad, where="x")
    assert alert_from_dict(base.to_dict()) == Alert(after=3, min_duration=30.0)
    assert base.record() == base.to_dict()  # the old name, kept for code written against it
    assert alert_from_dict({"after": "many"}) is None and alert_from_dict("junk") is None


def test_durations_out_of_the_ordinary():
    from jobrunner import Alert
    from jobrunner.rules.alerting import duration_anomaly

    window = Alert(min_duration="30s", max_duration="1h")
    assert duration_anomaly(window, 1.0).kind == "too_short"
    assert duration_anomaly(window, 3601.0).kind == "too_slow"
    assert duration_anomaly(window, 600.0) is None
    usual = Alert(slower_than_p95=2)
    assert duration_anomaly(usual, 100.0, lambda: [1.0] * 9) is None  # too few runs to judge
    found = duration_anomaly(usual, 100.0, lambda: [1.0] * 10 + [10.0])
    assert found is not None and found.kind == "slower_than_usual" and found.limit_s == 20.0
    assert duration_anomaly(usual, 19.0, lambda: [1.0] * 10 + [10.0]) is None


def test_flapping_counts_changes_among_runs_that_ran():
    from jobrunner.rules.alerting import flapping

    flappy = [_record(o, i) for i, o in enumerate(["success", "failure"] * 3 + ["skipped"])]
    assert flapping(flappy) == (5, 6)
    steady = [_record("failure", i) for i in range(5)] + [_record("success", 9)]
    assert flapping(steady) == (1, 6)


def test_throttle_with_threshold_and_silence():
    from jobrunner.notify.throttle import decide, note_delivered, note_held
    from jobrunner.store.state import JobState

    state = JobState()
    assert decide(state, outcome="failure", now=0, window=60, due=False).reason == "below-threshold"
    held = decide(state, outcome="failure", now=0, window=60, silenced=True)
    assert held.kind is None and held.reason == "silenced"
    note_held(state, run_id="a", reason="silenced")
    assert state.notifications.notify["silenced"] == 1 and state.notifications.notified_run_id == "a"
    ended = decide(state, outcome="failure", now=1, window=60)
    assert ended.kind == "failure" and ended.reason == "silence-ended" and ended.suppressed == 1
    note_delivered(state, ended, run_id="b", now=1)
    assert "silenced" not in state.notifications.notify
    assert decide(state, outcome="failure", now=2, window=60).reason == "repeat"  # once, then the throttle


def test_metrics_count_anomalies_and_the_silence():
    from jobrunner.observe.metrics import render_job_metrics

    text = render_job_metrics(
        "backup", {"anomalies": {"too_short": 2}, "silence": {"until": time.time() + 60}}, host="h"
    )
    assert 'jobrunner_duration_anomalies_total{job_name="backup",host="h",kind="too_short"} 2' in text
    assert 'jobrunner_duration_anomalies_total{job_name="backup",host="h",kind="too_slow"} 0' in text
    assert 'jobrunner_silenced_until_timestamp_seconds{job_name="backup",host="h"} 0' not in text


def test_health_flapping_from_history_and_status_shows_the_silence(launcher):
    launcher.write_job("alertjobs", JOBS)
    env = launcher.env()
    assert launcher.run("alertjobs:backup", "--no-notify", env={**env, "SLEEP": "0"}).returncode == 0
    directory = launcher.state_dir / "backup"
    lines = [
        json.dumps(
            {
                "job": "backup",
                "host": "h",
                "run_id": f"f{i}",
                "start": 1000.0 + i,
                "duration_s": 1,
                "outcome": "failure" if i % 2 else "success",
                "exit_code": i % 2,
            }
        )
        for i in range(8)
    ]
    (directory / "history.jsonl").write_text("\n".join(lines) + "\n")
    out = launcher.run("health", "--json", "--package", "alertjobs", "backup", env=env)
    job = json.loads(out.stdout)["jobs"][0]
    assert "flapping" in job["conditions"] and "duration" in job["conditions"], job
    assert any(r.startswith("flapping: 7 changes") for r in job["reasons"])
    assert launcher.run("silence", "backup", "--for", "1h", env=env).returncode == 0
    (row,) = [json.loads(line) for line in launcher.run("status", "--json", env=env).stdout.splitlines()]
    assert row["silenced"]["by"] and row["anomaly"]["kind"] == "too_short"
    table = launcher.run("status", "--table", env=env).stdout
    assert "(silenced until" in table and "(warning: finished in" in table
    page = launcher.tmp / "status.html"
    assert launcher.run("status", "--html", str(page), env=env).returncode == 0
    html = page.read_text()
    why = re.search(r'<div class="why desk [a-z]+"[^>]*>([^<]*)</div>', html)  # the job's one-line note
    assert why and "silenced until" in why.group(1) and "finished in" in why.group(1), html


def test_a_flapping_job_says_so_in_its_failure_notification(alerting):
    """Failing, recovering, failing again: once 4 changes are in the last runs, the failure
    notification says flapping."""
    launcher, http, _mail, flag, env = alerting
    env = {**env, "JOBRUNNER_NOTIFY_REPEAT": "0"}
    for i in range(5):
        if i % 2:
            flag.unlink()
        else:
            flag.touch()
        launcher.run("alertjobs:silenced_job", env=env)
    http.wait(5)
    titles = [t.split(" on ")[0] for t in _titles(http)]
    assert titles == [
        "❌ silenced_job failed",
        "✅ silenced_job recovered",
        "❌ silenced_job failed",
        "✅ silenced_job recovered",
        "🔁 silenced_job failed",
    ], titles
    assert "condition: flapping" in http.json_bodies()[-1]["message"]


def test_a_run_past_its_maximum_is_told_while_it_runs_and_once(alerting):
    """max_duration=1s, a 4-second run: one ⏳ warning while it runs (job.running_long), and
    the "ran too long" warning at its end is not sent again; the outcome stays success."""
    launcher, http, mail, _flag, env = alerting
    proc = launcher.start("alertjobs:long_one", env={**env, "SLEEP": "4"})
    (got,) = http.wait(1, timeout=20)
    assert proc.poll() is None, "the warning came after the run"
    body = json.loads(got["body"])
    assert body["type"] == "warning" and body["title"].startswith("⏳ long_one still running on")
    run = launcher.finish(proc)
    assert run.returncode == 0 and run.event("job.finished")["outcome"] == "success"
    assert run.event("job.running_long")["limit_s"] == 1
    assert run.event("job.duration_anomaly")["kind"] == "too_slow"
    assert run.event("notify.held")["reason"] == "told while running"
    time.sleep(0.3)
    assert len(http.requests) == 1 and len(mail.wait(1)) == 1
