"""One memory of what was notified (issue 26): one record per kind, one ``due`` rule, and the
state files of the earlier form (schema 1: ``skip_notified``, ``notify.last_failure_sent``,
``notify.anomaly``, the late watcher's ``{"since", "sent"}``) read with the same decisions.
The real CLI, real Apprise and a real HTTP receiver on 127.0.0.1 where a run is involved."""

from __future__ import annotations

import json
import os
import time

import pytest

from jobrunner.errors import ConfigError
from jobrunner.notify import memory
from jobrunner.notify.throttle import decide, note_delivered, note_held, note_quiet_success, sent_of
from jobrunner.store.state import JobState, StateStore

from .test_notify_receivers import receiver

HOUR = 3600.0


def test_the_first_of_an_episode_always_then_once_per_window_from_the_last_send():
    """A window counts from the last send, never from the episode's first: a condition that
    lasts for days is told once per window, not at every check after the first window."""
    m: dict[str, memory.Sent] = {}
    assert memory.due(m, "late", now=1000.0, window=HOUR)
    memory.sent(m, "late", 1000.0)
    assert not memory.due(m, "late", now=1000.0 + HOUR - 1, window=HOUR)
    memory.held(m, "late")
    memory.sent(m, "late", 1000.0 + HOUR)  # the repeat
    told = m["late"]
    assert (told.first, told.last, told.held) == (1000.0, 1000.0 + HOUR, 0)
    # 1.5 windows after the first send but half a window after the last: held back.
    assert not memory.due(m, "late", now=1000.0 + 1.5 * HOUR, window=HOUR)
    assert memory.due(m, "late", now=1000.0 + 2 * HOUR, window=HOUR)
    assert memory.due(m, "skip", now=1000.0, window=HOUR)  # kinds are apart
    memory.end(m, "late")
    assert memory.due(m, "late", now=1000.0 + HOUR + 1, window=HOUR)  # a new episode is news


def test_a_new_episode_replaces_the_record():
    m: dict[str, memory.Sent] = {}
    memory.sent(m, "hourly", 10.0, since=5.0)
    memory.held(m, "hourly")
    assert m["hourly"].held == 1
    memory.sent(m, "hourly", 20.0, since=5.0)
    assert (m["hourly"].first, m["hourly"].held) == (10.0, 0)
    memory.sent(m, "hourly", 30.0, since=25.0)
    assert (m["hourly"].first, m["hourly"].since) == (30.0, 25.0)


def _v1(now: float, *, failure_sent: float, skip_sent: float, anomaly_sent: float) -> dict:
    """What the schema-1 runner wrote, with each old place of the notification memory."""
    return {
        "schema": 1,
        "job": "nightly",
        "last_outcome": "skipped",
        "consecutive_failures": 3,
        "skipped_since": now - 5 * HOUR,
        "consecutive_skips": 4,
        "skip_notified": skip_sent,
        "notified_run_id": "r1",
        "notify": {
            "failure_notified": True,
            "suppressed": 2,
            "streak_failures": 3,
            "last_sent": failure_sent,
            "last_failure_sent": failure_sent,
            "anomaly": {"too_short": anomaly_sent},
        },
    }


def _decisions(state: JobState, now: float) -> dict[str, object]:
    sent = sent_of(state)
    failure = decide(state, outcome="failure", now=now, window=HOUR)
    return {
        "failure": (failure.kind, failure.reason, failure.suppressed),
        "recovery": decide(state, outcome="success", now=now, window=HOUR).kind,
        "skip": memory.due(sent, "skip", now, HOUR),
        "too_short": memory.due(sent, "anomaly:too_short", now, HOUR),
        "too_slow": memory.due(sent, "anomaly:too_slow", now, HOUR),
    }


@pytest.mark.parametrize("ago, due", [(60.0, False), (2 * HOUR, True)])
def test_a_schema_1_state_keeps_its_decisions_and_is_written_in_the_new_form(tmp_path, ago, due):
    """Each old field read as the record it was: sent a minute ago holds back, two hours ago
    is due again (window 1h); the recovery stays owed; the next write has the new form and
    the same decisions."""
    now = time.time()
    store = StateStore("nightly", str(tmp_path))
    os.makedirs(store.dir)
    with open(store.path, "w") as handle:
        json.dump(_v1(now, failure_sent=now - ago, skip_sent=now - ago, anomaly_sent=now - ago), handle)
    expected = {
        "failure": ("failure", "", 2) if due else (None, "repeat", 2),
        "recovery": "recovery",
        "skip": due,
        "too_short": due,
        "too_slow": True,
    }
    assert _decisions(store.load(), now) == expected
    store.apply(lambda s: None)
    on_disk = json.loads(open(store.path).read())
    assert "skip_notified" not in on_disk and on_disk["schema"] == 1
    assert set(on_disk["notify"]) == {"failure_notified", "suppressed", "streak_failures", "sent"}
    assert set(on_disk["notify"]["sent"]) == {"failure", "skip", "anomaly:too_short"}
    assert _decisions(store.load(), now) == expected


