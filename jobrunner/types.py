"""The contract between jobrunner and a job, as types a job author's editor and mypy can use.

>>> from jobrunner import job
>>> from jobrunner.types import JobContext
>>> @job(schedule="02:15", lock=True, timeout="2h")
... def nightly(ctx: JobContext) -> None:
...     ctx.run(["/usr/local/bin/backup.sh"])

- ``JobContext``: what a job function receives and may use (``ctx.log``, ``ctx.env``,
  ``ctx.run``, ``ctx.sh``, ``ctx.cleanup``, ``ctx.secret``, ``ctx.lock``, ``ctx.hold_lock``,
  ``ctx.dry_run``, ``ctx.run_id``, ``ctx.attempt``, ``ctx.remaining()``, ``ctx.options``,
  ``ctx.state_dir``, ``ctx.progress``). The runtime's ``jobrunner.run.context.Context`` satisfies it; a test can
  hand a job any object that does.
- ``HeldLock``: a lock a run holds, ``ctx.lock`` (the job's declared lock) or what
  ``ctx.hold_lock`` returns: the file lock and the leases (Redis, etcd) satisfy it.
- ``ProgressStep``: what ``ctx.progress(...)`` returns (``advance``, ``update``, ``follow``,
  ``follow_io``, ``follow_commands``, ``follow_file``).
- ``JobFunction``: what ``@job`` decorates; ``Completed``: what ``ctx.run`` returns.

Only ``typing`` and ``jobrunner._datatype`` (for ``Completed``) are imported here, so a job module pays
nothing for its annotations.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, ParamSpec, Protocol, TypeAlias, TypeVar, runtime_checkable

from jobrunner._datatype import datatype

if TYPE_CHECKING:  # pragma: no cover
    from types import TracebackType

    from structlog.typing import FilteringBoundLogger

__all__ = ["Completed", "HeldLock", "JobContext", "JobFunction", "ProgressStep", "Span"]


@datatype(frozen=True)
class Completed:
    """What ``ctx.run`` returns: the exit status and, with ``capture=True``, stdout as text."""

    returncode: int
    stdout: str = ""
    duration_s: float = 0.0


P = ParamSpec("P")
R = TypeVar("R")

Span: TypeAlias = str | float
"""A time span: seconds as a number, or systemd's syntax (``"90s"``, ``"5m"``, ``"2h 30min"``)."""


@runtime_checkable
class HeldLock(Protocol):
    """A lock held for the run: ``jobrunner.locks.file.FileLock`` (flock) or a lease
    (``jobrunner.locks.abc.Lease``: in Redis or etcd)."""

    @property
    def name(self) -> str:
        """The lock file's path, or the lease's key."""
        ...

    @property
    def held(self) -> bool:
        """Still held (a lease can be lost mid-run; the runner then stops the job)."""
        ...

    @property
    def fencing_token(self) -> int | None:
        """A number that grows with every grant of a lease (``None`` for a file lock):
        pass it to shared storage so a paused ex-holder's late writes can be refused."""
        ...

    def release(self) -> None:
        """Let go of the lock; safe to call twice. The runner releases it at the end anyway."""
        ...


@runtime_checkable
class ProgressStep(Protocol):
    """A step of a long run, what ``ctx.progress(...)`` returns; use it with ``with``."""

    def advance(self, n: float = 1) -> None:
        """Count ``n`` more units done (cheap: call it per block or per item)."""
        ...

    def update(self, done: float, total: float | None = None) -> None:
        """Set what is done (and the total, once known)."""
        ...

    def follow_io(self, pid: int, field: str = "rchar") -> None:
        """Count what process ``pid`` reads (``rchar``) or writes (``wchar``), from ``/proc/<pid>/io``."""
        ...

    def follow_commands(self, field: str = "rchar", command: str | None = None) -> None:
        """Count what the commands ``ctx.run``/``ctx.sh`` start read (or write: ``wchar``), from
        ``/proc``: each command, or with ``command="tar"`` every ``tar`` they started."""
        ...

    def follow(self, read: Callable[[], float | tuple[float, float | None] | None]) -> None:
        """Have ``done`` (or ``(done, total)``) set from ``read()`` (``None``: no news) twice a
        second, off the job's thread."""
        ...

    def follow_file(self, path: str | os.PathLike[str]) -> None:
        """Count the size of a file being written."""
        ...

    def __enter__(self) -> ProgressStep: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


