"""Real Prometheus components for the metrics tests, on 127.0.0.1 only.

``prometheus_bin`` (session): the directory holding ``prometheus`` and ``promtool`` from
Debian's ``prometheus`` package, fetched with ``apt-get download`` and unpacked with
``dpkg-deb -x`` (``tests/debian_packages.py``, cached in ``/var/cache/jobrunner-tests/debs``):
the packaged service is never installed nor started.

``exporter``: Debian's ``prometheus-node-exporter`` (installed by ``.ci/run``) with only the
textfile collector, reading a fresh directory of the test's.

``start_prometheus(bin, tmp, targets, rules)``: a Prometheus server with its own config and
data directory, scraping ``targets`` as the scrape job ``node`` every second and evaluating
``rules`` every second; stopped by the caller's ``with``.

Every process is started in its own session and killed as a group at teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, stop_group, wait_for
from .debian_packages import DebianPackages, debian

__all__ = [
    "RULES",
    "RULES_TEST",
    "Exporter",
    "Prometheus",
    "debian",
    "exporter",
    "free_port",
    "prometheus_bin",
    "promtool",
    "start_prometheus",
]

EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
RULES = REPO / "monitoring" / "prometheus" / "jobrunner.rules.yml"
RULES_TEST = REPO / "monitoring" / "prometheus" / "jobrunner.rules.test.yml"
# What the servers see: none of the machine's CA-bundle or proxy variables.
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


@pytest.fixture(scope="session")
def prometheus_bin(debian: DebianPackages) -> Path:
    """``usr/bin`` of Debian's prometheus package, unpacked (skips, a failure in CI, without apt)."""
    path = debian.root("prometheus") / "usr" / "bin"
    for name in ("prometheus", "promtool"):
        assert os.access(path / name, os.X_OK), f"the prometheus package has no usr/bin/{name}"
    return path


def promtool(prometheus_bin: Path, *args: str, stdin: str | None = None, cwd: Path | None = None) -> Any:
    """``promtool ARGS`` (a CompletedProcess with text output)."""
    return subprocess.run(
        [str(prometheus_bin / "promtool"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(_ENV, HOME=str(cwd or "/tmp")),
        cwd=cwd,
        check=False,
    )


class Exporter:
    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.target = f"127.0.0.1:{port}"
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.directory = directory

    def scrape(self) -> str:
        return _get(self.url).decode()


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[Exporter]:
    if EXPORTER is None:
        if os.environ.get("JOBRUNNER_REQUIRE_COMPONENTS", "") not in ("", "0"):
            pytest.fail("prometheus-node-exporter is not installed (apt-get install prometheus-node-exporter)")
        pytest.skip("prometheus-node-exporter is not installed")
    directory = tmp_path / "textfiles"
    directory.mkdir()
    port = free_port()
    log = open(tmp_path / "node-exporter.log", "wb")
    proc = subprocess.Popen(
        [
            EXPORTER,
            f"--web.listen-address=127.0.0.1:{port}",
            f"--collector.textfile.directory={directory}",
            "--collector.disable-defaults",
            "--collector.textfile",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=_ENV,
        start_new_session=True,
    )
    exp = Exporter(port, directory)
    try:

        def up() -> bool:
            try:
                exp.scrape()
                return True
            except OSError:
                return proc.poll() is not None  # died: stop waiting, fail below

        assert wait_for(up, timeout=20, interval=0.1) and proc.poll() is None, (
            tmp_path / "node-exporter.log"
        ).read_text()
        yield exp
    finally:
        stop_group(proc)
        log.close()


class Prometheus:
    """A running server: its HTTP API, and its log for failure messages."""

    def __init__(self, port: int, log: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log = log

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/PATH?PARAMS``'s ``data`` (asserting ``status: success``)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        body = json.loads(_get(f"{self.base}/api/v1/{path}{query}"))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: ``[{"metric": {labels}, "value": [time, "value"]}]``."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """``/api/v1/alerts``: every pending and firing alert, as Prometheus renders it."""
        result: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return result


@contextlib.contextmanager
def start_prometheus(bin_dir: Path, tmp: Path, targets: Sequence[str], rules: Sequence[Path]) -> Iterator[Prometheus]:
    """A Prometheus server on 127.0.0.1 scraping ``targets`` (scrape job ``node``, a default
    scrape: no ``honor_labels``) and evaluating ``rules``, both every second."""
    home = tmp / "prometheus"
    home.mkdir()
    config = home / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(r) for r in rules],
                "scrape_configs": [{"job_name": "node", "static_configs": [{"targets": list(targets)}]}],
            }
        )
    )
    check = promtool(bin_dir, "check", "config", str(config), cwd=home)
    assert check.returncode == 0, check.stdout + check.stderr
    port = free_port()
    log_path = home / "prometheus.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            str(bin_dir / "prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(_ENV, HOME=str(home)),
        cwd=home,
        start_new_session=True,
    )
    server = Prometheus(port, log_path)
    try:

        def ready() -> bool:
            try:
                return _get(f"{server.base}/-/ready", timeout=2) is not None
            except OSError:
                return proc.poll() is not None  # died: stop waiting, fail below

        assert wait_for(ready, timeout=60, interval=0.1) and proc.poll() is None, log_path.read_text()
        yield server
    finally:
        stop_group(proc, grace=10)
        log.close()
