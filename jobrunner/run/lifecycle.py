"""The run lifecycle, in one place (docs/design.md "The run lifecycle").

1. env files loaded (errors: exit 78, before anything is locked or written);
2. logging configured, the hooks loaded (``hooks.load_hooks``); 3. lock taken (busy:
   ``lock.busy``, exit 75);
4. the start hooks, then the start recorded (one state write, with what they contribute);
   deadline armed; the function called, with retries inside the deadline;
5. always: cleanups LIFO, leftover process groups killed, lock released, the end hooks (the
   state as it will be written in ``run.state``), the finish recorded (one state write, with
   what they contribute), ``job.finished`` logged;
6. the exit code of the contract returned.

Every stage takes the ``Run`` (``jobrunner/run/model.py``): the job, options, context, logger,
state, lock, signals, clock and result of this run.

The timeout counts from the process's start, as timeout(1)'s does, when the run is the
process (``python -m jobrunner``, the ``jobrunner`` script; ``_process_start``): the
interpreter's start and the imports are inside it. What is not the job's time is not:
waiting for the job's lock or the state lock, and the start hooks (``run.paused_s``).

Signals: the first SIGTERM/SIGINT/SIGHUP (or the deadline's SIGALRM) raises an ``Interrupt``
in the job; later ones are only recorded, so cleanup is not cut short. Each cleanup has its
own time budget, and a watchdog thread ends the process if even that hangs: no run outlives
``timeout + cleanup_timeout + kill_grace`` by more than a few seconds.
"""

from __future__ import annotations

import os
import pwd
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import structlog

from jobrunner import errors
from jobrunner.declaration import Job, alert_variable
from jobrunner.envfile import load_env_file
from jobrunner.errors import CommandFailed, ConfigError, Interrupt, JobTimeout, LockBusy, LockLost
from jobrunner.redact import default_redactor
from jobrunner.run.context import Context
from jobrunner.run.hooks import call_hooks, load_hooks
from jobrunner.run.interrupts import CleanupTimeout, Signals, Watchdog
from jobrunner.run.logs import capture_output, configure_logging
from jobrunner.run.model import Run, RunOptions, RunResult
from jobrunner.store.history import read_history
from jobrunner.store.state import LOCK_WAIT_S as STATE_LOCK_WAIT_S
from jobrunner.store.state import JobState, StateStore, default_state_dir

if TYPE_CHECKING:
    from collections.abc import Callable

    from structlog.typing import FilteringBoundLogger

    from jobrunner.locks.file import SlotLock
    from jobrunner.run.hooks import Hook
    from jobrunner.types import HeldLock

__all__ = ["FENCING_ENV", "RunOptions", "RunResult", "run_job"]

FENCING_ENV = "JOBRUNNER_FENCING_TOKEN"
"""Set in ``ctx.env`` (so in the environment of ``ctx.run`` commands, and of ``jobrunner exec``'s
command) to the lease's fencing token while a run holds a lease."""


def _load_env(job: Job, options: RunOptions) -> dict[str, str]:
    loaded: dict[str, str] = {}
    # Under systemd the unit already loaded these (and a drop-in may have replaced them, so
    # they must not be read again); by hand, read the same files so the run sees what the
    # unit would.
    if not os.environ.get("INVOCATION_ID"):
        if job.instance is not None:
            _check_instance_file(job)
        for path in job.env_file_chain:
            optional = path.startswith("-")
            loaded.update(load_env_file(path.lstrip("-"), optional=optional))
    for path in options.env_files:
        loaded.update(load_env_file(path))
    os.environ.update(loaded)
    return dict(os.environ)


def _check_instance_file(job: Job) -> None:
    """An instance that was never added is named as such (exit 78), not as a missing file."""
    path = job.env_file_chain[-1]
    if not os.path.lexists(path):
        from jobrunner.instances import group_of

        raise ConfigError(
            f"instance {job.instance!r} of {job.base_name} is not configured ({path} does not exist): "
            f"add it with 'jobrunner instances add {group_of(job)} {job.instance} --set KEY=VALUE'"
        )


def _new_run_id() -> str:
    """systemd's invocation ID (a v4 UUID: hex digit 12 is '4'), else 32 random hex digits
    with digit 12 '0', so a run made by hand is never mistaken for a unit's (``history``
    offers ``journalctl _SYSTEMD_INVOCATION_ID=`` only for a unit's)."""
    invocation = os.environ.get("INVOCATION_ID", "")
    if invocation:
        return invocation
    digits = os.urandom(16).hex()
    return digits[:12] + "0" + digits[13:]


