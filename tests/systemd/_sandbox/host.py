"""Host-side processes: run a command with a timeout that kills its whole process group, and
check or kill pids safely against pid reuse (by their start time)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .common import SandboxCommandError


def _run_host(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
    )
    return _finish(proc, argv, check=check, timeout=timeout)


def _finish(
    proc: subprocess.Popen, argv: Sequence[str], *, check: bool, timeout: float, input: str | bytes | None = None
) -> subprocess.CompletedProcess:
    """Wait for PROC (its whole process group is killed on timeout); raise on failure if CHECK."""
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        _killpg(proc.pid)
        out, err = proc.communicate()
        raise SandboxCommandError(-9, list(argv), out, (err or "") + f"\n[timed out after {timeout}s]") from expired
    cp = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise SandboxCommandError(proc.returncode, list(argv), out, err)
    return cp


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _pid_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), to guard against pid reuse."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(data.rsplit(")", 1)[1].split()[19])


def _alive(pid: int | None, start_time: int | None = None) -> bool:
    if not pid:
        return False
    st = _pid_start_time(pid)
    if st is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state in ("Z", "X"):
        return False
    return start_time is None or st == start_time


def _wait_dead(pid: int, start_time: int | None, timeout: float, popen: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None:
            if popen.poll() is not None:
                return True
        elif not _alive(pid, start_time):
            return True
        time.sleep(0.1)
    if popen is not None:
        return popen.poll() is not None
    return not _alive(pid, start_time)


def _kill(pid: int | None, start_time: int | None, sig: int = signal.SIGKILL) -> None:
    if pid and _alive(pid, start_time):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _makedirs(path: str, mode: int = 0o755) -> None:
    """os.makedirs, but new directories get MODE whatever the caller's umask (CI may run 077)."""
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        os.mkdir(d)
        os.chmod(d, mode)
