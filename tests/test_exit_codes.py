"""The exit-code table of docs/design.md, through the real CLI in a subprocess."""

from __future__ import annotations

import signal
import time

import pytest

from .conftest import wait_for

SLEEPER = """
    import time
    from pathlib import Path
    from jobrunner import job

    @job(lock=True)
    def sleeper(ctx):
        # The cleanup first: the test signals as soon as MARK exists.
        ctx.cleanup(lambda: Path(ctx.env["MARK"]).write_text("cleaned"))
        Path(ctx.env["MARK"]).write_text("started")
        time.sleep(30)
"""


def test_success_exits_0(launcher):
    """A job that returns exits 0 with outcome success."""
    launcher.write_job("ok", "from jobrunner import job\n@job\ndef ok(ctx):\n    ctx.log.info('did.it')\n")
    run = launcher.run("ok")
    assert run.returncode == 0, run.stderr
    assert run.event("job.finished")["outcome"] == "success"


def test_raising_job_exits_1(launcher):
    """A job that raises exits 1, outcome failure, and the error is structured."""
    launcher.write_job("bad", "from jobrunner import job\n@job\ndef bad(ctx):\n    raise ValueError('disk on fire')\n")
    run = launcher.run("bad")
    assert run.returncode == 1
    failed = run.event("job.failed")
    assert failed["level"] == "error"
    assert failed["exception"]["type"] == "ValueError"
    assert failed["exception"]["message"] == "disk on fire"
    assert failed["exception"]["frames"][-1]["func"] == "bad"
    assert run.event("job.finished")["outcome"] == "failure"


def test_unknown_flag_exits_64(launcher):
    """An unknown option is a usage error: exit 64, one line, no traceback."""
    run = launcher.run("run", "jobs.noop", "--frobnicate")
    assert run.returncode == 64
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "--frobnicate" in run.stderr


def test_lock_busy_exits_75(launcher, tmp_path):
    """A second run while the first holds the lock is skipped with exit 75 and lock.busy."""
    launcher.write_job("sleeper", SLEEPER)
    mark = tmp_path / "mark"
    holder = launcher.start("sleeper", env=launcher.env(MARK=str(mark)))
    assert wait_for(lambda: mark.exists(), 15)
    second = launcher.run("sleeper", env=launcher.env(MARK=str(tmp_path / "other")))
    assert second.returncode == 75
    assert second.event("lock.busy")["path"].endswith("sleeper.lock")
    assert second.event("job.finished")["outcome"] == "skipped"
    assert not (tmp_path / "other").exists()
    holder.send_signal(signal.SIGTERM)
    launcher.finish(holder)


def test_unknown_module_exits_78(launcher):
    """An unknown job module is a configuration error: exit 78, one line naming it."""
    run = launcher.run("jobs_that_do_not_exist")
    assert run.returncode == 78
    assert "jobs_that_do_not_exist" in run.stderr and run.stderr.count("\n") == 1


def test_timeout_exits_124(launcher, tmp_path):
    """A job past its timeout exits 124 with outcome timeout, after its cleanup ran."""
    launcher.write_job(
        "slow",
        """
        import time
        from pathlib import Path
        from jobrunner import job

        @job(timeout="1s")
        def slow(ctx):
            ctx.cleanup(lambda: Path(ctx.env["MARK"]).write_text("cleaned"))
            time.sleep(30)
    """,
    )
    started = time.monotonic()
    run = launcher.run("slow", env=launcher.env(MARK=str(tmp_path / "mark")))
    assert run.returncode == 124
    assert time.monotonic() - started < 10
    assert run.event("job.finished")["outcome"] == "timeout"
    assert (tmp_path / "mark").read_text() == "cleaned"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_exit_128_plus_signal(launcher, tmp_path, sig, code):
    """SIGINT and SIGTERM mid-job exit 130/143 with outcome terminated, cleanup done."""
    launcher.write_job("sleeper", SLEEPER)
    mark = tmp_path / "mark"
    proc = launcher.start("sleeper", env=launcher.env(MARK=str(mark)))
    assert wait_for(lambda: mark.exists(), 15)
    proc.send_signal(sig)
    run = launcher.finish(proc, timeout=15)
    assert run.returncode == code
    assert run.event("job.finished")["outcome"] == "terminated"
    assert mark.read_text() == "cleaned"
