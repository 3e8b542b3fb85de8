"""Deadlines and signals reach the whole process tree; output is streamed into the log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

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
    launcher.write_job(
        "talk",
        """
        from jobrunner import job

        @job
        def talk(ctx):
            ctx.sh('echo one; echo two >&2; printf "no newline"')
    """,
    )
    run = launcher.run("talk")
    assert run.returncode == 0
    out = [(e["stream"], e["line"]) for e in run.events if e["event"] == "proc.output"]
    assert ("stdout", "one") in out and ("stderr", "two") in out and ("stdout", "no newline") in out


def test_failed_command_reports_status_and_tail(launcher):
    """A non-zero exit fails the job (exit 1) naming the command, its status and last line."""
    launcher.write_job(
        "boom",
        """
        from jobrunner import job

        @job
        def boom(ctx):
            ctx.sh('echo preparing; echo "cannot connect to db" >&2; exit 3')
    """,
    )
    run = launcher.run("boom")
    assert run.returncode == 1
    failed = run.event("job.failed")
    assert failed["returncode"] == 3
    assert failed["tail"][-1] == "cannot connect to db"
    assert "exited with status 3" in failed["exception"]["message"]


def test_background_child_holding_pipes_does_not_hang(launcher):
    """A command that exits while its background child keeps stdout open does not hang the run."""
    launcher.write_job(
        "bg",
        """
        from jobrunner import job

        @job(timeout="60s")
        def bg(ctx):
            ctx.sh('sleep 300 & echo started')
    """,
    )
    started = time.monotonic()
    run = launcher.run("bg", timeout=30)
    assert run.returncode == 0
    assert time.monotonic() - started < 15
    assert "proc.leftovers_killed" in run.names()


def test_long_line_is_truncated_with_marker(launcher):
    """A 5 MB line without newline is cut with a marker; the log stays one JSON object a line."""
    launcher.write_job(
        "flood",
        """
        from jobrunner import job

        @job
        def flood(ctx):
            ctx.run(["python3", "-c", "import sys; sys.stdout.write('x' * 5_000_000); print(); print('after')"])
    """,
    )
    run = launcher.run("flood")
    assert run.returncode == 0
    lines = [e["line"] for e in run.events if e["event"] == "proc.output"]
    assert lines[0].endswith("…[truncated]") and len(lines[0]) < 70_000
    assert lines[1:] == ["after"]
    assert all(len(line) < 200_000 for line in run.stdout.splitlines())
    json.loads(run.stdout.splitlines()[-1])


# Issue #13, finding 9: a daemon that double-forks into a new session leaves every process group
# of the run; outside systemd the runner is its subreaper and kills it all the same.

DAEMONIZE = r"""
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        time.sleep(300)
    os._exit(0)
os.wait()
time.sleep(float(sys.argv[2]))
"""


def _daemon(path):
    assert wait_for(path.exists, 15)
    return int(path.read_text())


def _kill_if_alive(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize(("timeout", "stays", "code"), [("2s", "60", 124), (None, "0", 0)], ids=["timeout", "end"])
def test_double_forked_daemon_does_not_outlive_exec(launcher, tmp_path, timeout, stays, code):
    """`jobrunner exec --timeout 2s -- CMD` where CMD double-forks a daemon into its own session: after the
    timeout (or at the end of the run) the daemon is gone too (before: it survived, re-parented to PID 1)."""
    pidfile = tmp_path / "daemon.pid"
    args = [
        "exec",
        "daemonizer",
        *(["--timeout", timeout] if timeout else []),
        "--",
        sys.executable,
        "-c",
        DAEMONIZE,
        str(pidfile),
        stays,
    ]
    proc = launcher.start(*args)
    daemon = _daemon(pidfile)
    try:
        run = launcher.finish(proc, timeout=60)
        assert run.returncode == code, run.stderr
        assert wait_for(lambda: not pid_alive(daemon), 5), "the double-forked daemon outlived the run"
        assert daemon in [e.get("pgid") for e in run.events if e["event"] == "proc.killed"]
    finally:
        _kill_if_alive(daemon)


def test_processes_that_existed_before_the_run_are_left_alone(tmp_path, monkeypatch):
    """In-process (run_job from a program that has children of its own), only the run's descendants are
    swept: the host program's own child survives, the job's daemon does not."""
    from jobrunner import job
    from jobrunner.run.lifecycle import RunOptions, run_job

    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.setenv("JOBRUNNER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("JOBRUNNER_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("JOBRUNNER_LOG_FORMAT", "json")
    neighbour = subprocess.Popen(["sleep", "60"])
    pidfile = tmp_path / "daemon.pid"

    @job(name="sweeper", kill_grace="2s")
    def sweeper(ctx):
        ctx.run([sys.executable, "-c", DAEMONIZE, str(pidfile), "0"])

    try:
        assert run_job(sweeper, RunOptions(notify=False)).exit_code == 0
        daemon = _daemon(pidfile)
        assert wait_for(lambda: not pid_alive(daemon), 5)
        assert neighbour.poll() is None and pid_alive(neighbour.pid)
    finally:
        neighbour.kill()
        neighbour.wait()
        if pidfile.exists():
            _kill_if_alive(int(pidfile.read_text()))
