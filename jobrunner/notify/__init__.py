"""Failure notifications and dead-man pings: the runner's hooks, ``jobrunner alert`` and ``notify test``.

``jobrunner.run.hooks.load_hooks`` decides what is configured and only then imports this package
(so an unconfigured timer tick never imports it, let alone apprise); ``notify_hooks`` gives
the runner its hooks (docs/design.md "Hooks"):

- ``NotifyHook``: at the start, records the job's ``notify=`` tags in its state (for
  ``jobrunner alert``, which cannot import the job); at the end, once per run, after retries,
  notifies a failure (throttled per ``$JOBRUNNER_NOTIFY_REPEAT``), the recovery after a
  notified failure, or a job kept from running by a held lock (``run.skipping``).
- ``PingHook``: at the start, replays queued finish pings (marked late), then pings
  ``/start``; at the end, the finish ping.

``notify_throttled`` is the one path from the throttle through delivery to what is recorded,
for the runner and ``jobrunner alert`` alike. What a hook records goes into the runner's state
write through ``run.contribute``.

Nothing here raises into the run or changes its exit code: problems are logged as
``notify.failed`` / ``ping.failed``, and everything ends within ``$JOBRUNNER_NOTIFY_TIMEOUT``.

Tag routing (Apprise semantics): a job without ``notify=`` tags goes to every URL; a job with
``notify="ops"`` goes to the URLs tagged ``ops`` and those tagged ``always``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobrunner.notify.send import Delivery
    from jobrunner.notify.throttle import Decision
    from jobrunner.rules.alerting import Anomaly
    from jobrunner.run.model import Run
    from jobrunner.store.state import JobState

__all__ = ["NotifyHook", "Notice", "PingHook", "deliver", "notify_hooks", "notify_throttled"]


def deliver(
    title: str, body: str, *, tags: tuple[str, ...] = (), kind: str = "failure", budget: float | None = None
) -> Delivery:
    """Load the configured URLs and send, bounded; ``ConfigError`` for bad configuration."""
    import apprise

    from jobrunner.notify.config import load
    from jobrunner.notify.send import budget_seconds, send

    notifier = load()
    notify_type = {
        "recovery": apprise.NotifyType.SUCCESS,
        "test": apprise.NotifyType.INFO,
        "warning": apprise.NotifyType.WARNING,
    }.get(kind, apprise.NotifyType.FAILURE)
    return send(
        notifier,
        title=title,
        body=body,
        tags=tuple(tags),
        notify_type=notify_type,
        budget=budget if budget is not None else budget_seconds(),
    )


@dataclass
class Notice:
    """What ``notify_throttled`` did: ``decision`` (the throttle's), ``delivery`` (``None``: held
    back or nothing to send) and ``change``, the change the state should take (``None``: none)."""

    decision: Decision
    delivery: Delivery | None = None
    change: Callable[[JobState], None] | None = None


def notify_throttled(
    state: JobState | None,
    *,
    outcome: str,
    run_id: str,
    tags: tuple[str, ...],
    message: Callable[[Decision], tuple[str, str]],
    budget: float | None = None,
    now: float | None = None,
    due: bool = True,
    silenced: bool = False,
) -> Notice:
    """Throttle, deliver, and say what to note in the state: the one path of the runner and ``jobrunner alert``.

    ``state`` is the job's state (``None``: no memory to honour, e.g. a unit that is not a
    jobrunner job: a failure is always sent). ``due``: the failure streak reached the job's
    threshold (``alerting.failure_due``); ``silenced``: a silence is in force (nothing is
    sent). ``message(decision)`` makes the title and body, only when something is sent.
    ``ConfigError`` for a bad configuration."""
    from jobrunner.notify.throttle import (
        FAILED,
        Decision,
        decide,
        note_delivered,
        note_held,
        note_quiet_success,
        note_undelivered,
        repeat_window,
    )

    now = time.time() if now is None else now
    if state is None:
        decision = Decision("failure")
    else:
        decision = decide(state, outcome=outcome, now=now, window=repeat_window(), due=due, silenced=silenced)
    if decision.kind is None:
        memory = state.notifications.notify if state is not None else {}
        if outcome == "success" and (
            decision.suppressed or memory.get("silenced") or (decision.reason and memory.get("failure_notified"))
        ):
            return Notice(decision, change=note_quiet_success)
        if outcome not in FAILED:
            return Notice(decision)
        reason = decision.reason
        return Notice(decision, change=lambda s: note_held(s, run_id=run_id, reason=reason))
    title, body = message(decision)
    delivery = deliver(title, body, tags=tags, kind=decision.kind, budget=budget)
    if delivery.delivered:
        return Notice(decision, delivery, lambda s: note_delivered(s, decision, run_id=run_id, now=now))
    return Notice(decision, delivery, lambda s: note_undelivered(s, decision))


_HELD_REASON = {"repeat": "JOBRUNNER_NOTIFY_REPEAT", "": "JOBRUNNER_NOTIFY_REPEAT"}


def _log_notice(log: Any, notice: Notice, failed: bool) -> None:
    delivery, decision = notice.delivery, notice.decision
    if delivery is None:
        if failed:
            reason = _HELD_REASON.get(decision.reason, decision.reason)
            log.info("notify.held", reason=reason, suppressed=decision.suppressed + 1)
    elif delivery.delivered:
        log.info("notify.sent", kind=decision.kind, services=delivery.matched, seconds=round(delivery.seconds, 3))
    else:
        log.error("notify.failed", kind=decision.kind, error=delivery.detail, seconds=round(delivery.seconds, 3))


def trusted_silence(run: Run) -> dict[str, Any] | None:
    """The job's silence in force, when it can be trusted: the state directory is the running
    user's own or root's (a silence planted in a directory another user can write is ignored,
    with a warning: docs/security.md)."""
    from jobrunner.rules.alerting import silence_active

    silence = silence_active(run.state)
    if silence is None:
        return None
    try:
        owner = run.store.owner()
    except OSError:
        return None
    if owner not in (0, os.geteuid()):
        run.log.warning("notify.silence_ignored", path=run.store.dir, owner=owner)
        return None
    return silence


def recent_runs(run: Run, n: int) -> list[Any]:
    """The newest ``n`` runs of the job's history (this one included once the history hook ran)."""
    from jobrunner.store.history import read_history

    return read_history(run.store.root, run.job.name, last=n).records


