"""Failure notifications end to end: the real CLI, real Apprise, real local receivers."""

from __future__ import annotations

import json
import time

import pytest

from .test_notify_receivers import HttpReceiver, black_hole, closed_port, pinger, receiver, smtp

FAILER = """
from jobrunner import job
@job
def failer(ctx):
    ctx.log.info("step.one", note="about to fail")
    raise OSError("disk full, password " + ctx.env.get("DB_PASSWORD", "none"))
"""

SWITCH = """
import os
from jobrunner import job
@job(notify={tags!r})
def switch(ctx):
    ctx.log.info("switch.checked")
    if os.path.exists(os.environ["FAIL_FLAG"]):
        raise RuntimeError("switch is failing")
"""

FLAKY = """
import os
from jobrunner import job, Retry
@job(retry=Retry(attempts=3, delay="0s", on=(OSError,)))
def flaky(ctx):
    if ctx.attempt < 3:
        raise OSError("transient")
"""


def test_failure_notifies_once_with_context_and_no_secret(launcher, receiver):
    """A failed run sends one notification: phone-sized title, job/host/outcome/exit/duration/
    attempts/error/run_id and the log tail in the body, and no secret anywhere."""
    launcher.write_job("failer", FAILER)
    secret_hook = receiver.url(path="/hook/Zx9SECRETtokenValue42")
    env = launcher.env(JOBRUNNER_NOTIFY_URLS=secret_hook, DB_PASSWORD="hunter2-very-secret")
    run = launcher.run("failer", env=env)
    assert run.returncode == 1
    (got,) = receiver.wait(1)
    message = json.loads(got["body"])
    assert message["title"].startswith("❌ failer failed on ") and message["title"].endswith("(exit 1)")
    assert len(message["title"]) < 80
    body = message["message"]
    for needle in (
        "outcome:   failure, exit code 1",
        "attempts 1",
        "OSError: disk full",
        run.event("job.started")["run_id"],
        "step.one note=about to fail",
        "Last ",
    ):
        assert needle in body
    everything = got["body"].decode() + run.stdout + run.stderr
    assert "hunter2-very-secret" not in everything and "Zx9SECRETtokenValue42" not in run.stdout
    assert launcher.state("failer")["notified_run_id"] == run.event("job.started")["run_id"]
    assert run.event("notify.sent")["kind"] == "failure"


def test_success_without_prior_failure_sends_nothing(launcher, receiver):
    """A success after successes is silent (and the finished run logs no notify event)."""
    launcher.write_job("switch", SWITCH.format(tags=()))
    env = launcher.env(JOBRUNNER_NOTIFY_URLS=receiver.url(), FAIL_FLAG=str(launcher.tmp / "nope"))
    run = launcher.run("switch", env=env)
    assert run.returncode == 0
    assert "notify.sent" not in run.names()
    time.sleep(0.3)
    assert receiver.requests == []


def test_retry_recovered_attempts_send_nothing(launcher, receiver):
    """Attempts that a later retry recovers are never notified."""
    launcher.write_job("flaky", FLAKY)
    run = launcher.run("flaky", env=launcher.env(JOBRUNNER_NOTIFY_URLS=receiver.url()))
    assert run.returncode == 0 and run.event("job.finished")["attempts"] == 3
    time.sleep(0.3)
    assert receiver.requests == []


def test_throttle_then_recovery(launcher, receiver):
    """Repeated failures notify once per window with the held-back count; the recovery is always sent."""
    launcher.write_job("switch", SWITCH.format(tags=()))
    flag = launcher.tmp / "fail"
    flag.write_text("1")
    # The three failures fall in one window however slow the machine is (1h); the fourth run
    # is told of a 1s window, long past by then, so it notifies with the held-back count.
    env = launcher.env(JOBRUNNER_NOTIFY_URLS=receiver.url(), FAIL_FLAG=str(flag), JOBRUNNER_NOTIFY_REPEAT="1h")
    for _ in range(3):
        assert launcher.run("switch", env=env).returncode == 1
    assert len(receiver.wait(1)) == 1
    time.sleep(1.1)
    env["JOBRUNNER_NOTIFY_REPEAT"] = "1s"
    run = launcher.run("switch", env=env)
    assert run.event("notify.sent")
    bodies = receiver.json_bodies()
    assert len(bodies) == 2 and "held back: 2 earlier failure(s)" in bodies[1]["message"]
    flag.unlink()
    assert launcher.run("switch", env=env).returncode == 0
    assert launcher.run("switch", env=env).returncode == 0
    bodies = [b for b in receiver.json_bodies()]
    assert len(bodies) == 3 and bodies[2]["title"].startswith("✅ switch recovered") and bodies[2]["type"] == "success"


