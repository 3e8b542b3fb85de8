"""The run lifecycle, in one place (docs/design.md "The run lifecycle").

1. env files loaded (errors: exit 78, before anything is locked or written);
2. logging configured; 3. lock taken (busy: ``lock.busy``, exit 75);
4. deadline armed; the function called, with retries inside the deadline;
5. always: cleanups LIFO, leftover process groups killed, lock released, state written,
   notification sent when the outcome calls for it, ``job.finished`` logged;
6. the exit code of the contract returned.

Signals: the first SIGTERM/SIGINT/SIGHUP (or the deadline's SIGALRM) raises an ``Interrupt``
in the job; later ones are only recorded, so cleanup is not cut short. Each cleanup has its
own time budget, and a watchdog thread ends the process if even that hangs: no run outlives
``timeout + cleanup_timeout + kill_grace`` by more than a few seconds.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import structlog

from . import errors
from ._logging import capture_output, configure_logging
from .context import Context
from .declaration import Job
from .envfile import load_env_file
from ._interrupts import CleanupTimeout, Signals, Watchdog
from .errors import CommandFailed, ConfigError, Interrupt, JobTimeout, LockBusy, LockLost
from .redact import default_redactor
from .state import LOCK_WAIT_S as STATE_LOCK_WAIT_S
from .state import StateStore, default_state_dir, record_finish, record_start

__all__ = ["RunOptions", "RunResult", "run_job"]



@dataclass
class RunOptions:
    """How to run: what the command line and environment say."""

    dry_run: bool = False
    env_files: Sequence[str] = ()
    log_format: str | None = None
    notify: bool = True
    passthrough_exit: bool = False  # ``jobrunner exec``: a failed command's status is ours


@dataclass
class RunResult:
    outcome: str
    exit_code: int
    attempts: int = 0
    duration_s: float = 0.0
    error: BaseException | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _load_env(job: Job, options: RunOptions) -> dict[str, str]:
    loaded: dict[str, str] = {}
    # Under systemd the unit already loaded these (and a drop-in may have replaced them, so
    # they must not be read again); by hand, read the same files so the run sees what the
    # unit would.
    if not os.environ.get("INVOCATION_ID"):
        for path in job.env_file_chain:
            optional = path.startswith("-")
            loaded.update(load_env_file(path.lstrip("-"), optional=optional))
    for path in options.env_files:
        loaded.update(load_env_file(path))
    os.environ.update(loaded)
    return dict(os.environ)


def _new_run_id() -> str:
    invocation = os.environ.get("INVOCATION_ID", "")
    return invocation if invocation else os.urandom(16).hex()


def run_job(job: Job, options: RunOptions | None = None) -> RunResult:
    """Run ``job`` through the whole lifecycle and return how it ended (never raises for the job's errors)."""
    options = options or RunOptions()
    env = _load_env(job, options)  # ConfigError propagates: nothing locked or written yet
    redactor = default_redactor()
    redactor.add_env(env)
    run_id = _new_run_id()
    sink = configure_logging(
        static={"job": job.name, "run_id": run_id, "host": os.uname().nodename},
        redactor=redactor,
        fmt=options.log_format,
        file_path=job.log_file,
    )
    log = structlog.get_logger()
    if sink.file_error:
        log.warning("log.file_unavailable", error=sink.file_error)
    state_root = default_state_dir()
    store = StateStore(job.name, state_root)
    ctx = Context(
        job=job, log=log, env=env, run_id=run_id, dry_run=options.dry_run, redactor=redactor, state_dir=store.dir
    )
    sigs = Signals(job.timeout, job.cleanup_timeout)
    watchdog = Watchdog(log, ctx.groups)
    started_wall, started = time.time(), time.monotonic()
    result = RunResult("success", errors.EXIT_OK)
    lock = None
    output = capture_output(sink, redactor)  # the job's own stdout/stderr, masked (docs/security.md)
    sigs.install()
    try:
        log.info("job.started", pid=os.getpid(), user=_user(), dry_run=options.dry_run or None, module=job.module)
        lock = ctx.lock = _acquire_lock(job, log, options.dry_run, sigs, run_id)
        if not options.dry_run:
            # Bounded: the deadline is not armed yet, and a held state lock must not hang the run.
            wait = min(STATE_LOCK_WAIT_S, job.timeout or STATE_LOCK_WAIT_S)
            _write_state(store, log, lambda s: record_start(s, run_id=run_id, pid=os.getpid()), wait=wait)
            if options.notify and _notify_wanted():
                _run_started_hook(job, ctx, log)
        if job.timeout:
            ctx.deadline = time.monotonic() + job.timeout
            sigs.arm(job.timeout)
            watchdog.set(ctx.deadline + job.cleanup_timeout + job.kill_grace + 10, errors.EXIT_TIMEOUT)
        result.attempts = _call(job, ctx, log)
        sigs.mode = "done"
        sigs.disarm()
    except LockBusy as exc:
        sigs.mode = "done"
        fail = job.lock is not None and job.lock.busy == "fail"
        holder = _busy_holder(exc, log, fail, policy=job.lock.busy if job.lock else "skip")
        result = RunResult("failure" if fail else "skipped", errors.EXIT_FAILURE if fail else errors.EXIT_SKIPPED, 0, error=exc)
        result.extra["holder"] = holder
    except Interrupt as exc:
        sigs.mode = "stopping"
        watchdog.set(time.monotonic() + job.cleanup_timeout + job.kill_grace + 10, exc.exit_code)
        if isinstance(exc, LockLost):
            log.error("lock.lost", reason=exc.reason)
        elif isinstance(exc, JobTimeout):
            log.error("job.timeout", reason=str(exc))
        else:
            log.warning("job.terminated", reason=str(exc))
        result = RunResult(exc.outcome, exc.exit_code, max(ctx.attempt, 1), error=exc)
    except BaseException as exc:  # the job raised: log it structured, exit 1
        sigs.mode = "stopping"
        code = errors.EXIT_FAILURE
        if options.passthrough_exit and isinstance(exc, CommandFailed):
            code = exc.returncode if exc.returncode > 0 else 128 - exc.returncode
        elif isinstance(exc, ConfigError):
            code = errors.EXIT_CONFIG
        extra = {"returncode": exc.returncode, "tail": list(exc.tail)} if isinstance(exc, CommandFailed) else {}
        log.error("job.failed", exc_info=exc, attempts=ctx.attempt, **extra)
        result = RunResult("failure", code, ctx.attempt, error=exc)
    finally:
        result.duration_s = time.monotonic() - started
        _finish(job, ctx, log, sigs, lock, store, result, options, started_wall, sink)
        output.close()
        watchdog.done.set()
        sigs.restore()
        sink.close()
    return result


def _call(job: Job, ctx: Context, log: Any) -> int:
    retry = job.retry
    if retry is None or retry.attempts <= 1:
        job(ctx)
        return 1
    import tenacity  # only jobs that declare retries pay for it

    wait = (
        tenacity.wait_exponential(multiplier=retry.delay_seconds, max=retry.max_delay_seconds)
        if retry.backoff == "exponential"
        else tenacity.wait_fixed(retry.delay_seconds)
    )
    stop: Any = tenacity.stop_after_attempt(retry.attempts)
    remaining = ctx.remaining()
    if remaining is not None:
        stop = stop | tenacity.stop_before_delay(remaining)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "job.retry", attempt=state.attempt_number, of=retry.attempts, delay_s=round(delay, 3),
            error=f"{type(exc).__name__}: {exc}",
        )
        ctx.attempt = state.attempt_number + 1

    retrying = tenacity.Retrying(
        stop=stop, wait=wait, retry=tenacity.retry_if_exception_type(retry.on), before_sleep=before_sleep, reraise=True
    )
    retrying(job, ctx)
    return ctx.attempt


