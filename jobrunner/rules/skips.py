"""A job kept from running is never silent: skips past what the schedule allows are a warning.

A skip (the lock was busy) is a success for systemd (exit 75): the usual overlap of a slow run
with the next tick. But a lock that stays held — a hung run, or another user holding the file —
would keep a nightly backup from ever running, and every tick would "succeed". So after each
skip the runner looks at how long the job has been skipping (``skipped_since`` in its state):

- scheduled jobs: longer than the staleness limit ``health`` uses (the schedule's longest gap
  + jitter + grace + the longest recent run), so the two agree on "too long";
- unscheduled jobs (run by hand or by other tools): ``SKIPS_WITHOUT_SCHEDULE`` skips in a row;

and then logs ``lock.skipping`` at warning with since when and who holds the lock (PID and
user, from ``/proc/locks``), and sets ``run.skipping``, for which the notification hook
(``jobrunner.notify``, when notifications are configured) sends ``skipping_message``, at most
once per ``$JOBRUNNER_NOTIFY_REPEAT``. ``health`` says the same ("skipped since …, held by PID
… (user …)") and the metrics carry ``jobrunner_skipping_since_timestamp_seconds``.

Only the skip path imports this module; ``systemd-analyze`` runs only once a job has skipped.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobrunner.declaration import Job
    from jobrunner.run.model import Run
    from jobrunner.store.state import JobState

__all__ = ["SKIPS_WITHOUT_SCHEDULE", "check_skipping", "describe_skipping", "skip_limit", "skipping_message"]

SKIPS_WITHOUT_SCHEDULE = 3


def skip_limit(job: Job, state: JobState, now: float | None = None) -> float | None:
    """Seconds of skipping the schedule allows (``None``: unscheduled, or not computable)."""
    if not job.schedule:
        return None
    from jobrunner.rules.schedule import expected_interval, stale_after

    try:
        interval = expected_interval(job.schedule, job.jitter, base=now)
    except Exception:
        return None
    if interval is None:
        return None
    return stale_after(interval, None, state.durations_s)


def describe_skipping(state: JobState, now: float) -> str:
    """``skipped since 2026-12-01 02:15 (3h 5min), held by PID 812 (user www-data)``."""
    from jobrunner.rules.schedule import format_age

    since = float(state.skips.skipped_since or now)
    text = f"skipped since {time.strftime('%Y-%m-%d %H:%M', time.localtime(since))} ({format_age(now - since)})"
    holder = state.skips.skip_holder or {}
    if holder.get("pid"):
        who = f" (user {holder['user']})" if holder.get("user") else ""
        text += f", held by PID {holder['pid']}{who}"
    return text


def overdue(job: Job, state: JobState, now: float) -> tuple[bool, float | None]:
    """Whether the job has been skipping for longer than allowed, and the limit used."""
    since = state.skips.skipped_since
    if not since:
        return False, None
    limit = skip_limit(job, state, now)
    if limit is None:
        return (state.skips.consecutive_skips or 0) >= SKIPS_WITHOUT_SCHEDULE, None
    return now - float(since) > limit, limit


def check_skipping(run: Run, now: float | None = None) -> None:
    """After a skip (``run.state`` has it folded in): when skipping has gone on too long, log
    ``lock.skipping`` and set ``run.skipping`` to what it says, for the notification hook."""
    now = time.time() if now is None else now
    state = run.state
    late, limit = overdue(run.job, state, now)
    if not late:
        return
    holder = state.skips.skip_holder or {}
    run.skipping = text = describe_skipping(state, now)
    run.log.warning(
        "lock.skipping",
        since=state.skips.skipped_since,
        skips=state.skips.consecutive_skips,
        limit_s=round(limit, 3) if limit is not None else None,
        holder_pid=holder.get("pid"),
        holder_user=holder.get("user"),
        reason=f"{run.job.name} {text}",
    )


def skipping_message(job: Job, host: str, text: str, run_id: str) -> tuple[str, str]:
    """Title and body of the notification that a job has been kept from running."""
    title = f"⚠ {job.name} on {host} is not running: {text}"
    body = "\n".join(
        [
            f"Job {job.name} on {host} has not run: every run since then found its lock held.",
            f"{text}.",
            "A run still holding it may be hung (systemctl status), or another process holds the lock file.",
            f"run: {run_id}",
        ]
    )
    return title, body
