"""``jobrunner status [JOB] [--json] [--package NAME]``: the recorded state of jobs.

Jobs are those with a state file under the state directory (``--state-dir``, else
``$JOBRUNNER_STATE_DIR``, else the default); ``--package`` (the option of ``list``, ``health``
and ``units render``) adds the package's declared jobs, so a job that never ran shows as such.
Here its default is ``$JOBRUNNER_PACKAGE`` alone: without it, no package is added (status
works where no ``jobs`` package is installed). A table on a TTY (``--table`` forces it), otherwise
one JSON object per job and line (``--json`` forces it), as ``jobrunner list`` does.

``--html PATH`` writes the status page instead (``jobrunner.observe.statuspage``): one self-contained
HTML file, replaced atomically, of every job's last outcome, next run, recent durations, p95,
failure streak, recent runs and the tail of its last failure.

``--fleet`` shows hosts × jobs from the fleet's Redis stream (``$JOBRUNNER_REDIS_URL``, see
``jobrunner.fleet.stream``): each job's last outcome on each host (a table; JSON with ``--json``;
the fleet's page with ``--html PATH``, hosts that stopped reporting marked).

An unreadable state file is reported in its row (``error``), never as a traceback. A JOB with
no state file and not in ``--package`` is a configuration error (exit 78, one line), as an
unknown job is everywhere else.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from jobrunner.cli import add_package_option, format_table
from jobrunner.errors import ConfigError
from jobrunner.fleet.stream import check_fleet, fleet_view, matrix
from jobrunner.instances import expand_instances
from jobrunner.observe.statuspage import collect, judge_schedules, render, render_fleet, write_page
from jobrunner.rules.alerting import silence_active
from jobrunner.rules.schedule import format_age
from jobrunner.run.loader import closest, default_package, discover, discover_report
from jobrunner.store.history import recorded_jobs
from jobrunner.store.state import StateStore, default_state_dir

__all__ = ["HELP", "configure", "main", "status_rows"]

HELP = "show the recorded state of jobs"

_FIELDS = (
    "last_outcome",
    "last_exit_code",
    "last_start",
    "last_finish",
    "last_success",
    "last_failure",
    "last_duration_s",
    "consecutive_failures",
    "runs",
    "running",
    "last_error",
    "last_skipped",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", nargs="?", metavar="JOB", help="one job (default: all)")
    add_package_option(parser, implicit=False, help="also list this package's jobs that never ran")
    parser.add_argument("--state-dir", default=None, help="state directory (default: $JOBRUNNER_STATE_DIR)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per job (default when not a TTY)")
    out.add_argument("--table", action="store_true", help="a table (default on a TTY)")
    parser.add_argument("--fleet", action="store_true", help="hosts x jobs, from the fleet's Redis stream")
    out.add_argument("--html", metavar="PATH", help="write the status page (one HTML file, replaced atomically)")


def status_rows(root: str, names: list[str]) -> list[dict[str, Any]]:
    """One dict per job: the state's facts, ``never_ran`` or ``error`` (unreadable file)."""
    rows = []
    for name in names:
        store = StateStore(name, root)
        row: dict[str, Any] = {"job": name, "state_file": store.path}
        try:
            state = store.load()
        except Exception as exc:  # ConfigError (unreadable) or anything odd in it
            row["error"] = " ".join(str(exc).split())
            rows.append(row)
            continue
        row["never_ran"] = state.empty
        row.update({k: state.value_of(k) for k in _FIELDS})
        row["consecutive_failures"] = row["consecutive_failures"] or 0
        row["runs"] = row["runs"] or {}

        row["silenced"] = silence_active(state)
        row["anomaly"] = state.alerting.anomaly
        rows.append(row)
    return rows


def _when(value: Any, now: float) -> str:
    try:
        seconds = now - float(value)
    except (TypeError, ValueError):
        return "-"
    return f"{format_age(seconds)} ago" if seconds >= 0 else f"in {format_age(seconds)}"


