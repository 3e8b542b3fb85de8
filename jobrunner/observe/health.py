"""``jobrunner health``: is every job's timer armed, did its last run work, is it on time?

A Nagios/Icinga plugin (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), replacing
check-timer-health.sh. Output: ``STATUS: summary | jobs=N ok=N warning=N critical=N unknown=N``,
then one line per job; ``--json`` prints one object with every fact instead.

Per job, the findings (the job's status is the worst of them):

- installed: a job whose units are not installed (systemd: ``<unit>.timer``, or the
  ``.service`` of an unscheduled job, not found, or the timer disabled and inactive; without
  systemd: no such unit file on ``$SYSTEMD_UNIT_PATH`` or systemd's unit directories, and no
  run recorded) is OK "not installed" and nothing more is judged, but a recorded last run
  that failed (a run by hand) is still WARNING. ``jobrunner health`` lists such jobs only
  with ``--all`` or when named, and counts them in the summary.
- timer (where systemd runs): not loaded (masked, bad-setting) or enabled but not active →
  CRITICAL. The service: not found → UNKNOWN; failed while the
  runner's state says success (SIGKILL, OOM: the runner could not record it) → WARNING.
- runner state: last outcome not success → WARNING; ``consecutive_failures >= --fail-threshold``
  (3) → CRITICAL; an unreadable state file → UNKNOWN.
- staleness (scheduled jobs): ``interval`` = the longest gap between the next 9 elapses of the
  schedule (``systemd-analyze calendar``) + jitter. The schedule is the timer's own
  ``OnCalendar=`` and ``RandomizedDelaySec=`` where systemd has the timer loaded (a drop-in
  may have moved it; a note says so), else the declaration's. ``stale_after = interval +
  grace + the longest recent duration`` (grace: ``--grace`` or max(10% of interval, 5min)). No success for
  ``stale_after`` → WARNING, for ``2 × stale_after`` → CRITICAL. A job that never succeeded
  is measured from its timer's activation; without that (no systemd, its unit file installed)
  it is WARNING "never ran".

- conditions (``condition`` and ``conditions`` in ``--json``; docs/alerting.md): **late** (a
  scheduled job whose last *start* is older than ``stale_after``: the timer did not fire),
  **running_long** (running past its ``Alert(max_duration=)``) → WARNING; **failing** (the
  last run failed; ``last success`` older than ``stale_after`` while it keeps starting),
  **flapping** (``alerting.FLAP_CHANGES`` changes between success and failure in the last
  ``FLAP_WINDOW`` runs of its history) → WARNING; **duration** (the last run's duration was
  out of the ordinary) → WARNING; **silenced** (``jobrunner silence``, from a state directory
  that belongs to the job's user): a silenced job is at most WARNING, and a silenced job with
  a problem is WARNING, never OK.

Every finding names its condition (``JobHealth.find(status, reason, condition)``), those above
and ``unit_failed``, ``timer_inactive``, ``skipping``, ``never_ran``, ``not_installed``,
``unknown`` (docs/design.md "State, metrics, health" has the table). The checks of an installed
job are ``JUDGES``, a table of judges each taking one ``Judging`` context; ``judge_job`` runs
it. A new condition: its word in ``CONDITIONS``, a judge, a row of ``JUDGES``.

Without systemd (``/run/systemd/system`` absent: containers, CI) the timer and service
checks are skipped with the note "systemd not running: timer state unknown" and the verdict
comes from the state files alone. The overall status is the worst job's, ordered
CRITICAL > WARNING > UNKNOWN > OK (monitoring-plugins' ``max_state_alt``). Command-line
errors and an unknown JOB are UNKNOWN (3) too, as the plugin guidelines ask.

Imports nothing beyond the standard library until it runs. The command itself (arguments,
the plugin's text and JSON output) is ``jobrunner.cli.health``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from jobrunner.rules.alerting import (
    FLAP_HISTORY,
    alert_from_dict,
    is_flapping,
    silence_active,
    silence_text,
)
from jobrunner.rules.schedule import GRACE_FRACTION, ITERATIONS, MIN_GRACE, expected_interval, format_age, stale_after
from jobrunner.rules.skips import SKIPS_WITHOUT_SCHEDULE, describe_skipping
from jobrunner.rules.verdict import (
    CONDITIONS,
    CRITICAL,
    NAMES,
    OK,
    SEVERITY,
    UNKNOWN,
    WARNING,
    Finding,
    JobHealth,
    overall,
    worst,
)
from jobrunner.store.history import read_history
from jobrunner.store.state import StateStore, default_state_dir
from jobrunner.systemd import systemctl  # show_units by its module: tests/test_health.py replaces it
from jobrunner.systemd.calendar import normalize
from jobrunner.systemd.systemctl import SystemctlError, systemd_running, timestamp
from jobrunner.timespan import parse_timespan

if TYPE_CHECKING:
    from jobrunner.declaration import Alert
    from jobrunner.store.state import JobState


class JudgedJob(Protocol):
    """What health reads of a job: its name, unit and schedule (and jitter, for the staleness
    limit). ``jobrunner health`` passes declared ``Job``s; the health tests job-likes with these
    alone, so the checks ask for no more."""

    @property
    def name(self) -> str: ...

    @property
    def unit(self) -> str: ...

    @property
    def schedule(self) -> Sequence[str]: ...

    @property
    def jitter(self) -> float | None: ...


__all__ = [
    "CRITICAL",
    "GRACE_FRACTION",
    "ITERATIONS",
    "MIN_GRACE",
    "NAMES",
    "OK",
    "SEVERITY",
    "CONDITIONS",
    "UNKNOWN",
    "WARNING",
    "JUDGES",
    "Finding",
    "Judge",
    "JobHealth",
    "Judging",
    "Options",
    "check_jobs",
    "judge_job",
    "expected_interval",
    "format_age",
    "overall",
    "stale_after",
    "worst",
]

NO_SYSTEMD = "systemd not running: timer state unknown"
TIMER_PROPS = (
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "LastTriggerUSec",
    "NextElapseUSecRealtime",
    "ActiveEnterTimestamp",
    "TimersCalendar",
    "RandomizedDelayUSec",
    "UnitFileState",
)
UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
NOT_INSTALLED = "not installed"
SERVICE_PROPS = ("LoadState", "ActiveState", "SubState", "Result", "ExecMainStatus", "ExecMainExitTimestamp")


def _unit_dirs() -> list[str]:
    """systemd's unit search path: ``$SYSTEMD_UNIT_PATH`` (a trailing ':' adds the defaults)."""
    import os

    value = os.environ.get("SYSTEMD_UNIT_PATH")
    if value is None:
        return list(UNIT_DIRS)
    dirs = [d for d in value.split(":") if d]
    return dirs + list(UNIT_DIRS) if value.endswith(":") else dirs


