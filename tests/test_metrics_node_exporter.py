"""The textfiles through the real Prometheus node_exporter (Debian's prometheus-node-exporter)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import wait_for
from .test_metrics import JOBS, parse, value

pytestmark = pytest.mark.slow

EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")


class Exporter:
    def __init__(self, port: int, directory: Path) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.directory = directory

    def scrape(self) -> str:
        with urllib.request.urlopen(self.url, timeout=10) as response:
            return response.read().decode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Exporter]:
    if EXPORTER is None:
        if os.environ.get("JOBRUNNER_REQUIRE_COMPONENTS", "") not in ("", "0"):
            pytest.fail("prometheus-node-exporter is not installed (apt-get install prometheus-node-exporter)")
        pytest.skip("prometheus-node-exporter is not installed")
    directory = tmp_path / "textfiles"
    directory.mkdir()
    port = _free_port()
    proc = subprocess.Popen(
        [
            EXPORTER,
            f"--web.listen-address=127.0.0.1:{port}",
            f"--collector.textfile.directory={directory}",
            "--collector.disable-defaults",
            "--collector.textfile",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    stderr = proc.stderr
    assert stderr is not None  # stderr=PIPE
    exp = Exporter(port, directory)
    try:

        def up() -> bool:
            try:
                exp.scrape()
                return True
            except OSError:
                return proc.poll() is not None  # died: stop waiting, fail below

        assert wait_for(up, timeout=20, interval=0.1) and proc.poll() is None, stderr.read().decode()
        yield exp
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                continue
        stderr.close()


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
    assert value(ours, "jobrunner_runs_total", job="good", host=host, outcome="success") == 1
    assert value(ours, "jobrunner_runs_total", job="good", outcome="skipped") == 0
    assert value(ours, "jobrunner_last_success_timestamp_seconds", job="good") == pytest.approx(
        launcher.state("good")["last_success"], abs=0.001
    )
    assert value(ours, "jobrunner_runs_total", job="bad", outcome="failure") == 2
    assert value(ours, "jobrunner_consecutive_failures", job="bad") == 2
    assert value(ours, "jobrunner_last_exit_code", job="bad") == 1
    assert value(ours, "jobrunner_last_outcome", job="bad", outcome="failure") == 1
    assert value(ours, "jobrunner_last_exit_code", job="slow") == 124
    assert value(ours, "jobrunner_runs_total", job="slow", outcome="timeout") == 1
    assert "# TYPE jobrunner_runs_total counter" in text
    assert "# HELP jobrunner_consecutive_failures Unsuccessful runs since the last success." in text

    # a later run replaces the file; the next scrape sees the new values
    assert launcher.run("run", "mjobs:bad", env=env).returncode == 1
    ours = parse("\n".join(line for line in exporter.scrape().splitlines() if line.startswith("jobrunner_")))
    assert value(ours, "jobrunner_consecutive_failures", job="bad") == 3
