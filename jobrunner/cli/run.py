"""``jobrunner [run] MODULE[:NAME]``: run a job. Also the options ``exec`` shares with it."""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from typing import Any

from jobrunner.errors import UsageError
from jobrunner.run.lifecycle import RunOptions, run_job
from jobrunner.run.loader import load_job

__all__ = ["HELP", "add_run_options", "bind_instance", "configure", "main", "run_declared"]

HELP = "run a job: NAME or MODULE[:NAME]"


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of a run, the same for ``run`` and ``exec``."""
    parser.add_argument("--dry-run", action="store_true", help="run without side effects: commands are logged, not run")
    parser.add_argument(
        "--env-file",
        action="append",
        default=[],
        metavar="FILE",
        help="load variables from FILE (systemd EnvironmentFile= syntax); repeatable",
    )
    parser.add_argument("--log-format", choices=("json", "console"), help="default: console on a TTY, else json")
    parser.add_argument("--no-notify", action="store_true", help="send no notification for this run")
    parser.add_argument(
        "--instance",
        metavar="NAME",
        help="run the instance NAME of an instantiable job (what the template unit's %%i gives)",
    )


def bind_instance(declared: Any, instance: str | None) -> Any:
    """The job bound to ``instance``; a usage error (exit 64) when an instantiable job gets
    none or a plain job gets one."""
    if instance is None:
        if declared.instances is True:
            raise UsageError(
                f"job {declared.name} runs per instance: give --instance NAME (e.g. --instance shop.example)"
            )
        return declared
    if not declared.instances:
        raise UsageError(f"job {declared.name} has no instances: run it without --instance")
    return declared.for_instance(instance)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.usage = "jobrunner [run] NAME|MODULE[:NAME] [--instance NAME] [options]"
    parser.add_argument(
        "job",
        help="the job: its name (wp_backup, as list shows it) or a module path (jobs.wp_backup), optionally :NAME",
    )
    add_run_options(parser)


def run_declared(declared: Any, args: argparse.Namespace, *, passthrough_exit: bool = False) -> int:
    """Run a declared job with the options of ``add_run_options``; its exit code."""

    declared = bind_instance(declared, args.instance)
    options = RunOptions(
        dry_run=args.dry_run,
        env_files=tuple(args.env_file),
        log_format=args.log_format,
        notify=not args.no_notify,
        passthrough_exit=passthrough_exit,
    )
    return run_job(declared, options).exit_code


def main(args: argparse.Namespace) -> int:

    if args.instance is not None:  # a bad name is a usage error before anything is imported
        from jobrunner.instances import check_instance_name

        check_instance_name(args.instance)
    declared = load_job(args.job)
    _say_user(declared)
    return run_declared(declared, args)


def _say_user(declared: Any) -> None:
    """Run by hand, a job declaring ``user=`` runs as whoever runs it: say so in one line."""

    if not declared.user or os.environ.get("INVOCATION_ID"):
        return  # no user=, or under systemd: the unit's User= applies

    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        me = str(os.geteuid())
    if me != declared.user:
        print(f"jobrunner: runs as {me} by hand, not as user={declared.user} (its unit's User=)", file=sys.stderr)
