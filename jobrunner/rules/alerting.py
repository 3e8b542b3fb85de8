"""The alerting rules (docs/alerting.md): when a failure is due a notification, when a silence
holds it back, which durations are out of the ordinary, what "flapping" is.

Pure functions over the job's ``JobState`` and its run history, shared by the runner's
notification hook, ``jobrunner alert`` (``alert-failure@``) and ``jobrunner health``, so the
three judge a job by the same rules. The declaration is ``jobrunner.Alert``; a host overrides
it with ``$JOBRUNNER_ALERT_<JOB>`` (``after=3, min_duration=30s``), read when the job runs
(``effective_alert``) and recorded in the state (``JobState.alerting.alert``) for the readers that
cannot import the job.

History is read only when a rule needs it (a failure rate, ``slower_than_p95``, flapping),
never on the path of a run that needs none of them. Standard library only.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobrunner._datatype import datatype, replace
from jobrunner.declaration import Alert, alert_variable
from jobrunner.errors import ConfigError

if TYPE_CHECKING:
    from jobrunner.declaration import Job
    from jobrunner.store.history import RunRecord
    from jobrunner.store.state import JobState

__all__ = [
    "BASELINE_RUNS",
    "FLAP_CHANGES",
    "FLAP_HISTORY",
    "FLAP_WINDOW",
    "MIN_BASELINE",
    "Anomaly",
    "alert_from_dict",
    "duration_anomaly",
    "effective_alert",
    "failure_due",
    "flapping",
    "is_flapping",
    "parse_override",
    "with_alert",
    "silence_active",
    "silence_text",
]

MIN_BASELINE = 10  # successful runs needed before "slower than usual" is judged
BASELINE_RUNS = 50  # the recent successful runs the p95 is taken over
FLAP_WINDOW = 10  # the recent runs flapping is judged over
FLAP_CHANGES = 4  # changes between success and failure among them that make a job flapping
FLAP_HISTORY = FLAP_WINDOW * 2  # the newest history records read to find FLAP_WINDOW runs that ran
_FIELDS = ("after", "rate", "over", "min_duration", "max_duration", "slower_than_p95")


def parse_override(base: Alert | None, text: str, *, where: str) -> Alert | None:
    """``base`` with the fields of ``text`` (``after=3, min_duration=30s``; empty: ``base``).
    ``ConfigError`` naming ``where`` and the field for anything wrong."""
    text = text.strip()
    if not text:
        return base
    if text.lower() in ("off", "none"):
        return None
    changes: dict[str, Any] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in _FIELDS:
            raise ConfigError(f"{where}: {part.strip()!r}: use FIELD=VALUE with FIELD one of {', '.join(_FIELDS)}")
        if not value or value.lower() == "none":
            changes[key] = None
        elif key in ("after", "over"):
            try:
                changes[key] = int(value)
            except ValueError:
                raise ConfigError(f"{where}: {key}={value!r}: must be a whole number") from None
        elif key == "slower_than_p95":
            try:
                changes[key] = float(value)
            except ValueError:
                raise ConfigError(f"{where}: {key}={value!r}: must be a number") from None
        else:
            changes[key] = value
    try:
        base = base or Alert()
        return replace(base, **changes).check()
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def with_alert(job: Job, alert: Alert | None) -> Job:
    """``job`` (a declared ``Job``, a frozen record) with ``alert`` in place of its own."""
    return replace(job, alert=alert)


def effective_alert(job: Job, env: Mapping[str, str] | None = None) -> Alert | None:
    """The job's ``alert=`` with ``$JOBRUNNER_ALERT_<JOB>`` applied (``ConfigError``, exit 78,
    naming the job and the field when the variable is wrong)."""
    env = os.environ if env is None else env
    variable = alert_variable(job.name)
    raw = env.get(variable)
    if raw is None:
        return job.alert
    return parse_override(job.alert, raw, where=f"job {job.name!r}: {variable}")


def alert_from_dict(record: Any) -> Alert | None:
    """The rules a run recorded in the state (``Alert.to_dict()``), or ``None`` when there are
    none or they do not read as rules (a state file is never trusted to be well formed)."""
    if not isinstance(record, dict):
        return None
    try:
        return Alert(
            after=int(record.get("after", 1)),
            over=int(record.get("over", 10)),
            rate=record.get("rate"),
            min_duration=record.get("min_duration_s"),
            max_duration=record.get("max_duration_s"),
            slower_than_p95=record.get("slower_than_p95"),
        ).check()
    except (ValueError, TypeError):
        return None


def failure_due(
    alert: Alert | None,
    *,
    failures: int,
    recent: Callable[[int], Sequence[RunRecord]] | None = None,
    extra_failure: bool = False,
) -> tuple[bool, str]:
    """Whether the failure streak (``failures`` in a row, this one included) calls for a
    notification under ``alert``, and why (``"3 failures in a row"``, ``"4 of the last 10
    runs failed"``, or why not). ``recent(n)`` gives the newest ``n`` runs of the history
    (read only for a rate rule); ``extra_failure``: this failure is not in it yet."""
    if alert is None or failures >= alert.after:
        return True, f"{failures} failure{'s' if failures != 1 else ''} in a row" if failures > 1 else ""
    if alert.rate_fraction is not None and recent is not None:
        ran = [r for r in recent(alert.over * 3) if r.outcome != "skipped"]
        outcomes = [r.failed for r in ran]
        if extra_failure:
            outcomes.append(True)
        window = outcomes[-alert.over :]
        need = math.ceil(alert.rate_fraction * alert.over - 1e-9)
        failed = sum(window)
        if failed >= need:
            return True, f"{failed} of the last {len(window)} runs failed (rate {alert.rate_fraction:.0%})"
    return False, f"{failures} of {alert.after} failures in a row"


def silence_active(state: JobState, now: float | None = None) -> dict[str, Any] | None:
    """The job's silence when it is in force, else ``None``."""
    silence = state.silencing.silence
    now = time.time() if now is None else now
    if not isinstance(silence, dict):
        return None
    until = silence.get("until")
    if isinstance(until, bool) or not isinstance(until, (int, float)) or until <= now:
        return None
    return silence


def silence_text(silence: Mapping[str, Any], now: float | None = None) -> str:
    """``silenced for 1h 59min more by alice: migrating``."""
    from jobrunner.rules.schedule import format_age

    now = time.time() if now is None else now
    left = float(silence.get("until", now)) - now
    by = silence.get("by") or "?"
    reason = silence.get("reason")
    return f"silenced for {format_age(left)} more by {by}" + (f": {reason}" if reason else "")


@datatype(frozen=True)
class Anomaly:
    """A successful run whose duration is out of the ordinary."""

    kind: str  # too_short, too_slow, slower_than_usual
    duration_s: float
    limit_s: float
    text: str

    def to_dict(self, run_id: str, now: float) -> dict[str, Any]:
        """What the state keeps as ``anomaly`` (the last run's, until a run is ordinary again)."""
        return {
            "kind": self.kind,
            "duration_s": round(self.duration_s, 3),
            "limit_s": round(self.limit_s, 3),
            "text": self.text,
            "run_id": run_id,
            "at": now,
        }


def duration_anomaly(
    alert: Alert, duration: float, baseline: Callable[[], Sequence[float]] | None = None
) -> Anomaly | None:
    """What is out of the ordinary about a successful run of ``duration`` seconds, if anything.
    ``baseline()`` gives the durations of the recent successful runs (read only for
    ``slower_than_p95``)."""
    from jobrunner.rules.schedule import format_age

    if alert.min_seconds and duration < alert.min_seconds:
        return Anomaly(
            "too_short",
            duration,
            alert.min_seconds,
            f"finished in {format_age(duration)}, under its minimum of {format_age(alert.min_seconds)}",
        )
    if alert.max_seconds and duration > alert.max_seconds:
        return Anomaly(
            "too_slow",
            duration,
            alert.max_seconds,
            f"took {format_age(duration)}, over its maximum of {format_age(alert.max_seconds)}",
        )
    if alert.slower_than_p95 and baseline is not None:
        from jobrunner.store.history import percentile

        durations = list(baseline())[-BASELINE_RUNS:]
        p95 = percentile(durations, 0.95) if len(durations) >= MIN_BASELINE else None
        if p95 is not None and duration > alert.slower_than_p95 * p95:
            limit = alert.slower_than_p95 * p95
            return Anomaly(
                "slower_than_usual",
                duration,
                limit,
                f"took {format_age(duration)}, over {alert.slower_than_p95:g} × the p95 of its last "
                f"{len(durations)} successful runs ({format_age(p95)})",
            )
    return None


def flapping(records: Sequence[RunRecord]) -> tuple[int, int]:
    """Changes between success and failure among the newest ``FLAP_WINDOW`` runs that ran, and
    how many runs that is; a job is flapping at ``FLAP_CHANGES`` changes or more."""
    ran = [r.failed for r in records if r.outcome != "skipped"][-FLAP_WINDOW:]
    changes = sum(1 for a, b in zip(ran, ran[1:], strict=False) if a != b)
    return changes, len(ran)


def is_flapping(records: Sequence[RunRecord]) -> tuple[int, int] | None:
    """The one verdict of "flapping" (health's condition, the failure message's lead): the
    changes and runs of ``flapping`` when they reach ``FLAP_CHANGES``, else ``None``.
    ``records``: the newest ``FLAP_HISTORY`` of the job's history."""
    changes, runs = flapping(records)
    return (changes, runs) if changes >= FLAP_CHANGES else None
