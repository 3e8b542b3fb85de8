"""Deadlines and signals reach the whole process tree; output is streamed into the log."""

from __future__ import annotations

import json
import signal
import time

from .conftest import pid_alive, wait_for

TREE = """
    import os, time
    from pathlib import Path
    from jobrunner import job

    @job(lock=True, timeout=os.environ.get("TIMEOUT") or None, kill_grace="2s")
    def tree(ctx):
        ctx.cleanup(lambda: Path(ctx.env["MARK"]).write_text("cleaned"))
        # a child shell that starts a grandchild, both sleeping; their pids go to a file
        ctx.sh('sleep 300 & echo "$! $$" > "$PIDS"; wait')
"""


def _pids(path):
    assert wait_for(lambda: path.exists() and path.read_text().strip(), 15)
    return [int(p) for p in path.read_text().split()]


def test_timeout_kills_child_and_grandchild(launcher, tmp_path):
    """After the deadline no process of the job's tree remains, cleanup ran, exit 124."""
    launcher.write_job("tree", TREE)
    pids = tmp_path / "pids"
    env = launcher.env(MARK=str(tmp_path / "mark"), PIDS=str(pids), TIMEOUT="2s")
    proc = launcher.start("tree", env=env)
    tree = _pids(pids)
    run = launcher.finish(proc, timeout=30)
    assert run.returncode == 124
    assert not any(pid_alive(p) for p in tree)
    assert (tmp_path / "mark").read_text() == "cleaned"
    assert run.event("job.finished")["outcome"] == "timeout"


def test_sigterm_kills_tree_and_frees_lock(launcher, tmp_path):
    """SIGTERM mid-job: cleanup ran, children gone, lock free, exit 143."""
    launcher.write_job("tree", TREE)
    pids = tmp_path / "pids"
    proc = launcher.start("tree", env=launcher.env(MARK=str(tmp_path / "mark"), PIDS=str(pids)))
    tree = _pids(pids)
    proc.send_signal(signal.SIGTERM)
    run = launcher.finish(proc, timeout=30)
    assert run.returncode == 143
    assert not any(pid_alive(p) for p in tree)
    assert (tmp_path / "mark").read_text() == "cleaned"
    again = launcher.run("tree", env=launcher.env(MARK=str(tmp_path / "m2"), PIDS=str(tmp_path / "p2"), TIMEOUT="1s"))
    assert again.returncode == 124  # it got the lock (not 75)


def test_output_is_streamed_line_by_line(launcher):
    """Each output line of a command is a proc.output event with its stream."""
    launcher.write_job("talk", """
        from jobrunner import job

        @job
        def talk(ctx):
            ctx.sh('echo one; echo two >&2; printf "no newline"')
    """)
    run = launcher.run("talk")
    assert run.returncode == 0
    out = [(e["stream"], e["line"]) for e in run.events if e["event"] == "proc.output"]
    assert ("stdout", "one") in out and ("stderr", "two") in out and ("stdout", "no newline") in out


def test_failed_command_reports_status_and_tail(launcher):
    """A non-zero exit fails the job (exit 1) naming the command, its status and last line."""
    launcher.write_job("boom", """
        from jobrunner import job

        @job
        def boom(ctx):
            ctx.sh('echo preparing; echo "cannot connect to db" >&2; exit 3')
    """)
    run = launcher.run("boom")
    assert run.returncode == 1
    failed = run.event("job.failed")
    assert failed["returncode"] == 3
    assert failed["tail"][-1] == "cannot connect to db"
    assert "exited with status 3" in failed["exception"]["message"]


def test_background_child_holding_pipes_does_not_hang(launcher):
    """A command that exits while its background child keeps stdout open does not hang the run."""
    launcher.write_job("bg", """
        from jobrunner import job

        @job(timeout="60s")
        def bg(ctx):
            ctx.sh('sleep 300 & echo started')
    """)
    started = time.monotonic()
    run = launcher.run("bg", timeout=30)
    assert run.returncode == 0
    assert time.monotonic() - started < 15
    assert "proc.leftovers_killed" in run.names()


def test_long_line_is_truncated_with_marker(launcher):
    """A 5 MB line without newline is cut with a marker; the log stays one JSON object a line."""
    launcher.write_job("flood", """
        from jobrunner import job

        @job
        def flood(ctx):
            ctx.run(["python3", "-c", "import sys; sys.stdout.write('x' * 5_000_000); print(); print('after')"])
    """)
    run = launcher.run("flood")
    assert run.returncode == 0
    lines = [e["line"] for e in run.events if e["event"] == "proc.output"]
    assert lines[0].endswith("…[truncated]") and len(lines[0]) < 70_000
    assert lines[1:] == ["after"]
    assert all(len(line) < 200_000 for line in run.stdout.splitlines())
    json.loads(run.stdout.splitlines()[-1])
