"""``jobrunner checks sync [--dry-run] [--package NAME] [--prune] [--adopt] [--env-file PATH]``:
one healthchecks check per scheduled job, created or updated through the v3 management API
(``jobrunner/admin/checks_sync.py`` decides; this prints).

One line per job: ``create``, ``update`` (each changed field, ``old -> new``), ``same``,
``skip`` (no schedule), ``leave`` (a check with the slug that this host did not create),
``stale`` / ``delete`` (this host's check whose job is gone; deleted only with ``--prune``),
then a summary. ``--dry-run`` prints the same and changes nothing. Exit 0; 1 when the server
refused a check (the others are still synced); 78 for a bad env file or a refused key.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobrunner.admin.checks_sync import DEFAULT_ENV_FILE, Client, apply, load_config, plan
from jobrunner.cli import add_package_option
from jobrunner.instances import expand_instances
from jobrunner.run.loader import discover
from jobrunner.timespan import format_timespan

__all__ = ["HELP", "configure", "main"]

HELP = "healthchecks checks for the jobs: checks sync [--dry-run] [--prune]"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sync = sub.add_parser("sync", help="create or update one check per scheduled job")
    add_package_option(sync)
    sync.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")
    sync.add_argument("--prune", action="store_true", help="delete this host's checks whose job is gone")
    sync.add_argument("--adopt", action="store_true", help="also manage checks with a job's slug made by hand")
    sync.add_argument(
        "--env-file",
        metavar="PATH",
        default=DEFAULT_ENV_FILE,
        help=f"HC_API_URL and HC_API_KEY (default: {DEFAULT_ENV_FILE})",
    )


def _value(field: str, value: Any) -> str:
    if value is None:
        return "-"
    if field == "grace" and isinstance(value, int):
        return format_timespan(value)
    return repr(value)


def main(args: argparse.Namespace) -> int:
    config = load_config(args.env_file)
    jobs = expand_instances(discover(args.package))  # one check per site of a job with instances
    client = Client(config)
    actions = plan(jobs, client.checks(), config, adopt=args.adopt, prune=args.prune)
    if not args.dry_run:
        apply(actions, client)
    would = "would " if args.dry_run else ""
    verbs = {"create": f"{would}create", "update": f"{would}update", "delete": f"{would}delete"}
    width = max([len(a.slug) for a in actions] + [4])
    out = sys.stdout
    for action in actions:
        kind = "error" if action.error else action.kind
        line = f"{verbs.get(kind, kind):<15} {action.slug:<{width}}"
        if action.error:
            line += f"  {action.error}"
        elif action.kind == "create":
            line += "  " + ", ".join(f"{k} {_value(k, v)}" for k, (_, v) in action.changes.items() if k != "desc")
        elif action.kind == "update":
            line += "  " + "; ".join(
                f"{k}: {_value(k, old)} -> {_value(k, new)}" for k, (old, new) in action.changes.items()
            )
        elif action.note:
            line += f"  {action.note}"
        out.write(line.rstrip() + "\n")
    counts: dict[str, int] = {}
    for action in actions:
        kind = "error" if action.error else action.kind
        counts[kind] = counts.get(kind, 0) + 1
    order = ("create", "update", "delete", "same", "leave", "stale", "skip", "error")
    words = {
        "create": "created",
        "update": "updated",
        "delete": "deleted",
        "same": "unchanged",
        "leave": "left alone",
        "skip": "skipped",
        "error": "failed",
    }
    summary = ", ".join(f"{counts[k]} {words.get(k, k)}" for k in order if counts.get(k))
    if args.dry_run:
        summary = (
            summary.replace("created", "to create").replace("updated", "to update").replace("deleted", "to delete")
        )
        summary = f"dry run: {summary or 'no jobs'}; nothing changed"
    out.write(f"{summary or 'no jobs'}\n")
    return 1 if counts.get("error") else 0
