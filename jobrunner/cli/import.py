"""``jobrunner import crontab|units``: job modules from what admins already have.

Usage::

    jobrunner import crontab [FILE|- ...] [--user USER | --system] [--name RULE] [--out DIR] [--strict] [--force]
                             [--check [--tz ZONE] [--from YYYY-MM-DD] [--days N] [--show N]]
    jobrunner import units PATH... [--out DIR] [--strict] [--force]

Without ``--user`` a crontab is in the system format (``/etc/crontab``, ``/etc/cron.d/*``: a
user field after the five time fields); with ``--user USER`` it is that user's crontab
(``crontab -l -u USER | jobrunner import crontab --user USER``). A file in cron's spool
(``/var/spool/cron/crontabs/USER``) is USER's; a file whose user field is a command is
refused unless ``--user`` or ``--system`` says which it is (a user is never guessed).
Jobs are named ``cron-<file>`` (``-1``, ``-2`` … when the file has several lines), so their
units never take a package's own unit's name; ``--name RULE`` (``{file}``, ``{user}``,
``{n}``, ``{line}``) names them otherwise, and a name that is already a unit is refused.
Lines skipped on purpose (a package's native timer does the work, the systemd guard) are
said on stderr as ``FILE:LINE: skipped: why``. Each line or timer becomes
one module in ``--out`` (a package directory), or is printed. An ``@reboot`` line that starts
a daemon (``@reboot www-data nohup node app.js &``) becomes a plain service instead,
``--out/services/cron-<file>.service`` (or printed), with the ``install`` and ``systemctl
enable --now`` commands that put it in place said on stderr. Lines or units that cannot be
converted are reported as ``FILE:LINE: why`` on stderr; the rest are still written; exit 1
with ``--strict`` when there were any. ``--check`` prints, for each line, the firings under
cron's rules beside those of the emitted ``OnCalendar=`` lines (``systemd-analyze
calendar``), flags every mismatch (exit 1) and warns of times in a DST change.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from jobrunner.errors import ConfigError
from jobrunner.importer import batch
from jobrunner.importer.batch import check_window, zone_named
from jobrunner.importer.check import compare
from jobrunner.importer.emit import render_module, write_modules
from jobrunner.importer.services import SERVICES_DIR, install_command, write_services

if TYPE_CHECKING:  # pragma: no cover
    from jobrunner.importer.batch import ImportResult

__all__ = ["HELP", "configure", "main"]

HELP = "job modules from crontabs and existing .service/.timer units"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``crontab`` and ``units`` and their options to ``parser``."""
    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    cron = sources.add_parser("crontab", help="crontab lines: the system format, or a user's crontab with --user")
    cron.add_argument("files", nargs="*", metavar="FILE", help="crontab files; '-' or none: standard input")
    who = cron.add_mutually_exclusive_group()
    who.add_argument("--user", default=None, help="the input is this user's crontab (no user field)")
    who.add_argument(
        "--system", action="store_true", help="the input is in the system format (/etc/crontab: a user field)"
    )
    cron.add_argument(
        "--name",
        default=None,
        metavar="RULE",
        help="job names from {file}, {user}, {n}, {line} (default: cron-{file}, -1, -2 … for several lines)",
    )
    cron.add_argument(
        "--check",
        action="store_true",
        help="compare cron's firings with the emitted OnCalendar= lines (writes modules only with --out)",
    )
    cron.add_argument("--tz", default=None, help="--check: the machine's time zone (default: this machine's)")
    cron.add_argument(
        "--from", dest="start", default=None, metavar="YYYY-MM-DD", help="--check: from this day (default: now)"
    )
    cron.add_argument("--days", type=int, default=365, help="--check: over this many days (default: 365)")
    cron.add_argument(
        "--show", type=int, default=5, help="--check: firings shown per line besides mismatches (default: 5)"
    )
    units = sources.add_parser("units", help="existing .service + .timer pairs")
    units.add_argument("paths", nargs="+", metavar="PATH", help=".timer or .service files, or directories of them")
    for sub in (cron, units):
        sub.add_argument(
            "--out",
            default=None,
            metavar="DIR",
            help="write the modules here (a package directory); @reboot daemons as DIR/services/*.service",
        )
        sub.add_argument("--strict", action="store_true", help="exit 1 when a line or unit could not be converted")
        sub.add_argument("--force", action="store_true", help="replace modules in --out that differ")


