"""``jobrunner [run] MODULE[:NAME]``: run a job. Also the options ``exec`` shares with it."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["HELP", "add_run_options", "configure", "main", "run_declared"]

HELP = "run a job: MODULE[:NAME]"


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


def configure(parser: argparse.ArgumentParser) -> None:
    parser.usage = "jobrunner [run] MODULE[:NAME] [options]"
    parser.add_argument("job", help="the job: a module path (jobs.wp_backup), optionally :NAME")
    add_run_options(parser)


def run_declared(declared: Any, args: argparse.Namespace, *, passthrough_exit: bool = False) -> int:
    """Run a declared job with the options of ``add_run_options``; its exit code."""
    from ..runner import RunOptions, run_job

    options = RunOptions(
        dry_run=args.dry_run,
        env_files=tuple(args.env_file),
        log_format=args.log_format,
        notify=not args.no_notify,
        passthrough_exit=passthrough_exit,
    )
    return run_job(declared, options).exit_code


def main(args: argparse.Namespace) -> int:
    from ..loader import load_job

    return run_declared(load_job(args.job), args)
