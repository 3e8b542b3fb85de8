"""Logs: one JSON object a line with the schema's keys; journald priorities; run ids."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from .conftest import REPO

REQUIRED = ("ts", "level", "event", "job", "run_id", "host")

CHATTY = """
    from jobrunner import job

    @job(lock=True)
    def chatty(ctx):
        ctx.log.info("step.one", n=1)
        ctx.log.warning("step.warn")
        ctx.sh("echo out; echo err >&2")
        ctx.log.error("step.error", detail="bad")
"""


def test_every_line_is_json_with_required_keys(launcher):
    """Every stdout line of a run parses as JSON and carries ts, level, event, job, run_id, host."""
    launcher.write_job("chatty", CHATTY)
    run = launcher.run("chatty")
    assert run.returncode == 0
    lines = run.stdout.splitlines()
    assert len(lines) >= 8
    run_ids = set()
    for line in lines:
        event = json.loads(line)
        assert all(key in event for key in REQUIRED), event
        assert list(event)[:6] == list(REQUIRED)
        assert event["ts"].endswith("Z") and "." in event["ts"]
        run_ids.add(event["run_id"])
    assert len(run_ids) == 1
    assert run.events[0]["host"] == os.uname().nodename


def test_run_id_is_systemd_invocation_id(launcher):
    """Under systemd the run id is $INVOCATION_ID, so journal and log lines pair up."""
    launcher.write_job("chatty", CHATTY)
    run = launcher.run("chatty", env=launcher.env(INVOCATION_ID="0123456789abcdef0123456789abcdef"))
    assert {e["run_id"] for e in run.events} == {"0123456789abcdef0123456789abcdef"}


def test_journald_priority_prefix_only_on_the_journal_stream(launcher):
    """With $JOURNAL_STREAM naming stdout, each line starts with its syslog priority (<3> for errors);
    otherwise lines are plain JSON."""
    launcher.write_job("chatty", CHATTY)
    # A socket stands in for journald's stream socket: what matters is that stdout *is* the
    # stream that JOURNAL_STREAM names (device:inode), as systemd sets it.
    ours, theirs = socket.socketpair()
    st = os.fstat(theirs.fileno())
    env = launcher.env(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobrunner", "chatty"], stdout=theirs, stderr=subprocess.PIPE, env=env, cwd=REPO
    )
    theirs.close()
    data = b""
    while chunk := ours.recv(65536):
        data += chunk
    proc.wait(timeout=30)
    lines = data.decode().splitlines()
    prefixes = {json.loads(line[3:])["event"]: line[:3] for line in lines}
    assert prefixes["step.error"] == "<3>"
    assert prefixes["step.warn"] == "<4>"
    assert prefixes["step.one"] == "<6>"
    # Not on the journal (JOURNAL_STREAM names another stream): the same events, no prefix.
    plain = launcher.run("chatty", env=launcher.env(JOURNAL_STREAM="1:2"))
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines(), "nothing logged off the journal: the no-prefix check would pass on nothing"
    assert all(line.startswith("{") for line in plain.stdout.splitlines())
    assert sorted(e["event"] for e in plain.events) == sorted(json.loads(line[3:])["event"] for line in lines)


def test_log_file_gets_the_same_json_lines(launcher, tmp_path):
    """log_file= appends the run's JSON lines to a file as well as stdout."""
    log = tmp_path / "job.log"
    launcher.write_job(
        "filed",
        f"""
        from jobrunner import job

        @job(log_file={str(log)!r})
        def filed(ctx):
            ctx.log.info("hello.file")
    """,
    )
    first = launcher.run("filed")
    launcher.run("filed")
    lines = log.read_text().splitlines()
    assert [json.loads(x)["event"] for x in lines].count("hello.file") == 2
    assert json.loads(lines[0]) == first.events[0]


def test_closed_stdout_does_not_fail_the_run(launcher, tmp_path):
    """With stdout closed (journald gone) the job still runs and its result is recorded."""
    launcher.write_job("chatty", CHATTY)
    proc = subprocess.run(
        [sys.executable, "-m", "jobrunner", "chatty"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=launcher.env(),
        cwd=REPO,
        timeout=30,
        preexec_fn=lambda: os.close(1),
    )
    assert proc.returncode == 0, proc.stderr
    assert launcher.state("chatty")["last_outcome"] == "success"


def test_console_format_is_readable(launcher):
    """--log-format console renders human lines, not JSON."""
    launcher.write_job("chatty", CHATTY)
    run = launcher.run("run", "chatty", "--log-format", "console")
    assert run.returncode == 0
    assert "step.one" in run.stdout and not run.stdout.lstrip().startswith("{")
