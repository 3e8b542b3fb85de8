"""What was notified, per kind, and the one rule of when to notify again (``due``).

Every notifier keeps the same memory of what it sent, keyed by kind (``failure``, ``skip``,
``anomaly:too_slow``, ``running_long``, a late job's name …): ``Sent(first, last, held,
since)``, when the episode's first message went out, when the last one did, how many were
held back since, and (where an episode has one) what identifies it (the late watcher: the
last start the job is late after). ``due(memory, kind, now, window)`` is the one decision:
the first message of an episode always goes; after that at most once per ``window``
measured from the **last** send (never from the episode's start: a job late for days is
told once per window, not at every check). ``sent``, ``held`` and ``end`` keep the record.

Where the memory lives is the notifier's: a job's state carries it under ``notify.sent``
(the failure throttle, the skip notification, the duration anomalies); the running-long
warning keeps it for its run only (once a run: an infinite window); the late watcher in its
own root-owned file (``observe/late.py``, docs/security.md). Records read from a file another
user can write are checked by ``jobrunner.validate.sent_entries`` (finite times between the
epoch and 2200, bounded counts).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from jobrunner import validate
from jobrunner._datatype import datatype

__all__ = ["KINDS", "Sent", "due", "end", "held", "load", "sent", "to_json"]

# The kinds the runner's notifiers use (an anomaly's key is ``anomaly:<its kind>``; the late
# watcher keys its records by job name).
KINDS = ("failure", "recovery", "skip", "anomaly", "running_long", "late")


@datatype(frozen=True)
class Sent:
    """What was sent of one kind in its current episode. ``first``/``last``: when the first and
    the latest message went out; ``held``: how many ``due`` held back since the latest;
    ``since``: what identifies the episode, where it has one (``None``: not recorded)."""

    first: float
    last: float
    held: int = 0
    since: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"first": self.first, "last": self.last}
        if self.held:
            out["held"] = self.held
        if self.since is not None:
            out["since"] = self.since
        return out


Memory = MutableMapping[str, Sent]


def due(memory: Mapping[str, Sent], kind: str, now: float, window: float) -> bool:
    """Whether a message of ``kind`` may go now: the first of an episode (nothing recorded)
    always; then once ``window`` seconds have passed since the last send."""
    told = memory.get(kind)
    return told is None or now - told.last >= window


def sent(memory: Memory, kind: str, now: float, since: float | None = None) -> None:
    """A message of ``kind`` went out at ``now`` (the episode's first is kept; a different
    ``since`` is a new episode)."""
    told = memory.get(kind)
    if told is None or (since is not None and told.since != since):
        memory[kind] = Sent(now, now, 0, since)
    else:
        memory[kind] = Sent(told.first, now, 0, told.since if since is None else since)


def held(memory: Memory, kind: str) -> None:
    """``due`` held a message of ``kind`` back (counted on its record, when there is one)."""
    told = memory.get(kind)
    if told is not None:
        memory[kind] = Sent(told.first, told.last, told.held + 1, told.since)


def end(memory: Memory, kind: str) -> None:
    """The episode of ``kind`` is over: the next message is news again."""
    memory.pop(kind, None)


def load(data: Any) -> dict[str, Sent]:
    """The records in ``data`` (the JSON object under ``notify.sent``, or a late memory file's
    entries), checked by ``validate.sent_entries``: an entry out of range is forgotten, alone."""
    return {k: Sent(**v) for k, v in validate.sent_entries(data).items()}


def to_json(memory: Mapping[str, Sent]) -> dict[str, dict[str, Any]]:
    return {k: memory[k].to_json() for k in sorted(memory)}
