"""``jobrunner alert UNIT [--lines N]``: what ``alert-failure@.service`` runs when a unit fails.

The decision (already reported by the runner, held back by the throttle, sent) is
:func:`jobrunner.observe.failed_unit.handle_failed_unit`; this prints it. Exit codes: 0 sent (or nothing to
send), 1 not delivered, 78 bad or no notification configuration.
"""

from __future__ import annotations

import argparse

from jobrunner.errors import EXIT_FAILURE, EXIT_OK
from jobrunner.observe.failed_unit import ALREADY_REPORTED, HELD, NOT_DELIVERED, SILENCED, handle_failed_unit

__all__ = ["HELP", "configure", "main"]

HELP = "notify about a failed unit (what alert-failure@.service runs)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("unit", help="the failed unit (alert-failure@.service passes %%i)")
    parser.add_argument("--lines", type=int, default=50, help="journal lines to read (default 50)")


def main(args: argparse.Namespace) -> int:
    unit = args.unit
    handled = handle_failed_unit(unit, args.lines)
    for warning in handled.warnings:
        print(f"jobrunner alert: {warning}")
    if handled.outcome == ALREADY_REPORTED:
        print(
            f"jobrunner alert: {unit}: the runner already reported invocation {handled.invocation}"
            " (sent, held back or silenced)"
        )
    elif handled.outcome == SILENCED:
        print(f"jobrunner alert: {unit}: not sent: the job is silenced (jobrunner silence --list)")
    elif handled.outcome == HELD:
        why = "below the job's alert threshold" if handled.reason == "below-threshold" else "JOBRUNNER_NOTIFY_REPEAT"
        print(f"jobrunner alert: {unit}: held back ({why})")
    elif handled.outcome == NOT_DELIVERED:
        print(f"jobrunner alert: {unit}: not delivered: {handled.detail}")
        return EXIT_FAILURE
    else:
        print(f"jobrunner alert: {unit}: sent to {handled.matched} service(s)")
    return EXIT_OK