def test_a_failure_notified_without_its_time_is_due_and_owes_its_recovery():
    """A schema-1 file with ``failure_notified`` but no ``last_failure_sent`` (older runners):
    the next failure is sent, the recovery still owed, as before."""
    state = JobState.from_dict({"notify": {"failure_notified": True, "suppressed": 1}})
    assert decide(state, outcome="failure", now=50.0, window=HOUR).kind == "failure"
    assert decide(state, outcome="success", now=50.0, window=HOUR).kind == "recovery"


def test_the_throttle_keeps_its_record_through_a_streak():
    """Sent, held by the window (counted on the record), recovered: the record ends with it."""
    state = JobState()
    first = decide(state, outcome="failure", now=100.0, window=HOUR)
    note_delivered(state, first, run_id="a", now=100.0)
    assert sent_of(state)["failure"] == memory.Sent(100.0, 100.0)
    held = decide(state, outcome="failure", now=200.0, window=HOUR)
    note_held(state, run_id="b", reason=held.reason)
    assert sent_of(state)["failure"].held == 1 and state.notifications.notify["suppressed"] == 1
    note_delivered(state, decide(state, outcome="success", now=300.0, window=HOUR), run_id="c", now=300.0)
    assert "sent" not in state.notifications.notify and state.notifications.notify["failure_notified"] is False
    note_quiet_success(state)
    assert decide(state, outcome="failure", now=400.0, window=HOUR).kind == "failure"


def test_a_run_that_runs_ends_the_skip_episode():
    state = JobState.from_dict({"skipped_since": 10.0, "skip_notified": 20.0})
    assert not memory.due(sent_of(state), "skip", 30.0, HOUR)
    state.note_finish(run_id="r", outcome="success", exit_code=0, started=40.0, duration_s=1.0, attempts=1, now=41.0)
    assert memory.due(sent_of(state), "skip", 42.0, HOUR) and "sent" not in state.notifications.notify


@pytest.mark.parametrize(
    "sent, why",
    [
        ({"skip": {"first": 1.0, "last": 1e12}}, "notify.sent.skip.last"),
        ({"skip": {"first": -5.0, "last": 1.0}}, "notify.sent.skip.first"),
        ({"skip": {"first": 9.0, "last": 1.0}}, "before the first"),
        ({"skip": {"first": 1.0, "last": 2.0, "held": -1}}, "notify.sent.skip.held"),
        ({"skip": {"first": 1.0, "last": 2.0, "held": True}}, "notify.sent.skip.held"),
        ({"skip": {"first": "yesterday", "last": 2.0}}, "notify.sent.skip.first"),
        ({"skip": [1, 2]}, "not an object"),
        ({"x" * 300: {"first": 1.0, "last": 2.0}}, "notify.sent key"),
        ("everything", "not an object"),
    ],
)
def test_a_forged_notification_memory_makes_the_state_unreadable_not_a_crash(tmp_path, sent, why):
    """The record is checked on read (jobrunner/validate.py): times between the epoch and 2200,
    the last send not before the first, counts whole and not negative; else that job's state
    is unreadable (its UNKNOWN), with the field named."""
    store = StateStore("forged", str(tmp_path))
    os.makedirs(store.dir)
    with open(store.path, "w") as handle:
        json.dump({"notify": {"sent": sent}}, handle)
    with pytest.raises(ConfigError, match="unreadable") as caught:
        store.load()
    assert why in str(caught.value)


def test_a_forged_skip_notified_of_the_old_form_is_refused(tmp_path):
    with pytest.raises(ValueError, match="skip_notified"):
        JobState.from_dict({"skip_notified": 1e300})
    with pytest.raises(ValueError, match="skip_notified"):
        JobState.from_dict({"skip_notified": "soon"})


