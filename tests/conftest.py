"""Shared fixtures: run the real CLI in a subprocess with an isolated environment.

Every test that starts processes goes through ``Launcher``, which always terminates, kills and
reaps what it started, even when the test fails (the filelock test-suite habit).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

# The real-systemd fixtures (sandbox, installed_sandbox, require_sandbox): defined here, at the
# top, so that all test packages share one booted sandbox per session.
# The threat model's attacker: a throwaway unprivileged user and www-data (tests/attacker.py).
from .attacker import attacker, www_data  # noqa: E402 - fixtures, registered by name
from .systemd.fixtures import (  # noqa: E402 - fixtures and a hook, registered by name
    installed_sandbox,
    pytest_terminal_summary,
    require_sandbox,
    sandbox,
)

# Variables of the developer's/CI machine that must not leak into runs under test.
_SCRUB = ("JOURNAL_STREAM", "INVOCATION_ID", "JOBRUNNER_", "AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "STATE_DIRECTORY")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env["JOBRUNNER_JOBS_DIR"] = ""  # the machine's /etc/jobrunner/jobs is no test's (tests set their own)
    env.update(extra)
    return env


os.environ["JOBRUNNER_JOBS_DIR"] = ""  # nor an in-process test's (the drift test renders `jobs`)


def jobrunner_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m jobrunner ARGS`` from the checkout, with a clean environment plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "jobrunner", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(PYTHONPATH=str(REPO), **env),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def stop_group(proc: subprocess.Popen, grace: float = 5) -> None:
    """SIGTERM a child's process group, then SIGKILL it if it has not ended within ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


class Run:
    """A finished CLI run: exit code, stdout lines parsed as JSON, stderr text."""

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    @property
    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def event(self, name: str) -> dict:
        found = [e for e in self.events if e["event"] == name]
        assert found, f"no {name!r} event in:\n{self.stdout}\n{self.stderr}"
        return found[-1]

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]


class Launcher:
    """Starts ``python -m jobrunner`` in isolated dirs; reaps everything at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.jobs = tmp_path / "jobmods"
        self.jobs.mkdir()
        self.lock_dir = tmp_path / "locks"
        self.state_dir = tmp_path / "state"
        self.procs: list[subprocess.Popen[str]] = []

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(
            **{
                "JOBRUNNER_LOCK_DIR": str(self.lock_dir),
                "JOBRUNNER_STATE_DIR": str(self.state_dir),
                "JOBRUNNER_PATH": str(self.jobs),
                "JOBRUNNER_LOG_FORMAT": "json",
                "PYTHONPATH": str(REPO),
            }
            | extra
        )

    def write_job(self, module: str, source: str) -> str:
        """Write a job module; return its name for ``jobrunner run``."""
        (self.jobs / f"{module}.py").write_text(textwrap.dedent(source))
        return module

    def start(
        self, *args: str, env: dict[str, str] | None = None, prefix: Sequence[str] = (), **popen
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "jobrunner", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env or self.env(),
            cwd=self.tmp,
            start_new_session=True,
            **popen,
        )
        self.procs.append(proc)
        return proc

    def start_on_host(
        self,
        host: str,
        *args: str,
        env: dict[str, str],
        own_dirs: bool = False,
        timer: tuple[str, float] | None = None,
    ) -> subprocess.Popen[str]:
        """``python -m jobrunner ARGS`` as host HOST runs it: in its own UTS namespace (hostname
        HOST, which the runner records as the run's host); ``own_dirs``: with its own state and
        lock directories under ``tmp/HOST``; ``timer=(unit, at)``: as that timer's service
        started at ``at`` (the variables systemd gives it), else as a person would."""
        env = dict(env)
        if own_dirs:
            env["JOBRUNNER_STATE_DIR"] = str(self.tmp / host / "state")
            env["JOBRUNNER_LOCK_DIR"] = str(self.tmp / host / "locks")
        if timer is not None:
            env.update(TRIGGER_UNIT=timer[0], TRIGGER_TIMER_REALTIME_USEC=str(int(timer[1] * 1e6)))
        prefix = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host]
        return self.start(*args, env=env, prefix=prefix)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Run:
        proc = self.start(*args, env=env)
        out, err = proc.communicate(timeout=timeout)
        return Run(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))

    def finish(self, proc: subprocess.Popen[str], timeout: float = 60) -> Run:
        out, err = proc.communicate(timeout=timeout)
        return Run(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))

    def state(self, job: str) -> dict:
        return json.loads((self.state_dir / job / "state.json").read_text())

    def reap(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                stop_group(proc)
            for pipe in (proc.stdout, proc.stderr):
                if pipe:
                    pipe.close()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    launch = Launcher(tmp_path)
    try:
        yield launch
    finally:
        launch.reap()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout``; return its last truth value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def ledger_entries(path: Path) -> list[tuple[str, str, int]]:
    """A critical-section ledger (lines ``in|out WHO MONOTONIC_NS``, appended with O_APPEND by
    the runs under test) as ``(kind, who, ns)`` in the order written; empty if none yet."""
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(kind, who, int(ns)) for kind, who, ns in rows]


def overlaps(entries: list[tuple[str, str, int]]) -> int:
    """How many runs more than one were inside the critical section at the worst moment."""
    inside, worst = 0, 0
    for kind, _, _ in entries:
        inside += 1 if kind == "in" else -1
        worst = max(worst, inside)
    return max(0, worst - 1)


def pid_alive(pid: int) -> bool:
    """A live, non-zombie process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


@pytest.fixture(autouse=True)
def _reset_logging_config() -> Iterator[None]:
    """In-process tests must not leak structlog configuration or redactors into each other."""
    yield
    import structlog

    from jobrunner.redact import reset_default_redactor

    structlog.reset_defaults()
    reset_default_redactor()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (JOBRUNNER_REQUIRE_ALL=1, set by .ci/run, which installs every component) a skip
    means a missing component or sandbox: that is a failure, never a silent pass."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("JOBRUNNER_REQUIRE_ALL", "") not in ("", "0"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where everything must run: {reason}"


def _require_all() -> bool:
    return os.environ.get("JOBRUNNER_REQUIRE_ALL", "") not in ("", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same rule at collection time: a module-level ``pytest.importorskip`` or
    ``pytest.skip(allow_module_level=True)`` makes all the module's tests vanish before the hook
    above sees any of them (one "skipped" line, exit 0). In CI that is a collection error, which
    fails the run."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _require_all():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"{report.nodeid or collector.path}: skipped at collection in CI (JOBRUNNER_REQUIRE_ALL), "
            f"where everything must run: {reason}"
        )


@pytest.fixture(scope="session")
def healthchecks() -> Iterator[Any]:
    """A real healthchecks server (v3.13, vendored in ../shared) for the session: tests/healthchecks_server.py."""
    from .healthchecks_server import HealthchecksUnavailable, running

    try:
        context = running()
        server = context.__enter__()
    except HealthchecksUnavailable as exc:
        pytest.skip(f"no healthchecks server: {exc}")
    try:
        yield server
    finally:
        context.__exit__(None, None, None)


@pytest.fixture
def hc_project(healthchecks: Any) -> Any:
    """A project of its own on the session's healthchecks server (its own checks, API key, ping key)."""
    return healthchecks.project()
