"""Pings against a real healthchecks server (v3.13, tests/healthchecks_server.py): what the
server stores (kinds, rids, durations, bodies, exit codes), ``?create=1``, a check that does
not exist, a black-holed server; and the URL building and queue rules on real local receivers."""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from .test_notify_receivers import HttpReceiver, black_hole, closed_port

pytestmark = pytest.mark.slow

HCJOB = """
import os, sys
from jobrunner import job

@job(timeout="2s")
def hcjob(ctx):
    mode = open(os.environ["MODE_FILE"]).read().strip()
    ctx.log.info("hcjob.mode", mode=mode)
    if mode == "noisy":
        for i in range(30):
            print(f"line {i:02d} " + "x" * 280, flush=True)
        print("TAIL-MARKER the last line", flush=True)
        raise RuntimeError("noisy job gave up")
    if mode == "secret":
        print("connecting with password " + os.environ["DB_PASSWORD"], flush=True)
        raise ConnectionError("mysql refused user backup password=" + os.environ["DB_PASSWORD"])
    if mode == "fail":
        raise OSError("disk full on /mnt/backups")
    if mode == "slow":
        import time
        time.sleep(10)
"""

SECRET = "Tr0ub4dor-and-3-horses"
APPRISE_TOKEN = "ZxQ9v7T0kenOfTheHookAB12"


def _job(launcher, mode: str) -> Path:
    launcher.write_job("hcjob", HCJOB)
    flag = launcher.tmp / "mode"
    flag.write_text(mode)
    return flag


def _requests(server, marker: str) -> list[str]:
    """The request lines the server logged (``POST /ping/…/start?rid=… HTTP/1.1``) naming ``marker``."""
    log = (server.work / "server.log").read_text(errors="replace")
    return re.findall(r'"((?:GET|POST) [^"]*' + re.escape(marker) + r'[^"]*) HTTP/1\.1" (\d+)', log)


def test_start_finish_pings_rid_durations_exit_codes_and_bodies(launcher, healthchecks, hc_project):
    """success, a raised error and a timeout: /start then the finish ping with one rid per run,
    a duration the server computed from the pair, the exit code in the path, and a body that
    opens with the error's type and message, then the tail."""
    check = hc_project.create(name="hcjob", slug="hcjob", timeout=3600, grace=60)
    code = check["uuid"]
    flag = _job(launcher, "ok")
    env = launcher.env(JOBRUNNER_PING_URL_HCJOB=check["ping_url"], MODE_FILE=str(flag))
    runs = []
    for mode, exit_code in (("ok", 0), ("fail", 1), ("slow", 124)):
        flag.write_text(mode)
        run = launcher.run("run", "hcjob", env=env)
        assert run.returncode == exit_code, run.stdout + run.stderr
        assert "ping.failed" not in run.names() and "ping.rejected" not in run.names()
        runs.append(run)
    pings = hc_project.pings(code)
    assert [p["type"] for p in pings] == ["start", "success", "start", "fail", "start", "fail"]
    for i, run in enumerate(runs):
        start, finish = pings[2 * i], pings[2 * i + 1]
        assert start["rid"] == finish["rid"] == str(uuid.UUID(run.event("job.started")["run_id"]))
        assert finish["duration"] > 0, finish
        assert start["method"] == "GET" and finish["method"] == "POST"
    assert pings[5]["duration"] > 1.5  # the timeout run: about 2 s
    requests = [line for line, _ in _requests(healthchecks, code) if "/ping/" in line]
    assert [r.split("?")[0].split(code)[1] for r in requests] == ["/start", "", "/start", "/1", "/start", "/124"]
    body = hc_project.body(code, pings[3]["n"])
    assert body.splitlines()[0] == "error: OSError: disk full on /mnt/backups", body
    assert "hcjob.mode mode=fail" in body and body.rstrip().endswith("attempts=1")
    timeout_body = hc_project.body(code, pings[5]["n"])
    assert timeout_body.splitlines()[0].startswith("error: ") and "timeout exit=124" in timeout_body
    assert "error:" not in hc_project.body(code, pings[1]["n"])  # a success has no error line
    status = hc_project.checks()["hcjob"]
    assert status["status"] == "down" and status["last_duration"] >= 1


def test_no_secret_in_stored_bodies(launcher, healthchecks, hc_project):
    """A job that prints its DB password and raises with it, with an Apprise URL holding a token:
    neither reaches the bodies the server stored."""
    check = hc_project.create(name="hcjob", slug="hcjob", timeout=3600)
    flag = _job(launcher, "secret")
    env = launcher.env(
        JOBRUNNER_PING_URL=check["ping_url"],
        MODE_FILE=str(flag),
        DB_PASSWORD=SECRET,
        JOBRUNNER_NOTIFY_URLS=f"json://127.0.0.1:{closed_port()}/hook/{APPRISE_TOKEN}",
        JOBRUNNER_NOTIFY_TIMEOUT="4s",
    )
    run = launcher.run("run", "hcjob", env=env)
    assert run.returncode == 1
    pings = hc_project.pings(check["uuid"])
    assert [p["type"] for p in pings] == ["start", "fail"]
    body = hc_project.body(check["uuid"], pings[1]["n"])
    assert body.startswith("error: ConnectionError: mysql refused user backup password=")
    assert "connecting with password" in body
    for secret in (SECRET, APPRISE_TOKEN, check["uuid"]):
        assert secret not in body and secret not in run.stdout + run.stderr


