"""``jobrunner history [JOB…] [--since SPAN|DATE] [--outcome O] [--limit N] [--json]``: past runs.

One line per run, newest first, with the command that shows its log
(``journalctl _SYSTEMD_INVOCATION_ID=…``), then per job its p50/p95 duration and its current
failure streak. Reads each job's ``history.jsonl`` in the state directory (``--state-dir``,
else ``$JOBRUNNER_STATE_DIR``, else the default; see ``jobrunner.store.history``). ``--json``: one
JSON object per run and line, then one ``{"summary": …}`` line per job.

``--fleet`` reads the fleet's Redis stream (``$JOBRUNNER_REDIS_URL``, see ``jobrunner.fleet.stream``)
instead of this host's files: every host's runs, each line naming its host, summaries per
host and job.

Lines of a history file that are not records are skipped and counted on stderr, never a
crash. A JOB with no history is a configuration error (exit 78), as an unknown job is
everywhere else.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from jobrunner.errors import ConfigError, UsageError
from jobrunner.fleet.stream import fleet_view
from jobrunner.run.loader import closest
from jobrunner.store.history import STATS_WINDOW, outcome_matches, read_history, recorded_jobs, summary
from jobrunner.store.state import default_state_dir
from jobrunner.timespan import parse_timespan
from jobrunner.validate import printable

__all__ = ["HELP", "configure", "main", "parse_since"]

HELP = "past runs, newest first: log commands, p50/p95, failure streaks"

OUTCOMES = ("success", "failure", "timeout", "terminated", "skipped", "failed")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("jobs", nargs="*", metavar="JOB", help="jobs (default: all with a history)")
    parser.add_argument("--since", metavar="SPAN|DATE", help="runs started since: a span ago (2h, 7d) or a date")
    parser.add_argument(
        "--outcome", choices=OUTCOMES, help="runs of this outcome ('failed': every outcome but success and skipped)"
    )
    parser.add_argument("--limit", type=int, default=50, metavar="N", help="at most N runs (default 50; 0: all)")
    parser.add_argument("--json", action="store_true", help="one JSON object per run, then per job a summary")
    parser.add_argument("--state-dir", default=None, help="state directory (default: $JOBRUNNER_STATE_DIR)")
    parser.add_argument("--fleet", action="store_true", help="every host's runs, from the Redis stream")


def parse_since(value: str, now: float) -> float:
    """Epoch seconds of ``--since``: a systemd span ago (``2h``, ``7d``) or an ISO date/time."""
    import datetime as dt

    text = value.strip()
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        pass
    else:
        if when.tzinfo is None:
            when = when.astimezone()  # local time, as journalctl --since
        return when.timestamp()
    try:
        return now - parse_timespan(text)
    except ValueError:
        raise UsageError(f"--since {value!r} is neither a span (2h, 7d) nor a date (2026-11-30T08:00)") from None


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 60 else f"{int(value // 60)}m{int(value % 60):02d}s"


def _label(summary: dict[str, Any]) -> str:
    return f"{summary['host']} {summary['job']}" if "host" in summary else str(summary["job"])


def _fleet(args: argparse.Namespace, names: list[str], since: float | None) -> tuple[list[Any], list[dict[str, Any]]]:
    """The runs and per host and job summaries from the fleet's stream."""

    view = fleet_view(history=True, since=since, parts=frozenset(("seen", "streak")))  # the cells' streaks, the runs
    wanted = set(names)
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in view.records:
        if not wanted or r.job in wanted:
            groups.setdefault((r.host, r.job), []).append(r)
    summaries = []
    for (host, job), cell in sorted(view.cells.items()):
        if wanted and job not in wanted:
            continue
        # the stream's runs for the numbers; the streak from the view (it outlives the stream)
        runs = groups.get((host, job))
        if runs:
            summaries.append({"host": host, "job": job, **summary(runs), "failure_streak": cell.streak})
        else:
            summaries.append(
                {"host": host, "job": job, "runs": 0, "p50_s": None, "p95_s": None, "failure_streak": cell.streak}
            )
    runs = [
        r
        for rs in groups.values()
        for r in rs
        if outcome_matches(r.outcome, args.outcome) and (since is None or r.start >= since)
    ]
    return runs, summaries


