"""``jobrunner units render|verify|install|uninstall``: a thin shell over :mod:`jobrunner.unitgen`.

Usage::

    jobrunner units render [--out units] [--package NAME] [--python PATH] [--check] [JOB ...]
    jobrunner units verify [--dir units] [--threshold N]
    jobrunner units install [--dir units] [--root /] [--env NAME] [--dry-run] [--force]
    jobrunner units uninstall [--root /] [--dry-run] [--force]

``--package`` is the option of ``list``, ``status`` and ``health`` (default:
``$JOBRUNNER_PACKAGE``, else ``jobs``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobrunner.cli import add_package_option
from jobrunner.errors import ConfigError
from jobrunner.unitgen.install import install, uninstall
from jobrunner.unitgen.render import DEFAULT_PYTHON, merge_shared, render_all
from jobrunner.unitgen.verify import verify_dir
from jobrunner.unitgen.write import write_rendered

__all__ = ["HELP", "configure", "main"]

HELP = "render, verify, install or uninstall systemd units"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``units`` actions and their options to ``parser``."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    render = actions.add_parser("render", help="write the units of the jobs (deterministic)")
    render.add_argument(
        "--out", default="units", help="output directory (default: units); '-': print the files, as systemctl cat"
    )
    add_package_option(render)
    render.add_argument("--python", default=None, help="interpreter in ExecStart= (default: /opt/jobrunner/bin/python)")
    render.add_argument("--metrics-dir", default=None, help="node_exporter textfile dir to make writable and set")
    render.add_argument("--check", action="store_true", help="write nothing; exit 1 when --out differs")
    render.add_argument("jobs", nargs="*", metavar="JOB", help="job name, unit name or MODULE:NAME (default: all)")

    verify = actions.add_parser("verify", help="systemd-analyze verify + security scores of rendered units")
    verify.add_argument("--dir", default="units", help="directory of rendered units (default: units)")
    verify.add_argument("--threshold", type=float, default=None, help="one exposure threshold for all units")

    install = actions.add_parser("install", help="install rendered units under /etc/systemd/system")
    install.add_argument("--dir", default="units", help="directory of rendered units (default: units)")
    install.add_argument("--root", default="/", help="install under this root (no systemctl then)")
    install.add_argument("--env", default=None, help="add <unit>.service.d/<env>.conf environment drop-ins")
    install.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    install.add_argument("--force", action="store_true", help="overwrite files jobrunner did not write")

    uninstall = actions.add_parser("uninstall", help="remove exactly what install wrote")
    uninstall.add_argument("--root", default="/", help="the root install used")
    uninstall.add_argument("--dry-run", action="store_true", help="list, remove nothing")
    uninstall.add_argument("--force", action="store_true", help="also remove files edited since install")
    uninstall.add_argument(
        "--dir", default=None, help="accepted for symmetry with install: uninstall removes what install recorded"
    )


def _render(args: argparse.Namespace) -> int:
    files = render_all(args.package, args.jobs, python=args.python or DEFAULT_PYTHON, metrics_dir=args.metrics_dir)
    if args.out == "-":
        for rel, text in files.items():
            sys.stdout.write(f"# {rel}\n{text}\n")
        return 0
    if args.jobs:  # JOB's files only; the shared ones merged into --out's, never rewritten from JOB's view
        files = merge_shared(files, args.out)
    try:
        changed = write_rendered(files, args.out, prune=not args.jobs, check=args.check)
    except OSError as exc:  # --out /proc/1, a read-only or full disk: one line, exit 78
        where = exc.filename or args.out
        raise ConfigError(f"units render: cannot write {where}: {exc.strerror or exc} (check --out)") from None
    if args.check:
        for rel in changed:
            print(f"jobrunner: {Path(args.out) / rel} is out of date", file=sys.stderr)
        print(f"{len(files)} file(s) rendered, {len(changed)} differ from {args.out}")
        return 1 if changed else 0
    for rel in changed:
        print(f"wrote {Path(args.out) / rel}" if rel in files else f"removed {Path(args.out) / rel}")
    print(f"{len(files)} file(s) in {args.out}, {len(changed)} changed")
    return 0


def _verify(args: argparse.Namespace) -> int:
    scores, problems = verify_dir(args.dir, args.threshold)
    for score in scores:
        verdict = "ok" if score.ok else "OVER"
        print(f"{score.unit}: exposure {score.exposure:.1f} (threshold {score.threshold:.1f}) {verdict}")
    for problem in problems:
        print(f"jobrunner: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(args: argparse.Namespace) -> int:
    """Run ``jobrunner units ACTION``; the exit code of the action."""
    if args.action == "render":
        return _render(args)
    if args.action == "verify":
        return _verify(args)
    if args.action in ("install", "uninstall"):
        if args.action == "uninstall" and args.dir is not None:
            print(
                f"jobrunner: uninstall removes what install recorded in its manifest under --root {args.root}, "
                f"whatever --dir ({args.dir}) holds now",
                file=sys.stderr,
            )
        try:
            if args.action == "install":
                install(args.dir, args.root, env=args.env, dry_run=args.dry_run, force=args.force)
            else:
                uninstall(args.root, dry_run=args.dry_run, force=args.force)
        except OSError as exc:  # --root /proc/1, a file, a read-only tree: one line, exit 78
            where = exc.filename or args.root
            raise ConfigError(
                f"units {args.action}: cannot write {where}: {exc.strerror or exc} (check --root)"
            ) from None
        return 0
    raise ConfigError(f"unknown units action {args.action!r}")
