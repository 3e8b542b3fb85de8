"""End to end: real runs → textfiles → Debian's node_exporter → Debian's Prometheus server with
the shipped rules (monitoring/prometheus/jobrunner.rules.yml), queried over its HTTP API.

A default scrape (no ``honor_labels``) sets ``job="node"``: the job's name must survive it in
``job_name``, the values must be the state file's, and the shipped alerts must fire for the
jobs whose state calls for them, and only for those.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

import pytest

from .conftest import stop_group, wait_for
from .prometheus_stack import (
    RULES,
    Prometheus,
    debian,
    exporter,
    prometheus_bin,
    promtool,
    start_prometheus,
)

pytestmark = pytest.mark.slow

DAY = 86400.0

JOBS = """
import time
from jobrunner import job

@job(schedule="hourly", timeout="10min")
def fresh(ctx):
    ctx.log.info("did.it")

@job(schedule="daily", lock=True)
def nightly(ctx):
    ctx.log.info("did.it")

@job(schedule="hourly")
def broken(ctx):
    raise RuntimeError("boom")

@job(schedule="hourly", timeout="2s", cleanup_timeout="60s")
def hung(ctx):
    def hang():
        open(ctx.env["CLEANING"], "w").close()
        time.sleep(3600)

    ctx.cleanup(hang)
    time.sleep(3600)
"""


def _hold(path) -> subprocess.Popen[bytes]:
    """flock(1) holding ``path``, as another run of the job would; returned once it holds it."""
    ready = path.with_suffix(".held")
    holder = subprocess.Popen(
        ["flock", "-x", str(path), "sh", "-c", f"touch {ready} && exec sleep 60"], start_new_session=True
    )
    assert wait_for(ready.exists, timeout=10)
    return holder


def _by_job(vector: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["metric"]["job_name"]: s for s in vector}


def _alerts(prom: Prometheus, name: str, state: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The alerts ``name`` in ``state`` (pending, firing) by (job_name or instance, severity)."""
    return {
        (a["labels"].get("job_name", a["labels"].get("instance", "")), a["labels"]["severity"]): a
        for a in prom.alerts()
        if a["labels"]["alertname"] == name and a["state"] == state
    }