def _table(rows: list[dict[str, Any]], now: float) -> str:
    headers = ("JOB", "LAST OUTCOME", "LAST RUN", "LAST SUCCESS", "DURATION", "FAILS")
    table = []
    for r in rows:
        if "error" in r:
            table.append((r["job"], f"unreadable: {r['error']}", "-", "-", "-", "-"))
            continue
        outcome = r["last_outcome"] or ("never ran" if r["never_ran"] else "-")
        running = r.get("running")
        if isinstance(running, dict) and isinstance(running.get("since"), (int, float)):
            outcome += f" (running for {format_age(now - running['since'])})"
        if r.get("silenced"):
            outcome += f" (silenced until {time.strftime('%Y-%m-%d %H:%M', time.localtime(r['silenced']['until']))})"
        anomaly = r.get("anomaly")
        if isinstance(anomaly, dict) and anomaly.get("text"):
            outcome += f" (warning: {anomaly['text']})"
        duration = r["last_duration_s"]
        table.append(
            (
                r["job"],
                outcome,
                _when(r["last_start"], now),
                _when(r["last_success"], now),
                format_age(float(duration)) if isinstance(duration, (int, float)) else "-",
                str(r["consecutive_failures"]),
            )
        )
    return format_table([headers, *table])  # recorded text: no escape reaches the terminal


def _html(path: str, root: str, names: list[str], package: str | None, *, one: bool) -> int:
    units: dict[str, str] = {}
    if package:
        units = {j.name: j.unit for j in expand_instances(discover(package), root)}
    declared: dict[str, Any] = {}
    try:  # the declarations give next runs and lateness; the page is written without them too
        declared = {j.name: j for j in discover_report(package or default_package())[0]}
    except Exception:
        declared = {}

    if not one:  # jobs with a history alone (their state unwritable, say) count too
        names = sorted(set(names) | set(recorded_jobs(root)))
    views = collect(root, names, units=units or {n: j.unit for n, j in declared.items()})
    judge_schedules(views, declared)
    _write(path, render(views))
    return 0


def _write(path: str, page: str) -> None:
    """Write the page; a place it cannot be written (a missing directory, an unwritable one,
    ``/proc/...``) is one line and exit 78, never a traceback."""
    try:
        write_page(path, page)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"status --html: cannot write {path}: {reason} (check --html)") from None


def _fleet(args: argparse.Namespace) -> int:
    view = fleet_view(
        parts=frozenset(("brief", "seen", "streak", "hosts"))
    )  # no last successes: no verdict here needs them
    if args.job:
        view.cells = {key: c for key, c in view.cells.items() if key[1] == args.job}
        view.hosts = {h: t for h, t in view.hosts.items() if any(ho == h for ho, _ in view.cells)}
    if args.html:
        now = time.time()
        _write(args.html, render_fleet(view, check_fleet(view, now=now), now=now))
        return 0
    if args.json or (not args.table and not sys.stdout.isatty()):
        from jobrunner.fleet.stream import cell_lines

        sys.stdout.write("".join(cell_lines(view)))
        return 0
    cells = matrix(view)
    hosts = sorted({h for h, _ in cells})
    jobs = sorted({j for _, j in cells})
    now = time.time()
    table = [("JOB", *hosts)]
    for job in jobs:
        row = [job]
        for host in hosts:
            c = cells.get((host, job))
            if c is None:
                row.append("-")
                continue
            streak = f", {c['failure_streak']} failed" if c["failure_streak"] else ""
            row.append(f"{c['last_outcome']} {_when(c['last_start'], now)}{streak}")
        table.append(tuple(row))
    if not jobs:
        sys.stdout.write("no run published to the fleet's stream yet\n")
        return 0

    sys.stdout.write(format_table(table))  # hosts and jobs are the stream's: no escapes
    return 0


def main(args: argparse.Namespace) -> int:
    if args.fleet:
        return _fleet(args)

    root = args.state_dir or default_state_dir()
    names = recorded_jobs(root)
    if args.package:
        names = sorted(set(names) | {j.name for j in expand_instances(discover(args.package), root)})
    if args.job:
        if args.job not in names:
            where = f" or in package {args.package!r}" if args.package else ""

            raise ConfigError(f"no job {args.job!r}{closest(args.job, names)}: no state under {root}{where}")
        names = [args.job]
    if args.html:
        return _html(args.html, root, names, args.package, one=bool(args.job))
    rows = status_rows(root, names)
    as_json = args.json or (not args.table and not sys.stdout.isatty())
    if as_json:
        sys.stdout.write("".join(json.dumps(r, default=str) + "\n" for r in rows))
    elif rows:
        sys.stdout.write(_table(rows, time.time()))
    else:
        sys.stdout.write(f"no job has run yet (state directory {root})\n")
    return 0
