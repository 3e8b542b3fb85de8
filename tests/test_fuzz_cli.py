"""jobrunner.cli: random command lines end with a contract exit code and at most one error line, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobrunner.cli import COMMANDS as SUBCOMMANDS

from .conftest import REPO, clean_env

# Exit codes of docs/design.md that a command line alone can produce (130/143 need a signal).
CONTRACT = {0, 1, 64, 75, 78, 124}
# `exec` passes a failed command's status through (DESIGN: "a failed command's status is ours"),
# and 127 is how it reports a command that cannot be started, as a shell does.
EXEC_PASSTHROUGH = {127}
# `health` speaks the Nagios plugin convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
NAGIOS = {0, 1, 2, 3}


# Every subcommand, always: one whose module does not import must fail here (see
# test_every_subcommand_module_imports), never silently drop out of the fuzz.
# No action words for `units` (install/uninstall would touch /etc as root).
COMMANDS = sorted(SUBCOMMANDS)
# What the CLI says, exit 78, when a subcommand's module fails to import: a broken tree, not a
# configuration error a user could make, so never acceptable here.
BROKEN = "is unavailable:"
FLAGS = [
    "--dry-run",
    "--env-file",
    "--log-format",
    "json",
    "console",
    "--no-notify",
    "-h",
    "--help",
    "-V",
    "--version",
    "--lock",
    "--lock-wait",
    "--shared",
    "--timeout",
    "--retry",
    "--retry-delay",
    "--cwd",
]
JUNK = [
    "frobnicate",
    "--frobnicate",
    "-x",
    "",
    "-",
    ":",
    "x y",
    "é",
    "/tmp",
    "/etc/passwd",
    "3",
    "-1",
    "0",
    "jobs.noop",
    "jobs.noop:noop",
    "jobs.noop:nope",
    "no_such_module",
    "a..b",
    "jobs",
    "noop",
]
SPANS = ["1ms", "90s", "2h 30min", "5parsecs", "-5s", "0", "1.5h"]
PROGRAMS = ["true", "false"]

WORDS = st.sampled_from(COMMANDS + FLAGS + JUNK + SPANS + PROGRAMS + ["--"])
# Free word salad, plus lines shaped like real use (command, name, flag/value pairs, '-- program')
# so that examples also get past argparse into loading, locking and running.
VALUES = st.sampled_from(SPANS + JUNK + ["json", "console", "2"])
SHAPED = st.tuples(
    st.sampled_from([*COMMANDS, "jobs.noop", "no_such_module", "--dry-run"]),
    st.sampled_from(["x", "jobs.noop", "jobs.noop:noop", "noop", "bad name", "/tmp", ""]),
    st.lists(st.tuples(st.sampled_from(FLAGS), st.one_of(st.just(None), VALUES)), max_size=3),
    st.sampled_from([[], ["--"], ["--", "true"], ["--", "false"], ["true"]]),
).map(lambda t: [t[0], t[1], *[w for pair in t[2] for w in pair if w is not None], *t[3]])
ARGV = st.one_of(st.lists(WORDS, min_size=1, max_size=6), SHAPED)


def _run_cli(launcher, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from jobrunner.cli import main; sys.exit(main(sys.argv[1:]))", *argv],
        capture_output=True,
        text=True,
        env=launcher.env(),
        cwd=launcher.tmp,
        stdin=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )


@pytest.mark.slow
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(argv=ARGV)
def test_random_command_lines_keep_the_exit_contract(launcher, argv):
    """Any mix of real flags, subcommands, junk, '--' and spans exits with a contract code, one error line, no traceback."""
    proc = _run_cli(launcher, argv)
    allowed = CONTRACT | (EXEC_PASSTHROUGH if "exec" in argv else set())
    if argv and argv[0] == "health":
        allowed |= NAGIOS
    context = f"argv={argv!r} exit={proc.returncode}\nstderr:\n{proc.stderr}"
    assert proc.returncode in allowed, context
    assert "Traceback" not in proc.stderr, context
    assert BROKEN not in proc.stderr, context
    if proc.returncode in (64, 78):
        assert proc.stderr.count("\n") == 1 and proc.stderr.endswith("\n"), context
        assert proc.stderr.startswith("jobrunner: "), context


@pytest.mark.slow
def test_no_arguments_is_a_usage_error_on_stderr(launcher):
    """`jobrunner` alone exits 64 and says so in one line on stderr, like every other usage error."""
    proc = _run_cli(launcher, [])
    assert proc.returncode == 64
    assert proc.stderr.startswith("jobrunner: ") and proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_module_imports(command):
    """Each subcommand listed in jobrunner --help has a module that imports, in a fresh
    interpreter, and has the configure/main pair the CLI calls (else the command is dead)."""
    module = SUBCOMMANDS[command][0]
    check = (
        "import importlib, sys; m = importlib.import_module(sys.argv[1]); "
        "missing = [f for f in ('configure', 'main') if not callable(getattr(m, f, None))]; "
        "sys.exit(f'{sys.argv[1]} has no {missing}' if missing else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check, module],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(PYTHONPATH=str(REPO)),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, f"{command}: {module} does not import:\n{proc.stderr}"