def test_flapping_is_one_verdict():
    from jobrunner.rules.alerting import FLAP_CHANGES, is_flapping
    from jobrunner.store.history import RunRecord

    def runs(outcomes: list[str]) -> list[RunRecord]:
        return [
            RunRecord(job="j", host="h", run_id=f"r{i}", start=float(i), duration_s=1.0, outcome=o, exit_code=0)
            for i, o in enumerate(outcomes)
        ]

    assert is_flapping(runs(["success", "failure"] * 3)) == (5, 6)
    assert is_flapping(runs(["success"] * 3 + ["failure"] * 3)) is None
    edge = ["success", "failure"] * 5
    assert is_flapping(runs(edge[: FLAP_CHANGES + 1])) == (FLAP_CHANGES, FLAP_CHANGES + 1)
    assert is_flapping(runs(edge[:FLAP_CHANGES])) is None


LATE_JOB = "from jobrunner import job\n\n@job(schedule='hourly')\ndef hourly(ctx):\n    pass\n"


def test_a_late_memory_of_the_old_form_keeps_its_episode(launcher, receiver):
    """The late watcher's file as the schema-1 version wrote it (``since``, ``sent``): the
    episode it names is not told again within the window, and the file is rewritten as the
    one record (first, last, held, since), root's and private."""
    launcher.write_job("latejobs", LATE_JOB)
    old = float(round(time.time() - 5 * HOUR))
    StateStore("hourly", str(launcher.state_dir)).update(
        lambda s: s.update(last_start=old, last_finish=old + 1, last_success=old + 1, last_outcome="success")
    )
    path = launcher.state_dir / ".late-notified.json"
    told = time.time() - 60
    path.write_text(json.dumps({"hourly": {"since": old, "sent": told}}))
    path.chmod(0o600)
    env = launcher.env(JOBRUNNER_NOTIFY_URLS=receiver.url(), JOBRUNNER_NOTIFY_TIMEOUT="10s")
    check = ("health", "--package", "latejobs", "--notify")
    assert launcher.run(*check, env=env).returncode == 2
    time.sleep(0.3)
    assert receiver.json_bodies() == []
    record = json.loads(path.read_text())["hourly"]
    assert record == {"first": told, "last": told, "held": 1, "since": old}
    assert oct(path.stat().st_mode & 0o777) == "0o600" and path.stat().st_uid == os.geteuid()
    # Another episode (a later start it is late after) is news at once.
    path.write_text(json.dumps({"hourly": {"since": old - HOUR, "sent": told}}))
    assert launcher.run(*check, env=env).returncode == 2
    (sent,) = receiver.wait(1)
    assert json.loads(sent["body"])["title"].startswith("⏰ hourly is late on")


SWITCH = """
import os
from jobrunner import job
@job
def switch(ctx):
    if os.path.exists(os.environ["FAIL_FLAG"]):
        raise RuntimeError("switch is failing")
"""


def test_a_run_on_a_schema_1_state_holds_then_recovers_as_before(launcher, receiver):
    """A failing run over a schema-1 state whose failure was sent a minute ago: held back by
    the window (the same event as before); the success after it sends the recovery owed."""
    launcher.write_job("switchjobs", SWITCH)
    flag = launcher.tmp / "fail"
    flag.write_text("1")
    now = time.time()
    v1 = _v1(now, failure_sent=now - 60, skip_sent=now - 60, anomaly_sent=now - 60)
    StateStore("switch", str(launcher.state_dir)).update(lambda s: s.update(v1, job="switch"))
    env = launcher.env(JOBRUNNER_NOTIFY_URLS=receiver.url(), FAIL_FLAG=str(flag), JOBRUNNER_NOTIFY_REPEAT="1h")
    run = launcher.run("switchjobs:switch", env=env)
    assert run.returncode == 1
    held = run.event("notify.held")
    assert held["reason"] == "JOBRUNNER_NOTIFY_REPEAT" and held["suppressed"] == 3
    time.sleep(0.3)
    assert receiver.json_bodies() == []
    flag.unlink()
    assert launcher.run("switchjobs:switch", env=env).returncode == 0
    (got,) = receiver.wait(1)
    body = json.loads(got["body"])
    assert body["title"].startswith("✅ switch recovered") and "held back: 3 failure(s)" in body["message"]
    state = launcher.state("switch")
    assert "sent" not in state["notify"] and "skip_notified" not in state
