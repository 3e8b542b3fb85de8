"""What ``alert-failure@.service`` reports when a unit fails (the command is ``jobrunner alert
UNIT``, :mod:`jobrunner.cli.alert`; the decision is :func:`handle_failed_unit`, here).

It reports what the runner could not report itself (SIGKILL, OOM, a crash before the runtime
started, units that are not jobrunner jobs at all) from the unit's state (``systemctl show``)
and its journal for that invocation (jobrunner's JSON lines are formatted like the runner's
own tail). It stays silent when the runner already handled that invocation: the job's state file
under ``$JOBRUNNER_STATE_DIR`` whose ``notified_run_id`` is the unit's ``InvocationID``.

It runs as root and reads a file the job's user writes, so it trusts nothing in it to name a
path (docs/security.md): the job is the one the unit's own ``StateDirectory=jobrunner/<job>``
names (from ``systemctl show``), its state directory must belong to the unit's ``User=``
(root when none), files are opened relative to it without following symlinks, and what it
records goes back through the state store, which keeps the file the job user's own without
ever calling chown on a path.
For a jobrunner job it follows the same rules as the runner (``jobrunner/rules/alerting.py``): the
throttle (``JOBRUNNER_NOTIFY_REPEAT``), the job's ``Alert`` threshold as its last run recorded
it (a failure below it is counted, not sent), and its silence (counted, not sent; the first
failure after the silence ends is sent, once). A run the runner could not finish (killed,
crashed) is folded into the state as a failure, so its streak counts it.

Outcomes (the command's exit codes): sent or nothing to send (0), not delivered (1); a bad or
missing notification configuration raises ``ConfigError`` (78). When ``systemctl`` or
``journalctl`` cannot be used it still sends what it knows (the unit name, the host, why the
state is unknown).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobrunner.errors import ConfigError, UsageError
from jobrunner.instances import check_instance_name
from jobrunner.notify import notify_throttled
from jobrunner.redact import default_redactor
from jobrunner.rules.alerting import alert_from_dict, failure_due, silence_active
from jobrunner.run.hooks import notify_configured
from jobrunner.store.history import format_tail_line, read_history
from jobrunner.store.state import StateStore, default_state_dir
from jobrunner.systemd.systemctl import SystemctlError, show_units

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobrunner.notify.throttle import Decision
    from jobrunner.store.state import JobState

__all__ = [
    "ALREADY_REPORTED",
    "HELD",
    "NOT_DELIVERED",
    "SENT",
    "SILENCED",
    "Handled",
    "find_job_state",
    "handle_failed_unit",
    "job_of_unit",
    "journal_tail",
    "unit_state",
]

PROPS = (
    "Id",
    "Result",
    "ExecMainStatus",
    "ExecMainCode",
    "InvocationID",
    "ActiveState",
    "SubState",
    "StateDirectory",
    "User",
)
_CODES = {"1": "exited", "2": "killed", "3": "dumped core"}


# What handle_failed_unit did.
ALREADY_REPORTED = "already-reported"  # the runner notified about this invocation itself
HELD = "held"  # the throttle held it back (JOBRUNNER_NOTIFY_REPEAT), or the job's threshold
SILENCED = "silenced"  # the job is silenced (jobrunner silence)
SENT = "sent"
NOT_DELIVERED = "not-delivered"


@dataclass
class Handled:
    """The outcome of :func:`handle_failed_unit` for one failed unit."""

    outcome: str
    invocation: str = ""
    reason: str = ""  # why it was held back (below-threshold, repeat, silenced)
    matched: int = 0  # services it was sent to
    detail: str = ""  # why it was not delivered
    warnings: list[str] = field(default_factory=list)  # what could not be recorded in the job's state


def _run(argv: list[str], timeout: float = 15) -> tuple[str | None, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, errors="replace")
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{argv[0]}: {exc}"
    if proc.returncode != 0:
        return None, f"{argv[0]} exited {proc.returncode}: {proc.stderr.strip()[:200]}"
    return proc.stdout, ""


def unit_state(unit: str) -> tuple[dict[str, str], str]:
    """``systemctl show`` of the unit as a dict (``systemd.systemctl``, the one reader), and why
    it is empty when it is."""
    try:
        return show_units([unit], PROPS)[unit], ""
    except SystemctlError as exc:
        return {}, str(exc)


def journal_tail(unit: str, invocation: str, lines: int = 50) -> tuple[list[str], str]:
    """The unit's last journal lines (of that invocation when known), formatted."""
    match = [f"_SYSTEMD_INVOCATION_ID={invocation}"] if invocation else ["-u", unit]
    out, why = _run(["journalctl", "--no-pager", "-o", "json", "-n", str(lines), *match])
    if out is None:
        return [], why
    formatted: list[str] = []
    for raw in out.splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        message = record.get("MESSAGE", "")
        if isinstance(message, list):  # journald's binary-safe form
            message = bytes(message).decode("utf-8", "replace")
        formatted.append(_format(str(message), format_tail_line))
    return formatted, ""


