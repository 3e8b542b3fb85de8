"""One run as one object: what the lifecycle stages (``jobrunner/run/lifecycle.py``) and the hooks
(``jobrunner/run/hooks.py``) take, instead of a dozen loose arguments.

``RunOptions`` is how to run (the command line), ``RunResult`` how it ended, ``Run`` everything
in between: the job, its context and logger, the state store and the state read from it, the
lock (the context's, read through: it is kept once, in ``ctx.lock``), the signals, the clock, the result, and what the hooks contribute to the next state
write (``contribute``), which the runner folds into its one write at the start and its one
write at the end of the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import field
from typing import TYPE_CHECKING, Any

from jobrunner import errors
from jobrunner._datatype import datatype
from jobrunner.store.state import JobState

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from jobrunner.declaration import Job
    from jobrunner.locks.file import SlotLock
    from jobrunner.rules.alerting import Anomaly
    from jobrunner.run.context import Context
    from jobrunner.run.hooks import Hook
    from jobrunner.run.interrupts import Signals
    from jobrunner.run.logs import LineSink
    from jobrunner.store.state import StateStore
    from jobrunner.types import HeldLock

__all__ = ["Run", "RunOptions", "RunResult"]


@datatype
class RunOptions:
    """How to run: what the command line and environment say."""

    dry_run: bool = False
    env_files: Sequence[str] = ()
    log_format: str | None = None
    notify: bool = True
    passthrough_exit: bool = False  # ``jobrunner exec``: a failed command's status is ours


@datatype
class RunResult:
    outcome: str
    exit_code: int
    attempts: int = 0
    duration_s: float = 0.0
    error: BaseException | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@datatype
class Run:
    """A run in progress. ``state`` is the job's state as the run sees it: read at the start,
    and at the end the state as it will be written (this run folded in), which the ``on_finish``
    hooks read; ``error`` is the redacted error text the state, notifications and
    ``job.finished`` share."""

    job: Job
    options: RunOptions
    ctx: Context
    log: FilteringBoundLogger
    store: StateStore
    sigs: Signals
    sink: LineSink  # its ``tail`` is the last log lines, for notifications and pings
    started_wall: float
    started_mono: float
    paused_s: float = 0.0  # not counted in the timeout: the lock wait, the state lock wait, the start hooks
    state: JobState = field(default_factory=JobState)
    slot: SlotLock | None = None  # the held slot of ``concurrency=``
    result: RunResult = field(default_factory=lambda: RunResult("success", errors.EXIT_OK))
    error: str | None = None
    hooks: list[Hook] = field(default_factory=list)
    skipping: str | None = None  # set by the skip check when skipping has gone on too long
    anomaly: Anomaly | None = None  # this successful run's duration is out of the ordinary
    changes: list[Callable[[JobState], None]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.ctx.run_id

    @property
    def lock(self) -> HeldLock | None:
        """The job's lock, held: the context's (``ctx.lock``, what the job sees and where the
        runner puts it), read through, so the lock is kept in one place."""
        return self.ctx.lock

    @property
    def tail(self) -> list[dict[str, Any]]:
        """The last log events of the run (what a notification or a ping body shows)."""
        return list(self.sink.tail)

    def contribute(self, change: Callable[[JobState], None]) -> None:
        """A change for the next state write (applied to the state re-read under its lock)."""
        self.changes.append(change)

    def take_changes(self) -> list[Callable[[JobState], None]]:
        changes, self.changes = self.changes, []
        return changes
