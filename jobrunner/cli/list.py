"""``jobrunner list [--package NAME] [--json] [--no-next]``: the jobs of a package and their schedules.

The package is ``--package NAME`` as for ``status``, ``health`` and ``units render`` (default:
``$JOBRUNNER_PACKAGE``, else ``jobs``). The older positional form, ``jobrunner list PACKAGE``,
is still accepted for existing scripts and overrides the default; given together with a
``--package`` that names another package, it is a usage error (exit 64).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, TypedDict

from jobrunner.cli import add_package_option, format_table
from jobrunner.errors import UsageError
from jobrunner.instances import group_of, known_instances
from jobrunner.run.loader import default_package, discover_report
from jobrunner.systemd.calendar import next_elapse
from jobrunner.timespan import format_timespan
from jobrunner.validate import printable

if TYPE_CHECKING:
    from jobrunner.declaration import Job

__all__ = ["HELP", "configure", "main"]

HELP = "list the jobs of a package and their schedules"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "old_package",
        nargs="?",
        default=None,
        metavar="PACKAGE",
        help="the same as --package (the older form, kept for scripts)",
    )
    add_package_option(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per job")
    parser.add_argument("--no-next", action="store_true", help="skip computing the next elapse")


class _Row(TypedDict):
    """One job as ``--json`` prints it."""

    job: str
    unit: str
    schedule: list[str]
    next: str | None
    lock: str
    timeout: str | None
    user: str
    description: str
    instances: list[str] | None


def _lock_text(job: Job) -> str:
    if job.lock is None:
        return "-"
    text = "shared" if job.lock.shared else "exclusive"
    if job.lock.wait_seconds:
        text += f", wait {format_timespan(job.lock.wait_seconds)}"
    if job.lock.name:
        text += f" ({job.lock.name})"
    return text


def _next_elapse(schedule: tuple[str, ...]) -> str | None:
    if not schedule:
        return None
    times = [t for t in (next_elapse(s) for s in schedule) if t]
    return min(times) if times else None


def _package(args: argparse.Namespace) -> str:
    """``--package``, or the older positional PACKAGE; both, when they differ, is a usage error."""
    package: str = args.package
    old_package: str | None = args.old_package
    if old_package is None:
        return package
    if package not in (old_package, default_package()):
        raise UsageError(f"two packages given: {old_package!r} and --package {package!r} (see 'jobrunner list --help')")
    return old_package


def main(args: argparse.Namespace) -> int:
    rows: list[_Row] = []
    jobs, broken = discover_report(_package(args))
    for job in jobs:
        instances = known_instances(group_of(job)) if job.instances else None
        rows.append(
            {
                "job": job.ref,
                "unit": job.unit,
                "schedule": list(job.schedule),
                "next": None if args.no_next else _next_elapse(job.schedule),
                "lock": _lock_text(job),
                "timeout": format_timespan(job.timeout) if job.timeout else None,
                "user": job.user or "root",
                "description": job.description,
                "instances": instances,
            }
        )
    code = 0
    for problem in broken:  # the other jobs are listed still; the broken module named, exit 78
        print(printable(f"jobrunner: {problem.module}: {' '.join(problem.error.split())}"), file=sys.stderr)
        code = 78
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return code
    headers = ("JOB", "SCHEDULE", "NEXT", "LOCK", "TIMEOUT", "USER", "INSTANCES")
    table = [
        (
            r["job"],
            " ; ".join(r["schedule"]) or "(manual)",
            r["next"] or "-",
            r["lock"],
            r["timeout"] or "-",
            r["user"],
            "-" if r["instances"] is None else str(len(r["instances"])),
        )
        for r in rows
    ]
    sys.stdout.write(format_table([headers, *table]))  # descriptions, schedules: no escapes
    return code
