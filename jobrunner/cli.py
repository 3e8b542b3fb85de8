"""The command line: a thin shell over library calls.

``jobrunner MODULE[:NAME]`` is ``jobrunner run MODULE[:NAME]``. Each subcommand lives in its
own module, imported only when named, so a timer tick pays for ``run`` alone. A subcommand
module has ``configure(parser)`` and ``main(args) -> int``.

Exit codes are decided here and nowhere else: a ``JobrunnerError`` becomes its ``exit_code``
and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Sequence

from .errors import ConfigError, JobrunnerError, UsageError

__all__ = ["main"]

# name -> (module, one-line help). Modules are imported only when their command runs.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("jobrunner._cmd_run", "run a job: MODULE[:NAME]"),
    "exec": ("jobrunner._cmd_run", "wrap a command with the lock, logs, deadline and exit codes"),
    "list": ("jobrunner._cmd_list", "list the jobs of a package and their schedules"),
    "status": ("jobrunner._cmd_status", "show the recorded state of jobs"),
    "health": ("jobrunner._cmd_health", "check timers, results and staleness (Nagios exit codes)"),
    "alert": ("jobrunner.alert", "notify about a failed unit (what alert-failure@.service runs)"),
    "notify": ("jobrunner.notify_cli", "notification tools: notify test [--tag T]"),
    "units": ("jobrunner.unitgen.cli", "render, verify, install or uninstall systemd units"),
    "version": ("jobrunner._cmd_list", "print the version"),
}


class Parser(argparse.ArgumentParser):
    """argparse with usage errors as ``UsageError`` (exit 64, one line) instead of exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return (
        "usage: jobrunner MODULE[:NAME] [options]\n"
        "       jobrunner COMMAND [options]\n\ncommands:\n" + "\n".join(lines) + "\n\n"
        "'jobrunner COMMAND --help' tells more. Exit codes: 0 ok, 1 failed, 64 usage,\n"
        "75 skipped (lock busy), 78 configuration, 124 timeout, 130/143 interrupted.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(args)
    except JobrunnerError as exc:
        _print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("jobrunner: interrupted", file=sys.stderr)
        return 130


def _print_error(exc: JobrunnerError) -> None:
    from .redact import default_redactor

    message = " ".join(default_redactor().redact(str(exc)).split())
    try:
        print(f"jobrunner: {message}", file=sys.stderr)
    except OSError:
        pass


def _dispatch(args: list[str]) -> int:
    if not args:
        raise UsageError("no job or command given (see 'jobrunner --help')")
    if args[0] in ("-h", "--help", "help"):
        sys.stdout.write(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        args = ["version"]
    command = args[0]
    if command in SUBCOMMANDS:
        rest = args[1:]
    elif command.startswith("-"):
        # Options before the job (``jobrunner --dry-run jobs.x``) belong to ``run``.
        command, rest = "run", args
    elif ":" in command or "." in command or command.isidentifier():
        command, rest = "run", args
    else:
        raise UsageError(f"unknown command {command!r} (see 'jobrunner --help')")
    import importlib

    try:
        module = importlib.import_module(SUBCOMMANDS[command][0])
    except ImportError as exc:  # a broken install, named in one line
        raise ConfigError(f"command {command!r} is unavailable: {exc} (reinstall jobrunner)") from None
    parser = Parser(prog=f"jobrunner {command}", description=SUBCOMMANDS[command][1])
    module.configure(parser, command)
    trailing: list[str] | None = None
    if command in getattr(module, "TAKES_COMMAND", ()):
        # Everything after the first '--' is a command line of its own, never our options.
        if "--" in rest:
            cut = rest.index("--")
            rest, trailing = rest[:cut], rest[cut + 1 :]
        elif not {"-h", "--help"} & set(rest):
            raise UsageError(f"{command} needs '--' before the command (see 'jobrunner {command} --help')")
    parsed = parser.parse_args(rest)
    if trailing is not None:
        parsed.command = trailing
    return int(module.main(parsed, command))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