def run_job(job: Job, options: RunOptions | None = None) -> RunResult:
    """Run ``job`` through the whole lifecycle and return how it ended (never raises for the job's errors)."""
    options = options or RunOptions()
    origin = _process_start()
    env = _load_env(job, options)  # ConfigError propagates: nothing locked or written yet
    if alert_variable(job.name) in env:  # a host's $JOBRUNNER_ALERT_<JOB>: checked like the declaration
        from jobrunner.rules.alerting import effective_alert, with_alert

        job = with_alert(job, effective_alert(job, env))
    redactor = default_redactor()
    redactor.add_env(env)
    run_id = _new_run_id()
    sink = configure_logging(
        static={"job": job.name, "run_id": run_id, "host": os.uname().nodename}
        | ({"instance": job.instance} if job.instance is not None else {}),
        redactor=redactor,
        fmt=options.log_format,
        file_path=job.log_file,
    )
    log = structlog.get_logger()
    if sink.file_error:
        log.warning("log.file_unavailable", error=sink.file_error)
    store = StateStore(job.name, default_state_dir())
    ctx = Context(
        job=job, log=log, env=env, run_id=run_id, dry_run=options.dry_run, redactor=redactor, state_dir=store.dir
    )
    # The run's clock starts with the process when the run is the process (see _process_start).
    now_wall, now_mono = time.time(), time.monotonic()
    started_mono = now_mono if origin is None else origin
    run = Run(
        job=job,
        options=options,
        ctx=ctx,
        log=log,
        store=store,
        sigs=Signals(job.timeout, job.cleanup_timeout),
        sink=sink,
        started_wall=now_wall - (now_mono - started_mono),
        started_mono=started_mono,
    )
    watchdog = Watchdog(log, ctx.groups)
    output = capture_output(sink, redactor)  # the job's own stdout/stderr, masked (docs/security.md)
    sigs = run.sigs
    sigs.install()
    try:
        log.info("job.started", pid=os.getpid(), user=_user(), dry_run=options.dry_run or None, module=job.module)
        if job.condition is not None and (unmet := _condition_unmet(job.condition)):
            raise _ConditionUnmet(unmet)
        run.hooks = _load_hooks(run, env)
        waiting = time.monotonic()
        ctx.lock = _acquire_lock(run)  # kept once: run.lock reads it through
        run.paused_s += time.monotonic() - waiting
        if job.concurrency is not None and not options.dry_run:
            run.slot = _acquire_slot(run, env)  # its wait is the job's time: within the deadline
        if not options.dry_run:
            _start(run)
        if job.timeout:
            ctx.deadline = run.started_mono + job.timeout + run.paused_s
            sigs.arm(ctx.deadline - time.monotonic())
            watchdog.set(ctx.deadline + job.cleanup_timeout + job.kill_grace + 10, errors.EXIT_TIMEOUT)
        run.result.attempts = _call(job, ctx, log)
        sigs.mode = "done"
        sigs.disarm()
    except _ConditionUnmet as exc:  # what systemd's Condition…= does: not started, not a failure
        sigs.mode = "done"
        run.result = RunResult("skipped", errors.EXIT_OK, 0, extra={"condition": str(exc)})
        log.info("job.condition_unmet", condition=" ".join(job.condition or ()), reason=str(exc))
    except LockBusy as exc:
        sigs.mode = "done"
        fail = job.lock is not None and job.lock.busy == "fail" and not isinstance(exc, _StoreDown)
        run.result = RunResult(
            "failure" if fail else "skipped", errors.EXIT_FAILURE if fail else errors.EXIT_SKIPPED, 0, error=exc
        )
        run.result.extra["holder"] = _busy_holder(exc, log, fail, policy=job.lock.busy if job.lock else "skip")
    except Interrupt as exc:
        sigs.mode = "stopping"
        run.result = RunResult(exc.outcome, exc.exit_code, max(ctx.attempt, 1), error=exc)  # decided before described
        watchdog.set(time.monotonic() + job.cleanup_timeout + job.kill_grace + 10, exc.exit_code)
        if isinstance(exc, LockLost):
            log.error("lock.lost", reason=exc.reason)
        elif isinstance(exc, JobTimeout):
            log.error("job.timeout", reason=str(exc))
        else:
            log.warning("job.terminated", reason=str(exc))
    except BaseException as exc:  # the job raised: log it structured, exit 1
        sigs.mode = "stopping"
        code = errors.EXIT_FAILURE
        if options.passthrough_exit and isinstance(exc, CommandFailed):
            code = exc.returncode if exc.returncode > 0 else 128 - exc.returncode
        elif isinstance(exc, ConfigError):
            code = errors.EXIT_CONFIG
        run.result = RunResult("failure", code, ctx.attempt, error=exc)  # decided before anything describes it
        extra = {"returncode": exc.returncode, "tail": list(exc.tail)} if isinstance(exc, CommandFailed) else {}
        log.error("job.failed", exc_info=exc, attempts=ctx.attempt, **extra)
    finally:
        run.result.duration_s = time.monotonic() - run.started_mono
        _finish(run)
        output.close()
        watchdog.done.set()
        sigs.restore()
        sink.close()
    return run.result


