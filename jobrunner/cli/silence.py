"""``jobrunner silence JOB…|--all --for SPAN [--reason TEXT]``, ``jobrunner silence --list``.

While a job is silenced its failures are logged, recorded and counted but not sent, by the
runner and by ``alert-failure@`` alike; when the silence ends with the job still failing,
exactly one notification says so. The library is :mod:`jobrunner.admin.silences`. Exit codes: 0,
64 for a bad command line (no ``--for``, a span that is negative or 0), 78 for an unknown job
or a job whose state the invoking user may not write.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from jobrunner.admin.silences import known_jobs, list_silences, set_silence
from jobrunner.cli import add_package_option
from jobrunner.errors import ConfigError, UsageError
from jobrunner.rules.schedule import format_age
from jobrunner.run.loader import closest
from jobrunner.store.state import default_state_dir
from jobrunner.timespan import parse_timespan
from jobrunner.validate import printable

__all__ = ["HELP", "configure", "main", "resolve"]

MAX_SILENCE_S = 366 * 86400.0
HELP = "silence jobs' notifications for a while (--list: the silences in force)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("jobs", nargs="*", metavar="JOB", help="job name, unit name or MODULE:NAME")
    parser.add_argument("--all", action="store_true", help="every job (with a state, or of --package)")
    parser.add_argument("--for", dest="span", metavar="SPAN", help="how long: 2h, 30min, 1d 12h")
    parser.add_argument("--reason", metavar="TEXT", help="why (shown by --list, health and status)")
    parser.add_argument("--list", action="store_true", help="the silences in force")
    parser.add_argument("--json", action="store_true", help="with --list: one JSON object per silence")
    add_package_option(parser, implicit=False, help="the package of job modules that names jobs")
    parser.add_argument("--state-dir", default=None, help="state directory (default: $JOBRUNNER_STATE_DIR)")


def resolve(args: argparse.Namespace, root: str, command: str) -> list[str]:
    """The jobs named (or ``--all``); ``UsageError`` for neither or both, ``ConfigError`` for
    an unknown one."""
    if bool(args.jobs) == bool(args.all):
        raise UsageError(f"{command}: name the jobs or give --all, not both (see 'jobrunner {command} --help')")
    known = known_jobs(root, args.package)
    if args.all:
        names = sorted(set(known.values()))
        if not names:
            raise ConfigError(f"{command} --all: no job has a state under {root}")
        return names
    chosen: list[str] = []
    for name in args.jobs:
        if name not in known:
            where = f" or in package {args.package!r}" if args.package else ""

            raise ConfigError(f"no job {name!r}{closest(name, known)}: no state under {root}{where}")
        if known[name] not in chosen:
            chosen.append(known[name])
    return chosen


def _until(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(ts))


def _list(root: str, as_json: bool) -> int:
    now = time.time()
    rows: list[dict[str, Any]] = list_silences(root, now, warn=lambda why: print(printable(why), file=sys.stderr))
    if as_json:
        sys.stdout.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        return 0
    if not rows:
        sys.stdout.write(f"no silence in force (state directory {root})\n")
        return 0
    for r in rows:
        reason = f": {r['reason']}" if r.get("reason") else ""
        line = f"{r['job']}: silenced until {_until(r['until'])} ({format_age(r['until'] - now)} more) by {r.get('by', '?')}{reason}"
        sys.stdout.write(printable(line) + "\n")
    return 0


def main(args: argparse.Namespace) -> int:
    root = args.state_dir or default_state_dir()
    if args.list:
        if args.jobs or args.all or args.span:
            raise UsageError("silence --list takes no job, --all or --for")
        return _list(root, args.json)
    if not args.span:
        raise UsageError("silence: --for SPAN is required (a silence always ends: 2h, 30min, 1d)")
    try:
        seconds = parse_timespan(args.span)
    except ValueError as exc:
        raise UsageError(f"silence --for {args.span!r}: {exc}") from None
    if not seconds or seconds <= 0:
        raise UsageError(f"silence --for {args.span!r}: must be more than 0")
    if seconds > MAX_SILENCE_S:
        raise UsageError(f"silence --for {args.span!r}: at most a year (a silence always ends)")
    jobs = resolve(args, root, "silence")
    record = set_silence(root, jobs, seconds=seconds, reason=args.reason)
    for job in jobs:
        print(f"{job}: silenced until {_until(record['until'])} by {record['by']}")
    return 0