def _unit_file_exists(names: Sequence[str]) -> bool:
    import os

    return any(os.path.exists(os.path.join(d, n)) for d in _unit_dirs() for n in names)


def _install_gap(
    job: JudgedJob, units: dict[str, dict[str, str]] | None, systemd: bool, state: JobState | None
) -> str | None:
    """Why ``job`` counts as not installed (its unit absent or disabled), or None."""
    kind = "timer" if job.schedule else "service"
    unit = f"{job.unit}.{kind}"
    if systemd:
        if units is None:
            return None  # systemctl failed: its error says it
        found = units.get(unit) or {}
        if found.get("LoadState") == "not-found":
            return f"{NOT_INSTALLED} (no {unit}: jobrunner units install)"
        if kind == "timer" and found.get("UnitFileState") == "disabled" and found.get("ActiveState") != "active":
            return f"{NOT_INSTALLED} ({unit} is not enabled: systemctl enable --now {unit})"
        return None
    if state is not None and (state.last_start or state.skips.last_skipped or state.last_outcome):
        return None  # it runs, so something runs it: judged as before
    base, at, _ = job.unit.partition("@")
    names = [unit] + ([f"{base}@.{kind}"] if at else [])
    if _unit_file_exists(names):
        return None
    return f"{NOT_INSTALLED} (no {unit} in {', '.join(_unit_dirs()[:1])} …: jobrunner units install)"


@dataclass
class Options:
    """How ``check_jobs`` was asked to judge: ``--grace``, ``--fail-threshold``, the state root."""

    grace: float | None = None
    fail_threshold: int = 3
    state_root: str | None = None


