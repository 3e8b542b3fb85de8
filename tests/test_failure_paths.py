"""A failure is a failure on every path: a terminal, a 0-column console, a pipe in either format.

The outcome is decided before anything describes it: an error while rendering a log line must
not turn a failed run into a recorded success (issue: "a failure is a failure on every path").
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from .conftest import Launcher

BOOM = """
from jobrunner import job

@job()
def boom(ctx):
    raise ValueError("disk full")
"""

UNRENDERABLE = """
from jobrunner import job

class Odd:
    def __repr__(self):
        raise RuntimeError("no repr")
    __str__ = __repr__

@job()
def odd(ctx):
    ctx.log.info("job.note", value=Odd())
    raise ValueError("disk full")
"""


def _in_pty(launcher: Launcher, cols: int, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``jobrunner ARGS`` on a real terminal (script(1)) whose width is ``cols`` (0: unknown)."""
    command = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "jobrunner", *args))
    return subprocess.run(
        ["script", "-qec", f"stty cols {cols} rows 40; {command}; echo rc=$?", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=launcher.tmp,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _history(launcher: Launcher, job: str) -> list[str]:
    lines = (launcher.state_dir / job / "history.jsonl").read_text().splitlines()
    return [line for line in lines if line.strip()]


@pytest.mark.parametrize("cols", [100, 0])
def test_a_raising_job_at_a_terminal_fails_and_is_recorded_as_failed(launcher: Launcher, cols: int) -> None:
    """At a terminal of 100 or 0 columns (console format): exit 1, one readable error line, no
    traceback, and the state and history say failure."""
    launcher.write_job("boomjob", BOOM)
    env = launcher.env()
    del env["JOBRUNNER_LOG_FORMAT"]  # the default on a TTY: console
    done = _in_pty(launcher, cols, "run", "boomjob:boom", env=env)
    assert "rc=1" in done.stdout, done.stdout
    assert "Traceback" not in done.stdout
    errors = [line for line in done.stdout.splitlines() if "job.failed" in line]
    assert len(errors) == 1 and "ValueError: disk full" in errors[0], done.stdout
    state = launcher.state("boom")
    assert state["last_outcome"] == "failure" and state["last_exit_code"] == 1
    assert '"outcome":"failure"' in _history(launcher, "boom")[-1]


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_exec_of_a_failing_script_on_a_pipe_is_a_failure(launcher: Launcher, fmt: str) -> None:
    """``exec NAME -- script`` exiting 2, logged on a pipe in either format: its exit 2, failure recorded."""
    script = launcher.tmp / "fail.sh"
    script.write_text("#!/bin/sh\necho partial\nexit 2\n")
    script.chmod(0o755)
    done = launcher.run("exec", "scripted", "--", str(script), env=launcher.env(JOBRUNNER_LOG_FORMAT=fmt))
    assert done.returncode == 2, done.stdout + done.stderr  # exec passes the script's status through
    assert "Traceback" not in done.stdout + done.stderr
    state = launcher.state("scripted")
    assert state["last_outcome"] == "failure" and state["last_exit_code"] == 2


def test_an_event_that_cannot_be_rendered_does_not_change_the_outcome(launcher: Launcher) -> None:
    """A log event whose value cannot be shown is reported once, in the log's own form: as JSON,
    a ``log.render_failed`` line plus a plain line on stderr; on a console, one console line
    (not a JSON line among console lines, not said twice). The job's own failure is still
    exit 1 and recorded as failure."""
    launcher.write_job("oddjob", UNRENDERABLE)
    for fmt in ("console", "json"):
        done = launcher.run("run", "oddjob:odd", env=launcher.env(JOBRUNNER_LOG_FORMAT=fmt))
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        assert launcher.state("odd")["last_outcome"] == "failure"
        said = [line for line in done.stdout.splitlines() if "job.note" in line]
        assert len(said) == 1, done.stdout
        if fmt == "json":
            assert done.stderr.count("could not write log event 'job.note'") == 1, done.stderr
            assert json.loads(said[0])["event"] == "log.render_failed"
        else:
            assert "job.note" not in done.stderr, done.stderr
            assert said[0].split()[1:4] == ["[error]", "log.render_failed", "failed_event='job.note'"], said
            assert "RuntimeError: no repr" in said[0] and not said[0].startswith("{")
            assert all(not line.startswith("{") for line in done.stdout.splitlines()), done.stdout