def test_body_fits_the_servers_limit_and_keeps_the_tail(launcher, healthchecks, hc_project):
    """The server keeps only the first Ping-Body-Limit bytes (4000 here): the first run already
    sends within it (learnt from the /start answer), keeping the error and the last lines."""
    check = hc_project.create(name="hcjob", slug="hcjob", timeout=3600)
    flag = _job(launcher, "noisy")
    env = launcher.env(JOBRUNNER_PING_URL=check["ping_url"], MODE_FILE=str(flag))
    run = launcher.run("run", "hcjob", env=env)
    assert run.returncode == 1
    pings = hc_project.pings(check["uuid"])
    body = hc_project.body(check["uuid"], pings[-1]["n"])
    assert len(body.encode()) <= healthchecks.body_limit
    assert body.splitlines()[0] == "error: RuntimeError: noisy job gave up"
    assert "TAIL-MARKER the last line" in body and body.rstrip().endswith("attempts=1")
    assert launcher.state("hcjob")["ping"]["body_limit"] == healthchecks.body_limit


def test_create_1_url_with_job_placeholder_provisions_the_check(launcher, healthchecks, hc_project):
    """``<ping endpoint>/<ping key>/{job}?create=1``, pasted with a trailing slash: the server
    creates the check on the first ping, and the run's /start and finish land on it."""
    flag = _job(launcher, "ok")
    url = hc_project.ping_url("{job}") + "/?create=1"
    env = launcher.env(JOBRUNNER_PING_URL=url, MODE_FILE=str(flag))
    run = launcher.run("run", "hcjob", env=env)
    assert run.returncode == 0
    assert "ping.rejected" not in run.names() and "ping.failed" not in run.names(), run.stdout
    checks = hc_project.checks()
    assert list(checks) == ["hcjob"]
    pings = hc_project.pings(checks["hcjob"]["uuid"])
    assert [p["type"] for p in pings] == ["start", "success"]
    assert pings[0]["rid"] == pings[1]["rid"] and pings[1]["duration"] > 0
    lines = [line for line, _ in _requests(healthchecks, hc_project.ping_key)]
    assert lines[0].startswith(f"GET /ping/{hc_project.ping_key}/hcjob/start?create=1&rid="), lines
    assert hc_project.ping_key not in run.stdout


def test_unknown_check_is_logged_once_and_never_queued(launcher, healthchecks, hc_project):
    """A ping URL of a check that does not exist: 404 with the server's message, logged once,
    nothing queued, the run's outcome untouched; the next run does the same, not more."""
    flag = _job(launcher, "fail")
    missing = f"{healthchecks.url}/ping/{uuid.uuid4()}"
    env = launcher.env(JOBRUNNER_PING_URL=missing, MODE_FILE=str(flag))
    for _ in range(2):
        run = launcher.run("run", "hcjob", env=env)
        assert run.returncode == 1
        rejected = [e for e in run.events if e["event"] == "ping.rejected"]
        assert len(rejected) == 1 and "ping.failed" not in run.names(), run.stdout
        assert rejected[0]["status"] == 404 and rejected[0]["error"] == "HTTP 404: not found"
        assert launcher.state("hcjob").get("ping", {}).get("queue", []) == []
    assert missing.rsplit("/", 1)[1] not in run.stdout
    # a URL the server has no route for: its HTML error page as its title, not as markup
    wrong = launcher.run(
        "run", "hcjob", env=launcher.env(JOBRUNNER_PING_URL=f"{healthchecks.url}/pong/x", MODE_FILE=str(flag))
    )
    assert wrong.event("ping.rejected")["error"] == "HTTP 404: Not Found"


def test_black_holed_server_holds_the_run_at_most_the_budget(launcher, black_hole):
    """A ping server and a notification endpoint that accept connections and never answer:
    the start ping, the notification and the finish ping together stay within
    JOBRUNNER_NOTIFY_TIMEOUT (6 s), not one budget each."""
    flag = _job(launcher, "fail")
    env = launcher.env(
        JOBRUNNER_PING_URL=f"http://127.0.0.1:{black_hole.port}/ping/{uuid.uuid4()}",
        JOBRUNNER_NOTIFY_URLS=f"json://127.0.0.1:{black_hole.port}/hook",
        JOBRUNNER_NOTIFY_TIMEOUT="6s",
        MODE_FILE=str(flag),
    )
    started = time.monotonic()
    run = launcher.run("run", "hcjob", env=env)
    elapsed = time.monotonic() - started
    assert run.returncode == 1

    def at(event: str) -> float:
        return datetime.fromisoformat(run.event(event)["ts"].replace("Z", "+00:00")).timestamp()

    # the sending, from the run's own clock: before the job (start ping) and after it (the rest)
    sending = (at("hcjob.mode") - at("job.started")) + (at("job.finished") - at("job.failed"))
    assert 5 < sending < 6 + 0.5, sending
    assert elapsed < 6 + 10, elapsed  # and the process as a whole, with a wide margin for start-up
    assert run.event("ping.failed")["path"] == "/1" and run.event("notify.failed")
    assert launcher.state("hcjob")["ping"]["queue"][0]["path"] == "/1"  # a timeout may pass: queued


