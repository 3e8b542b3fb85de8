"""Failure notifications and dead-man pings, for the runner, ``jobrunner alert`` and ``notify test``.

The runner calls three functions (only when a cheap environment check says something is
configured, so an unconfigured timer tick never imports this package, let alone apprise):

- ``configured(job)``: URLs or a ping URL are set (cheap; no apprise import).
- ``run_started(job, ctx, log)``: replays queued pings, then pings ``/start``.
- ``notify_after_run(...)``: once per run, after retries: notifies a failure (throttled per
  ``$JOBRUNNER_NOTIFY_REPEAT``) or the recovery after a notified failure, then the finish ping.

Nothing here raises into the run or changes its exit code: problems are logged as
``notify.failed`` / ``ping.failed``, and everything ends within ``$JOBRUNNER_NOTIFY_TIMEOUT``.

Tag routing (Apprise semantics): a job without ``notify=`` tags goes to every URL; a job with
``notify="ops"`` goes to the URLs tagged ``ops`` and those tagged ``always``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .config import sources_present
from .ping import ping_url

__all__ = ["configured", "deliver", "notify_after_run", "run_started"]


def configured(job: Any) -> bool:
    """Whether anything is to be sent for ``job``: notification URLs or a ping URL (cheap)."""
    return sources_present() or ping_url(job) is not None


def deliver(title: str, body: str, *, tags: tuple[str, ...] = (), kind: str = "failure", budget: float | None = None):
    """Load the configured URLs and send, bounded; ``ConfigError`` for bad configuration."""
    import apprise

    from .config import load
    from .send import budget_seconds, send

    notifier = load()
    notify_type = {"recovery": apprise.NotifyType.SUCCESS, "test": apprise.NotifyType.INFO}.get(
        kind, apprise.NotifyType.FAILURE
    )
    return send(notifier, title=title, body=body, tags=tuple(tags), notify_type=notify_type,
                budget=budget if budget is not None else budget_seconds())


def _store(ctx: Any):
    from ..state import StateStore

    return StateStore(ctx.job.name, os.path.dirname(ctx.state_dir))


def _save(store: Any, log: Any, change) -> None:
    try:
        store.update(change)
    except OSError as exc:
        log.error("state.write_failed", path=store.path, error=exc.strerror or str(exc))


def run_started(job: Any, ctx: Any, log: Any) -> None:
    """At run start: replay queued finish pings (marked late), then ping ``/start``."""
    store = _store(ctx)
    state = store.read()
    if list(job.notify) != list(state.get("notify_tags") or []):  # for `jobrunner alert`, which cannot import the job
        _save(store, log, lambda s: s.update(notify_tags=list(job.notify)))
    base = ping_url(job)
    if base is None:
        return
    from . import ping
    from .send import budget_seconds

    deadline = time.monotonic() + min(budget_seconds(), 5.0)
    if (state.get("ping") or {}).get("queue"):
        ping.replay(state, base, deadline=deadline, log=log)
        memory = state["ping"]
        _save(store, log, lambda s: s.setdefault("ping", {}).update(memory))
    ok, detail, _ = ping.send_ping(f"{base}/start?rid={ping.rid(ctx.run_id)}", body=None, deadline=deadline)
    if ok:
        log.debug("ping.sent", path="/start")
    else:  # a lost start ping is harmless: the finish ping is what healthchecks judges
        log.warning("ping.failed", path="/start", error=detail)


def notify_after_run(*, job: Any, ctx: Any, log: Any, result: Any, store: Any, tail: list[dict[str, Any]],
                     error: str | None) -> None:
    """After the run (and its retries): notify per the throttle, then the finish ping."""
    from .message import tail_lines
    from .send import budget_seconds

    budget = budget_seconds()
    deadline = time.monotonic() + budget
    lines = tail_lines(tail)
    base = ping_url(job)
    if sources_present():
        _notify(job, ctx, log, result, store, lines, error, budget * (0.7 if base else 1.0))
    if base:
        _finish_ping(base, ctx, log, result, store, lines, deadline)


def _notify(job, ctx, log, result, store, lines, error, budget) -> None:
    from .throttle import FAILED, decide, record_delivered, record_held, record_undelivered, repeat_window

    state = store.read()
    now = time.time()
    decision = decide(state, outcome=result.outcome, now=now, window=repeat_window())
    failed = result.outcome in FAILED
    if decision.kind is None:
        if failed:
            _save(store, log, lambda s: (_count_streak(s, failed), record_held(s, run_id=ctx.run_id)))
            log.info("notify.held", reason="JOBRUNNER_NOTIFY_REPEAT", suppressed=decision.suppressed + 1)
        return
    from .message import failure_message, recovery_message

    host = os.uname().nodename
    if decision.kind == "recovery":
        title, body = recovery_message(job=job, host=host, run_id=ctx.run_id, result=result, state=state,
                                       suppressed=decision.suppressed)
    else:
        title, body = failure_message(job=job, host=host, run_id=ctx.run_id, result=result, error=error, tail=lines,
                                      state=state, suppressed=decision.suppressed)
    delivery = deliver(title, body, tags=tuple(job.notify), kind=decision.kind, budget=budget)
    if delivery.delivered:
        _save(store, log, lambda s: (_count_streak(s, failed),
                                     record_delivered(s, decision, run_id=ctx.run_id, now=now)))
        log.info("notify.sent", kind=decision.kind, services=delivery.matched, seconds=round(delivery.seconds, 3))
    else:
        _save(store, log, lambda s: (_count_streak(s, failed), record_undelivered(s, decision)))
        log.error("notify.failed", kind=decision.kind, error=delivery.detail, seconds=round(delivery.seconds, 3))


def _count_streak(state: dict[str, Any], failed: bool) -> None:
    memory = state.setdefault("notify", {})
    memory["streak_failures"] = int(memory.get("streak_failures", 0)) + 1 if failed else 0


def _finish_ping(base, ctx, log, result, store, lines, deadline) -> None:
    from . import ping

    state = store.read()
    path = ping.finish_path(result.outcome, result.exit_code)
    rid = ping.rid(ctx.run_id)
    summary = f"{result.outcome} exit={result.exit_code} duration={result.duration_s:.1f}s attempts={result.attempts}"
    text = "\n".join([*lines, summary])
    if (state.get("ping") or {}).get("queue"):
        ping.replay(state, base, deadline=deadline, log=log)
    ok, detail, limit = ping.send_ping(f"{base}{path}?rid={rid}", body=ping.cut(text, ping.body_limit(state)),
                                       deadline=deadline)
    memory = state.setdefault("ping", {})
    if ok:
        if limit:
            memory["body_limit"] = limit
        log.debug("ping.sent", path=path or "/")
    else:
        ping.enqueue(state, path=path, rid=rid, body=text)
        log.warning("ping.failed", path=path or "/", error=detail, queued=len(memory.get("queue", [])))
    _save(store, log, lambda s: s.setdefault("ping", {}).update(state["ping"]))