@dataclass
class Judging:
    """What a judge reads, one job's: the verdict so far (``health``, whose ``facts`` it adds
    to), the job, its state (None: unreadable), the time, the options, systemd's view of its
    units; and what one judge hands a later one (the timer's activation, the staleness finding)."""

    health: JobHealth
    job: JudgedJob
    state: JobState | None
    now: float
    options: Options = field(default_factory=Options)
    timer: dict[str, str] | None = None
    service: dict[str, str] | None = None
    timer_since: float | None = None
    staleness: Finding | None = None

    @property
    def facts(self) -> dict[str, Any]:
        return self.health.facts

    @property
    def known(self) -> JobState:
        """The state, for a judge of the table that needs it (never run on an unreadable one)."""
        assert self.state is not None, "a judge that needs the state ran without it"
        return self.state


class Judge(NamedTuple):
    """A row of ``JUDGES``: the judge's name, the function (it calls ``health.find``), and
    whether it needs a readable state (an unreadable state is UNKNOWN: judging "never ran" from
    nothing would mislead)."""

    name: str
    judge: Callable[[Judging], None]
    needs_state: bool = True


def check_jobs(
    jobs: Sequence[JudgedJob],
    *,
    now: float | None = None,
    grace: float | None = None,
    fail_threshold: int = 3,
    state_root: str | None = None,
    systemd: bool | None = None,
) -> list[JobHealth]:
    """Judge each job (a declared ``Job``); see the module docstring for the rules."""
    _INTERVALS.clear()  # one check's memo (its ``now``), never a long-lived process's

    now = time.time() if now is None else now
    options = Options(grace, fail_threshold, state_root)
    systemd = systemd_running() if systemd is None else systemd
    units: dict[str, dict[str, str]] | None = None
    systemctl_error = None
    if systemd:
        names = [f"{j.unit}.{kind}" for j in jobs for kind in ("timer", "service")]
        try:
            units = systemctl.show_units(names, sorted(set(TIMER_PROPS + SERVICE_PROPS)))
        except SystemctlError as exc:
            systemctl_error = str(exc)
    results = []
    for job in jobs:
        health = JobHealth(job.name, job.unit, facts={"schedule": list(job.schedule), "systemd": systemd})
        try:
            state: JobState | None = StateStore(job.name, state_root).load()
        except Exception as exc:
            state = None
            health.find(UNKNOWN, str(exc), "unknown")
        if systemctl_error:
            health.find(UNKNOWN, systemctl_error, "unknown")
        gap = None if systemctl_error else _install_gap(job, units, systemd, state)
        health.facts["installed"] = gap is None
        if gap is not None:
            health.find(OK, gap, "not_installed")
            if not systemd:
                health.notes.append(NO_SYSTEMD)
            if state is not None and state.last_outcome not in (None, "success"):
                judge_state(Judging(health, job, state, now, options))  # a run by hand that failed
            results.append(health)
            continue
        judge_job(
            Judging(
                health,
                job,
                state,
                now,
                options,
                timer=units.get(f"{job.unit}.timer") if units is not None and job.schedule else None,
                service=units.get(f"{job.unit}.service") if units is not None else None,
            )
        )
        results.append(health)
    return results


def judge_job(c: Judging) -> None:
    """Run the table of judges over one installed job, in order."""
    if not c.facts["systemd"]:
        c.health.notes.append(NO_SYSTEMD)
    for row in JUDGES:
        if c.state is not None or not row.needs_state:
            row.judge(c)


