"""jobrunner.observe.metrics: node_exporter textfiles, written atomically after every run."""

from __future__ import annotations

import os
import re
import stat
import time
from types import SimpleNamespace

from jobrunner.observe.metrics import OUTCOMES, escape_label, render_job_metrics, write_job_metrics

from .conftest import wait_for

JOBS = """
import time
from jobrunner import job

@job
def good(ctx):
    pass

@job
def bad(ctx):
    raise RuntimeError("boom")

@job(timeout="1s")
def slow(ctx):
    time.sleep(30)

@job(lock=True)
def held(ctx):
    time.sleep(float(ctx.env.get("HOLD", "0")))
"""

SAMPLE = re.compile(r"^([a-z_]+)\{([^}]*)\} (\S+)$")


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """The samples of a textfile as {(name, labels): value}; checks every line's shape."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2)))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def value(samples, name: str, **labels) -> float:
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_label_escaping():
    """Backslash, double quote and newline are escaped in label values."""
    assert escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    text = render_job_metrics("j", {}, host='we"ird\\host\n')
    assert 'host="we\\"ird\\\\host\\n"' in text


def test_render_all_outcomes_help_and_type():
    """Every series has HELP and TYPE once; runs_total lists every outcome, zeros included."""
    state = {
        "last_start": 100.0,
        "last_finish": 102.5,
        "last_success": 102.5,
        "last_outcome": "success",
        "last_exit_code": 0,
        "last_duration_s": 2.5,
        "consecutive_failures": 0,
        "runs": {"success": 3, "skipped": 1},
    }
    text = render_job_metrics("wp_backup", state, host="h1", expected_interval_s=86400)
    for name in set(re.findall(r"^(jobrunner_\w+)", text, re.M)):
        assert text.count(f"# HELP {name} ") == 1 and text.count(f"# TYPE {name} ") == 1, name
    assert "# TYPE jobrunner_runs_total counter" in text
    samples = parse(text)
    for outcome in OUTCOMES:
        expected = {"success": 3, "skipped": 1}.get(outcome, 0)
        assert value(samples, "jobrunner_runs_total", outcome=outcome, job_name="wp_backup", host="h1") == expected
    assert value(samples, "jobrunner_last_outcome", outcome="success") == 1
    assert value(samples, "jobrunner_last_outcome", outcome="failure") == 0
    assert value(samples, "jobrunner_last_duration_seconds") == 2.5
    assert value(samples, "jobrunner_last_failure_timestamp_seconds") == 0
    assert value(samples, "jobrunner_expected_interval_seconds") == 86400


def test_write_is_atomic_0644_and_leaves_no_temp_files(tmp_path):
    """<job>.prom is replaced by rename, mode 0644, with nothing else left in the directory."""
    job = SimpleNamespace(name="j", schedule=(), jitter=None)
    old = os.umask(0o077)
    try:
        path = write_job_metrics(job, {"runs": {"success": 1}}, None, str(tmp_path))
        inode = os.stat(path).st_ino
        write_job_metrics(job, {"runs": {"success": 2}}, None, str(tmp_path))
    finally:
        os.umask(old)
    assert os.listdir(tmp_path) == ["j.prom"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.stat(path).st_ino != inode  # a new file renamed over the old one
    assert value(parse(open(path).read()), "jobrunner_runs_total", outcome="success") == 2


def test_runner_writes_metrics_for_every_outcome(launcher, tmp_path):
    """Real runs (success, failure, timeout, skipped) leave textfiles that match the state."""
    metrics = tmp_path / "textfiles"
    metrics.mkdir()  # node_exporter's directory exists where it is installed
    launcher.write_job("mjobs", JOBS)
    env = launcher.env(JOBRUNNER_METRICS_DIR=str(metrics))
    assert launcher.run("run", "mjobs:good", env=env).returncode == 0
    assert launcher.run("run", "mjobs:good", env=env).returncode == 0
    assert launcher.run("run", "mjobs:bad", env=env).returncode == 1
    assert launcher.run("run", "mjobs:slow", env=env).returncode == 124
    holder = launcher.start("run", "mjobs:held", env=launcher.env(JOBRUNNER_METRICS_DIR=str(metrics), HOLD="30"))
    assert wait_for(lambda: (launcher.state_dir / "held" / "state.json").exists(), timeout=20)
    assert launcher.run("run", "mjobs:held", env=env).returncode == 75
    holder.terminate()
    launcher.finish(holder)

    good = parse((metrics / "good.prom").read_text())
    assert value(good, "jobrunner_runs_total", outcome="success") == 2
    assert value(good, "jobrunner_last_exit_code") == 0
    state = launcher.state("good")
    assert value(good, "jobrunner_last_success_timestamp_seconds") == state["last_success"]
    assert abs(value(good, "jobrunner_last_start_timestamp_seconds") - time.time()) < 60
    assert "jobrunner_expected_interval_seconds" not in (metrics / "good.prom").read_text()  # manual job

    bad = parse((metrics / "bad.prom").read_text())
    assert value(bad, "jobrunner_runs_total", outcome="failure") == 1
    assert value(bad, "jobrunner_consecutive_failures") == 1
    assert value(bad, "jobrunner_last_success_timestamp_seconds") == 0
    assert value(bad, "jobrunner_last_outcome", outcome="failure") == 1

    slow = parse((metrics / "slow.prom").read_text())
    assert value(slow, "jobrunner_last_exit_code") == 124
    assert value(slow, "jobrunner_runs_total", outcome="timeout") == 1
    assert value(slow, "jobrunner_last_duration_seconds") >= 1

    held = parse((metrics / "held.prom").read_text())
    assert value(held, "jobrunner_runs_total", outcome="skipped") == 1
    assert value(held, "jobrunner_runs_total", outcome="terminated") == 1  # the holder, stopped by SIGTERM
    assert sorted(os.listdir(metrics)) == ["bad.prom", "good.prom", "held.prom", "slow.prom"]


def test_no_metrics_dir_no_import(launcher):
    """Without JOBRUNNER_METRICS_DIR the runner does not import jobrunner.observe.metrics."""
    launcher.write_job("mjobs", JOBS)
    probe = launcher.tmp / "probe.py"
    probe.write_text(
        "import sys, runpy\nsys.argv = ['jobrunner', 'run', 'mjobs:good']\n"
        "try:\n    runpy.run_module('jobrunner', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('METRICS' if 'jobrunner.observe.metrics' in sys.modules else 'CLEAN', file=sys.stderr)\n"
    )
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(probe)], env=launcher.env(), capture_output=True, text=True, timeout=60, cwd=launcher.tmp
    )
    assert proc.stderr.strip().splitlines()[-1] == "CLEAN", proc.stderr


def test_missing_metrics_directory_is_skipped_quietly(launcher, tmp_path):
    """Units point at node_exporter's directory; on a host without it a run neither fails nor logs errors."""
    launcher.write_job("mjobs", JOBS)
    run = launcher.run("run", "mjobs:good", env=launcher.env(JOBRUNNER_METRICS_DIR=str(tmp_path / "absent")))
    assert run.returncode == 0
    assert "metrics.write_failed" not in run.names()
    assert not (tmp_path / "absent").exists()