def _fleet_summary_lines(summaries: list[dict[str, Any]]) -> list[str]:
    """``json.dumps({"summary": s})`` of each fleet summary (host, job, runs, p50_s, p95_s,
    failure_streak), each host and job name encoded once."""
    quoted = {name: json.dumps(name) for name in {s["host"] for s in summaries} | {s["job"] for s in summaries}}

    def n(value: Any) -> str:
        return "null" if value is None else repr(value)

    return [
        f'{{"summary": {{"host": {quoted[s["host"]]}, "job": {quoted[s["job"]]}, "runs": {s["runs"]}, '
        f'"p50_s": {n(s["p50_s"])}, "p95_s": {n(s["p95_s"])}, "failure_streak": {s["failure_streak"]}}}}}'
        for s in summaries
    ]


def _with_instances(names: list[str], recorded: list[str]) -> list[str]:
    """A job's name also means its instances: ``wp_backup`` is ``wp_backup`` (when it ran plain)
    and every ``wp_backup@<instance>`` with a history."""
    out: list[str] = []
    for name in names:
        found = [name] if name in recorded or "@" in name else []
        found += [r for r in recorded if r.startswith(f"{name}@")]
        out.extend(found or [name])
    return list(dict.fromkeys(out))


def _log_command(record: Any) -> str | None:
    """``journalctl _SYSTEMD_INVOCATION_ID=…`` for a run a unit made (its run id is systemd's
    invocation ID, a v4 UUID); None for a run made by hand, whose log went to a terminal."""
    rid = str(record.run_id)
    if len(rid) == 32 and rid[12] == "4" and rid[16] in "89ab":
        return str(record.log_command)
    return None


def main(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    root = args.state_dir or default_state_dir()
    now = time.time()
    since = parse_since(args.since, now) if args.since else None
    names = list(dict.fromkeys(args.jobs)) or ([] if args.fleet else recorded_jobs(root))
    if args.jobs and not args.fleet:
        names = _with_instances(names, recorded_jobs(root))
    runs: list[Any] = []
    summaries: list[dict[str, Any]] = []
    if args.fleet:
        runs, summaries = _fleet(args, names, since)
    for name in [] if args.fleet else names:
        # The summary needs the last STATS_WINDOW runs; the runs shown, the last --limit, or
        # all since --since of --outcome: the filters are pushed into the read, so a query
        # parses only the lines it may show.
        read = read_history(root, name, last=max(args.limit, STATS_WINDOW) if args.limit else None)
        if args.outcome is not None or since is not None:
            shown = read_history(root, name, last=args.limit or None, since=since, outcome=args.outcome).records
            if args.limit == 0 and since is None:  # everything was read already: no second pass
                shown = [r for r in read.records if outcome_matches(r.outcome, args.outcome)]
        else:
            shown = read.records
        if not read.records and read.error is None and not read.skipped:
            if not args.jobs:  # a job with a state and no run recorded: nothing to list
                continue
            raise ConfigError(f"no history for job {name!r}{closest(name, recorded_jobs(root))} under {root}")
        if read.error:
            print(printable(f"jobrunner: history of {name} is unreadable: {read.error}"), file=sys.stderr)
        if read.skipped:
            print(f"jobrunner: history of {name}: {read.skipped} malformed line(s) skipped", file=sys.stderr)
        summaries.append({"job": name, **summary(read.records), "skipped_lines": read.skipped})
        runs.extend(shown)
    runs.sort(key=lambda r: r.start, reverse=True)
    if args.limit:
        runs = runs[: args.limit]
    if args.json:
        lines = [json.dumps({**r.to_dict(), "log": _log_command(r)}) for r in runs]
        if args.fleet:  # 50,000 of them at 1,000 hosts × 50 jobs: written without a dict encoder
            lines += _fleet_summary_lines(summaries)
        else:
            lines += [json.dumps({"summary": s}) for s in summaries]
        sys.stdout.write("".join(line + "\n" for line in lines))
        return 0
    if not runs and not summaries:
        sys.stdout.write(f"no run recorded yet (state directory {root})\n")
        return 0
    out = []
    for r in runs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.start))
        error = f"  {r.error[:120]}" if r.error else ""
        host = f"{r.host}  " if args.fleet else ""
        line = f"{when}  {host}{r.job}  {r.outcome} (exit {r.exit_code})  {_seconds(r.duration_s)}  {_log_command(r) or 'by hand'}{error}"
        out.append(printable(line) + "\n")
    if summaries:
        out.append("\n")
        width = max(len(_label(s)) for s in summaries)
        for s in summaries:
            line = (
                f"{_label(s):<{width}}  runs {s['runs']}  p50 {_seconds(s['p50_s'])}  p95 {_seconds(s['p95_s'])}"
                f"  failure streak {s['failure_streak']}"
            )
            out.append(printable(line) + "\n")
    sys.stdout.write("".join(out))
    return 0
