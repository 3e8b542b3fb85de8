"""``jobrunner instances add|remove|list``: the instances of a group of jobs (docs/sites.md).

Usage::

    jobrunner instances add GROUP NAME --set KEY=VALUE … [--force] [--no-enable] [--package P]
    jobrunner instances remove GROUP NAME [--force] [--no-enable] [--package P]
    jobrunner instances list [GROUP] [--json] [--package P] [--state-dir DIR]

GROUP is an instance group (``wp``: the WordPress jobs share one env file per site) or the
name of an instantiable job. The work is :mod:`jobrunner.admin.instances`'s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from jobrunner.admin.instances import (
    add_instance,
    find_group,
    groups_of,
    instance_rows,
    parse_settings,
    remove_instance,
)
from jobrunner.cli import add_package_option, format_table
from jobrunner.errors import ConfigError
from jobrunner.instances import check_instance_name
from jobrunner.run.loader import discover
from jobrunner.store.state import default_state_dir

__all__ = ["HELP", "configure", "main"]

HELP = "add, remove or list the instances of a group of jobs (sites)"


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="write an instance's env file, enable its timers")
    add.add_argument("group", metavar="GROUP", help="instance group (wp) or instantiable job")
    add.add_argument("name", metavar="NAME", help="the instance (e.g. shop.example)")
    add.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="KEY=VALUE", help="a setting; repeatable"
    )
    add.add_argument(
        "--force", action="store_true", help="write exactly the settings given (also over an env file edited by hand)"
    )
    add.add_argument("--no-enable", action="store_true", help="write the files only: no systemd-tmpfiles, systemctl")
    add_package_option(add)

    remove = actions.add_parser("remove", help="disable an instance's timers, remove its env file")
    remove.add_argument("group", metavar="GROUP")
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("--force", action="store_true", help="also when its env file was edited by hand")
    remove.add_argument("--no-enable", action="store_true", help="leave the timers alone")
    add_package_option(remove)

    listing = actions.add_parser("list", help="every instance with each job's last outcome")
    listing.add_argument("group", metavar="GROUP", nargs="?", help="only this group")
    listing.add_argument("--json", action="store_true", help="one JSON object per instance and job")
    listing.add_argument("--state-dir", default=None, help="state directory (default: $JOBRUNNER_STATE_DIR)")
    add_package_option(listing)


def _list(args: argparse.Namespace) -> int:
    from jobrunner.cli.status import _when  # a command imports no other command at module level

    jobs = discover(args.package)
    groups = [find_group(jobs, args.group, args.package)] if args.group else list(groups_of(jobs).values())
    rows = instance_rows(groups, args.state_dir or default_state_dir())
    if args.json:
        sys.stdout.write("".join(json.dumps(r, default=str) + "\n" for r in rows))
        return 0
    if not rows:
        sys.stdout.write("no instances (add one with 'jobrunner instances add GROUP NAME --set KEY=VALUE')\n")
        return 0
    now = time.time()
    table = [("GROUP", "INSTANCE", "JOB", "LAST", "STARTED", "FAILURES")]
    for r in rows:
        table.append(
            (
                r["group"],
                r["instance"] + (" (edited)" if r["edited"] else ""),
                r["job"],
                r.get("last_outcome") or ("unreadable" if "error" in r else "never ran"),
                _when(r.get("last_start"), now),
                str(r.get("consecutive_failures") or 0) if r.get("last_outcome") else "-",
            )
        )
    sys.stdout.write(format_table(table))
    return 0


def main(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list(args)

    check_instance_name(args.name)  # before anything is read: exit 64
    settings = parse_settings(args.settings) if args.action == "add" else {}
    group = find_group(discover(args.package), args.group, args.package)
    try:
        if args.action == "add":
            add_instance(group, args.name, settings, force=args.force, enable=not args.no_enable)
        else:
            remove_instance(group, args.name, force=args.force, enable=not args.no_enable)
    except OSError as exc:  # the instances or tmpfiles directory missing its parent, unwritable, /proc/...
        where = exc.filename or "its files"
        raise ConfigError(f"instances {args.action}: cannot write {where}: {exc.strerror or exc}") from None
    return 0
