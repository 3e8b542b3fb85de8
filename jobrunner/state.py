"""Per-job state: what ran, when, how it ended. One small JSON file per job.

``$JOBRUNNER_STATE_DIR/<job>/state.json`` (default ``/var/lib/jobrunner`` as root, where the
rendered units' ``StateDirectory=jobrunner/<job>`` makes it writable under
``ProtectSystem=strict``; else ``$XDG_STATE_HOME/jobrunner`` or ``~/.local/state/jobrunner``).

Writes are atomic (temp file, fsync, rename, fsync of the directory) and serialised by a
flock on ``.state.lock`` beside it, so a skipped run recording itself never clobbers the
holder's record. A reader never sees half a file.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from typing import Any, Callable

from .errors import ConfigError

__all__ = ["StateStore", "atomic_write", "default_state_dir", "record_finish", "record_start"]

KEEP_DURATIONS = 10


def default_state_dir() -> str:
    configured = os.environ.get("JOBRUNNER_STATE_DIR")
    if configured:
        return configured
    if os.geteuid() == 0:
        return "/var/lib/jobrunner"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "jobrunner")


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass


class StateStore:
    """The state file of one job."""

    def __init__(self, job: str, root: str | None = None) -> None:
        self.job = job
        self.dir = os.path.join(root or default_state_dir(), job)
        self.path = os.path.join(self.dir, "state.json")

    def read(self) -> dict[str, Any]:
        """The recorded state; ``{}`` when there is none; ``ConfigError`` when unreadable."""
        try:
            with open(self.path, "rb") as handle:
                data = json.loads(handle.read() or b"{}")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"state file {self.path} is unreadable: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"state file {self.path} is unreadable: not a JSON object")
        return data

    def update(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read, ``change`` in place, write back atomically, all under the state lock."""
        os.makedirs(self.dir, exist_ok=True)
        lock_fd = os.open(os.path.join(self.dir, ".state.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                state = self.read()
            except ConfigError:
                state = {"recovered_from_unreadable_state": True}
            change(state)
            state["job"] = self.job
            payload = json.dumps(state, indent=1, sort_keys=True, default=str).encode() + b"\n"
            atomic_write(self.path, payload)
            return state
        finally:
            os.close(lock_fd)


def record_start(state: dict[str, Any], *, run_id: str, pid: int, now: float | None = None) -> None:
    state["running"] = {"run_id": run_id, "pid": pid, "since": now or time.time()}
    state["last_start"] = state["running"]["since"]


def record_finish(
    state: dict[str, Any],
    *,
    run_id: str,
    outcome: str,
    exit_code: int,
    started: float,
    duration_s: float,
    attempts: int,
    error: str | None = None,
    now: float | None = None,
) -> None:
    """Fold one finished run into the state (skipped runs only count, they are not results)."""
    now = now or time.time()
    runs = state.setdefault("runs", {})
    runs[outcome] = int(runs.get(outcome, 0)) + 1
    if outcome == "skipped":
        state["last_skipped"] = now
        return
    if state.get("running", {}).get("run_id") == run_id:
        state.pop("running", None)
    state.update(
        last_run_id=run_id,
        last_start=started,
        last_finish=now,
        last_outcome=outcome,
        last_exit_code=exit_code,
        last_duration_s=round(duration_s, 3),
        last_attempts=attempts,
    )
    durations = list(state.get("durations_s", []))[-(KEEP_DURATIONS - 1) :]
    state["durations_s"] = durations + [round(duration_s, 3)]
    if outcome == "success":
        state["last_success"] = now
        state["consecutive_failures"] = 0
        state.pop("last_error", None)
    else:
        state["last_failure"] = now
        state["consecutive_failures"] = int(state.get("consecutive_failures", 0)) + 1
        if error:
            state["last_error"] = error