def _format(message: str, format_tail_line: Callable[[dict[str, Any]], str]) -> str:
    if message.startswith("{"):
        try:
            event = json.loads(message)
        except ValueError:
            return message
        if isinstance(event, dict) and "event" in event:
            return format_tail_line(event)
    return message


def job_of_unit(props: dict[str, str]) -> str | None:
    """The job a unit runs, from the unit's own ``StateDirectory=jobrunner/<job>`` (root's unit
    file, never the job's state), or ``None`` for a unit that is not a jobrunner job.

    An instance's unit (``wp-backup@shop.example.service``, from a template whose
    ``StateDirectory=jobrunner/wp_backup@%i``) runs ``wp_backup@shop.example``: the entry whose
    instance is the unit's own (``Id=``), a valid instance name. A unit with more than one
    entry (``wp-backup`` also has the shared ``jobrunner/keys``; systemd lists them sorted)
    runs the one named like the unit (``wp_backup`` for ``wp-backup``), else the first."""
    unit_id = props.get("Id", "")
    unit_instance = _unit_instance(unit_id)
    candidates = []
    for entry in props.get("StateDirectory", "").split():
        parent, _, name = entry.partition("/")
        if parent != "jobrunner" or not name or "/" in name or name in (".", ".."):
            continue
        job, at, instance = name.partition("@")
        if at:
            try:
                check_instance_name(instance)
            except UsageError:
                continue
            if not job or (unit_id and instance != unit_instance):
                continue
            if unit_id:
                return name
        elif unit_instance is not None:
            continue
        candidates.append(name)
    if not candidates:
        return None
    base = unit_id.rsplit(".", 1)[0] if unit_id else ""
    named = [c for c in candidates if c.replace("_", "-") == base or c == base]
    return (named or candidates)[0]


def _unit_instance(unit: str) -> str | None:
    """``shop.example`` for ``wp-backup@shop.example.service``; ``None`` for a plain unit (or
    when systemd did not say)."""
    if "@" not in unit:
        return None
    return unit.partition("@")[2].rsplit(".", 1)[0]


def _uid_of(user: str) -> int | None:
    if not user:
        return 0
    if user.isdigit():
        return int(user)
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def find_job_state(root: str, props: dict[str, str]) -> tuple[str | None, JobState | None, str]:
    """The job's name and state for this failed unit, when it is a jobrunner job whose state
    can be trusted (its directory belongs to the unit's user) and knows this invocation
    (``None`` otherwise); and why it was not used, when that is worth saying."""
    job = job_of_unit(props)
    invocation = props.get("InvocationID", "")
    if job is None or not invocation:
        return None, None, ""
    store = StateStore(job, root)
    try:
        owner = store.owner()
    except OSError:
        return None, None, ""  # no state yet: the runner did not get that far
    expected = _uid_of(props.get("User", ""))
    if owner != expected:
        return None, None, f"state of {job} ignored: its directory belongs to uid {owner}, not the unit's user"
    try:
        state = store.load()
    except Exception as exc:
        return None, None, str(exc)
    running = state.running or {}
    if invocation in (state.notifications.notified_run_id, state.last_run_id, running.get("run_id")):
        return job, state, ""
    return job, None, ""


def _reason(props: dict[str, str]) -> str:
    result = props.get("Result", "")
    code, status = props.get("ExecMainCode", ""), props.get("ExecMainStatus", "")
    if result == "oom-kill":
        return "killed: out of memory"
    if result in ("signal", "core-dump") or code in ("2", "3"):
        import signal

        try:
            name = signal.Signals(int(status)).name
        except ValueError:
            name = f"signal {status}"
        return f"{'dumped core' if result == 'core-dump' else 'killed'} by {name}"
    if result == "exit-code":
        return f"exit {status}"
    return result or "state unknown"


def _message(
    unit: str,
    host: str,
    props: dict[str, str],
    why: list[str],
    tail: list[str],
    state: JobState | None,
    job: str | None = None,
    after_silence: bool = False,
    why_due: str = "",
) -> tuple[str, str]:
    reason = _reason(props) if props else "state unknown"
    title = f"💀 {unit} failed on {host} ({reason})"
    if after_silence:
        title = f"🔔 {unit} still failing on {host} after its silence ended ({reason})"
    lines = [f"Unit {unit} failed on {host}.", ""]
    if props:
        lines += [
            f"result:    {props.get('Result', '?')} ({props.get('ActiveState', '?')}/{props.get('SubState', '?')})",
            f"main:      {_CODES.get(props.get('ExecMainCode', ''), props.get('ExecMainCode', '?'))}"
            f" status {props.get('ExecMainStatus', '?')}",
            f"invocation: {props.get('InvocationID') or '?'}",
        ]
    if state is not None:
        success = time.strftime("%Y-%m-%d %H:%M", time.localtime(state.last_success)) if state.last_success else "never"
        lines.append(f"job:       {job} (last success: {success})")
        if (state.running or {}).get("run_id") == props.get("InvocationID"):
            lines.append("note:      the runner did not get to finish this run (killed or crashed)")
    if after_silence:
        lines.append("condition: still failing: the failures during its silence were not sent")
    if why_due:
        lines.append(f"alert:     {why_due}")
    for problem in why:
        lines.append(f"problem:   {problem}")
    if tail:
        lines += ["", f"Last {len(tail)} journal lines:", *tail]
    redactor = default_redactor()
    return redactor.redact(title), redactor.redact("\n".join(lines))