def failure_condition(run: Run) -> str:
    """The condition a failure message names (``rules/verdict.py`` ``CONDITIONS``):
    ``running_long`` (a timeout), ``flapping`` or ``failing``. The history is read only here,
    when a failure is being sent."""
    if run.result.outcome == "timeout":
        return "running_long"
    from jobrunner.rules.alerting import FLAP_HISTORY, is_flapping

    return "flapping" if is_flapping(recent_runs(run, FLAP_HISTORY)) else "failing"


ANOMALY = "anomaly:"  # the key of an anomaly kind's memory of what was sent


def _ordinary_again(state: JobState) -> None:
    from jobrunner.notify.throttle import keep_sent

    def forget(memory: dict[str, Any]) -> None:
        for key in [k for k in memory if k.startswith(ANOMALY)]:
            del memory[key]

    keep_sent(state, forget)


class _Budget:
    """``$JOBRUNNER_NOTIFY_TIMEOUT``: the whole of a run's sending time, shared by the start
    ping (and the replay of queued pings) at the start, and the notification and the finish
    ping at the end. The start may use half of it; the end gets what the start left, its
    clock starting when the first of the end's senders does. A black-holed server therefore
    holds a run at most the budget in all, however the time falls."""

    def __init__(self) -> None:
        self.total: float | None = None
        self.spent = 0.0
        self.deadline: float | None = None
        self.failed = False  # a bad setting: reported once, by the first hook that asked

    def _total(self) -> float:
        if self.total is None:
            from jobrunner.notify.send import budget_seconds

            try:
                self.total = budget_seconds()
            except Exception:
                self.failed = True
                raise
        return self.total

    def opening(self) -> float:
        """The deadline of the start's sending: half the budget at most."""
        total = self._total()
        return time.monotonic() + max(0.0, min(total / 2, total - self.spent))

    def spend(self, seconds: float) -> None:
        self.spent += max(0.0, seconds)

    def start(self) -> float:
        """The deadline of the end's sending (fixed by its first caller): what the start left."""
        if self.deadline is None:
            self.deadline = time.monotonic() + max(0.0, self._total() - self.spent)
        return self.deadline