@pytest.mark.slow
def test_hundred_failures_in_process_then_one_recovery(tmp_path, monkeypatch, receiver):
    """100 consecutive failures within one window give exactly one notification, then one recovery."""
    from jobrunner import job
    from jobrunner.run.lifecycle import RunOptions, run_job

    failing = {"on": True}

    @job(name="hundred")
    def hundred(ctx):
        if failing["on"]:
            raise RuntimeError("still broken")

    monkeypatch.setenv("JOBRUNNER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("JOBRUNNER_NOTIFY_URLS", receiver.url())
    monkeypatch.setenv("JOBRUNNER_NOTIFY_REPEAT", "1h")
    options = RunOptions(log_format="json")
    for _ in range(100):
        assert run_job(hundred, options).exit_code == 1
    failing["on"] = False
    assert run_job(hundred, options).exit_code == 0
    assert run_job(hundred, options).exit_code == 0
    bodies = receiver.json_bodies()
    assert [b["type"] for b in bodies] == ["failure", "success"]
    assert "held back: 99 failure(s)" in bodies[1]["message"]


def test_tags_route_jobs(launcher, receiver):
    """notify="ops" reaches the URLs tagged ops (and 'always'), not the others."""
    other = HttpReceiver()
    try:
        launcher.write_job("switch", SWITCH.format(tags="ops"))
        flag = launcher.tmp / "fail"
        flag.write_text("1")
        config = launcher.tmp / "apprise.yml"
        config.write_text(
            f"urls:\n  - {receiver.url(path='/ops')}:\n      tag: ops\n  - {other.url(path='/dev')}:\n      tag: dev\n"
        )
        env = launcher.env(JOBRUNNER_NOTIFY_CONFIG=str(config), FAIL_FLAG=str(flag))
        assert launcher.run("switch", env=env).returncode == 1
        assert [r["path"] for r in receiver.wait(1)] == ["/ops"]
        time.sleep(0.3)
        assert other.requests == []
    finally:
        other.close()


def test_email_through_real_smtp(launcher, smtp):
    """A mailto:// URL delivers the failure as an e-mail to a real SMTP server."""
    launcher.write_job("failer", FAILER)
    run = launcher.run("failer", env=launcher.env(JOBRUNNER_NOTIFY_URLS=smtp.url()))
    assert run.returncode == 1, run.stdout
    (mail,) = smtp.wait(1)
    assert "failer failed on" in str(mail["Subject"]) or "failer" in str(mail["Subject"])
    payload = mail.get_payload(decode=True) if not mail.is_multipart() else mail.get_payload(0).get_payload(decode=True)
    assert b"OSError: disk full" in payload


@pytest.mark.parametrize("endpoint", ["black_hole", "closed"])
def test_dead_endpoints_never_change_the_outcome(launcher, black_hole, endpoint):
    """A black-holed or refused endpoint: notify.failed logged, exit code unchanged, run within budget."""
    port = black_hole.port if endpoint == "black_hole" else closed_port()
    launcher.write_job("failer", FAILER)
    env = launcher.env(
        JOBRUNNER_NOTIFY_URLS=f"json://127.0.0.1:{port}/x",
        JOBRUNNER_NOTIFY_TIMEOUT="3s",
        JOBRUNNER_PING_URL=f"http://127.0.0.1:{port}/ping/0b0e0c2c-1234-4a5b-8c9d-0123456789ab",
    )
    started = time.monotonic()
    run = launcher.run("failer", env=env)
    elapsed = time.monotonic() - started
    assert run.returncode == 1 and run.event("job.finished")["outcome"] == "failure"
    assert run.event("notify.failed")
    assert elapsed < 3 + 4, elapsed  # start ping, notification and finish ping share one 3 s budget; plus startup
    state = launcher.state("failer")
    assert "notified_run_id" not in state  # undelivered: `jobrunner alert` will still report it
    assert state["ping"]["queue"][0]["path"] == "/1"
    assert "0b0e0c2c-1234-4a5b-8c9d-0123456789ab" not in run.stdout


def test_bad_notify_config_is_logged_not_fatal_and_cli_exits_78(launcher):
    """A bad URL never changes a run's exit code; `notify test` and `notify check` exit 78 naming the file and line."""
    launcher.write_job("failer", FAILER)
    config = launcher.tmp / "apprise.yml"
    config.write_text("urls:\n  - json://127.0.0.1:9/x\n  - nosuchscheme://what\n")
    env = launcher.env(JOBRUNNER_NOTIFY_CONFIG=str(config))
    run = launcher.run("failer", env=env)
    assert run.returncode == 1 and "apprise.yml:3" in run.event("notify.failed")["error"]
    for action in ("test", "check"):
        cli = launcher.run("notify", action, env=env)
        assert cli.returncode == 78
        assert cli.stderr.count("\n") == 1 and f"{config}:3" in cli.stderr


def test_notify_test_exit_codes(launcher, receiver):
    """`notify test`: 0 when delivered (the receiver got it), 1 when not, 78 with nothing configured."""
    ok = launcher.run("notify", "test", env=launcher.env(JOBRUNNER_NOTIFY_URLS=receiver.url()))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(receiver.wait(1)[0]["body"])["title"].startswith("🔔 jobrunner test")
    down = launcher.run("notify", "test", env=launcher.env(JOBRUNNER_NOTIFY_URLS=f"json://127.0.0.1:{closed_port()}/x"))
    assert down.returncode == 1
    assert launcher.run("notify", "test").returncode == 78
    tagged = launcher.run("notify", "test", "--tag", "nope", env=launcher.env(JOBRUNNER_NOTIFY_URLS=receiver.url()))
    assert tagged.returncode == 78


def test_pings_start_success_failure_and_body_limit(launcher, pinger):
    """Pings: /start and finish with rid; a failure pings /<exit code> with the tail, cut to Ping-Body-Limit."""
    launcher.write_job("switch", SWITCH.format(tags=()))
    flag = launcher.tmp / "fail"
    flag.write_text("1")
    uuid_ = "5f2d5a4e-8a51-4c53-9e5c-3a8f6c0d9b12"
    env = launcher.env(JOBRUNNER_PING_URL_SWITCH=f"http://127.0.0.1:{pinger.port}/{uuid_}", FAIL_FLAG=str(flag))
    first = launcher.run("switch", env=env)
    second = launcher.run("switch", env=env)
    flag.unlink()
    third = launcher.run("switch", env=env)
    assert (first.returncode, second.returncode, third.returncode) == (1, 1, 0)
    got = pinger.wait(6)
    assert [r["path"] for r in got] == [f"/{uuid_}/start", f"/{uuid_}/1"] * 2 + [f"/{uuid_}/start", f"/{uuid_}"]
    rid = got[0]["query"]["rid"]
    assert rid.replace("-", "") == first.event("job.started")["run_id"] and got[1]["query"]["rid"] == rid
    assert b"failure exit=1" in got[1]["body"]
    assert len(got[3]["body"]) <= 100  # the limit the server announced on the first run
    assert launcher.state("switch")["ping"]["body_limit"] == 100
    for run in (first, second, third):
        assert uuid_ not in run.stdout


def test_queued_ping_is_replayed_late(launcher):
    """A finish ping that could not be sent is replayed, marked late, at the next run."""
    launcher.write_job("failer", FAILER)
    dead = closed_port()
    uuid_ = "0b0e0c2c-1234-4a5b-8c9d-0123456789ab"
    run = launcher.run("failer", env=launcher.env(JOBRUNNER_PING_URL=f"http://127.0.0.1:{dead}/{uuid_}"))
    assert run.returncode == 1 and launcher.state("failer")["ping"]["queue"]
    server = HttpReceiver()
    try:
        again = launcher.run("failer", env=launcher.env(JOBRUNNER_PING_URL=f"http://127.0.0.1:{server.port}/{uuid_}"))
        assert again.returncode == 1
        paths = [(r["path"], r["body"][:6]) for r in server.wait(3)]
        assert paths[0] == (f"/{uuid_}/1", b"[late:")
        assert [p for p, _ in paths[1:]] == [f"/{uuid_}/start", f"/{uuid_}/1"]
        assert launcher.state("failer")["ping"]["queue"] == []
    finally:
        server.close()
