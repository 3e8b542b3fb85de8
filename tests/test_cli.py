"""The command line: bad input is one line and the documented code; list, version, exec."""

from __future__ import annotations

import json
import signal

import pytest

from .conftest import wait_for


def one_line_error(run, code: int) -> str:
    assert run.returncode == code, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("jobrunner: "), run.stderr
    return run.stderr


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("x = 1\n", "declares no @job"),
        ("from jobrunner import job\n@job\ndef a(ctx): pass\n@job\ndef b(ctx): pass\n", "declares 2 jobs"),
        ("from jobrunner import job\n@job(timeout='5 fortnights')\ndef a(ctx): pass\n", "timeout"),
        ("import no_such_dependency_xyz\n", "no_such_dependency_xyz"),
        ("def broken(:\n", "broken.py:1: SyntaxError"),
    ],
)
def test_bad_job_modules_exit_78(launcher, source, needle):
    """A module with no job, two jobs, a bad declaration or a broken import: exit 78, one line."""
    launcher.write_job("broken", source)
    assert needle in one_line_error(launcher.run("broken"), 78)


def test_naming_one_of_two_jobs_runs_it(launcher):
    """MODULE:NAME picks one job of a module that declares several."""
    launcher.write_job(
        "two", "from jobrunner import job\n@job\ndef a(ctx): pass\n@job\ndef b(ctx):\n    ctx.log.info('b.ran')\n"
    )
    run = launcher.run("run", "two:b")
    assert run.returncode == 0 and "b.ran" in run.names()
    assert "no job 'c'" in one_line_error(launcher.run("two:c"), 78)


def test_missing_env_file_exits_78(launcher, tmp_path):
    """--env-file naming a missing file: exit 78 naming it."""
    assert "nope.env" in one_line_error(launcher.run("run", "jobs.noop", "--env-file", str(tmp_path / "nope.env")), 78)


def test_unknown_command_and_no_arguments_exit_64(launcher):
    """An unknown word and a bare 'jobrunner' are usage errors (64)."""
    one_line_error(launcher.run("frob-nicate"), 64)
    assert launcher.run().returncode == 64


def test_version_and_help(launcher):
    """version prints the version; --help prints usage and exits 0."""
    from jobrunner import __version__

    assert launcher.run("version").stdout.strip() == f"jobrunner {__version__}"
    assert launcher.run("--help").returncode == 0


def test_list_shows_jobs_schedules_locks_timeouts(launcher):
    """list shows every job of the package with schedule, lock and timeout."""
    run = launcher.run("list", "jobs", "--json", "--no-next")
    assert run.returncode == 0, run.stderr
    rows = {r["job"]: r for r in map(json.loads, run.stdout.splitlines())}
    assert "jobs.noop:noop" in rows and "jobs.dir_backup:dir_backup" in rows
    backup = rows["jobs.dir_backup:dir_backup"]
    assert backup["schedule"] == ["daily"] and backup["lock"] == "exclusive" and backup["timeout"] == "1h"


def test_dry_run_runs_no_command(launcher, tmp_path):
    """--dry-run logs commands instead of running them and exits 0."""
    mark = tmp_path / "made"
    launcher.write_job(
        "toucher",
        f"""
        from jobrunner import job

        @job(lock=True)
        def toucher(ctx):
            ctx.run(["touch", {str(mark)!r}])
    """,
    )
    run = launcher.run("run", "toucher", "--dry-run")
    assert run.returncode == 0
    assert not mark.exists()
    assert run.event("proc.dry_run")["argv"] == ["touch", str(mark)]


def test_exec_wraps_a_script_and_passes_its_status_through(launcher, tmp_path):
    """exec runs a legacy command with logs and state; a failing command's own status is kept."""
    script = tmp_path / "legacy.sh"
    script.write_text('#!/bin/sh\necho "[INFO] working"\nexit 3\n')
    script.chmod(0o755)
    run = launcher.run("exec", "legacy", "--", str(script))
    assert run.returncode == 3
    assert run.event("proc.output")["line"] == "[INFO] working"
    assert run.event("job.finished")["job"] == "legacy"
    assert launcher.state("legacy")["last_outcome"] == "failure"
    ok = launcher.run("exec", "legacy", "--", "true")
    assert ok.returncode == 0 and launcher.state("legacy")["consecutive_failures"] == 0


def test_exec_lock_and_timeout(launcher, tmp_path):
    """exec --lock skips a second copy with 75; --timeout kills the command with 124."""
    holder = launcher.start("exec", "w", "--lock", "--", "sh", "-c", f"touch {tmp_path}/in; sleep 30")
    assert wait_for(lambda: (tmp_path / "in").exists(), 15)
    assert launcher.run("exec", "w", "--lock", "--", "true").returncode == 75
    holder.send_signal(signal.SIGTERM)
    assert launcher.finish(holder).returncode == 143
    assert launcher.run("exec", "t", "--timeout", "1s", "--", "sleep", "30").returncode == 124


def test_exec_without_command_is_usage_error(launcher):
    """exec with nothing after -- is a usage error."""
    one_line_error(launcher.run("exec", "x", "--"), 64)


def test_exec_help_is_help_not_a_usage_error(launcher):
    """`jobrunner exec --help` prints the help (exit 0), although exec otherwise needs '--'."""
    run = launcher.run("exec", "--help")
    assert run.returncode == 0 and "-- COMMAND" in run.stdout


def test_tables_align_their_columns_and_print_no_escape():
    """The commands' tables (status, list, instances, the fleet): columns two spaces apart, no
    trailing spaces, and a control character in recorded text shown escaped, never sent raw."""
    from jobrunner.cli import format_table

    text = format_table([("JOB", "LAST"), ("backup", "failure \x1b[2J"), ("x", "-")])
    assert text.splitlines() == ["JOB     LAST", "backup  failure \\x1b[2J", "x       -"]
    assert "\x1b" not in text