def _acquire_lock(job: Job, log: Any, dry_run: bool, sigs: Signals, run_id: str):
    if job.lock is None or dry_run:
        return None
    spec = job.lock
    if spec.redis:
        from .redislock import RedisUnavailable, acquire_redis_lock

        try:
            return acquire_redis_lock(
                job, spec, log, on_lost=lambda reason: sigs.abort(LockLost(reason)), run_id=run_id
            )
        except RedisUnavailable as exc:
            if spec.unavailable != "local":
                raise
            log.warning("lock.fallback_local", reason=str(exc))
    from .locks import FileLock, lock_path

    path = lock_path(spec.name or job.name)
    lock = FileLock(path, wait=spec.wait_seconds, shared=spec.shared)
    if spec.wait_seconds:
        log.info("lock.waiting", path=path, wait_s=spec.wait_seconds)
    lock.acquire()
    log.info("lock.acquired", path=path, shared=spec.shared or None)
    return lock


def _busy_holder(exc: LockBusy, log: Any, fail: bool, policy: str) -> dict[str, Any] | None:
    """Log ``lock.busy`` with who holds the lock (from ``/proc/locks``): info for a run of the
    same user or root (the usual overlap), a warning for another user's hold, which should
    not be possible (docs/security.md) and is never silent."""
    from .locks import lock_holders

    holders = lock_holders(exc.path) if exc.path.startswith("/") else []
    holder = holders[0] if holders else None
    foreign = holder is not None and holder.get("uid") not in (None, 0, os.geteuid())
    level = 40 if fail else 30 if foreign else 20
    extra = {"holder_pid": holder["pid"], "holder_user": holder.get("user")} if holder else {}
    log.log(level, "lock.busy", path=exc.path, reason=exc.message, policy=policy, **extra)
    return holder


