"""When a job is due, and how an age is said: the schedule arithmetic every view shares.

Below health, alerting, skips, metrics, the fleet and the notifications, which all judge a
job against its schedule: kept here, with no I/O of its own beyond ``systemd-analyze
calendar`` (through ``systemd.calendar``), so none of them has to import another to get it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["GRACE_FRACTION", "ITERATIONS", "MIN_GRACE", "expected_interval", "format_age", "stale_after"]

ITERATIONS = 8  # gaps looked at: "Mon..Fri" needs a week of elapses to see the weekend
MIN_GRACE = 300.0
GRACE_FRACTION = 0.10


def expected_interval(
    schedule: str | Sequence[str], jitter: float | None = None, *, base: float | None = None
) -> float | None:
    """Longest gap between consecutive elapses over the next ``ITERATIONS``, plus jitter (seconds).

    None for a schedule that elapses at most once more. ``CalendarError`` when systemd-analyze
    is missing or rejects it."""
    from jobrunner.systemd.calendar import calendar_iterations

    times = calendar_iterations(schedule, ITERATIONS + 1, base=base)
    if len(times) < 2:
        return None
    gap = max((b - a).total_seconds() for a, b in zip(times, times[1:], strict=False))
    return gap + (jitter or 0.0)


def stale_after(interval: float, grace: float | None = None, durations: Sequence[float] = ()) -> float:
    """Seconds without a success after which a job is stale (WARNING; twice that: CRITICAL)."""
    if grace is None:
        grace = max(GRACE_FRACTION * interval, MIN_GRACE)
    return interval + grace + max((float(d) for d in durations), default=0.0)


def format_age(seconds: float) -> str:
    """``9000`` → ``"2h 30min"``: at most two units, whole seconds."""
    from jobrunner.timespan import format_timespan

    if not math.isfinite(seconds):  # a NaN or infinity read from a file another user writes
        return "?"
    seconds = min(abs(seconds), 100 * 365 * 86400.0)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    return " ".join(format_timespan(round(seconds)).split()[:2])