@pytest.mark.parametrize("status", [429, 503])
def test_transient_answers_are_queued_and_replayed(launcher, status):
    """429 and 5xx may pass: the finish ping is queued, and replayed (marked late) by the next run."""
    flag = _job(launcher, "fail")
    busy = HttpReceiver(status=status)
    code = str(uuid.uuid4())
    try:
        run = launcher.run("run", "hcjob", env=launcher.env(JOBRUNNER_PING_URL=busy.url("http", f"/p/{code}")))
        assert run.returncode == 1 and run.event("ping.failed")["error"].startswith(f"HTTP {status}")
        assert [q["path"] for q in launcher.state("hcjob")["ping"]["queue"]] == ["/1"]
        busy.status = 200
        env = launcher.env(JOBRUNNER_PING_URL=busy.url("http", f"/p/{code}"), MODE_FILE=str(flag))
        again = launcher.run("run", "hcjob", env=env)
        assert again.returncode == 1 and again.event("ping.replayed")["path"] == "/1"
        assert launcher.state("hcjob")["ping"]["queue"] == []
    finally:
        busy.close()


def test_queue_is_bounded_in_count_and_age(launcher):
    """At most 20 queued pings (the newest kept); one older than a day is dropped unsent
    (ping.dropped); what is kept is replayed once the server answers."""
    import json

    flag = _job(launcher, "fail")
    dead = f"http://127.0.0.1:{closed_port()}/p/{uuid.uuid4()}"
    env = launcher.env(JOBRUNNER_PING_URL=dead, MODE_FILE=str(flag), JOBRUNNER_NOTIFY_TIMEOUT="1s")
    assert launcher.run("run", "hcjob", env=env).returncode == 1
    path = launcher.state_dir / "hcjob" / "state.json"
    state = json.loads(path.read_text())
    item = state["ping"]["queue"][0]
    old = [dict(item, queued=time.time() - 2 * 86400, rid="old")]
    state["ping"]["queue"] = old + [dict(item, rid=f"r{i}", queued=time.time() - 60) for i in range(25)]
    path.write_text(json.dumps(state))
    run = launcher.run("run", "hcjob", env=env)
    assert run.event("ping.dropped")["rid"] == "old"
    queue = launcher.state("hcjob")["ping"]["queue"]
    assert len(queue) == 20 and queue[-1]["rid"] == str(uuid.UUID(run.event("job.started")["run_id"]))
    server = HttpReceiver()
    try:
        env = launcher.env(JOBRUNNER_PING_URL=server.url("http", "/p/x"), MODE_FILE=str(flag))
        again = launcher.run("run", "hcjob", env=env)
        assert len([e for e in again.events if e["event"] == "ping.replayed"]) == 20
        assert launcher.state("hcjob")["ping"]["queue"] == []
    finally:
        server.close()


@pytest.mark.parametrize(
    ("base", "suffix", "expected"),
    [
        ("https://hc-ping.com/5f2d5a4e", "/start", "https://hc-ping.com/5f2d5a4e/start?rid=R"),
        ("https://hc-ping.com/5f2d5a4e/", "", "https://hc-ping.com/5f2d5a4e?rid=R"),
        (
            "https://hc-ping.com/KEY/wp-backup?create=1",
            "/start",
            "https://hc-ping.com/KEY/wp-backup/start?create=1&rid=R",
        ),
        ("https://hc-ping.com/KEY/wp-backup/?create=1", "/3", "https://hc-ping.com/KEY/wp-backup/3?create=1&rid=R"),
        ("https://mon.example.com:8443/hc/ping/5f2d/", "/fail", "https://mon.example.com:8443/hc/ping/5f2d/fail?rid=R"),
        ("https://hc-ping.com/5f2d?rid=stale#frag", "", "https://hc-ping.com/5f2d?rid=R"),
        ("  https://hc-ping.com/5f2d  ", "/start", "https://hc-ping.com/5f2d/start?rid=R"),
    ],
)
def test_ping_urls_for_what_users_paste(base, suffix, expected):
    """The suffix goes into the path, before any query; the query is kept; the rid replaces any."""
    from jobrunner.notify.ping import build_url

    assert build_url(base, suffix, "R") == expected
