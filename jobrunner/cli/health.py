"""``jobrunner health [JOB…]``: the Nagios/Icinga plugin around :mod:`jobrunner.observe.health`'s
verdicts: arguments, job selection, the plugin's text output with perfdata, or ``--json``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from jobrunner.cli import add_package_option
from jobrunner.errors import JobrunnerError, UsageError
from jobrunner.fleet.stream import ALL_PARTS, check_fleet, fleet_view
from jobrunner.instances import expand_instances
from jobrunner.observe.health import NAMES, OK, SEVERITY, UNKNOWN, JobHealth, check_jobs, overall
from jobrunner.observe.late import MEMORY_NAME, notify_late
from jobrunner.rules.schedule import expected_interval
from jobrunner.run.loader import closest, discover, discover_report
from jobrunner.store.state import default_state_dir
from jobrunner.timespan import parse_timespan
from jobrunner.validate import printable

if TYPE_CHECKING:
    from jobrunner.declaration import Job

__all__ = ["HELP", "configure", "main", "render_json", "render_text", "select"]

HELP = "check timers, results and staleness (Nagios exit codes)"


def configure(parser: argparse.ArgumentParser) -> None:
    class HealthUsageError(UsageError):
        exit_code = UNKNOWN  # a Nagios plugin reports its own misuse as UNKNOWN

    def error(message: str) -> NoReturn:
        raise HealthUsageError(f"{message} (see 'jobrunner health --help')")

    parser.error = error  # type: ignore[method-assign]
    parser.add_argument(
        "jobs",
        nargs="*",
        metavar="JOB",
        help="job name, unit name or MODULE:NAME (default: all); a job's name selects all its instances",
    )
    add_package_option(parser)
    parser.add_argument(
        "--all",
        action="store_true",
        help="list every declared job, also those whose units are not installed (OK 'not installed')",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object with every fact")
    parser.add_argument(
        "--grace",
        default=None,
        metavar="SPAN",
        help="slack before a late job is stale (default: 10%% of its interval, at least 5min)",
    )
    parser.add_argument(
        "--fail-threshold",
        type=int,
        default=3,
        metavar="N",
        help="consecutive failures that make a job CRITICAL (default: 3)",
    )
    parser.add_argument("--state-dir", default=None, help="state directory (default: $JOBRUNNER_STATE_DIR)")
    parser.add_argument(
        "--notify",
        action="store_true",
        help="also notify of late jobs (their timer did not start them), once per episode, and when they start again",
    )
    parser.add_argument(
        "--notify-memory",
        default=None,
        metavar="PATH",
        help="with --notify: what was told, kept here (default: STATE_DIR/.late-notified.json)",
    )
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="judge every host's runs, from the fleet's Redis stream ($JOBRUNNER_REDIS_URL)",
    )
    parser.add_argument(
        "--silent-after",
        default=None,
        metavar="SPAN",
        help="with --fleet: a host with no record for SPAN has stopped reporting "
        "(default: twice its most frequent job's interval + 15min)",
    )


def select(all_jobs: Sequence[Job], wanted: Sequence[str], package: str) -> list[Job]:
    """The jobs named on the command line (by name, unit or MODULE:NAME); ``LookupError`` for others."""
    if not wanted:
        return list(all_jobs)
    chosen: list[Job] = []
    for name in wanted:
        found = [j for j in all_jobs if name in (j.name, j.unit, j.ref, j.base_name, j.base_unit)]
        if not found:
            have = ", ".join(j.name for j in all_jobs) or "none"
            hint = closest(name, [j.name for j in all_jobs])
            raise LookupError(f"no job {name!r}{hint} in package {package!r} (jobs: {have})")
        chosen.extend(j for j in found if j not in chosen)
    return chosen


def render_text(results: Sequence[JobHealth], hidden: int = 0) -> str:
    """The plugin's text: the summary line with perfdata, one line per job; ``hidden`` jobs
    (not installed, not asked about) are counted in the summary."""
    status = overall(results)
    counts = {name.lower(): sum(1 for r in results if r.status == code) for code, name in NAMES.items()}
    perf = (
        f"jobs={len(results)} ok={counts['ok']} warning={counts['warning']} critical={counts['critical']} "
        f"unknown={counts['unknown']}"
    )
    bad = sorted((r for r in results if r.status != OK), key=lambda r: -SEVERITY[r.status])
    if not results:
        summary = "no jobs to check" if not hidden else "no job installed"
    elif not bad:
        summary = f"{len(results)} job{'s' if len(results) != 1 else ''} ok"
    else:
        summary = "; ".join(f"{r.job}: {r.reasons[0]}" for r in bad)

    if hidden:
        summary += f"; {hidden} declared job{'s' if hidden != 1 else ''} not installed (--all lists them)"
    # Reasons quote recorded text (a job's error): control characters escaped, one line each.
    lines = [f"{NAMES[status]}: {printable(' '.join(summary.split()))} | {perf}"]
    for r in results:
        detail = "; ".join(r.reasons + r.notes) or "ok"
        lines.append(printable(f"{NAMES[r.status]} {r.job}: {' '.join(detail.split())}"))
    return "\n".join(lines) + "\n"


def render_json(results: Sequence[JobHealth], now: float) -> str:
    status = overall(results)
    doc = {
        "status": NAMES[status],
        "exit_code": status,
        "checked_at": now,
        "counts": {name.lower(): sum(1 for r in results if r.status == code) for code, name in NAMES.items()},
        "jobs": [r.as_dict() for r in results],
    }
    return json.dumps(doc, indent=1, default=str) + "\n"


def _span(option: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_timespan(value)
    except (ValueError, JobrunnerError) as exc:
        raise LookupError(f"{option} {value!r}: {exc}") from None


def _fleet(args: argparse.Namespace, now: float) -> list[JobHealth]:
    """The fleet's verdicts: the stream's records, judged with the intervals of the jobs this
    host declares (``--package``; a fleet's hosts share their jobs), where it declares any."""
    intervals: dict[str, float] = {}
    try:
        declared = discover(args.package)
    except Exception:  # no package here: the stream alone is judged
        declared = []
    for job in declared:
        if job.schedule:
            try:
                interval = expected_interval(job.schedule, job.jitter)
            except Exception:  # systemd-analyze missing or refusing: no staleness for it
                continue
            if interval is not None:
                intervals[job.name] = interval
    # whose word counts about each declared job: its user's (root's for a job without user=);
    # the last successes only where an interval can make them stale
    parts = ALL_PARTS if intervals else ALL_PARTS - {"ok"}
    view = fleet_view(owners={job.name: job.user or "root" for job in declared}, parts=parts)
    return check_fleet(
        view,
        declared=[job.name for job in declared],
        now=now,
        fail_threshold=args.fail_threshold,
        intervals=intervals,
        silent_after=_span("--silent-after", args.silent_after),
        jobs=args.jobs,
    )


def main(args: argparse.Namespace) -> int:
    try:
        grace = _span("--grace", args.grace)
        if args.fail_threshold < 1:
            raise LookupError("--fail-threshold must be at least 1")
        now = time.time()
        if args.fleet:
            results = _fleet(args, now)
        else:
            if args.silent_after is not None:
                raise LookupError("--silent-after goes with --fleet")

            declared, broken = discover_report(args.package)
            jobs = select(expand_instances(declared, args.state_dir), args.jobs, args.package)
            results = check_jobs(
                jobs, now=now, grace=grace, fail_threshold=args.fail_threshold, state_root=args.state_dir
            )
            # A broken module is one UNKNOWN line naming it; the other jobs are judged still.
            for b in broken:
                results.append(JobHealth(b.module, ""))
                results[-1].find(UNKNOWN, b.error, "unknown")
    except (LookupError, JobrunnerError) as exc:
        message = " ".join(str(exc).split())
        if args.json:
            sys.stdout.write(json.dumps({"status": "UNKNOWN", "exit_code": UNKNOWN, "error": message}) + "\n")
        else:
            sys.stdout.write(f"UNKNOWN: {message}\n")
        return UNKNOWN
    shown = list(results)
    if not (args.all or args.jobs or args.json):
        shown = [r for r in results if r.facts.get("installed", True) or r.status != OK]
    sys.stdout.write(render_json(results, now) if args.json else render_text(shown, len(results) - len(shown)))
    if args.notify and not args.fleet:
        _notify_late(args, jobs, results, now)
    return overall(results)


def _notify_late(args: argparse.Namespace, jobs: Sequence[Job], results: Sequence[JobHealth], now: float) -> None:
    """``--notify``: tell of late jobs, once per episode (``jobrunner.observe.late``); one stderr line
    for each notification sent or not delivered (the check's own exit code is unchanged)."""
    import os

    memory = args.notify_memory or os.path.join(args.state_dir or default_state_dir(), MEMORY_NAME)
    declared = {j.name: j for j in jobs}
    tags = {}
    for result in results:
        job = declared.get(result.job.split("@", 1)[0])  # an instance's row: wp_backup@shop
        if job is not None:
            tags[result.job] = tuple(job.notify)
    for line in notify_late(results, memory_path=memory, tags=tags, now=now):
        print(f"jobrunner health: {line}", file=sys.stderr)