def test_the_job_label_is_job_name_never_job():
    """``job`` is the scrape job's label in Prometheus: a default scrape would rename ours to
    ``exported_job``. Every sample names the job in ``job_name``, and none has a ``job`` label."""
    text = render_job_metrics("wp_backup", {"runs": {"failure": 1}}, host="h1", expected_interval_s=60, timeout_s=5)
    samples = parse(text)
    assert samples
    for _name, labels in samples:
        keys = dict(labels)
        assert keys["job_name"] == "wp_backup" and keys["host"] == "h1" and "job" not in keys, labels


def test_limits_for_alert_rules_come_from_the_job():
    """stale_after is health's warning limit (interval + grace + the longest recent run); the
    timeout is the job's; running_since comes from the state's run in progress, or the caller."""
    state = {"durations_s": [12.0, 700.0, 30.0], "running": {"run_id": "r", "pid": 1, "since": 1234.5}}
    samples = parse(render_job_metrics("j", state, host="h", expected_interval_s=3600, timeout_s=900))
    assert value(samples, "jobrunner_stale_after_seconds") == 3600 + 360 + 700  # grace: max(10%, 5 min)
    assert value(samples, "jobrunner_timeout_seconds") == 900
    assert value(samples, "jobrunner_running_since_timestamp_seconds") == 1234.5
    daily = parse(render_job_metrics("j", {}, host="h", expected_interval_s=86400, running_since=99.0))
    assert value(daily, "jobrunner_stale_after_seconds") == 86400 + 8640
    assert value(daily, "jobrunner_running_since_timestamp_seconds") == 99
    # a manual job without timeout: no limits, and nothing running
    manual = render_job_metrics("j", {}, host="h")
    assert "jobrunner_stale_after_seconds" not in manual and "jobrunner_timeout_seconds" not in manual
    assert value(parse(manual), "jobrunner_running_since_timestamp_seconds") == 0


def test_a_run_in_progress_is_in_the_textfile(launcher, tmp_path):
    """The file is written at the start of a run (running_since: the start its timeout counts
    from, the timeout), by a run skipped meanwhile (the holder's start, from the state), and at
    the end (running_since 0)."""
    metrics = tmp_path / "textfiles"
    metrics.mkdir()
    launcher.write_job(
        "tjobs",
        """
        import time
        from jobrunner import job

        @job(lock=True, timeout="2min")
        def held(ctx):
            time.sleep(float(ctx.env.get("HOLD", "0")))
        """,
    )
    env = launcher.env(JOBRUNNER_METRICS_DIR=str(metrics))
    before = time.time()
    holder = launcher.start("run", "tjobs:held", env=launcher.env(JOBRUNNER_METRICS_DIR=str(metrics), HOLD="30"))
    try:
        state_file = launcher.state_dir / "held" / "state.json"
        assert wait_for(lambda: state_file.exists() and "running" in launcher.state("held"), timeout=20)
        running = parse((metrics / "held.prom").read_text())
        since = value(running, "jobrunner_running_since_timestamp_seconds")
        assert before - 5 < since <= launcher.state("held")["running"]["since"] + 0.001
        assert value(running, "jobrunner_timeout_seconds") == 120
        assert value(running, "jobrunner_runs_total", outcome="success") == 0  # nothing finished yet
        assert launcher.run("run", "tjobs:held", env=env).returncode == 75  # skipped: the holder runs
        skipped = parse((metrics / "held.prom").read_text())
        assert value(skipped, "jobrunner_runs_total", outcome="skipped") == 1
        recorded = launcher.state("held")["running"]["since"]
        assert value(skipped, "jobrunner_running_since_timestamp_seconds") == recorded
    finally:
        holder.terminate()
        launcher.finish(holder)
    done = parse((metrics / "held.prom").read_text())
    assert value(done, "jobrunner_running_since_timestamp_seconds") == 0
    assert value(done, "jobrunner_runs_total", outcome="terminated") == 1
