"""Signals and deadlines as exceptions in the job's main thread, and the last-resort watchdog.

The first SIGTERM/SIGINT/SIGHUP (or the deadline's SIGALRM, or ``abort()`` from another
thread, e.g. a lost Redis lease) raises an ``Interrupt`` in the job; later ones are only
recorded so cleanup is not cut short. During cleanup, SIGALRM bounds each callback.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from jobrunner import errors
from jobrunner.errors import Interrupt, JobTimeout, Terminated

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from jobrunner.run.process import ProcessGroups

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class CleanupTimeout(Interrupt):
    pass


class Signals:
    """Turns SIGALRM/SIGTERM/SIGINT/SIGHUP into exceptions, once; records the rest."""

    def __init__(self, timeout: float | None, cleanup_timeout: float) -> None:
        self.timeout = timeout
        self.cleanup_timeout = cleanup_timeout
        self.mode = "job"
        self.deferred: list[int] = []
        self.previous: dict[int, Any] = {}
        self.pending: Interrupt | None = None
        self.main_ident = threading.main_thread().ident

    def install(self) -> None:
        for signum in (*_SIGNALS, signal.SIGALRM):
            self.previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def arm(self, seconds: float) -> None:
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))

    def disarm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)

    def abort(self, exc: Interrupt) -> None:
        """From any thread: stop the job with ``exc`` (delivered in the main thread).

        Once the job has ended (cleanup running) it is only recorded, not delivered."""
        if self.pending is None:
            self.pending = exc
            if self.mode == "job" and self.main_ident is not None:
                signal.pthread_kill(self.main_ident, signal.SIGALRM)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.mode == "job":
            if signum == signal.SIGALRM and self.pending is not None:
                self.mode = "stopping"
                self.disarm()
                raise self.pending
            self.mode = "stopping"
            self.disarm()
            if signum == signal.SIGALRM:
                raise JobTimeout(self.timeout or 0.0)
            raise Terminated(signum)
        if self.mode == "cleanup" and signum == signal.SIGALRM:
            raise CleanupTimeout()
        if signum != signal.SIGALRM:
            self.deferred.append(signum)


class Watchdog:
    """Last resort: if the main thread is still busy at ``at``, kill children and exit."""

    def __init__(self, log: FilteringBoundLogger, groups: ProcessGroups) -> None:
        self.at: float | None = None
        self.log = log
        self.groups = groups
        self.done = threading.Event()
        self.exit_code = errors.EXIT_TIMEOUT
        self.thread: threading.Thread | None = None

    def set(self, at: float, exit_code: int) -> None:
        self.at, self.exit_code = at, exit_code
        if self.thread is None:
            self.thread = threading.Thread(target=self._watch, name="jobrunner-watchdog", daemon=True)
            self.thread.start()

    def _watch(self) -> None:
        while not self.done.wait(0.2):
            if self.at is not None and time.monotonic() >= self.at:
                try:
                    self.log.critical("job.hard_exit", reason="the run did not stop in time", exit_code=self.exit_code)
                    self.groups.kill_all(0.5)
                finally:
                    os._exit(self.exit_code)