def handle_failed_unit(unit: str, lines: int = 50) -> Handled:
    """Report the failed ``unit`` unless the runner already did or the throttle holds it back.

    Raises ``ConfigError`` when no notification URL is configured.
    """
    if not notify_configured():
        raise ConfigError(
            f"alert {unit}: no notification URL configured (JOBRUNNER_NOTIFY_URLS, JOBRUNNER_NOTIFY_CONFIG)"
        )
    props, why_state = unit_state(unit)
    invocation = props.get("InvocationID", "")
    root = default_state_dir()
    job, state, why_untrusted = find_job_state(root, props)
    if state is not None and state.notifications.notified_run_id == invocation:
        return Handled(ALREADY_REPORTED, invocation)
    recorded = state.notifications.notify_tags if state is not None else None  # by the runner
    tags = tuple(str(t) for t in recorded or ())
    due, why_due, silenced, fold = True, "", False, None
    if job and state is not None:
        due, why_due, silenced, fold = _rules(job, root, state, props, invocation)

    def message(decision: Decision) -> tuple[str, str]:
        tail, why_journal = journal_tail(unit, invocation, lines)
        problems = [w for w in (why_state, why_untrusted, why_journal) if w]
        return _message(
            unit, os.uname().nodename, props, problems, tail, state, job, decision.reason == "silence-ended", why_due
        )

    # A jobrunner job's state honours the runner's rules and learns what was sent; else it is always sent.
    notice = notify_throttled(
        state, outcome="failure", run_id=invocation, tags=tags, message=message, due=due, silenced=silenced
    )
    delivery = notice.delivery
    if delivery is not None and not delivery.delivered:
        why = _update(job, root, fold) if job and fold is not None else ""  # the failure counts; not handled
        return Handled(NOT_DELIVERED, invocation, detail=delivery.detail, warnings=[why] if why else [])
    changes = [c for c in (fold, notice.change) if c is not None]
    why = _update(job, root, *changes) if job and state is not None and changes else ""
    warnings = [why] if why else []
    if delivery is None:
        outcome = SILENCED if notice.decision.reason == "silenced" else HELD
        return Handled(outcome, invocation, reason=notice.decision.reason, warnings=warnings)
    return Handled(SENT, invocation, matched=delivery.matched, warnings=warnings)


def _rules(
    job: str, root: str, state: JobState, props: dict[str, str], invocation: str
) -> tuple[bool, str, bool, Callable[[JobState], None] | None]:
    """The job's alerting rules applied to this failure: whether it is due and why, whether a
    silence is in force, and the change that folds a run the runner did not finish into the
    state (``None`` when the runner recorded it). The state was trusted by ``find_job_state``
    (its directory belongs to the unit's user), so its silence is too."""
    unfinished = state.last_run_id != invocation
    fold: Callable[[JobState], None] | None = None
    if unfinished:
        now = time.time()
        since = (state.running or {}).get("since")
        started = float(since) if isinstance(since, (int, float)) and not isinstance(since, bool) else now
        code = props.get("ExecMainStatus", "")
        exit_code = int(code) if code.isdigit() else 1
        reason = _reason(props) if props else "state unknown"

        def fold(s: JobState) -> None:
            if s.last_run_id == invocation:  # the runner got there after all
                return
            s.note_finish(
                run_id=invocation,
                outcome="failure",
                exit_code=exit_code,
                started=started,
                duration_s=max(0.0, now - started),
                attempts=1,
                error=f"the runner did not finish: {reason}",
                now=now,
            )

    alert = alert_from_dict(state.alerting.alert)
    failures = (state.consecutive_failures or 0) + (1 if unfinished else 0)

    def recent(n: int) -> list[Any]:
        return read_history(root, job, last=n).records

    due, why = failure_due(alert, failures=failures, recent=recent, extra_failure=unfinished)
    return due, why, silence_active(state) is not None, fold


def _update(job: str, root: str, *changes: Any) -> str:
    """Record in the job's state (the store keeps the file the job user's, by descriptor);
    why it could not, or ``""``."""
    store = StateStore(job, root)
    said: list[str] = []
    store.try_apply(*changes, report=lambda why: said.append(f"could not record in {store.path}: {why}"))
    return said[0] if said else ""