def judge_timer(c: Judging) -> None:
    """The timer: not loaded (masked, bad setting) or not active → CRITICAL ``timer_inactive``."""
    h, job, timer, now = c.health, c.job, c.timer, c.now
    if timer is None:
        return
    last_trigger = timestamp(timer.get("LastTriggerUSec"))
    next_elapse = timestamp(timer.get("NextElapseUSecRealtime"))
    active_since = timestamp(timer.get("ActiveEnterTimestamp"))
    h.facts["timer"] = timer_facts = {
        "unit": f"{job.unit}.timer",
        "load_state": timer.get("LoadState"),
        "active_state": timer.get("ActiveState"),
        "sub_state": timer.get("SubState"),
        "result": timer.get("Result"),
        "last_trigger": last_trigger,
        "next_elapse": next_elapse,
        "active_since": active_since,
        "calendar": timer_calendars(timer.get("TimersCalendar")),
        "randomized_delay_s": _seconds(timer.get("RandomizedDelayUSec")),
    }
    if timer_facts["load_state"] == "not-found":  # pragma: no cover - _install_gap took it
        h.find(UNKNOWN, f"{job.unit}.timer does not exist (units not installed?)", "not_installed")
    elif timer_facts["load_state"] != "loaded":
        h.find(CRITICAL, f"{job.unit}.timer is {timer_facts['load_state']}", "timer_inactive")
    elif timer_facts["active_state"] != "active":
        h.find(
            CRITICAL,
            f"{job.unit}.timer is {timer_facts['active_state']} ({timer_facts['sub_state']})",
            "timer_inactive",
        )
    else:
        c.timer_since = active_since
        if next_elapse:
            h.notes.append(f"next in {format_age(next_elapse - now)}")
        if last_trigger:
            h.notes.append(f"triggered {format_age(now - last_trigger)} ago")


def judge_service(c: Judging) -> None:
    """The service: not found → UNKNOWN ``not_installed``; failed while the runner's state says
    success (SIGKILL, OOM: the runner could not record it) → WARNING ``unit_failed``."""
    h, job, service, state = c.health, c.job, c.service, c.state
    if service is None:
        return
    h.facts["service"] = service_facts = {
        "unit": f"{job.unit}.service",
        "load_state": service.get("LoadState"),
        "active_state": service.get("ActiveState"),
        "sub_state": service.get("SubState"),
        "result": service.get("Result"),
        "exec_main_status": _int(service.get("ExecMainStatus")),
        "exec_main_exit": timestamp(service.get("ExecMainExitTimestamp")),
    }
    if service_facts["load_state"] == "not-found":
        h.find(UNKNOWN, f"{job.unit}.service does not exist (units not installed?)", "not_installed")
    elif service_facts["result"] not in ("success", "", None) and (
        state is None or state.last_outcome in (None, "success")
    ):
        h.find(
            WARNING,
            f"{job.unit}.service failed: Result={service_facts['result']}, "
            f"status {service_facts['exec_main_status']} (not recorded by the runner)",
            "unit_failed",
        )


def judge_state(c: Judging) -> None:
    """The runner's state: the last outcome not success → WARNING ``failing``, and CRITICAL
    from ``--fail-threshold`` failures in a row."""
    h, state, now, fail_threshold = c.health, c.known, c.now, c.options.fail_threshold
    keys = (
        "last_start",
        "last_finish",
        "last_outcome",
        "last_exit_code",
        "last_success",
        "last_failure",
        "last_duration_s",
        "last_error",
        "last_skipped",
        "running",
        "skipped_since",
        "consecutive_skips",
        "skip_holder",
    )
    h.facts["state"] = {k: state.value_of(k) for k in keys}
    h.facts["state"]["consecutive_failures"] = failures = state.consecutive_failures or 0
    h.facts["state"]["runs"] = state.runs
    outcome = state.last_outcome
    if outcome and outcome != "success":
        when = f" {format_age(now - state.last_finish)} ago" if state.last_finish else ""
        error = f": {state.last_error}" if state.last_error else ""
        h.find(WARNING, f"last run{when}: {outcome} (exit {state.last_exit_code}){error}", "failing")
    if failures >= fail_threshold:
        h.find(CRITICAL, f"{failures} consecutive failures (threshold {fail_threshold})", "failing")
    running = state.running
    if isinstance(running, dict) and running.get("since"):
        h.notes.append(f"running for {format_age(now - float(running['since']))}")