def _run_cleanups(ctx: Context, log: Any, sigs: Signals, job: Job) -> None:
    for fn, args, kwargs in ctx._pop_cleanups():
        name = getattr(fn, "__qualname__", repr(fn))
        sigs.mode = "cleanup"
        sigs.arm(job.cleanup_timeout)
        try:
            fn(*args, **kwargs)
            log.debug("cleanup.done", cleanup=name)
        except CleanupTimeout:
            log.error("cleanup.failed", cleanup=name, error=f"did not finish within {job.cleanup_timeout:g}s")
        except BaseException as exc:  # never masks the job's own error
            log.error("cleanup.failed", cleanup=name, exc_info=exc)
        finally:
            sigs.disarm()
            sigs.mode = "stopping"


def _kill_leftovers(ctx: Context, log: Any, job: Job) -> None:
    for pgid in ctx.groups.kill_all(job.kill_grace):
        log.warning("proc.killed", pgid=pgid)


def _finish(job, ctx, log, sigs, lock, store, result, options, started_wall, sink) -> None:
    # The job's processes go first (a lost lease leaves little time), then cleanups, then
    # whatever the cleanups themselves left running.
    _kill_leftovers(ctx, log, job)
    _run_cleanups(ctx, log, sigs, job)
    _kill_leftovers(ctx, log, job)
    if isinstance(sigs.pending, LockLost) and result.error is not sigs.pending:
        log.error("lock.lost", reason=sigs.pending.reason, after="the job had finished")
    if lock is not None:
        lock.release()
    if sigs.deferred:
        log.warning("signal.deferred", signals=[signal.Signals(s).name for s in sigs.deferred])
    error = f"{type(result.error).__name__}: {result.error}" if result.error and result.outcome != "skipped" else None
    if error:
        error = default_redactor().redact(error)
    state: dict[str, Any] | None = None
    if not options.dry_run:
        state = _write_state(
            store,
            log,
            lambda s: record_finish(
                s, run_id=ctx.run_id, outcome=result.outcome, exit_code=result.exit_code, started=started_wall,
                duration_s=result.duration_s, attempts=result.attempts, error=error, holder=result.extra.get("holder"),
            ),
        )
        if result.outcome == "skipped" and state is not None:
            from .skips import check_skipping

            check_skipping(job, ctx, log, state, store, notify=options.notify)
        _after_run_hooks(job, ctx, log, result, state, options, sink, error)
    level = "info" if result.outcome in ("success", "skipped") else "error"
    getattr(log, level)(
        "job.finished", outcome=result.outcome, exit_code=result.exit_code,
        duration_s=round(result.duration_s, 3), attempts=result.attempts, error=error,
    )


def _write_state(store: StateStore, log: Any, change, wait: float = STATE_LOCK_WAIT_S) -> dict[str, Any] | None:
    try:
        return store.update(change, wait=wait)
    except OSError as exc:  # read-only or full disk: the run's result is still logged
        log.error("state.write_failed", path=store.path, error=exc.strerror or str(exc))
        return None


def _after_run_hooks(job, ctx, log, result, state, options, sink, error) -> None:
    """Metrics and notifications: imported only when configured."""
    metrics_dir = os.environ.get("JOBRUNNER_METRICS_DIR")
    # Units point at node_exporter's textfile directory; on a host without node_exporter it
    # does not exist, and that is not worth an error on every run.
    if metrics_dir and os.path.isdir(metrics_dir):
        try:
            from .metrics import write_job_metrics

            write_job_metrics(job, state or {}, result, os.environ["JOBRUNNER_METRICS_DIR"])
        except Exception as exc:
            log.error("metrics.write_failed", error=f"{type(exc).__name__}: {exc}")
    if not options.notify or result.outcome == "skipped" or not _notify_wanted():
        return
    try:
        from .notify import configured, notify_after_run
    except ImportError:  # pragma: no cover - the notify module is optional during development
        return
    if configured(job):
        try:
            notify_after_run(job=job, ctx=ctx, log=log, result=result, store=ctx_store(ctx), tail=list(sink.tail), error=error)
        except Exception as exc:  # a notification never changes the outcome
            log.error("notify.failed", error=f"{type(exc).__name__}: {exc}")


def _notify_wanted() -> bool:
    """Cheap: is any notification or ping configured? (Else ``jobrunner.notify`` is never imported.)"""
    env = os.environ
    return bool(
        env.get("JOBRUNNER_NOTIFY_URLS", "").strip() or env.get("JOBRUNNER_NOTIFY_CONFIG", "").strip()
        or any(k.startswith("JOBRUNNER_PING_URL") and v.strip() for k, v in env.items())
        or os.path.exists("/etc/jobrunner/apprise.yml")
    )


def _run_started_hook(job: Job, ctx: Context, log: Any) -> None:
    try:
        from .notify import configured, run_started

        if configured(job):
            run_started(job, ctx, log)
    except Exception as exc:  # a ping never changes the outcome
        log.error("notify.failed", error=f"{type(exc).__name__}: {exc}")


def ctx_store(ctx: Context) -> StateStore:
    return StateStore(ctx.job.name, os.path.dirname(ctx.state_dir))


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (KeyError, ImportError):
        return str(os.geteuid())
