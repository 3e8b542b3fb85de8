"""ctx.cleanup(): callbacks run last-in-first-out, whatever the outcome, through the real CLI.

The order matters to real jobs: wp_backup registers "remove the mysql credentials file" before
"DROP DATABASE <scratch>", so the drop must run first, while the credentials still exist; run
first-in-first-out, an interrupted verify leaks its scratch database.
"""

from __future__ import annotations

import signal

import pytest

from .conftest import wait_for

# Three cleanups registered a, b, c (plain, with arguments, as a decorator); b raises, which
# must not stop a. MODE picks how the job ends.
ORDERED = """
    import os
    import time
    from pathlib import Path
    from jobrunner import job

    def note(path, word):
        with open(path, "a") as handle:
            handle.write(word + "\\n")

    @job({declaration})
    def {name}(ctx):
        order = ctx.env["ORDER"]
        ctx.cleanup(lambda: note(order, "a"))

        def b(path, *, word):
            note(path, word)
            raise RuntimeError("cleanup b broke")

        ctx.cleanup(b, order, word="b")

        @ctx.cleanup
        def c():
            note(order, "c")

        mode = ctx.env["MODE"]
        if mode == "fail":
            raise ValueError("the job broke")
        if mode == "wait":
            Path(ctx.env["READY"]).write_text("registered")
            time.sleep(60)
"""


def _job(launcher, name: str, declaration: str = "") -> str:
    return launcher.write_job(name, ORDERED.replace("{declaration}", declaration).replace("{name}", name))


def _order(tmp_path) -> list[str]:
    path = tmp_path / "order"
    return path.read_text().split() if path.exists() else []


@pytest.mark.parametrize(("mode", "code", "outcome"), [("ok", 0, "success"), ("fail", 1, "failure")])
def test_cleanups_run_last_in_first_out(launcher, tmp_path, mode, code, outcome):
    """Registered a, b, c: run c, b, a, on success and on failure; b raising stops neither a
    nor the job's own outcome."""
    name = _job(launcher, "ordered")
    run = launcher.run(name, env=launcher.env(ORDER=str(tmp_path / "order"), MODE=mode))
    assert run.returncode == code, run.stdout + run.stderr
    assert _order(tmp_path) == ["c", "b", "a"]
    assert run.event("job.finished")["outcome"] == outcome
    failed = run.event("cleanup.failed")
    assert failed["cleanup"].endswith("b") and "cleanup b broke" in str(failed)
    if mode == "fail":
        assert run.event("job.failed")["exception"]["message"] == "the job broke"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_cleanups_run_last_in_first_out_when_interrupted(launcher, tmp_path, sig, code):
    """A signal mid-job (systemctl stop, Ctrl-C): the cleanups still run c, b, a."""
    name = _job(launcher, "ordered")
    ready = tmp_path / "ready"
    proc = launcher.start(name, env=launcher.env(ORDER=str(tmp_path / "order"), MODE="wait", READY=str(ready)))
    assert wait_for(ready.exists, 15), "the job never registered its cleanups"
    proc.send_signal(sig)
    run = launcher.finish(proc, timeout=20)
    assert run.returncode == code, run.stdout + run.stderr
    assert run.event("job.finished")["outcome"] == "terminated"
    assert _order(tmp_path) == ["c", "b", "a"]


def test_cleanups_run_last_in_first_out_after_the_timeout(launcher, tmp_path):
    """The deadline (SIGALRM) interrupts the job: exit 124 and the cleanups still run c, b, a."""
    name = _job(launcher, "ordered_slow", 'timeout="2s"')
    ready = tmp_path / "ready"
    run = launcher.run(name, env=launcher.env(ORDER=str(tmp_path / "order"), MODE="wait", READY=str(ready)), timeout=30)
    assert ready.exists()
    assert run.returncode == 124, run.stdout + run.stderr
    assert run.event("job.finished")["outcome"] == "timeout"
    assert _order(tmp_path) == ["c", "b", "a"]