def test_prometheus_sees_the_jobs_and_the_shipped_alerts_fire(launcher, exporter, prometheus_bin, tmp_path):
    """A default scrape keeps the job's name (job_name) and the state's values; the shipped
    alerts fire for a stale job, a failing one, an overrunning run and a stale textfile, each
    for that job only, and see a textfile node_exporter cannot read."""
    launcher.write_job("ejobs", JOBS)
    textfiles = exporter.directory
    env = launcher.env(JOBRUNNER_METRICS_DIR=str(textfiles))
    host = os.uname().nodename

    # fresh: succeeded just now. broken: fails. nightly: its last success backdated three
    # days, then a run skipped because its lock is held (the textfile is rewritten from the
    # state; nothing succeeds): stale. hung: its runner killed in a cleanup that hangs, so
    # the run stays in progress past its 2 s timeout.
    assert launcher.run("run", "ejobs:fresh", env=env).returncode == 0
    assert launcher.run("run", "ejobs:broken", env=env).returncode == 1
    assert launcher.run("run", "ejobs:nightly", env=env).returncode == 0
    state_file = launcher.state_dir / "nightly" / "state.json"
    state = json.loads(state_file.read_text())
    for key in ("last_start", "last_finish", "last_success"):
        state[key] -= 3 * DAY
    state_file.write_text(json.dumps(state))
    holder = _hold(launcher.lock_dir / "nightly.lock")
    try:
        assert launcher.run("run", "ejobs:nightly", env=env).returncode == 75
    finally:
        stop_group(holder)
    cleaning = tmp_path / "cleaning"
    hung = launcher.start(
        "run", "ejobs:hung", env=launcher.env(JOBRUNNER_METRICS_DIR=str(textfiles), CLEANING=str(cleaning))
    )
    try:
        assert wait_for(cleaning.exists, timeout=30)  # timed out, now in the cleanup
    finally:
        os.killpg(hung.pid, signal.SIGKILL)  # in its hanging cleanup: no end recorded
        hung.wait(timeout=10)
    # the nightly textfile's writer "stopped" three days ago too
    old = time.time() - 3 * DAY
    os.utime(textfiles / "nightly.prom", (old, old))

    with start_prometheus(prometheus_bin, tmp_path, [exporter.target], [RULES]) as prom:
        # The series, scraped: job="node" is the scrape job, the job's name intact in job_name.
        def scraped() -> bool:
            return len(prom.query("jobrunner_last_success_timestamp_seconds")) == 4

        assert wait_for(scraped, timeout=30, interval=0.25), prom.log.read_text()[-3000:]
        success = _by_job(prom.query("jobrunner_last_success_timestamp_seconds"))
        assert sorted(success) == ["broken", "fresh", "hung", "nightly"]
        for sample in success.values():
            labels = sample["metric"]
            assert labels["job"] == "node" and labels["instance"] == exporter.target and labels["host"] == host
            assert "exported_job" not in labels
        assert prom.query('{__name__=~"jobrunner_.+", exported_job!=""}') == []

        # The values are the state files'.
        for name in ("fresh", "nightly"):
            assert float(success[name]["value"][1]) == pytest.approx(launcher.state(name)["last_success"], abs=1e-3)
        assert float(success["broken"]["value"][1]) == 0
        failures = _by_job(prom.query("jobrunner_consecutive_failures"))
        assert {k: float(v["value"][1]) for k, v in failures.items()} == {
            name: float(launcher.state(name).get("consecutive_failures") or 0) for name in failures
        }
        assert float(failures["broken"]["value"][1]) == 1
        skipped = _by_job(prom.query('jobrunner_runs_total{outcome="skipped"}'))
        assert float(skipped["nightly"]["value"][1]) == launcher.state("nightly")["runs"]["skipped"] == 1
        running = _by_job(prom.query("jobrunner_running_since_timestamp_seconds > 0"))
        assert sorted(running) == ["hung"]
        assert float(running["hung"]["value"][1]) <= launcher.state("hung")["running"]["since"] + 1e-3
        stale_after = _by_job(prom.query("jobrunner_stale_after_seconds"))
        assert float(stale_after["nightly"]["value"][1]) > DAY and float(stale_after["fresh"]["value"][1]) > 3600
        assert float(_by_job(prom.query("jobrunner_timeout_seconds"))["fresh"]["value"][1]) == 600

        # The shipped alerts: each for the job that calls for it, and for no other.
        def fired() -> bool:
            return (
                set(_alerts(prom, "JobrunnerJobStale", "firing")) == {("nightly", "warning"), ("nightly", "critical")}
                and set(_alerts(prom, "JobrunnerJobFailing", "firing")) == {("broken", "warning")}
                and set(_alerts(prom, "JobrunnerTextfileStale", "firing")) == {("nightly", "warning")}
                and set(_alerts(prom, "JobrunnerJobOverrunning", "pending")) == {("hung", "critical")}
            )

        assert wait_for(fired, timeout=30, interval=0.25), json.dumps(prom.alerts(), indent=1)
        stale = _alerts(prom, "JobrunnerJobStale", "firing")[("nightly", "warning")]
        assert stale["labels"]["job"] == "node" and stale["labels"]["host"] == host
        assert stale["annotations"]["summary"].startswith(f"nightly on {host} has not succeeded for 3d ")
        assert float(stale["value"]) == pytest.approx(time.time() - launcher.state("nightly")["last_success"], abs=60)
        failing = _alerts(prom, "JobrunnerJobFailing", "firing")[("broken", "warning")]
        assert failing["annotations"]["summary"] == f"broken on {host} is failing: its last run did not succeed"
        overrunning = _alerts(prom, "JobrunnerJobOverrunning", "pending")[("hung", "critical")]
        assert "past its timeout" in overrunning["annotations"]["summary"]
        textfile = _alerts(prom, "JobrunnerTextfileStale", "firing")[("nightly", "warning")]
        assert textfile["labels"]["file"] == str(textfiles / "nightly.prom")
        assert not _alerts(prom, "JobrunnerTextfileUnreadable", "pending")
        # kept beside the test's files: docs/prometheus.md shows one of them as rendered here
        (tmp_path / "alerts.json").write_text(json.dumps(prom.alerts(), indent=2))

        # A file node_exporter cannot parse: the scrape error is seen, the alert pending.
        (textfiles / "other.prom").write_text("this is not the exposition format\n")
        assert wait_for(lambda: bool(_alerts(prom, "JobrunnerTextfileUnreadable", "pending")), timeout=30), json.dumps(
            prom.alerts(), indent=1
        )
        # jobrunner's series are still there (only the bad file is left out)
        assert len(prom.query("jobrunner_last_success_timestamp_seconds")) == 4

    # node_exporter's own exposition of jobrunner's files passes promtool as well
    ours = "".join(line + "\n" for line in exporter.scrape().splitlines() if "jobrunner_" in line)
    check = promtool(prometheus_bin, "check", "metrics", stdin=ours)
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check.stdout + check.stderr
