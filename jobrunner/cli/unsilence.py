"""``jobrunner unsilence JOB…|--all``: end silences now (:mod:`jobrunner.admin.silences`).

A job still failing says so once, on its next run (or ``alert-failure@``). Exit codes: 0, 64
for neither JOB nor ``--all``, 78 for an unknown job or a state the user may not write.
"""

from __future__ import annotations

import argparse

from jobrunner.admin.silences import clear_silence
from jobrunner.cli import add_package_option
from jobrunner.store.state import default_state_dir

__all__ = ["HELP", "configure", "main"]

HELP = "end silences (jobrunner silence) now"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("jobs", nargs="*", metavar="JOB", help="job name, unit name or MODULE:NAME")
    parser.add_argument("--all", action="store_true", help="every silenced job")
    add_package_option(parser, implicit=False, help="the package of job modules that names jobs")
    parser.add_argument("--state-dir", default=None, help="state directory (default: $JOBRUNNER_STATE_DIR)")


def main(args: argparse.Namespace) -> int:
    from jobrunner.cli.silence import resolve  # a command imports no other command at module level

    root = args.state_dir or default_state_dir()
    jobs = resolve(args, root, "unsilence")
    ended = clear_silence(root, jobs)
    for job in jobs:
        print(f"{job}: {'silence ended' if job in ended else 'was not silenced'}")
    return 0