def _report(result: ImportResult, strict: bool) -> int:
    for problem in result.problems:
        print(f"jobrunner: {problem}", file=sys.stderr)
    for skipped in result.skipped:
        print(f"jobrunner: {skipped}", file=sys.stderr)
    for warning in result.warnings:
        print(f"jobrunner: warning: {warning}", file=sys.stderr)
    for spec in result.specs:
        for item in spec.unmapped:
            print(f"jobrunner: {spec.where}: not mapped: {item}", file=sys.stderr)
    count = len(result.problems)
    print(
        f"jobrunner: {len(result.specs)} job(s) imported, "
        + (f"{len(result.services)} @reboot daemon(s) as service(s), " if result.services else "")
        + (f"{len(result.skipped)} skipped on purpose, " if result.skipped else "")
        + f"{count} line(s) or unit(s) could not be converted",
        file=sys.stderr,
    )
    return 1 if strict and count else 0


def _output(result: ImportResult, args: argparse.Namespace, *, print_modules: bool) -> None:
    if args.out:
        writes: list[Callable[[], list[tuple[Path, str]]]] = [
            lambda: write_modules(result.specs, args.out, force=args.force),
            lambda: write_services(result.services, args.out, force=args.force),
        ]
        for write in writes:
            try:
                done = write()
            except OSError as exc:
                raise ConfigError(f"import: {exc.filename or args.out}: {exc.strerror or exc}") from None
            for path, what in done:
                print(f"{what} {path}", file=sys.stderr)
        for service in result.services:
            print(
                f"jobrunner: {service.unit}: a service, not a job (units install leaves it alone); put it in place "
                f"with: {install_command(service, Path(args.out, SERVICES_DIR))}",
                file=sys.stderr,
            )
    elif print_modules:
        for spec in result.specs:
            print(f"# ---- {spec.name}.py ----")
            sys.stdout.write(render_module(spec))
        for service in result.services:
            print(f"# ---- {SERVICES_DIR}/{service.unit} ----")
            sys.stdout.write(service.text)
            if service.env_text is not None:
                print(f"# ---- {SERVICES_DIR}/{service.env_name} (install -m 0600 as {service.env_path}) ----")
                sys.stdout.write(service.env_text)


def _check(result: ImportResult, args: argparse.Namespace) -> int:
    zone = zone_named(args.tz)
    start, end = check_window(args.start, max(1, args.days))
    entries = result.entries
    mismatched = 0
    print(f"cron vs systemd, {start:%Y-%m-%d %H:%M} UTC + {args.days} days, local time {zone.key}")
    for spec, entry in zip(result.specs, entries, strict=True):  # one spec per crontab line
        label = f"{entry.path}:{entry.lineno} ({spec.name}): {entry.line.strip()}"
        if entry.schedule.reboot:
            print(f"\n{label}\n  @reboot: no calendar, runs at boot (nothing to compare)")
            continue
        comparison = compare(label, entry.schedule, spec.schedule, start=start, end=end, zone=zone)
        mismatched += 0 if comparison.ok else 1
        print()
        print("\n".join(comparison.lines(zone, args.show)))
    print(f"\n{len(entries)} line(s) checked, {mismatched} with mismatches")
    return 1 if mismatched else 0


def main(args: argparse.Namespace) -> int:
    """Run ``jobrunner import SOURCE``; the exit code."""
    if args.source == "crontab":
        result = batch.import_crontabs(
            args.files or ["-"], user=args.user, system=args.system, name=args.name or batch.DEFAULT_NAME
        )
        status = 0
        if args.check:
            status = _check(result, args)
        _output(result, args, print_modules=not args.check)
        return max(status, _report(result, args.strict))
    if args.source == "units":
        result = batch.import_units(args.paths)
        _output(result, args, print_modules=True)
        return _report(result, args.strict)
    raise ConfigError(f"unknown import source {args.source!r}")
