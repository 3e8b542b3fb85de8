"""The fleet's history (issue #16): with $JOBRUNNER_REDIS_URL each run also publishes its finish
record to a capped Redis stream (a real redis-server); `history --fleet` and `status --fleet`
show every host's runs; a Redis that is down or silent never changes the outcome and holds the
run up for at most the publish bound; without the URL, neither redis nor the fleet module is
imported."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobrunner import fleet
from jobrunner.history import RunRecord

from .conftest import REPO, Launcher, clean_env, jobrunner_cli
from .test_imports import PROBE
from .test_redislock import RedisServer, free_port

JOB = "from jobrunner import job\n@job\ndef fl(ctx):\n    ctx.log.info('fl.ran')\n"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


def test_a_run_publishes_its_record_and_the_fleet_views_show_it(launcher: Launcher, redis_server: RedisServer):
    launcher.write_job("fl", JOB)
    run = launcher.run("fl", env=launcher.env(JOBRUNNER_REDIS_URL=redis_server.url))
    assert run.returncode == 0 and "fleet.publish_failed" not in run.names()
    # another host's runs, published as its runner would
    now = time.time()
    for i, outcome in enumerate(("success", "failure", "failure")):
        fleet.publish(redis_server.url, RunRecord("fl", "web2", f"{i:032x}", now + i, 2.0, outcome, 1 if i else 0, 1))
    entries = redis_server.client().xrange("jobrunner:runs")
    assert len(entries) == 4
    mine = json.loads(entries[0][1][b"r"])
    assert mine["run_id"] == run.event("job.started")["run_id"] and mine["outcome"] == "success"

    env = {"JOBRUNNER_REDIS_URL": redis_server.url}
    rows = [json.loads(x) for x in jobrunner_cli("history", "--fleet", "--json", **env).stdout.splitlines()]
    runs = [r for r in rows if "summary" not in r]
    assert [r["host"] for r in runs][:3] == ["web2"] * 3 and len(runs) == 4
    streaks = {
        (s["summary"]["host"], s["summary"]["job"]): s["summary"]["failure_streak"] for s in rows if "summary" in s
    }
    assert streaks[("web2", "fl")] == 2 and streaks[(mine["host"], "fl")] == 0

    cells = [json.loads(x) for x in jobrunner_cli("status", "--fleet", "--json", **env).stdout.splitlines()]
    assert {(c["host"], c["last_outcome"]) for c in cells} == {("web2", "failure"), (mine["host"], "success")}
    table = jobrunner_cli("status", "--fleet", "--table", **env).stdout.splitlines()
    assert table[0].split()[0] == "JOB" and "web2" in table[0] and mine["host"] in table[0]
    assert table[1].startswith("fl ") and "2 failed" in table[1]


def test_the_stream_is_capped(redis_server: RedisServer):
    for i in range(300):
        fleet.publish(redis_server.url, RunRecord("j", "h", f"{i}", float(i), 1.0, "success", 0), maxlen=100)
    assert redis_server.client().xlen("jobrunner:runs") < 200  # MAXLEN ~ trims by whole nodes
    assert len(fleet.read_fleet(redis_server.url)) == redis_server.client().xlen("jobrunner:runs")


@pytest.mark.parametrize("redis", ["refused", "silent"])
def test_a_redis_down_or_silent_never_changes_the_run(launcher: Launcher, redis: str):
    """A closed port (refused) or a server that accepts and never answers (silent): the run
    succeeds, logs fleet.publish_failed, records its own history, and is held up at most
    about the publish bound."""
    launcher.write_job("fl", JOB)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the backlog; nothing ever reads or answers
    port = silent.getsockname()[1] if redis == "silent" else free_port()
    try:
        began = time.monotonic()
        plain = launcher.run("fl")
        plain_s = time.monotonic() - began
        began = time.monotonic()
        run = launcher.run("fl", env=launcher.env(JOBRUNNER_REDIS_URL=f"redis://127.0.0.1:{port}/0"))
        held_s = time.monotonic() - began
    finally:
        silent.close()
    assert plain.returncode == 0 and run.returncode == 0
    assert run.event("job.finished")["outcome"] == "success"
    assert run.event("fleet.publish_failed")["error"]
    assert held_s - plain_s < fleet.PUBLISH_BOUND_S + 1.0, (held_s, plain_s)
    lines = (launcher.state_dir / "fl" / "history.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_without_redis_nothing_new_is_imported(tmp_path: Path):
    env = clean_env(JOBRUNNER_STATE_DIR=str(tmp_path / "s"), JOBRUNNER_LOCK_DIR=str(tmp_path / "l"))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "jobs.noop"], capture_output=True, text=True, timeout=60, env=env
    )
    loaded = set(json.loads(proc.stderr.strip().splitlines()[-1]))
    assert "jobrunner.history" in loaded
    assert "jobrunner.fleet" not in loaded and "redis" not in loaded


def test_fleet_views_need_the_url_and_a_live_redis():
    assert jobrunner_cli("history", "--fleet").returncode == 78
    down = jobrunner_cli("status", "--fleet", JOBRUNNER_REDIS_URL=f"redis://:hunter2secret@127.0.0.1:{free_port()}/0")
    assert down.returncode == 78 and "Traceback" not in down.stderr and "hunter2secret" not in down.stderr
