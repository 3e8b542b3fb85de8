"""The textfiles through the real Prometheus node_exporter (Debian's prometheus-node-exporter)."""

from __future__ import annotations

import os

import pytest

from .prometheus_stack import exporter
from .test_metrics import JOBS, parse, value

pytestmark = pytest.mark.slow


def test_scraped_series_match_real_runs(launcher, exporter):
    """Success, failure and timeout runs show up in node_exporter's /metrics with the right values."""
    launcher.write_job("mjobs", JOBS)
    env = launcher.env(JOBRUNNER_METRICS_DIR=str(exporter.directory))
    assert launcher.run("run", "mjobs:good", env=env).returncode == 0
    assert launcher.run("run", "mjobs:bad", env=env).returncode == 1
    assert launcher.run("run", "mjobs:bad", env=env).returncode == 1
    assert launcher.run("run", "mjobs:slow", env=env).returncode == 124

    text = exporter.scrape()
    # the collector read our files without complaint
    assert "node_textfile_scrape_error 0" in text, [line for line in text.splitlines() if "textfile" in line]
    ours = parse("\n".join(line for line in text.splitlines() if line.startswith("jobrunner_")))
    host = os.uname().nodename
    assert value(ours, "jobrunner_runs_total", job_name="good", host=host, outcome="success") == 1
    assert value(ours, "jobrunner_runs_total", job_name="good", outcome="skipped") == 0
    assert value(ours, "jobrunner_last_success_timestamp_seconds", job_name="good") == pytest.approx(
        launcher.state("good")["last_success"], abs=0.001
    )
    assert value(ours, "jobrunner_runs_total", job_name="bad", outcome="failure") == 2
    assert value(ours, "jobrunner_consecutive_failures", job_name="bad") == 2
    assert value(ours, "jobrunner_last_exit_code", job_name="bad") == 1
    assert value(ours, "jobrunner_last_outcome", job_name="bad", outcome="failure") == 1
    assert value(ours, "jobrunner_last_exit_code", job_name="slow") == 124
    assert value(ours, "jobrunner_runs_total", job_name="slow", outcome="timeout") == 1
    assert "# TYPE jobrunner_runs_total counter" in text
    assert "# HELP jobrunner_consecutive_failures Unsuccessful runs since the last success." in text

    # a later run replaces the file; the next scrape sees the new values
    assert launcher.run("run", "mjobs:bad", env=env).returncode == 1
    ours = parse("\n".join(line for line in exporter.scrape().splitlines() if line.startswith("jobrunner_")))
    assert value(ours, "jobrunner_consecutive_failures", job_name="bad") == 3