def _remember_tags(run: Run) -> None:
    tags = list(run.job.notify)
    if tags != list(run.state.notifications.notify_tags or []):
        run.contribute(lambda s: setattr(s.notifications, "notify_tags", tags))


class NotifyHook:
    """Notifications: a failure (throttled), a recovery, a job kept from running."""

    name = "notify"
    failure_event = "notify.failed"

    def __init__(self, budget: _Budget, share: float = 1.0) -> None:
        self.budget, self.share = budget, share
        self.watch: Any = None  # the timer of "still running past its max_duration"
        self.sent: dict[str, Any] = {}  # what this run sent (``running_long``): notify/memory.py

    def on_start(self, run: Run) -> None:
        _remember_tags(run)
        alert = run.job.alert
        if alert is not None and alert.max_seconds:
            import threading

            delay = alert.max_seconds - (time.monotonic() - run.started_mono)
            self.watch = threading.Timer(max(0.0, delay), self._running_long, (run, alert.max_seconds))
            self.watch.daemon = True
            self.watch.start()

    def _running_long(self, run: Run, limit: float) -> None:
        """A run still going past its ``Alert(max_duration=)``: said while it runs (its own
        warning, once a run), so the admin hears of it before the timeout does."""
        from jobrunner.notify import memory
        from jobrunner.notify.message import running_long_message
        from jobrunner.rules.schedule import format_age

        elapsed = time.monotonic() - run.started_mono
        run.log.warning("job.running_long", elapsed_s=round(elapsed, 3), limit_s=limit)
        if not memory.due(self.sent, "running_long", time.time(), window=math.inf):  # once a run
            return
        try:
            if trusted_silence(run) is not None:
                run.log.info("notify.held", kind="running_long", reason="silenced")
                return
            title, body = running_long_message(
                job=run.job, host=os.uname().nodename, run_id=run.run_id, elapsed=format_age(elapsed), limit=limit
            )
            delivery = deliver(title, body, tags=tuple(run.job.notify), kind="warning")
        except Exception as exc:  # never into the run
            run.log.error("notify.failed", kind="running_long", error=f"{type(exc).__name__}: {exc}")
            return
        if delivery.delivered:
            memory.sent(self.sent, "running_long", time.time())
            run.log.info("notify.sent", kind="running_long", services=delivery.matched)
        else:
            run.log.error("notify.failed", kind="running_long", error=delivery.detail)

    def on_finish(self, run: Run) -> None:
        if self.watch is not None:
            self.watch.cancel()
            if self.watch.is_alive():  # sending now: bounded by $JOBRUNNER_NOTIFY_TIMEOUT itself
                self.watch.join(timeout=30.0)
        if run.result.outcome == "skipped":
            if run.skipping:
                if trusted_silence(run) is not None:
                    run.log.info("notify.held", kind="skipping", reason="silenced")
                else:
                    self._skipping(run, run.skipping)
            return
        from jobrunner.notify.message import failure_message, recovery_message, tail_lines
        from jobrunner.notify.throttle import FAILED, count_streak

        job, result, log = run.job, run.result, run.log
        budget = (self.budget.start() - time.monotonic()) * self.share
        lines = tail_lines(run.tail)
        state, host = run.state, os.uname().nodename
        failed = result.outcome in FAILED
        silence = trusted_silence(run)
        due, why = True, ""
        if failed and job.alert is not None:
            from jobrunner.rules.alerting import failure_due

            due, why = failure_due(
                job.alert, failures=state.consecutive_failures or 0, recent=lambda n: recent_runs(run, n)
            )

        def message(decision: Decision) -> tuple[str, str]:
            memory = state.to_dict()  # what the message shows (notify/message.py reads the plain record)
            if decision.kind == "recovery":
                return recovery_message(
                    job=job, host=host, run_id=run.run_id, result=result, state=memory, suppressed=decision.suppressed
                )
            return failure_message(
                job=job,
                host=host,
                run_id=run.run_id,
                result=result,
                error=run.error,
                tail=lines,
                state=memory,
                suppressed=decision.suppressed,
                condition=failure_condition(run),
                why=why,
                after_silence=decision.reason == "silence-ended",
            )

        notice = notify_throttled(
            state,
            outcome=result.outcome,
            run_id=run.run_id,
            tags=tuple(job.notify),
            message=message,
            budget=budget,
            due=due,
            silenced=silence is not None,
        )
        noted = notice.change
        if noted is not None:

            def change(s: JobState) -> None:
                count_streak(s, failed)
                noted(s)

            run.contribute(change)
            _log_notice(log, notice, failed)
        if run.anomaly is not None:
            self._anomaly(run, run.anomaly, silence is not None)
        elif result.outcome == "success" and any(
            k.startswith(ANOMALY) for k in state.notifications.notify.get("sent") or ()
        ):
            run.contribute(_ordinary_again)  # ordinary again: the next one is news

    def _anomaly(self, run: Run, anomaly: Anomaly, silenced: bool) -> None:
        """A duration out of the ordinary: its own message and memory of what was sent
        (``anomaly:<kind>``, at most once per ``$JOBRUNNER_NOTIFY_REPEAT`` while it goes on)."""
        from jobrunner.notify import memory
        from jobrunner.notify.message import anomaly_message
        from jobrunner.notify.throttle import keep_sent, repeat_window, sent_of

        now = time.time()
        key = ANOMALY + anomaly.kind
        if silenced:
            run.log.info("notify.held", kind="duration", reason="silenced")
            return
        if "running_long" in self.sent and anomaly.kind == "too_slow":
            run.log.info("notify.held", kind="duration", reason="told while running")
            return
        if not memory.due(sent_of(run.state), key, now, repeat_window()):
            run.contribute(lambda s: keep_sent(s, lambda m: memory.held(m, key)))
            run.log.info("notify.held", kind="duration", reason="JOBRUNNER_NOTIFY_REPEAT")
            return
        title, body = anomaly_message(job=run.job, host=os.uname().nodename, run_id=run.run_id, anomaly=anomaly)
        delivery = deliver(title, body, tags=tuple(run.job.notify), kind="warning")
        if delivery.delivered:
            run.contribute(lambda s: keep_sent(s, lambda m: memory.sent(m, key, now)))
            run.log.info("notify.sent", kind="duration", services=delivery.matched, seconds=round(delivery.seconds, 3))
        else:
            run.log.error("notify.failed", kind="duration", error=delivery.detail, seconds=round(delivery.seconds, 3))

    def _skipping(self, run: Run, text: str) -> None:
        """A job kept from running: at most once per ``$JOBRUNNER_NOTIFY_REPEAT`` (the ``skip``
        memory of what was sent, ended by the next run that runs)."""
        from jobrunner.notify import memory
        from jobrunner.notify.throttle import DEFAULT_REPEAT, keep_sent, repeat_window, sent_of

        now = time.time()
        try:
            window = repeat_window()
        except Exception:
            window = DEFAULT_REPEAT
        if not memory.due(sent_of(run.state), "skip", now, window):
            run.contribute(lambda s: keep_sent(s, lambda m: memory.held(m, "skip")))
            return
        try:
            from jobrunner.rules.skips import skipping_message

            title, body = skipping_message(run.job, os.uname().nodename, text, run.run_id)
            budget = self.budget.start() - time.monotonic()
            delivery = deliver(title, body, tags=tuple(run.job.notify), kind="failure", budget=max(0.1, budget))
        except Exception as exc:
            run.log.error("notify.failed", kind="skipping", error=f"{type(exc).__name__}: {exc}")
            return
        if delivery.delivered:
            run.contribute(lambda s: keep_sent(s, lambda m: memory.sent(m, "skip", now)))
            run.log.info("notify.sent", kind="skipping", services=delivery.matched)
        else:
            run.log.error("notify.failed", kind="skipping", error=delivery.detail)