class _ConditionUnmet(Exception):
    """The job's ``condition=`` does not hold: the run is skipped (exit 0)."""


def _condition_unmet(condition: tuple[str, str]) -> str | None:
    """Why ``test OP PATH`` fails (``condition=``), or None when it holds."""
    op, path = condition
    if op == "-x":
        ok = os.path.isfile(path) and os.access(path, os.X_OK)
        what = "an executable file"
    elif op == "-d":
        ok, what = os.path.isdir(path), "a directory"
    else:
        ok, what = os.path.exists(path), "there"
    return None if ok else f"condition {op} {path}: {path} is not {what}"


def _load_hooks(run: Run, env: dict[str, str]) -> list[Hook]:
    try:
        return load_hooks(run.job, run.options, env)
    except Exception as exc:  # a hook that cannot even be loaded never stops the run
        run.log.error("hook.failed", stage="load", error=f"{type(exc).__name__}: {exc}")
        return []


def _start(run: Run) -> None:
    """The start hooks (on the state as read), then the start recorded with what they contribute."""
    try:
        run.state = run.store.load()
    except ConfigError:  # unreadable: the write below starts afresh (StateStore.apply)
        run.state = JobState(recovered_from_unreadable_state=True)
    began = time.monotonic()
    call_hooks(run, "on_start")
    run.paused_s += time.monotonic() - began  # pings are not the job's time
    pid = os.getpid()
    rules = run.job.alert.to_dict() if run.job.alert is not None else None
    if rules != run.state.alerting.alert:  # for jobrunner alert and health, which cannot import the job
        run.contribute(lambda s: setattr(s.alerting, "alert", rules))
    # Bounded: the deadline is not armed yet, and a held state lock must not hang the run.
    wait = min(STATE_LOCK_WAIT_S, run.job.timeout or STATE_LOCK_WAIT_S)
    _save_state(run, lambda s: s.note_start(run_id=run.run_id, pid=pid), wait=wait)
    run.paused_s += run.store.lock_waited


def _call(job: Job, ctx: Context, log: FilteringBoundLogger) -> int:
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
            "job.retry",
            attempt=state.attempt_number,
            of=retry.attempts,
            delay_s=round(delay, 3),
            error=f"{type(exc).__name__}: {exc}",
        )
        ctx.attempt = state.attempt_number + 1

    retrying = tenacity.Retrying(
        stop=stop, wait=wait, retry=tenacity.retry_if_exception_type(retry.on), before_sleep=before_sleep, reraise=True
    )
    retrying(job, ctx)
    return ctx.attempt


class _StoreDown(LockBusy):
    """The lease's store unreachable at start under ``unavailable="skip"``: a skip, whatever ``busy`` says."""


