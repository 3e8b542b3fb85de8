"""The command line: a thin shell over library calls.

``jobrunner MODULE[:NAME]`` is ``jobrunner run MODULE[:NAME]``. Each command is one module of
this package, named in ``COMMANDS`` (name -> module path and one-line help, as pip's
``commands_dict``) and imported only when its command runs, so a timer tick pays for ``run``
alone and ``jobrunner --help`` imports no command at all. A command module has:

- ``HELP: str``: its one-line help, the same text as its ``COMMANDS`` entry;
- ``configure(parser: argparse.ArgumentParser) -> None``: adds its arguments;
- ``main(args: argparse.Namespace) -> int``: runs it, returns the exit code;
- optionally ``TAKES_COMMAND = True``: everything after the first ``--`` is a command line of
  its own (``exec``), handed over as ``args.command``.

Exit codes are decided here and nowhere else: a ``JobrunnerError`` becomes its ``exit_code``
and one line on stderr, never a traceback.

Note: the modules ``list`` and ``exec`` become attributes of this package once imported, so
this module never uses the builtins of those names.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple, NoReturn

from jobrunner.errors import ConfigError, JobrunnerError, UsageError
from jobrunner.redact import default_redactor
from jobrunner.run.loader import DEFAULT_PACKAGE, PACKAGE_ENV, default_package, load_job
from jobrunner.validate import printable

__all__ = ["COMMANDS", "CommandInfo", "Parser", "add_package_option", "format_table", "main"]


class CommandInfo(NamedTuple):
    """Where a command lives and its one-line help (``jobrunner --help`` prints it unimported)."""

    module: str
    help: str


# The registry: every command, in the order ``jobrunner --help`` lists them.
COMMANDS: dict[str, CommandInfo] = {
    "run": CommandInfo("jobrunner.cli.run", "run a job: NAME or MODULE[:NAME]"),
    "exec": CommandInfo("jobrunner.cli.exec", "wrap a command with the lock, logs, deadline and exit codes"),
    "list": CommandInfo("jobrunner.cli.list", "list the jobs of a package and their schedules"),
    "status": CommandInfo("jobrunner.cli.status", "show the recorded state of jobs"),
    "history": CommandInfo("jobrunner.cli.history", "past runs, newest first: log commands, p50/p95, failure streaks"),
    "health": CommandInfo("jobrunner.cli.health", "check timers, results and staleness (Nagios exit codes)"),
    "silence": CommandInfo(
        "jobrunner.cli.silence", "silence jobs' notifications for a while (--list: the silences in force)"
    ),
    "unsilence": CommandInfo("jobrunner.cli.unsilence", "end silences (jobrunner silence) now"),
    "alert": CommandInfo("jobrunner.cli.alert", "notify about a failed unit (what alert-failure@.service runs)"),
    "notify": CommandInfo("jobrunner.cli.notify", "notification tools: notify test [--tag T]"),
    "instances": CommandInfo("jobrunner.cli.instances", "add, remove or list the instances of a group of jobs (sites)"),
    "units": CommandInfo("jobrunner.cli.units", "render, verify, install or uninstall systemd units"),
    "checks": CommandInfo(
        "jobrunner.cli.checks", "healthchecks checks for the jobs: checks sync [--dry-run] [--prune]"
    ),
    "import": CommandInfo("jobrunner.cli.import", "job modules from crontabs and existing .service/.timer units"),
    "version": CommandInfo("jobrunner.cli.version", "print the version"),
}


class Parser(argparse.ArgumentParser):
    """argparse with usage errors as ``UsageError`` (exit 64, one line) instead of exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def add_package_option(parser: argparse.ArgumentParser, *, implicit: bool = True, help: str | None = None) -> None:
    """``--package NAME``, the one option of ``list``, ``status``, ``health`` and ``units render``.

    Its default is ``jobrunner.run.loader.default_package()`` (``$JOBRUNNER_PACKAGE``, else
    ``jobs``). With ``implicit=False`` (``status``, where the package only adds jobs that never
    ran) only ``$JOBRUNNER_PACKAGE`` is a default: without it, no package.
    """

    if implicit:
        default: str | None = default_package()
        said = f"${PACKAGE_ENV}, else {DEFAULT_PACKAGE}"
    else:
        default = default_package() if _env_package() else None
        said = f"${PACKAGE_ENV}, else none"
    text = help or "the package of job modules"
    parser.add_argument("--package", metavar="NAME", default=default, help=f"{text} (default: {said})")