class PingHook:
    """Dead-man pings: ``/start`` (after replaying queued finish pings), then the finish ping."""

    name = "ping"
    failure_event = "notify.failed"

    def __init__(self, base: str, budget: _Budget) -> None:
        self.base, self.budget = base, budget
        self.rejected = False  # the server refused the URL: logged once, nothing more sent

    def on_start(self, run: Run) -> None:
        from jobrunner.notify import ping

        _remember_tags(run)
        began = time.monotonic()
        try:
            deadline = self.budget.opening()
            if not self._replay(run, deadline):
                return
            sent = ping.send_ping(
                ping.build_url(self.base, "/start", ping.rid(run.run_id)), body=None, deadline=deadline
            )
        finally:
            self.budget.spend(time.monotonic() - began)
        if sent.ok:
            run.log.debug("ping.sent", path="/start")
            if sent.limit and sent.limit != ping.body_limit(run.state.notifications.ping):
                run.state.notifications.ping["body_limit"] = sent.limit  # the finish ping's body fits it
                self._keep(run)
        elif sent.rejected:
            self._rejected(run, "/start", sent)
        else:  # a lost start ping is harmless: the finish ping is what healthchecks judges
            run.log.warning("ping.failed", path="/start", error=sent.detail)

    def on_finish(self, run: Run) -> None:
        if run.result.outcome == "skipped" or self.budget.failed or self.rejected:
            return
        from jobrunner.notify import ping
        from jobrunner.notify.message import tail_lines

        result = run.result
        deadline = self.budget.start()
        path = ping.finish_path(result.outcome, result.exit_code)
        rid = ping.rid(run.run_id)
        summary = (
            f"{result.outcome} exit={result.exit_code} duration={result.duration_s:.1f}s attempts={result.attempts}"
        )
        error = run.error if result.outcome != "success" else None
        tail = tail_lines(run.tail)
        if not self._replay(run, deadline):
            return
        view = {"ping": run.state.notifications.ping}
        body = ping.body_text(error=error, tail=tail, summary=summary, limit=ping.body_limit(view))
        sent = ping.send_ping(ping.build_url(self.base, path, rid), body=body, deadline=deadline)
        memory = run.state.notifications.ping
        if sent.ok:
            if sent.limit:
                memory["body_limit"] = sent.limit
            run.log.debug("ping.sent", path=path or "/")
        elif sent.rejected:
            self._rejected(run, path or "/", sent)
        else:
            text = ping.body_text(error=error, tail=tail, summary=summary, limit=ping.DEFAULT_BODY_LIMIT)
            ping.enqueue(view, path=path, rid=rid, body=text.decode("utf-8", "replace"))
            run.log.warning("ping.failed", path=path or "/", error=sent.detail, queued=len(memory.get("queue", [])))
        self._keep(run)

    def _rejected(self, run: Run, path: str, sent: Any) -> None:
        self.rejected = True
        run.log.warning("ping.rejected", path=path, status=sent.status, error=sent.detail, queued=0)

    def _replay(self, run: Run, deadline: float) -> bool:
        """Queued finish pings sent, marked late; False when the server rejected the URL."""
        from jobrunner.notify import ping

        view = {"ping": run.state.notifications.ping}  # ping.py works on the memory in place
        if not run.state.notifications.ping.get("queue"):
            return True
        usable = ping.replay(view, self.base, deadline=deadline, log=run.log)
        self._keep(run)
        if not usable:
            self.rejected = True
        return usable

    @staticmethod
    def _keep(run: Run) -> None:
        memory = dict(run.state.notifications.ping)
        run.contribute(lambda s: s.notifications.ping.update(memory))


def notify_hooks(*, notifications: bool, ping: str | None) -> list[Any]:
    """The hooks for what ``jobrunner.run.hooks.load_hooks`` found configured, sharing one budget."""
    budget = _Budget()
    hooks: list[Any] = []
    if notifications:
        hooks.append(NotifyHook(budget, share=0.7 if ping else 1.0))
    if ping:
        hooks.append(PingHook(ping, budget))
    return hooks
