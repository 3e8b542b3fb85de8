"""The Run and its hooks: one place decides what is configured, a hook never changes the
outcome, what hooks record is folded into one state write per stage, and the timeout counts
from the process's start."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobrunner.run.hooks import load_hooks, notify_configured
from jobrunner.run.model import RunOptions

from .conftest import clean_env
from .test_imports import PROBE
from .test_notify_receivers import HttpReceiver, pinger, receiver


class _Job:
    name = unit = "j"
    notify = ()


def _names(env, **options):
    # history is always on (jobrunner.store.history; tests/test_history.py): the rest is configured
    names = [hook.name for hook in load_hooks(_Job(), RunOptions(**options), env)]
    if not options.get("dry_run") and env.get("JOBRUNNER_HISTORY") != "off":
        assert names[:1] == ["history"]
        names = names[1:]
    return names


def test_load_hooks_decides_from_the_environment(tmp_path):
    """Metrics for an existing directory only, notifications for URLs or a config file, pings
    for a ping URL; none for a dry run; no notification or ping with --no-notify."""
    metrics = str(tmp_path)
    assert _names({}) == []
    assert _names({"JOBRUNNER_METRICS_DIR": str(tmp_path / "absent")}) == []
    assert _names({"JOBRUNNER_METRICS_DIR": metrics}) == ["metrics"]
    everything = {
        "JOBRUNNER_METRICS_DIR": metrics,
        "JOBRUNNER_NOTIFY_URLS": "json://127.0.0.1:9/x",
        "JOBRUNNER_PING_URL": "http://127.0.0.1:9/p",
    }
    assert _names(everything) == ["metrics", "notify", "ping"]
    assert _names({"JOBRUNNER_NOTIFY_CONFIG": str(tmp_path / "apprise.yml")}) == ["notify"]
    assert _names({"JOBRUNNER_PING_URL_J": "http://127.0.0.1:9/p"}) == ["ping"]
    assert _names({"JOBRUNNER_PING_URL_OTHER": "http://127.0.0.1:9/p"}) == []
    assert _names(everything, dry_run=True) == []
    assert _names(everything, notify=False) == ["metrics"]


def test_notify_configured_reads_urls_as_the_notifier_does():
    """Separators alone are no URL; blank values are nothing."""
    assert not notify_configured({"JOBRUNNER_NOTIFY_URLS": " , ", "JOBRUNNER_NOTIFY_CONFIG": "  "})
    assert notify_configured({"JOBRUNNER_NOTIFY_URLS": "ops=json://h/x"})


def test_an_unconfigured_hook_is_never_imported(tmp_path):
    """With nothing configured a run imports neither the metrics nor the notification module;
    with metrics configured it imports metrics and still not notifications."""

    def modules(**extra: str) -> set[str]:
        env = clean_env(JOBRUNNER_STATE_DIR=str(tmp_path / "s"), JOBRUNNER_LOCK_DIR=str(tmp_path / "l"), **extra)
        proc = subprocess.run(
            [sys.executable, "-c", PROBE, "jobs.noop"], capture_output=True, text=True, timeout=60, env=env
        )
        return set(json.loads(proc.stderr.strip().splitlines()[-1]))

    plain = modules()
    assert (
        "jobrunner.run.hooks" in plain and "jobrunner.observe.metrics" not in plain and "jobrunner.notify" not in plain
    )
    with_metrics = modules(JOBRUNNER_METRICS_DIR=str(tmp_path))
    assert "jobrunner.observe.metrics" in with_metrics and "jobrunner.notify" not in with_metrics


OK_JOB = "from jobrunner import job\n@job\ndef ok(ctx):\n    ctx.log.info('did.it')\n"


def test_a_failing_hook_is_logged_and_changes_nothing(launcher, tmp_path):
    """A metrics hook that cannot write (<job>.prom is a directory) logs metrics.write_failed;
    the run still succeeds, is recorded, and the next hooks still run."""
    launcher.write_job("ok", OK_JOB)
    metrics = tmp_path / "metrics"
    (metrics / "ok.prom").mkdir(parents=True)
    run = launcher.run("ok", env=launcher.env(JOBRUNNER_METRICS_DIR=str(metrics)))
    assert run.returncode == 0, run.stderr
    assert run.event("metrics.write_failed")["level"] == "error"
    assert run.names()[-1] == "job.finished" and run.event("job.finished")["outcome"] == "success"
    assert launcher.state("ok")["last_outcome"] == "success"


def test_what_hooks_record_goes_into_one_write_per_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: HttpReceiver, pinger: HttpReceiver
) -> None:
    """A failed run with a notification and pings configured writes state.json twice: at the
    start and at the finish, which carries the throttle's and the ping's memory."""
    from jobrunner import job
    from jobrunner.run.lifecycle import run_job

    writes: list[str] = []
    watching = [True]

    def audit(event: str, args: tuple) -> None:
        if watching[0] and event == "os.rename" and str(args[1]).endswith("state.json"):
            writes.append(str(args[1]))

    sys.addaudithook(audit)

    @job(name="hooked")
    def hooked(ctx):
        raise RuntimeError("broken")

    monkeypatch.setenv("JOBRUNNER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("JOBRUNNER_NOTIFY_URLS", receiver.url())
    monkeypatch.setenv("JOBRUNNER_PING_URL", f"http://127.0.0.1:{pinger.port}/uuid")
    try:
        result = run_job(hooked, RunOptions(log_format="json"))
    finally:
        watching[0] = False
    assert result.exit_code == 1
    assert len(writes) == 2, writes
    state = json.loads((tmp_path / "state" / "hooked" / "state.json").read_text())
    assert state["notified_run_id"] == state["last_run_id"] and state["notify"]["failure_notified"] is True
    assert state["ping"]["body_limit"] == 100 and state["schema"] == 1 and "running" not in state
    assert len(receiver.wait(1)) == 1 and [r["path"] for r in pinger.wait(2)] == ["/uuid/start", "/uuid/1"]


SLOW_START = """
import time
time.sleep(1.5)  # a job module slow to import: part of the process's time, as under timeout(1)
from jobrunner import job