def format_table(rows: Sequence[Sequence[object]]) -> str:
    """``rows`` (the header first) as a table for a terminal: each cell made printable (recorded
    text, descriptions, the fleet's names: no escape reaches the terminal), the columns
    left-aligned two spaces apart, no trailing spaces."""

    shown = [[printable(str(cell)) for cell in row] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(*shown, strict=True)]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n" for row in shown
    )


def _env_package() -> bool:

    return bool(os.environ.get(PACKAGE_ENV, "").strip())


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [f"  {name:<{width}}  {info.help}" for name, info in COMMANDS.items()]
    return (
        "usage: jobrunner MODULE[:NAME] [options]\n"
        "       jobrunner COMMAND [options]\n\ncommands:\n" + "\n".join(lines) + "\n\n"
        "'jobrunner COMMAND --help' tells more. Exit codes: 0 ok, 1 failed, 64 usage,\n"
        "75 skipped (lock busy), 78 configuration, 124 timeout, 130/143 interrupted.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args = [*(sys.argv[1:] if argv is None else argv)]
    try:
        return _dispatch(args)
    except JobrunnerError as exc:
        _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("jobrunner: interrupted", file=sys.stderr)
        return 130


def _print_error(exc: JobrunnerError) -> None:

    message = " ".join(default_redactor().redact(str(exc)).split())
    try:
        print(f"jobrunner: {message}", file=sys.stderr)
    except OSError:
        pass


def _near_command(word: str) -> str | None:
    """The command ``word`` looks like a typo of (difflib), or None; never for a module path."""
    if ":" in word or "." in word:
        return None
    import difflib

    match = difflib.get_close_matches(word, [*COMMANDS], n=1, cutoff=0.75)
    return match[0] if match else None


def _dispatch(args: list[str]) -> int:
    if not args:
        raise UsageError("no job or command given (see 'jobrunner --help')")
    if args[0] in ("-h", "--help", "help"):
        sys.stdout.write(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        args = ["version"]
    command = args[0]
    if command in COMMANDS:
        rest = args[1:]
    elif command.startswith("-"):
        # Options before the job (``jobrunner --dry-run jobs.x``) belong to ``run``.
        command, rest = "run", args
    elif ":" in command or "." in command or command.replace("-", "_").isidentifier():
        near = _near_command(command)
        if near or not (":" in command or "." in command or command.isidentifier()):
            # 'stauts' (a command mistyped) or 'wp-backup' (a unit name): a job of that name, or
            # a usage error naming the nearest command.

            try:
                load_job(command)
            except ConfigError as exc:
                if near:
                    raise UsageError(
                        f"unknown command {command!r} (did you mean {near!r}?) (see 'jobrunner --help')"
                    ) from None
                raise UsageError(f"unknown command {command!r}: {exc} (see 'jobrunner --help')") from None
        command, rest = "run", args
    else:
        raise UsageError(f"unknown command {command!r} (see 'jobrunner --help')")

    try:
        module = importlib.import_module(COMMANDS[command].module)
    except ImportError as exc:  # a broken install, named in one line
        raise ConfigError(f"command {command!r} is unavailable: {exc} (reinstall jobrunner)") from None
    parser = Parser(prog=f"jobrunner {command}", description=module.HELP)
    module.configure(parser)
    trailing: list[str] | None = None
    if getattr(module, "TAKES_COMMAND", False):
        # Everything after the first '--' is a command line of its own, never our options.
        if "--" in rest:
            cut = rest.index("--")
            rest, trailing = rest[:cut], rest[cut + 1 :]
        elif not {"-h", "--help"} & set(rest):
            raise UsageError(f"{command} needs '--' before the command (see 'jobrunner {command} --help')")
    parsed = parser.parse_args(rest)
    if trailing is not None:
        parsed.command = trailing
    return int(module.main(parsed))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