def judge_skips(c: Judging) -> None:
    """A job whose runs keep finding the lock held says so, with who holds it (``skipping``):
    a stale scheduled job carries it in its staleness finding; an unscheduled one warns after a
    few skips in a row; a foreign holder of its Redis lease warns at once."""
    h, job, state, now = c.health, c.job, c.known, c.now
    if not state.skips.skipped_since:
        return

    text = describe_skipping(state, now)
    holder = state.skips.skip_holder or {}
    if holder.get("foreign"):
        h.find(
            WARNING,
            f"{text}: its Redis lease is held by a foreign or stale holder {holder.get('lease_holder')!r}",
            "skipping",
        )
    h.facts["skipping"] = {
        "since": state.skips.skipped_since,
        "skips": state.skips.consecutive_skips,
        "holder": state.skips.skip_holder,
        "text": text,
    }
    if c.staleness is not None:
        h.amend(c.staleness, text, "skipping")
    elif not job.schedule and (state.skips.consecutive_skips or 0) >= SKIPS_WITHOUT_SCHEDULE:
        h.find(WARNING, text, "skipping")
    else:
        h.notes.append(text)


def _alert(c: Judging) -> Alert | None:
    """The rules the last run applied (kept in its state), else the declaration's."""
    state = c.known
    alert = alert_from_dict(state.alerting.alert) if state.alerting.alert else getattr(c.job, "alert", None)
    c.facts["alert"] = alert.to_dict() if alert is not None else None
    return alert


def judge_running_long(c: Judging) -> None:
    """Running past its ``Alert(max_duration=)`` → WARNING ``running_long``."""
    alert, running, now = _alert(c), c.known.running, c.now
    if alert is not None and alert.max_seconds and isinstance(running, dict):
        since = running.get("since")
        if isinstance(since, (int, float)) and now - float(since) > alert.max_seconds:
            c.health.find(
                WARNING,
                f"running long: started {format_age(now - float(since))} ago, "
                f"over its maximum of {format_age(alert.max_seconds)}",
                "running_long",
            )


def judge_duration(c: Judging) -> None:
    """The last run's duration was out of the ordinary → WARNING ``duration``."""
    anomaly = c.known.alerting.anomaly
    if isinstance(anomaly, dict) and isinstance(anomaly.get("text"), str):
        c.health.find(WARNING, f"last run {anomaly['text']}", "duration")


def judge_flapping(c: Judging) -> None:
    """Changes between success and failure in the last runs of its history → WARNING ``flapping``."""
    root = c.options.state_root or default_state_dir()
    flap = is_flapping(read_history(root, c.job.name, last=FLAP_HISTORY).records)
    if flap is not None:
        changes, runs = flap
        c.health.find(
            WARNING, f"flapping: {changes} changes between success and failure in the last {runs} runs", "flapping"
        )


def judge_silence(c: Judging) -> None:
    """Last: a silence in force (from a state directory of the job's user) caps what was found
    at WARNING, and is never OK with a problem (``silenced``)."""
    silence = silence_active(c.known, c.now)
    if silence is None:
        return
    trusted, why = _silence_trusted(c.job, c.options.state_root)
    if not trusted:
        c.health.notes.append(f"a silence is recorded but ignored: {why}")
        return
    c.facts["silence"] = silence
    c.health.silence(silence_text(silence, c.now))


def _silence_trusted(job: JudgedJob, root: str | None) -> tuple[bool, str]:
    """A silence counts only from a state directory that belongs to the job's user or root:
    another user's planted silence must not quiet a check."""
    import pwd

    try:
        owner = StateStore(job.name, root).owner()
    except OSError as exc:
        return False, str(exc)
    user = getattr(job, "user", None)
    try:
        expected = pwd.getpwnam(user).pw_uid if user else 0
    except KeyError:
        return False, f"user {user!r} does not exist"
    if owner not in (0, expected):
        return False, f"its state directory belongs to uid {owner}, not {user or 'root'}"
    return True, ""


def timer_calendars(value: str | None) -> list[str]:
    """The ``OnCalendar=`` expressions in force, from ``systemctl show -p TimersCalendar``
    (``{ OnCalendar=*-*-* 02:15:00 ; next_elapse=… }``, one line per expression)."""
    return re.findall(r"OnCalendar=(.*?) ; next_elapse=", value or "")


def _seconds(span: str | None) -> float | None:
    try:
        return parse_timespan(span) if span else None
    except ValueError:
        return None


