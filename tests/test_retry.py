"""Retries: only the declared exception types, each attempt logged, never past the deadline."""

from __future__ import annotations

import time

FLAKY = """
    import os
    from pathlib import Path
    from jobrunner import job, Retry

    @job(retry=Retry(attempts=int(os.environ["ATTEMPTS"]), backoff="fixed", delay="0.1s", on=(OSError,)),
         timeout=os.environ.get("TIMEOUT") or None)
    def flaky(ctx):
        counter = Path(ctx.env["COUNTER"])
        n = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(n))
        if n < int(ctx.env["SUCCEED_AT"]):
            raise (OSError if ctx.env.get("KIND", "os") == "os" else ValueError)(f"attempt {n} failed")
        ctx.log.info("flaky.done", attempt=ctx.attempt)
"""


def test_retries_until_success(launcher, tmp_path):
    """A declared error is retried; each retry is logged; the run succeeds with attempts=3."""
    launcher.write_job("flaky", FLAKY)
    run = launcher.run("flaky", env=launcher.env(ATTEMPTS="5", SUCCEED_AT="3", COUNTER=str(tmp_path / "c")))
    assert run.returncode == 0, run.stdout
    retries = [e for e in run.events if e["event"] == "job.retry"]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert retries[0]["error"] == "OSError: attempt 1 failed"
    assert run.event("job.finished")["attempts"] == 3
    assert run.event("flaky.done")["attempt"] == 3


def test_gives_up_after_attempts(launcher, tmp_path):
    """After the last attempt the job fails with exit 1 and the last error."""
    launcher.write_job("flaky", FLAKY)
    run = launcher.run("flaky", env=launcher.env(ATTEMPTS="2", SUCCEED_AT="99", COUNTER=str(tmp_path / "c")))
    assert run.returncode == 1
    assert (tmp_path / "c").read_text() == "2"
    assert run.event("job.failed")["exception"]["message"] == "attempt 2 failed"


def test_undeclared_error_is_not_retried(launcher, tmp_path):
    """An exception type not in on= fails at once."""
    launcher.write_job("flaky", FLAKY)
    run = launcher.run(
        "flaky", env=launcher.env(ATTEMPTS="5", SUCCEED_AT="3", KIND="value", COUNTER=str(tmp_path / "c"))
    )
    assert run.returncode == 1
    assert (tmp_path / "c").read_text() == "1"
    assert "job.retry" not in run.names()


def test_retries_stop_before_the_deadline(launcher, tmp_path):
    """Retries never sleep past the timeout: the run ends by its deadline."""
    launcher.write_job(
        "slowretry",
        """
        from jobrunner import job, Retry

        @job(retry=Retry(attempts=50, backoff="fixed", delay="1s", on=(OSError,)), timeout="2.5s")
        def slowretry(ctx):
            raise OSError("still down")
    """,
    )
    started = time.monotonic()
    run = launcher.run("slowretry")
    assert time.monotonic() - started < 8
    assert run.returncode in (1, 124)
    assert len([e for e in run.events if e["event"] == "job.retry"]) <= 3