def _acquire_lock(run: Run) -> HeldLock | None:
    job, log, sigs = run.job, run.log, run.sigs
    if job.lock is None or run.options.dry_run:
        return None
    spec = job.lock
    if spec.backend:  # a lease: its backend by the URL's scheme, imported only now
        from jobrunner.locks.abc import LeaseUnavailable, acquire_lease

        try:
            lease = acquire_lease(
                job, spec, log, on_lost=lambda reason: sigs.abort(LockLost(reason)), run_id=run.run_id
            )
        except LeaseUnavailable as exc:
            if spec.unavailable == "skip":
                # every host of the fleet finds the store down at once: each skips with a warning,
                # and the fleet is told once, by health --fleet (UNKNOWN), not once per host
                log.warning("lock.unavailable", reason=str(exc), policy="skip")
                raise _StoreDown(str(exc), "jobrunner:lock:" + (spec.name or job.lock_name or job.name)) from None
            if spec.unavailable != "local":
                raise
            log.warning("lock.fallback_local", reason=str(exc))
        else:
            if lease.fencing_token is not None:  # for the job's commands, to pass on to shared storage
                run.ctx.env[FENCING_ENV] = str(lease.fencing_token)
            return lease
    from jobrunner.locks.file import FileLock, lock_path

    path = lock_path(job.lock_name or job.name)
    lock = FileLock(path, wait=spec.wait_seconds, shared=spec.shared)
    if spec.wait_seconds:
        log.info("lock.waiting", path=path, wait_s=spec.wait_seconds)
    lock.acquire()
    log.info("lock.acquired", path=path, shared=spec.shared or None)
    return lock


def _acquire_slot(run: Run, env: dict[str, str]) -> SlotLock:
    """One slot of the job's ``concurrency=`` (a host-wide counting lock), waited for at most
    the slot's ``wait``, and never past the job's deadline (the wait counts in the timeout)."""
    from jobrunner.locks.file import SlotLock

    spec = run.job.concurrency
    assert spec is not None
    slots = spec.slots
    raw = env.get(spec.env_name, "").strip()
    if raw:
        if not raw.isdigit() or not 1 <= int(raw) <= 1024:
            raise ConfigError(
                f"{spec.env_name}={raw!r}: the number of {spec.name} slots is a whole number from 1 to 1024"
            )
        slots = int(raw)
    wait = spec.wait_seconds
    if run.job.timeout:
        left = run.started_mono + run.job.timeout + run.paused_s - time.monotonic()
        wait = max(0.0, left if wait is None else min(wait, left))
    lock = SlotLock(spec.name, slots, wait=wait)
    lock.acquire(
        on_wait=lambda: run.log.info(
            "lock.waiting", path=lock.pattern, slots=slots, wait_s=None if wait is None else round(wait, 3)
        )
    )
    assert lock.held is not None
    run.log.info("lock.acquired", path=lock.held.path, slots=slots)
    return lock


def _busy_holder(exc: LockBusy, log: FilteringBoundLogger, fail: bool, policy: str) -> dict[str, Any] | None:
    """Log ``lock.busy`` with who holds the lock (from ``/proc/locks``): info for a run of the
    same user or root (the usual overlap), a warning for another user's hold, which should
    not be possible (docs/security.md) and is never silent."""
    from jobrunner.locks.file import lock_holders

    foreign_lease = getattr(exc, "holder", None)  # jobrunner.locks.redis.ForeignLease
    if foreign_lease is not None:
        # never a usual overlap: a key another writer set, or a stale one; health says so
        log.log(40 if fail else 30, "lock.foreign", path=exc.path, reason=exc.message, holder=foreign_lease)
        return {"lease_holder": foreign_lease, "foreign": True}
    holders = lock_holders(exc.path) if exc.path.startswith("/") else []
    holder = holders[0] if holders else None
    foreign = holder is not None and holder.get("uid") not in (None, 0, os.geteuid())
    level = 40 if fail else 30 if foreign else 20
    extra = {"holder_pid": holder["pid"], "holder_user": holder.get("user")} if holder else {}
    log.log(level, "lock.busy", path=exc.path, reason=exc.message, policy=policy, **extra)
    return holder


def _run_cleanups(ctx: Context, log: FilteringBoundLogger, sigs: Signals, job: Job) -> None:
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


def _kill_leftovers(ctx: Context, log: FilteringBoundLogger, job: Job) -> None:
    for pgid in ctx.groups.kill_all(job.kill_grace):
        log.warning("proc.killed", pgid=pgid)