@job(timeout="2s")
def slow_start(ctx):
    time.sleep(30)
"""


def test_the_timeout_counts_from_the_process_start(launcher):
    """`python -m jobrunner` with timeout=2s ends about 2 s after the process started, import
    time included (before: 2 s after the job was reached, 3.5 s and more)."""
    launcher.write_job("slow_start", SLOW_START)
    began = time.monotonic()
    run = launcher.run("slow_start")
    took = time.monotonic() - began
    assert run.returncode == 124 and "job.timeout" in run.names()
    assert 2.0 <= took < 3.0, took
    assert run.event("job.finished")["duration_s"] >= 2.0  # the run's clock starts with the process too


def test_a_library_call_counts_from_the_call(tmp_path, monkeypatch):
    """run_job in a long-lived process (here pytest's) counts the timeout from the call."""
    from jobrunner import job
    from jobrunner.run.lifecycle import run_job

    @job(name="quick", timeout="1s")
    def quick(ctx):
        time.sleep(0.3)

    monkeypatch.setenv("JOBRUNNER_STATE_DIR", str(tmp_path / "state"))
    assert run_job(quick, RunOptions(log_format="json")).outcome == "success"


def test_the_run_gives_back_the_lock_the_job_saw(tmp_path, monkeypatch):
    """The held lock is kept once, in ``ctx.lock`` (``Run.lock`` reads it through), and the
    runner releases that very lock at the end: the job saw it held, it is not held after the
    run, and a second run of the job in the same process takes it again (not a busy skip)."""
    from jobrunner import job
    from jobrunner.run.lifecycle import run_job

    seen = []

    @job(name="held_once", lock=True)
    def held_once(ctx):
        assert ctx.lock is not None and ctx.lock.held
        seen.append(ctx.lock)

    monkeypatch.setenv("JOBRUNNER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("JOBRUNNER_LOCK_DIR", str(tmp_path / "locks"))
    assert run_job(held_once, RunOptions(log_format="json")).outcome == "success"
    assert run_job(held_once, RunOptions(log_format="json")).outcome == "success"
    assert len(seen) == 2 and not any(lock.held for lock in seen)
