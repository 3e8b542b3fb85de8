"""jobrunner status: the recorded state of jobs, as a table on a TTY or JSON lines."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

JOBS = """
from jobrunner import job

@job
def good(ctx):
    pass

@job
def bad(ctx):
    raise RuntimeError("boom")

@job
def idle(ctx):
    pass
"""


def rows(run) -> dict[str, dict]:
    return {r["job"]: r for r in (json.loads(line) for line in run.stdout.splitlines())}


def test_json_lines_from_the_state_dir(launcher):
    """Without a TTY: one JSON object per job that has state, with its facts."""
    launcher.write_job("sjobs", JOBS)
    assert launcher.run("run", "sjobs:good").returncode == 0
    assert launcher.run("run", "sjobs:bad").returncode == 1
    run = launcher.run("status")
    assert run.returncode == 0, run.stderr
    found = rows(run)
    assert sorted(found) == ["bad", "good"]
    assert found["good"]["last_outcome"] == "success" and found["good"]["consecutive_failures"] == 0
    assert found["good"]["last_success"] == launcher.state("good")["last_success"]
    assert found["bad"]["last_error"] == "RuntimeError: boom" and found["bad"]["runs"] == {"failure": 1}


def test_package_adds_jobs_that_never_ran_and_one_job(launcher):
    """--package lists declared jobs that never ran; JOB narrows to one."""
    launcher.write_job("sjobs", JOBS)
    assert launcher.run("run", "sjobs:good").returncode == 0
    found = rows(launcher.run("status", "--package", "sjobs"))
    assert sorted(found) == ["bad", "good", "idle"]
    assert found["idle"]["never_ran"] is True
    assert list(rows(launcher.run("status", "good"))) == ["good"]
    assert list(rows(launcher.run("status", "idle", "--package", "sjobs"))) == ["idle"]


def test_unknown_job_is_exit_78_one_line(launcher):
    """A JOB with no state (and not in --package) is a configuration error: exit 78, one line."""
    run = launcher.run("status", "nope")
    assert run.returncode == 78
    assert run.stdout == "" and len(run.stderr.splitlines()) == 1 and "no job 'nope'" in run.stderr


def test_unreadable_state_is_reported_in_its_row(launcher):
    """A corrupt state file shows as an error in its row; the other jobs still show."""
    launcher.write_job("sjobs", JOBS)
    assert launcher.run("run", "sjobs:good").returncode == 0
    os.makedirs(launcher.state_dir / "broken")
    (launcher.state_dir / "broken" / "state.json").write_text("{half")
    run = launcher.run("status")
    assert run.returncode == 0 and "Traceback" not in run.stderr
    found = rows(run)
    assert "unreadable" in found["broken"]["error"] and found["good"]["last_outcome"] == "success"
    table = launcher.run("status", "--table").stdout
    assert "broken  unreadable: state file" in table


def test_table_on_a_tty(launcher):
    """On a TTY the default is a table with relative times."""
    launcher.write_job("sjobs", JOBS)
    assert launcher.run("run", "sjobs:good").returncode == 0
    assert launcher.run("run", "sjobs:bad").returncode == 1
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "jobrunner", "status", "--package", "sjobs"],
            stdout=slave,
            stderr=subprocess.PIPE,
            env=launcher.env(),
            cwd=launcher.tmp,
            timeout=60,
        )
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0, proc.stderr
    lines = out.decode().replace("\r", "").splitlines()
    assert lines[0].split() == ["JOB", "LAST", "OUTCOME", "LAST", "RUN", "LAST", "SUCCESS", "DURATION", "FAILS"]
    table = {line.split()[0]: line for line in lines[1:]}
    assert "failure" in table["bad"] and table["bad"].rstrip().endswith("1")
    assert " ago" in table["good"] and "never ran" in table["idle"]
