"""When to notify: the first failure of a streak that is due (``jobrunner.Alert``: after N in
a row, or a failure rate; ``due`` says it), then at most once per window; a recovery only
after a failure was notified. While the job is silenced (``silenced``) nothing is sent, but
every failure is counted and handled; the first due failure after the silence ends is sent
whatever the window ("still failing"), once. A recovery during a silence is not sent either
(and ends the streak: nothing is owed after the silence). Pure functions over the job's
``JobState`` (the memory is its ``notify``: the flags and counts here, and the ``failure``
memory of what was sent, ``notify/memory.py``, whose ``due`` is the repeat rule), so the
runner and ``jobrunner alert`` share one memory; both go through
``jobrunner.notify.notify_throttled``, which asks ``decide``, delivers and says which
``record_*`` to fold into the state.

``state.notifications.notified_run_id`` names the last run whose failure was *handled* (delivered, or
deliberately held back by the throttle): ``jobrunner alert`` stays silent for that run.
A failure whose notification could not be delivered is not handled, so the alert handler
(which has the network) still reports it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobrunner.errors import ConfigError
from jobrunner.notify import memory as sent_memory
from jobrunner.timespan import parse_timespan

if TYPE_CHECKING:
    from jobrunner.store.state import JobState

__all__ = [
    "FAILED",
    "Decision",
    "count_streak",
    "decide",
    "keep_sent",
    "note_delivered",
    "note_held",
    "note_quiet_success",
    "note_undelivered",
    "repeat_window",
    "sent_of",
]

DEFAULT_REPEAT = 6 * 3600.0
FAILED = ("failure", "timeout", "terminated")


@dataclass(frozen=True)
class Decision:
    """``kind`` is ``failure``, ``recovery`` or ``None`` (hold back); ``suppressed`` counts the
    failures held back since the last notification (to be told in this one); ``reason`` why
    (``silenced``, ``below-threshold``, ``repeat``; for a failure sent: ``silence-ended``)."""

    kind: str | None
    suppressed: int = 0
    reason: str = ""


def repeat_window(env: Mapping[str, str] | None = None) -> float:
    """``$JOBRUNNER_NOTIFY_REPEAT`` (a time span, default 6h); 0 notifies every failure."""
    env = os.environ if env is None else env
    raw = env.get("JOBRUNNER_NOTIFY_REPEAT", "").strip()
    if not raw:
        return DEFAULT_REPEAT
    try:
        return float(parse_timespan(raw) or 0.0)
    except ValueError as exc:
        raise ConfigError(f"JOBRUNNER_NOTIFY_REPEAT={raw!r}: {exc}") from None


def decide(
    state: JobState, *, outcome: str, now: float, window: float, due: bool = True, silenced: bool = False
) -> Decision:
    """What this outcome calls for, given what was notified before: ``due`` is whether the
    failure streak reached the job's threshold, ``silenced`` whether a silence is in force."""
    memory = state.notifications.notify
    suppressed = int(memory.get("suppressed", 0))
    if silenced:
        return Decision(None, suppressed, "silenced") if outcome in FAILED or outcome == "success" else Decision(None)
    if outcome == "success":
        return Decision("recovery", suppressed) if memory.get("failure_notified") else Decision(None)
    if outcome not in FAILED:
        return Decision(None)
    if not due:
        return Decision(None, suppressed, "below-threshold")
    if int(memory.get("silenced", 0)):
        return Decision("failure", suppressed, "silence-ended")
    if not memory.get("failure_notified") or sent_memory.due(sent_of(state), "failure", now, window):
        return Decision("failure", suppressed)
    return Decision(None, suppressed, "repeat")


def sent_of(state: JobState) -> dict[str, sent_memory.Sent]:
    """What was sent of each kind (``notify.sent``, ``notify/memory.py``)."""
    return sent_memory.load(state.notifications.notify.get("sent") or {})


def keep_sent(state: JobState, change: Callable[[dict[str, sent_memory.Sent]], None]) -> None:
    """``change`` the job's memory of what was sent, and keep it in its state."""
    memory = sent_of(state)
    change(memory)
    if memory:
        state.notifications.notify["sent"] = sent_memory.to_json(memory)
    else:
        state.notifications.notify.pop("sent", None)


def note_delivered(state: JobState, decision: Decision, *, run_id: str, now: float) -> None:
    memory = state.notifications.notify
    memory["suppressed"] = 0
    memory.pop("silenced", None)
    if decision.kind == "recovery":
        memory["failure_notified"] = False
        keep_sent(state, lambda m: sent_memory.end(m, "failure"))
    else:
        memory["failure_notified"] = True
        keep_sent(state, lambda m: sent_memory.sent(m, "failure", now))
        state.notifications.notified_run_id = run_id


def note_held(state: JobState, *, run_id: str, reason: str = "") -> None:
    """A failure held back by the throttle, its threshold or a silence: counted for the next
    message (a silence's in ``silenced``, owed one message when it ends), and handled."""
    memory = state.notifications.notify
    memory["suppressed"] = int(memory.get("suppressed", 0)) + 1
    if reason == "silenced":
        memory["silenced"] = int(memory.get("silenced", 0)) + 1
    elif reason == "repeat":
        keep_sent(state, lambda m: sent_memory.held(m, "failure"))
    state.notifications.notified_run_id = run_id


def note_quiet_success(state: JobState) -> None:
    """A success with nothing to say (no failure was notified, or a silence is in force): the
    streak is over, nothing held back is owed any more."""
    memory = state.notifications.notify
    for key in ("suppressed", "silenced"):
        memory.pop(key, None)
    memory["failure_notified"] = False
    keep_sent(state, lambda m: sent_memory.end(m, "failure"))


def note_undelivered(state: JobState, decision: Decision) -> None:
    """Sending failed: a failure counts as held back (told next time); nothing is marked handled."""
    memory = state.notifications.notify
    if decision.kind == "failure":
        memory["suppressed"] = int(memory.get("suppressed", 0)) + 1
    memory["undelivered"] = int(memory.get("undelivered", 0)) + 1


def count_streak(state: JobState, failed: bool) -> None:
    """The failures since the last success, as the runner saw them (a recovery message says it)."""
    memory = state.notifications.notify
    memory["streak_failures"] = int(memory.get("streak_failures", 0)) + 1 if failed else 0
