"""Debian's promtool on what jobrunner writes and ships (tests/prometheus_stack.py fetches it).

- ``promtool check metrics`` on every textfile real runs leave: success, failure, timeout,
  skipped, a run in progress, a job with progress steps, ``exec``;
- ``promtool check rules`` and ``promtool test rules`` on the shipped alert rules
  (``monitoring/prometheus/``), whose unit tests cover every alert and only series that
  jobrunner writes.
"""

from __future__ import annotations

import re
import time

from jobrunner.observe.metrics import _HELP

from .conftest import wait_for
from .prometheus_stack import RULES, RULES_TEST, debian, prometheus_bin, promtool
from .test_metrics import parse

JOBS = """
import time
from jobrunner import Retry, job

@job(schedule="hourly", jitter="5m", timeout="10min")
def hourly(ctx):
    ctx.log.info("did.it")

@job(schedule="Mon..Fri 02:00", retry=Retry(attempts=2, delay="0s"))
def weekdays(ctx):
    raise RuntimeError("boom")

@job(timeout="1s")
def slow(ctx):
    time.sleep(30)

@job(schedule="*:0/15", lock=True, timeout="1min")
def held(ctx):
    time.sleep(float(ctx.env.get("HOLD", "0")))

@job
def steps(ctx):
    with ctx.progress("copying", total=3, unit="files") as outer:
        for _ in range(3):
            with ctx.progress("file", total=1000, unit="B") as inner:
                inner.advance(1000)
            outer.advance(1)
"""


def _check(prometheus_bin, text: str, what: str) -> None:
    proc = promtool(prometheus_bin, "check", "metrics", stdin=text)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        f"promtool check metrics on {what}:\n{proc.stdout}{proc.stderr}\n{text}"
    )
    for (_name, labels), _value in parse(text).items():
        assert "job" not in dict(labels), f"{what}: a 'job' label collides with Prometheus' scrape job"


def test_promtool_accepts_every_textfile_of_real_runs(launcher, tmp_path, prometheus_bin):
    """Each kind of run leaves a textfile promtool finds nothing to say about."""
    metrics = tmp_path / "textfiles"
    metrics.mkdir()
    launcher.write_job("pjobs", JOBS)
    env = launcher.env(JOBRUNNER_METRICS_DIR=str(metrics))
    seen: dict[str, str] = {}

    def after(what: str, job: str) -> None:
        seen[what] = (metrics / f"{job}.prom").read_text()

    assert launcher.run("run", "pjobs:hourly", env=env).returncode == 0
    after("a success of a scheduled job with a timeout", "hourly")
    assert launcher.run("run", "pjobs:weekdays", env=env).returncode == 1
    after("a failure after retries", "weekdays")
    assert launcher.run("run", "pjobs:slow", env=env).returncode == 124
    after("a timeout", "slow")
    assert launcher.run("run", "pjobs:steps", env=env).returncode == 0
    after("a job with progress steps", "steps")
    assert launcher.run("exec", "wrapped", "--", "sh", "-c", "exit 3", env=env).returncode == 3
    after("an exec of a failing command", "wrapped")

    holder = launcher.start("run", "pjobs:held", env=launcher.env(JOBRUNNER_METRICS_DIR=str(metrics), HOLD="30"))
    try:
        state_file = launcher.state_dir / "held" / "state.json"
        assert wait_for(lambda: state_file.exists() and "running" in launcher.state("held"), timeout=20)
        after("a run in progress", "held")
        assert launcher.run("run", "pjobs:held", env=env).returncode == 75
        after("a skipped run", "held")
    finally:
        holder.terminate()
        launcher.finish(holder)
    after("a terminated run", "held")

    assert sorted(p.name for p in metrics.iterdir()) == [
        "held.prom",
        "hourly.prom",
        "slow.prom",
        "steps.prom",
        "weekdays.prom",
        "wrapped.prom",
    ]
    for what, text in seen.items():
        _check(prometheus_bin, text, what)
    # what the alert rules need is there
    assert "jobrunner_stale_after_seconds{" in seen["a success of a scheduled job with a timeout"]
    assert "jobrunner_timeout_seconds{" in seen["a run in progress"]
    assert re.search(r"^jobrunner_running_since_timestamp_seconds\{.*\} [1-9]", seen["a run in progress"], re.M)


def test_promtool_on_a_hand_made_state(prometheus_bin):
    """Odd but valid values (a label with quotes and newlines, a newer runner's outcome, huge
    counts, fractions) stay valid exposition text."""
    from jobrunner.observe.metrics import render_job_metrics

    state = {
        "last_start": time.time(),
        "last_duration_s": 0.000123,
        "runs": {"success": 2**53, "vanished": 1},  # the largest count the state accepts (jobrunner.validate)
        "last_outcome": "vanished",
        "durations_s": [1e-9],
        "running": {"since": 1.5},
    }
    text = render_job_metrics("j", state, host='a"b\\c\nd', expected_interval_s=1.25, timeout_s=0.5)
    _check(prometheus_bin, text, "a hand-made state")


def test_shipped_rules_are_valid_and_their_unit_tests_pass(prometheus_bin):
    """``promtool check rules`` and ``promtool test rules`` on the shipped files."""
    check = promtool(prometheus_bin, "check", "rules", str(RULES))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout
    test = promtool(prometheus_bin, "test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


def test_rules_use_only_written_series_and_are_all_tested():
    """Every ``jobrunner_*`` series a rule reads is one jobrunner writes; every alert of the
    rules file has unit tests, firing and not firing."""
    rules = RULES.read_text()
    used = set(re.findall(r"\b(jobrunner_[a-z_]+)", rules))
    assert used and used <= set(_HELP), used - set(_HELP)
    assert not re.search(r"\$labels\.job\b(?!_)", rules), "the job's name is $labels.job_name"
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", rules, re.M))
    tests = RULES_TEST.read_text()
    tested = set(re.findall(r"alertname: (\w+)", tests))
    assert alerts == tested
    for alert in alerts:
        blocks = re.findall(
            rf"alertname: {alert}\n\s+exp_alerts:(.*?)(?=\n\s+- eval_time|\n\s+- interval|\Z)", tests, re.S
        )
        assert any(b.strip() == "[]" for b in blocks), f"{alert}: no test where it does not fire"
        assert any("exp_labels" in b for b in blocks), f"{alert}: no test where it fires"
