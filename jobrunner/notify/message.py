"""What a notification says: a title short enough for a phone's lock screen, a body with
everything needed to act without logging in first. Every string passes the redactor."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from jobrunner.redact import default_redactor
from jobrunner.store.history import format_tail_line
from jobrunner.validate import printable

if TYPE_CHECKING:
    from jobrunner.declaration import Job
    from jobrunner.rules.alerting import Anomaly
    from jobrunner.run.model import RunResult

__all__ = [
    "anomaly_message",
    "failure_message",
    "recovery_message",
    "running_long_message",
    "tail_lines",
    "test_message",
]

MAX_TAIL = 20


class MessageJob(Protocol):
    """What a failure, recovery or anomaly message names of its job. The runner passes the
    declared ``Job``; the message tests pass a job-like with these three alone, so the messages
    ask for no more (``running_long_message`` also reads ``timeout``: it takes the ``Job``)."""

    @property
    def name(self) -> str: ...

    @property
    def ref(self) -> str: ...

    @property
    def unit(self) -> str: ...


_ICON = {"failure": "❌", "timeout": "⏱", "terminated": "🛑", "recovery": "✅", "alert": "💀", "test": "🔔"}
_VERB = {"failure": "failed", "timeout": "timed out", "terminated": "was terminated"}


def _redact(title: str, body: str) -> tuple[str, str]:
    """Secrets out, and control characters a job's text may carry shown, not sent (a title is
    one line; a body keeps its newlines)."""
    redactor = default_redactor()
    return printable(redactor.redact(title)), printable(redactor.redact(body), keep_newlines=True)


def tail_lines(events: Iterable[dict[str, Any]], limit: int = MAX_TAIL) -> list[str]:
    """The last ``limit`` log events as compact lines (``job.finished`` is left out: the body says it)."""
    lines = [format_tail_line(e) for e in events if e.get("event") not in ("job.finished", "notify.sent")]
    return lines[-limit:]


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _when(ts: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(ts)))
    except (TypeError, ValueError):
        return "?"


def failure_message(
    *,
    job: MessageJob,
    host: str,
    run_id: str,
    result: RunResult,
    error: str | None,
    tail: list[str],
    state: dict[str, Any],
    suppressed: int,
    condition: str = "failing",
    why: str = "",
    after_silence: bool = False,
) -> tuple[str, str]:
    """Title and body for a failed, timed-out or terminated run. ``condition`` is the condition
    the failure is part of (``failing``, ``flapping``, ``running_long``: words of
    ``rules/verdict.py`` ``CONDITIONS``), ``why`` the alerting rule that made it due (``3
    failures in a row``), ``after_silence`` that it is still failing when its silence ended."""
    outcome = result.outcome
    verb = _VERB.get(outcome, outcome)
    title = f"{_ICON.get(outcome, '❌')} {job.name} {verb} on {host} (exit {result.exit_code})"
    if after_silence:
        title = f"🔔 {job.name} still failing on {host} after its silence ended (exit {result.exit_code})"
    elif condition == "flapping":
        title = f"🔁 {job.name} {verb} on {host}, flapping (exit {result.exit_code})"
    lines = [
        f"Job {job.name} ({job.ref}) {verb} on {host}.",
        "",
        f"outcome:   {outcome}, exit code {result.exit_code}",
        f"duration:  {_duration(result.duration_s)}, attempts {result.attempts}",
        f"condition: {_AFTER_SILENCE if after_silence else _CONDITION.get(condition, condition)}",
    ]
    if why:
        lines.append(f"alert:     {why}")
    if error:
        lines.append(f"error:     {error}")
    streak = int(state.get("consecutive_failures", 0) or 0)
    if streak > 1:
        lines.append(
            f"failing:   {streak} runs in a row; last success {_when(state['last_success']) if state.get('last_success') else 'never'}"
        )
    if suppressed:
        lines.append(f"held back: {suppressed} earlier failure(s) were not notified (JOBRUNNER_NOTIFY_REPEAT)")
    lines += [f"run_id:    {run_id}", f"unit:      {job.unit}.service (journalctl _SYSTEMD_INVOCATION_ID={run_id})"]
    if tail:
        lines += ["", f"Last {len(tail)} log lines:", *tail]
    return _redact(title, "\n".join(lines))


_CONDITION = {
    "failing": "failing",
    "flapping": "flapping (alternating between success and failure)",
    "running_long": "running long (stopped at its timeout)",
}
_AFTER_SILENCE = "still failing: the failures during its silence were not sent"


def anomaly_message(*, job: MessageJob, host: str, run_id: str, anomaly: Anomaly) -> tuple[str, str]:
    """Title and body for a successful run whose duration is out of the ordinary."""
    what = {"too_short": "finished too fast", "too_slow": "ran too long", "slower_than_usual": "was slower than usual"}
    title = f"⚠️ {job.name} {what.get(anomaly.kind, anomaly.kind)} on {host} ({_duration(anomaly.duration_s)})"
    lines = [
        f"Job {job.name} ({job.ref}) succeeded on {host}, but {anomaly.text}.",
        "",
        f"duration:  {_duration(anomaly.duration_s)} (limit {_duration(anomaly.limit_s)})",
        "outcome:   success (a duration out of the ordinary does not change it)",
        f"run_id:    {run_id}",
        f"unit:      {job.unit}.service (journalctl _SYSTEMD_INVOCATION_ID={run_id})",
    ]
    return _redact(title, "\n".join(lines))


def running_long_message(*, job: Job, host: str, run_id: str, elapsed: str, limit: float) -> tuple[str, str]:
    """Title and body for a run still going past its ``Alert(max_duration=)``."""
    title = f"⏳ {job.name} still running on {host} after {elapsed} (maximum {_duration(limit)})"
    lines = [
        f"Job {job.name} ({job.ref}) has been running on {host} for {elapsed}, past its maximum of {_duration(limit)}.",
        "",
        f"timeout:   {_duration(job.timeout) if job.timeout else 'none'}",
        f"run_id:    {run_id}",
        f"unit:      {job.unit}.service (systemctl status {job.unit}.service; "
        f"journalctl _SYSTEMD_INVOCATION_ID={run_id})",
    ]
    return _redact(title, "\n".join(lines))


def recovery_message(
    *, job: MessageJob, host: str, run_id: str, result: RunResult, state: dict[str, Any], suppressed: int
) -> tuple[str, str]:
    """Title and body for the first success after notified failures."""
    title = f"{_ICON['recovery']} {job.name} recovered on {host}"
    failures = state.get("notify", {}).get("streak_failures")
    lines = [
        f"Job {job.name} ({job.ref}) succeeded again on {host}.",
        "",
        f"duration:  {_duration(result.duration_s)}, attempts {result.attempts}",
        f"run_id:    {run_id}",
    ]
    if failures:
        lines.append(f"after:     {failures} failed run(s)")
    if suppressed:
        lines.append(f"held back: {suppressed} failure(s) were not notified in between")
    return _redact(title, "\n".join(lines))


def test_message(host: str) -> tuple[str, str]:
    title = f"{_ICON['test']} jobrunner test from {host}"
    body = f"This is a test notification sent by 'jobrunner notify test' on {host} at {_when(time.time())}."
    return _redact(title, body)
