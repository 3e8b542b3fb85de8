"""The context handed to a job: its logger, environment, commands, cleanups and secrets."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, ParamSpec, TypeVar

from jobrunner.run.process import Completed, ProcessGroups, run_command
from jobrunner.timespan import parse_timespan

if TYPE_CHECKING:  # pragma: no cover - types only: no import of the declaration at run time
    from structlog.typing import FilteringBoundLogger

    from jobrunner.declaration import Job
    from jobrunner.redact import Redactor
    from jobrunner.run.progress import Reporter, Step
    from jobrunner.types import HeldLock, JobContext, Span

__all__ = ["Context"]

P = ParamSpec("P")
R = TypeVar("R")


class Context:
    """What a job function receives: the runtime's implementation of ``jobrunner.types.JobContext``
    (annotate jobs with that protocol, not with this class).

    - ``ctx.log``: a structlog logger; ``ctx.log.info("backup.written", path=p, bytes=n)``.
    - ``ctx.env``: the environment after env files (``--env-file``, the job's ``env_files``).
    - ``ctx.run([...])``: run a command in its own process group, output logged line by line.
    - ``ctx.sh("a | b")``: a shell line under ``bash -euo pipefail``.
    - ``ctx.cleanup(fn)``: register a callback run last-in-first-out at the end, whatever the
      outcome (success, failure, timeout, SIGTERM, SIGINT).
    - ``ctx.secret(value)``: never log this value (it is masked as ``***`` everywhere).
    - ``ctx.lock``: the held lock (``ctx.lock.fencing_token`` with a lease, Redis or etcd: pass
      it to shared storage so a paused ex-holder's late writes can be refused; commands find it
      in ``$JOBRUNNER_FENCING_TOKEN``).
    - ``ctx.hold_lock(name, shared=, wait=)``: take another file lock for the rest of the run.
    - ``ctx.instance``: the instance of the run (``wp_backup@shop.example``: ``"shop.example"``),
      ``None`` for a plain job.
    - ``ctx.dry_run``, ``ctx.run_id``, ``ctx.attempt``, ``ctx.options``, ``ctx.state_dir``,
      ``ctx.remaining()`` (seconds left before the deadline, or ``None``); ``ctx.job`` (the
      declaration, for the runtime).
    - ``ctx.progress(name, total=, unit=)``: a step of a long run (``with ... as p: p.advance(n)``),
      shown live on a terminal, in ``systemctl status`` and, every 30 s, in the log.
    """

    def __init__(
        self,
        *,
        job: Job,
        log: FilteringBoundLogger,
        env: dict[str, str],
        run_id: str,
        dry_run: bool,
        redactor: Redactor,
        state_dir: str,
        deadline: float | None = None,
    ) -> None:
        self.job = job
        self.log = log
        self.env = env
        self.run_id = run_id
        self.dry_run = dry_run
        self.state_dir = state_dir
        self.attempt = 1
        self.deadline = deadline
        self._redactor = redactor
        self._cleanups: list[tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]]] = []
        self.groups = ProcessGroups()
        self.lock: HeldLock | None = None  # set by the runner, the one place the held lock is kept (Run.lock reads it)
        self._progress: Reporter | None = None

    @property
    def instance(self) -> str | None:
        """The instance this run is for (``--instance``, the unit's ``%i``); ``None`` for a plain job."""
        return self.job.instance

    @property
    def options(self) -> dict[str, Any]:
        """The job's free-form ``options=`` from its declaration."""
        return self.job.options

    def remaining(self) -> float | None:
        """Seconds left before the job's deadline (``None`` without a timeout)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def cleanup(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Callable[P, R]:
        """Run ``fn(*args, **kwargs)`` at the end of the run, whatever happens. Usable as a decorator."""
        self._cleanups.append((fn, args, kwargs))
        return fn

    def secret(self, *values: str) -> None:
        """Mask these values in every log line, error, notification and state record."""
        self._redactor.add(*values)

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
        """Run a command; its stdout/stderr lines become ``proc.output`` log events.

        ``env`` adds to ``ctx.env`` (``inherit_env=False``: the command gets ``env`` alone); ``check`` raises ``CommandFailed`` on a non-zero exit;
        ``capture=True`` returns stdout as ``.stdout`` instead of logging it; ``stdout=PATH``
        (or a file) sends stdout there (e.g. a dump), stderr is still logged. The deadline,
        ``systemctl stop`` and Ctrl-C kill the command's whole process group.
        In a dry run the command is logged (``proc.dry_run``) and not run.
        """
        if self.dry_run:
            self.log.info("proc.dry_run", argv=[os.fspath(a) for a in argv], cwd=os.fspath(cwd) if cwd else None)
            return Completed(0)
        merged = dict(self.env) if inherit_env else {}
        token = getattr(self.lock, "fencing_token", None)
        if token is not None:  # the lease's fencing token reaches the work (jobrunner.fencing)
            merged["JOBRUNNER_FENCING_TOKEN"] = str(token)
        if env:
            merged.update(env)
        return run_command(
            argv,
            log=self.log,
            groups=self.groups,
            env=merged,
            cwd=cwd,
            check=check,
            capture=capture,
            stdout=stdout,
            stdin=stdin,
            kill_grace=self.job.kill_grace,
        )

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
        """Run a shell line with ``bash -euo pipefail -c``: a failing stage of a pipe fails it."""
        return self.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd,
            env=env,
            check=check,
            capture=capture,
            stdout=stdout,
            stdin=stdin,
            inherit_env=inherit_env,
        )

    def hold_lock(self, name: str, *, shared: bool = False, wait: Span | None = None) -> HeldLock:
        """Take the file lock ``name`` (where ``Lock(name=...)`` would: a name in the lock
        directory or an absolute path) for the rest of the run; it is released with the
        cleanups. Waits up to ``wait`` (a span; none: not at all), then raises ``LockBusy``.

        For a lock beside the job's own, e.g. a backup area that writers hold shared and a
        pruner exclusive. In a dry run no lock is taken either: the returned lock is not held."""
        from jobrunner.locks.file import FileLock, lock_path

        seconds = None if wait is None else parse_timespan(wait)
        path = lock_path(name)
        lock = FileLock(path, wait=seconds, shared=shared)
        if self.dry_run:
            return lock
        self.log.info("lock.waiting" if seconds else "lock.acquiring", path=path, shared=shared)
        lock.acquire()
        self.cleanup(lock.release)
        self.log.info("lock.acquired", path=path, shared=shared)
        return lock

    def progress(self, name: str, *, total: float | None = None, unit: str = "") -> Step:
        """A step of a long run, as a context manager: ``with ctx.progress("files", total=n,
        unit="B") as p: p.advance(k)``. Steps nest or follow one another; ``total=None`` shows
        what is done and the rate. See ``jobrunner.run.progress``."""
        if self._progress is None:
            from jobrunner.run.progress import reporter_for

            self._progress = reporter_for(self.log, self.groups)
        return self._progress.step(name, total, unit)

    def _pop_cleanups(self) -> list[tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]]]:
        cleanups, self._cleanups = self._cleanups[::-1], []
        return cleanups


if TYPE_CHECKING:  # pragma: no cover - mypy proves the runtime's context is what jobs are promised

    def _is_a_job_context(ctx: Context) -> JobContext:
        return ctx