@runtime_checkable
class JobContext(Protocol):
    """What a job function receives (``ctx``), and all a job may rely on."""

    @property
    def log(self) -> FilteringBoundLogger:
        """A structlog logger: ``ctx.log.info("backup.written", path=p, bytes=n)``; each call
        is one JSON line, with secrets masked."""
        ...

    @property
    def env(self) -> Mapping[str, str]:
        """The environment after env files (``--env-file``, the job's ``env_files``); read
        settings from it with ``jobrunner.settings``."""
        ...

    @property
    def dry_run(self) -> bool:
        """``--dry-run``: ``ctx.run``/``ctx.sh`` only log their commands; change nothing."""
        ...

    @property
    def run_id(self) -> str:
        """This run's id (in every log line, state and notification)."""
        ...

    @property
    def attempt(self) -> int:
        """Which attempt is running, from 1 (``retry=``)."""
        ...

    @property
    def lock(self) -> HeldLock | None:
        """The job's declared lock, held (``None`` without ``lock=`` and in a dry run)."""
        ...

    @property
    def options(self) -> dict[str, Any]:
        """The free-form ``options=`` of the declaration."""
        ...

    @property
    def instance(self) -> str | None:
        """The instance of this run (``--instance``, the template unit's ``%i``), ``None`` for a
        plain job (``@job(instances=...)``)."""
        ...

    @property
    def state_dir(self) -> str:
        """The job's state directory (its ``state.json``); its parent holds other jobs'."""
        ...

    def remaining(self) -> float | None:
        """Seconds left before the job's deadline (``None`` without a timeout)."""
        ...

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        capture: bool = False,
        stdout: IO[Any] | int | str | os.PathLike[str] | None = None,
        stdin: IO[Any] | int | None = None,
        inherit_env: bool = True,
    ) -> Completed:
        """Run a command in its own process group, its output logged line by line (see
        ``Context.run``); ``check`` raises ``CommandFailed`` on a non-zero exit;
        ``inherit_env=False``: the command's environment is ``env`` alone."""
        ...

    def sh(
        self,
        script: str,
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        capture: bool = False,
        stdout: IO[Any] | int | str | os.PathLike[str] | None = None,
        stdin: IO[Any] | int | None = None,
        inherit_env: bool = True,
    ) -> Completed:
        """Run a shell line under ``bash -euo pipefail -c`` (a failing stage of a pipe fails it)."""
        ...

    def cleanup(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Callable[P, R]:
        """Call ``fn(*args, **kwargs)`` at the end of the run whatever happens (success,
        failure, timeout, SIGTERM), last registered first. Usable as a decorator."""
        ...

    def secret(self, *values: str) -> None:
        """Mask these values (``***``) in every log line, error, notification and state record."""
        ...

    def hold_lock(self, name: str, *, shared: bool = False, wait: Span | None = None) -> HeldLock:
        """Take the file lock ``name`` (as ``Lock(name=...)`` would) for the rest of the run: it
        is released with the cleanups. Waits up to ``wait``, then raises ``LockBusy``."""
        ...

    def progress(self, name: str, *, total: float | None = None, unit: str = "") -> ProgressStep:
        """A step of a long run: ``with ctx.progress("files", total=n, unit="B") as p:
        p.advance(k)``, shown live on a terminal, as ``systemctl status``'s status text under
        systemd, and as a ``progress`` log event every 30 s and at the step's end."""
        ...


JobFunction: TypeAlias = Callable[[JobContext], object]
"""A job: a function of its context (``def backup(ctx: JobContext) -> None``)."""