def _finish(run: Run) -> None:
    job, ctx, log, sigs, result = run.job, run.ctx, run.log, run.sigs, run.result
    # The job's processes go first (a lost lease leaves little time), then cleanups, then
    # whatever the cleanups themselves left running.
    _kill_leftovers(ctx, log, job)
    _run_cleanups(ctx, log, sigs, job)
    _kill_leftovers(ctx, log, job)
    if isinstance(sigs.pending, LockLost) and result.error is not sigs.pending:
        log.error("lock.lost", reason=sigs.pending.reason, after="the job had finished")
    if run.slot is not None:
        run.slot.release()
    if run.lock is not None:
        run.lock.release()
    if sigs.deferred:
        log.warning("signal.deferred", signals=[signal.Signals(s).name for s in sigs.deferred])
    error = f"{type(result.error).__name__}: {result.error}" if result.error and result.outcome != "skipped" else None
    error = result.extra.get("condition") or error  # a skip by condition= names it in the state and history
    run.error = default_redactor().redact(error) if error else None
    if not run.options.dry_run:
        finished = time.time()
        if job.alert is not None and job.alert.checks_duration and result.outcome == "success":
            _judge_duration(run)
        anomaly = run.anomaly.to_dict(run.run_id, finished) if run.anomaly is not None else None

        def finish(state: JobState) -> None:
            state.note_finish(
                run_id=run.run_id,
                outcome=result.outcome,
                exit_code=result.exit_code,
                started=run.started_wall,
                duration_s=result.duration_s,
                attempts=result.attempts,
                error=run.error,
                holder=result.extra.get("holder"),
                now=finished,
            )
            if result.outcome != "skipped":
                state.alerting.anomaly = anomaly
            if anomaly is not None:
                counts = state.alerting.anomalies
                state.alerting.anomalies = {**counts, anomaly["kind"]: int(counts.get(anomaly["kind"], 0)) + 1}

        try:  # the state as it will be written, for the skip check and the end hooks
            run.state = run.store.load()
        except ConfigError:
            run.state = JobState(recovered_from_unreadable_state=True)
        finish(run.state)
        if result.outcome == "skipped" and "condition" not in result.extra:  # no lock held it
            from jobrunner.rules.skips import check_skipping

            check_skipping(run)
        call_hooks(run, "on_finish")
        _save_state(run, finish)
    level = "info" if result.outcome in ("success", "skipped") else "error"
    getattr(log, level)(
        "job.finished",
        outcome=result.outcome,
        exit_code=result.exit_code,
        duration_s=round(result.duration_s, 3),
        attempts=result.attempts,
        error=run.error,
    )


def _judge_duration(run: Run) -> None:
    """A successful run whose duration is out of the ordinary (``Alert``): logged as a warning,
    kept in ``run.anomaly`` for the state, the metrics and the notification; the outcome stays."""
    from jobrunner.rules.alerting import duration_anomaly

    alert = run.job.alert
    if alert is None:
        return

    def baseline() -> list[float]:  # read only for slower_than_p95
        records = read_history(run.store.root, run.job.name, last=200).records
        return [r.duration_s for r in records if r.outcome == "success" and r.run_id != run.run_id]

    try:
        run.anomaly = duration_anomaly(alert, run.result.duration_s, baseline)
    except Exception as exc:  # judging a duration never changes the outcome
        run.log.error("hook.failed", stage="duration", error=f"{type(exc).__name__}: {exc}")
        return
    if run.anomaly is not None:
        anomaly = run.anomaly
        run.log.warning(
            "job.duration_anomaly",
            kind=anomaly.kind,
            duration_s=round(anomaly.duration_s, 3),
            limit_s=round(anomaly.limit_s, 3),
            reason=anomaly.text,
        )


def _save_state(run: Run, change: Callable[[JobState], None], *, wait: float = STATE_LOCK_WAIT_S) -> None:
    """One state write: ``change`` and what the hooks contributed since the last write."""
    store = run.store
    written = store.try_apply(
        change,
        *run.take_changes(),
        wait=wait,
        report=lambda why: run.log.error("state.write_failed", path=store.path, error=why),
    )
    if written is not None:
        run.state = written


def _process_start() -> float | None:
    """When this process started, on the monotonic clock, when the run is the process (its
    first run, under ``python -m jobrunner`` or the ``jobrunner`` script); else ``None`` (a
    library call in a long-lived process counts its timeout from the call)."""
    global _RAN
    if _RAN:
        return None
    _RAN = True
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if getattr(spec, "name", None) != "jobrunner.__main__" and os.path.basename(sys.argv[0] or "") != "jobrunner":
        return None
    try:
        with open("/proc/self/stat", "rb") as handle:
            ticks = int(handle.read().rsplit(b")", 1)[1].split()[19])  # field 22: starttime, clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.monotonic() - max(age, 0.0)


_RAN = False


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