def _schedule(h: JobHealth, job: JudgedJob) -> tuple[Sequence[str], float | None]:
    """What staleness is measured against: the timer's own ``OnCalendar=`` when systemd has
    it loaded (an admin's drop-in may have moved the schedule), else the declaration."""
    timer = h.facts.get("timer") or {}
    if not timer.get("calendar"):
        h.facts["schedule_source"] = "declaration"
        return job.schedule, job.jitter
    h.facts["schedule_source"] = "timer"
    calendars, jitter = timer["calendar"], timer.get("randomized_delay_s")

    try:
        declared = sorted(normalize(spec) for spec in job.schedule)
    except Exception:
        declared = None
    if declared is not None and declared != sorted(calendars):
        h.notes.append(
            f"schedule from {job.unit}.timer ({', '.join(calendars)}), not the declaration "
            f"({', '.join(job.schedule)}): a drop-in overrides it"
        )
    return calendars, jitter


_INTERVALS: dict[tuple[Any, ...], float | None | Exception] = {}


def judge_staleness(c: Judging) -> None:
    """A scheduled job with no success for its staleness limit (``failing``), or not even a
    start (``late``: the timer did not fire); WARNING after the limit, CRITICAL after twice it."""
    h, job, state, now, timer_since = c.health, c.job, c.known, c.now, c.timer_since
    if not job.schedule:
        return
    schedule, jitter = _schedule(h, job)
    # The instances of a job share its schedule: one systemd-analyze per schedule, not per row.
    key = (tuple([schedule] if isinstance(schedule, str) else schedule), jitter, now)
    if key not in _INTERVALS:
        try:
            _INTERVALS[key] = expected_interval(schedule, jitter, base=now)
        except Exception as exc:  # CalendarError: no systemd-analyze, or a schedule it rejects
            _INTERVALS[key] = exc
    interval = _INTERVALS[key]
    if isinstance(interval, Exception):
        h.find(UNKNOWN, f"cannot compute the expected interval: {interval}", "unknown")
        return
    if interval is None:
        h.notes.append("schedule does not repeat: staleness not checked")
        return
    limit = stale_after(interval, c.options.grace, state.durations_s)
    h.facts.update(expected_interval_s=interval, stale_after_s=limit, critical_after_s=2 * limit)
    last_success = state.last_success
    started = max(float(state.last_start or 0), float(state.skips.last_skipped or 0))
    condition = "failing"
    if started and now - started > limit:
        # Not even started within the limit: the timer did not fire (or the machine was off).
        age = now - started
        h.facts["start_age_s"] = age
        text = f"late: last start {format_age(age)} ago"
        condition = "late"
    elif last_success:
        age = now - float(last_success)
        h.facts["success_age_s"] = age
        text = f"last success {format_age(age)} ago"
    elif timer_since:
        age = now - timer_since
        text = f"never succeeded; timer active for {format_age(age)}"
        condition = "late" if not started else "failing"
    elif h.facts["systemd"]:
        return  # the timer's own finding (missing, inactive) already says what is wrong
    elif not state.last_start:
        # Without systemd there is no timer to measure from: installed (its unit file), no run.
        h.find(WARNING, "never ran", "never_ran")
        return
    else:
        c.staleness = h.find(WARNING, "never succeeded", "failing")
        return
    expected = f"expected every {format_age(interval)}"
    if age > 2 * limit:
        c.staleness = h.find(CRITICAL, f"{text} ({expected}, critical after {format_age(2 * limit)})", condition)
    elif age > limit:
        c.staleness = h.find(WARNING, f"{text} ({expected}, warning after {format_age(limit)})", condition)
    else:
        h.notes.insert(0, text)


# The checks of an installed job, in order: a new condition is one judge here (and its word in
# ``jobrunner.rules.verdict.CONDITIONS``). The skips read the staleness finding; the silence,
# last, caps what the others found.
JUDGES: tuple[Judge, ...] = (
    Judge("timer", judge_timer, needs_state=False),
    Judge("service", judge_service, needs_state=False),
    Judge("state", judge_state),
    Judge("staleness", judge_staleness),
    Judge("skips", judge_skips),
    Judge("running_long", judge_running_long),
    Judge("duration", judge_duration),
    Judge("flapping", judge_flapping),
    Judge("silence", judge_silence),
)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None
