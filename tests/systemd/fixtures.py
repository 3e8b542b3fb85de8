"""Fixtures for tests that need a real systemd: see README.md in this directory.

Registered once, in tests/conftest.py, so that every package (tests/systemd, tests/wp,
tests/services) shares the one session sandbox: a fixture imported into a test module or a
sub-package's conftest would be a second fixture, booting and installing a second sandbox.

``sandbox``            session-scoped, booted once: a throwaway systemd (nspawn over an overlay of /).
``installed_sandbox``  the same sandbox, with this checkout installed at /opt/jobrunner (once).
``require_sandbox``    only the skip/fail check, for tests that boot a Sandbox of their own.

Tests using them carry ``@pytest.mark.systemd``.  They are skipped (with the reason shown by
``-ra``) only when the machine cannot run the sandbox at all (not root, no systemd-nspawn, no
overlayfs); set JOBRUNNER_REQUIRE_SANDBOX=1 (CI does) to turn that skip into a failure.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from .sandbox import Sandbox, cannot_run_reason, mounts_under

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
_TIMINGS: dict[str, float] = {}
# A signal disposition, as signal.signal() takes and returns it (typeshed's signal._HANDLER).
_Handler = Callable[[int, FrameType | None], Any] | int | None


def _require() -> None:
    reason = cannot_run_reason()
    if reason is None:
        return
    if os.environ.get("JOBRUNNER_REQUIRE_SANDBOX", "") not in ("", "0"):
        pytest.fail(f"JOBRUNNER_REQUIRE_SANDBOX is set but: {reason}", pytrace=False)
    print(f"\nskipping systemd sandbox tests: {reason}", file=sys.stderr)
    pytest.skip(reason)


def _install_signal_handlers(sb: Sandbox) -> list[tuple[signal.Signals, _Handler]]:
    """Tear the sandbox down on SIGTERM/SIGHUP too (atexit does not run on signals)."""
    installed: list[tuple[signal.Signals, _Handler]] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        try:
            sb.shutdown()
        finally:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            installed.append((sig, signal.signal(sig, handler)))
    return installed


@pytest.fixture(scope="session")
def require_sandbox() -> None:
    """For tests that boot their own Sandbox: skip/fail like ``sandbox`` does."""
    _require()


@pytest.fixture(scope="session")
def sandbox():
    _require()
    sb = Sandbox()
    handlers = _install_signal_handlers(sb)
    try:
        sb.boot(timeout=float(os.environ.get("JOBRUNNER_SANDBOX_BOOT_TIMEOUT", "90")))
        _TIMINGS["boot"] = sb.boot_seconds or 0.0
        yield sb
    finally:
        try:
            sb.shutdown()
        finally:
            for sig, old in handlers:
                signal.signal(sig, old)
        if sb.base:  # only ours: other pytest sessions may have sandboxes up right now
            left = mounts_under(sb.base)
            assert not left, f"sandbox teardown left mounts behind: {left}"
        assert sb.base is None or not os.path.exists(sb.base), f"{sb.base} was not removed"


@pytest.fixture(scope="session")
def installed_sandbox(sandbox: Sandbox) -> Sandbox:
    if sandbox.installed is None:
        _TIMINGS["install_project"] = sandbox.install_project(REPO_ROOT).seconds
    return sandbox


def pytest_terminal_summary(terminalreporter):
    if _TIMINGS:
        terminalreporter.write_line("systemd sandbox: " + ", ".join(f"{k} {v:.1f}s" for k, v in _TIMINGS.items()))


def install_package_services(sb: Sandbox, src: Path, package: str, source: str, pkg_dir: str, notify_port: int) -> None:
    """Render the services of a one-module job package (``source``) on the host, install them
    into the sandbox's /etc/systemd/system with the package under ``pkg_dir``, and point
    ``/etc/jobrunner/jobrunner.env`` at it with notifications to the host's HTTP receiver on
    ``notify_port`` (the alert tests: the units are started by hand, so no timer is copied)."""
    import subprocess

    (src / package).mkdir()
    (src / package / "__init__.py").write_text(source)
    out = src / "units"
    render = subprocess.run(
        [sys.executable, "-m", "jobrunner", "units", "render", "--package", package, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": f"{src}:{REPO_ROOT}"},
    )
    assert render.returncode == 0, render.stderr
    sb.write_file(f"{pkg_dir}/{package}/__init__.py", source)
    for path in out.rglob("*.service"):
        sb.write_file(f"/etc/systemd/system/{path.name}", path.read_text())
    sb.write_file(
        "/etc/jobrunner/jobrunner.env",
        f"JOBRUNNER_PATH={pkg_dir}\nJOBRUNNER_NOTIFY_URLS=json://127.0.0.1:{notify_port}/hook\n"
        "JOBRUNNER_NOTIFY_TIMEOUT=5s\n",
    )
