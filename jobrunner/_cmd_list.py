"""``jobrunner list [PACKAGE]`` and ``jobrunner version``."""

from __future__ import annotations

import argparse
import json
import sys

from .timespan import format_timespan

__all__ = ["configure", "main"]


def configure(parser: argparse.ArgumentParser, command: str) -> None:
    if command == "list":
        parser.add_argument("package", nargs="?", default="jobs", help="the package of job modules (default: jobs)")
        parser.add_argument("--json", action="store_true", help="one JSON object per job")
        parser.add_argument("--no-next", action="store_true", help="skip computing the next elapse")


def _lock_text(job) -> str:
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
    try:
        from .unitgen.calendar import next_elapse
    except ImportError:
        return None
    times = [t for t in (next_elapse(s) for s in schedule) if t]
    return min(times) if times else None


def main(args: argparse.Namespace, command: str) -> int:
    if command == "version":
        from ._version import __version__

        print(f"jobrunner {__version__}")
        return 0
    from .loader import discover

    rows = []
    for job in discover(args.package):
        rows.append({
            "job": job.ref,
            "unit": job.unit,
            "schedule": list(job.schedule),
            "next": None if args.no_next else _next_elapse(job.schedule),
            "lock": _lock_text(job),
            "timeout": format_timespan(job.timeout) if job.timeout else None,
            "user": job.user or "root",
            "description": job.description,
        })
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    headers = ("JOB", "SCHEDULE", "NEXT", "LOCK", "TIMEOUT", "USER")
    table = [
        (r["job"], " ; ".join(r["schedule"]) or "(manual)", r["next"] or "-", r["lock"], r["timeout"] or "-", r["user"])
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *table)]
    for line in (headers, *table):
        sys.stdout.write("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() + "\n")
    return 0
