"""When to notify: the first failure of a streak that is due (``jobrunner.Alert``: after N in
a row, or a failure rate; ``due`` says it), then at most once per window; a recovery only
after a failure was notified. While the job is silenced (``silenced``) nothing is sent, but
every failure is counted and handled; the first due failure after the silence ends is sent
whatever the window ("still failing"), once. A recovery during a silence is not sent either
(and ends the streak: nothing is owed after the silence). Pure functions over the job's ``JobState`` (the memory is
its ``notify``), so the runner and ``jobrunner alert`` share one memory; both go through
``jobrunner.notify.notify_throttled``, which asks ``decide``, delivers and says which
``record_*`` to fold into the state.

``state.notified_run_id`` names the last run whose failure was *handled* (delivered, or
deliberately held back by the throttle): ``jobrunner alert`` stays silent for that run.
A failure whose notification could not be delivered is not handled, so the alert handler
(which has the network) still reports it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobrunner.errors import ConfigError
from jobrunner.timespan import parse_timespan

if TYPE_CHECKING:
    from jobrunner.store.state import JobState

__all__ = [
    "FAILED",
    "Decision",
    "count_streak",
    "decide",
    "record_delivered",
    "record_held",
    "record_quiet_success",
    "record_undelivered",
    "repeat_window",
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
    memory = state.notify
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
    last = memory.get("last_failure_sent")
    if not memory.get("failure_notified") or last is None or now - float(last) >= window:
        return Decision("failure", suppressed)
    return Decision(None, suppressed, "repeat")


def record_delivered(state: JobState, decision: Decision, *, run_id: str, now: float) -> None:
    memory = state.notify
    memory["suppressed"] = 0
    memory.pop("silenced", None)
    memory["last_sent"] = now
    if decision.kind == "recovery":
        memory["failure_notified"] = False
        memory.pop("last_failure_sent", None)
    else:
        memory["failure_notified"] = True
        memory["last_failure_sent"] = now
        state.notified_run_id = run_id


def record_held(state: JobState, *, run_id: str, reason: str = "") -> None:
    """A failure held back by the throttle, its threshold or a silence: counted for the next
    message (a silence's in ``silenced``, owed one message when it ends), and handled."""
    memory = state.notify
    memory["suppressed"] = int(memory.get("suppressed", 0)) + 1
    if reason == "silenced":
        memory["silenced"] = int(memory.get("silenced", 0)) + 1
    state.notified_run_id = run_id


def record_quiet_success(state: JobState) -> None:
    """A success with nothing to say (no failure was notified, or a silence is in force): the
    streak is over, nothing held back is owed any more."""
    memory = state.notify
    for key in ("suppressed", "silenced"):
        memory.pop(key, None)
    memory["failure_notified"] = False
    memory.pop("last_failure_sent", None)


def record_undelivered(state: JobState, decision: Decision) -> None:
    """Sending failed: a failure counts as held back (told next time); nothing is marked handled."""
    memory = state.notify
    if decision.kind == "failure":
        memory["suppressed"] = int(memory.get("suppressed", 0)) + 1
    memory["undelivered"] = int(memory.get("undelivered", 0)) + 1


def count_streak(state: JobState, failed: bool) -> None:
    """The failures since the last success, as the runner saw them (a recovery message says it)."""
    memory = state.notify
    memory["streak_failures"] = int(memory.get("streak_failures", 0)) + 1 if failed else 0
