"""Issue #13, finding 8: bad input is one line on stderr and a documented exit code, never a
traceback, a hang or an unbounded read.

64 (usage) for a bad command line, 78 (configuration) for a bad declaration, file or variable.
The tests that would hang or eat memory on a regression run the CLI under a timeout and an
address-space limit, so a regression fails the test instead of the machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from .conftest import REPO


def one_line(proc, code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("jobrunner: "), proc.stderr[-2000:]
    return proc.stderr


def _limit_memory() -> None:
    os.setsid()
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def bounded(launcher, *args: str, env: dict[str, str] | None = None, timeout: float = 20):
    """The CLI with 2 GiB of address space and ``timeout`` seconds."""
    return subprocess.run(
        [sys.executable, "-m", "jobrunner", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or launcher.env(),
        cwd=launcher.tmp,
        preexec_fn=_limit_memory,
        stdin=subprocess.DEVNULL,
    )


def test_huge_timeout_is_a_config_error_at_import(launcher):
    """timeout="300y" fails when the module is loaded, naming the job (before: OverflowError at run time, exit 1)."""
    launcher.write_job(
        "forever",
        """
        from jobrunner import job

        @job(timeout="300y")
        def forever(ctx):
            ctx.log.info("ran")
    """,
    )
    run = launcher.run("forever")
    message = one_line(run, 78)
    assert "forever" in message and "300y" in message and "100 years" in message
    assert "ran" not in run.stdout


def test_huge_exec_timeout_is_a_usage_error(launcher):
    """`exec --timeout 300y`: exit 64 and one line, before anything runs."""
    one_line(launcher.run("exec", "x", "--timeout", "300y", "--", "true"), 64)


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_notify_config_that_is_not_a_regular_file_is_refused(launcher, tmp_path, special):
    """JOBRUNNER_NOTIFY_CONFIG=/dev/zero or a FIFO: `notify test` exits 78 at once (before: /dev/zero was read
    until memory ran out, 24 GB on the reporter's machine; a FIFO hung)."""
    path = special
    if special == "fifo":
        path = str(tmp_path / "apprise.yml")
        os.mkfifo(path)
    run = bounded(launcher, "notify", "test", env=launcher.env(JOBRUNNER_NOTIFY_CONFIG=path))
    assert "not a regular file" in one_line(run, 78)


def test_oversized_notify_config_is_refused(launcher, tmp_path):
    """An Apprise config over 1 MiB is refused, not parsed."""
    big = tmp_path / "apprise.txt"
    big.write_text("json://localhost/x\n" * 70000)
    run = bounded(launcher, "notify", "test", env=launcher.env(JOBRUNNER_NOTIFY_CONFIG=str(big)))
    assert "larger than 1024 KiB" in one_line(run, 78)


def test_failed_run_with_a_dev_zero_notify_config_ends_quickly(launcher):
    """A failing job whose notification config is /dev/zero still ends (exit 1) with notify.failed logged."""
    launcher.write_job("failer", "from jobrunner import job\n@job\ndef failer(ctx):\n    raise RuntimeError('boom')\n")
    run = bounded(launcher, "failer", env=launcher.env(JOBRUNNER_NOTIFY_CONFIG="/dev/zero"))
    assert run.returncode == 1, run.stderr[-2000:]
    assert '"notify.failed"' in run.stdout and "not a regular file" in run.stdout


@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "dir"])
def test_env_file_that_is_not_a_regular_file_is_refused(launcher, tmp_path, special):
    """--env-file /dev/zero, a FIFO nobody writes or a directory: exit 78 at once (before: the FIFO hung)."""
    launcher.write_job("noop", "from jobrunner import job\n@job\ndef noop(ctx):\n    pass\n")
    path = {"/dev/zero": "/dev/zero", "dir": str(tmp_path)}.get(special)
    if special == "fifo":
        path = str(tmp_path / "env.fifo")
        os.mkfifo(path)
    run = bounded(launcher, "noop", "--env-file", path)
    assert "not a regular file" in one_line(run, 78)


def test_oversized_env_file_is_refused(launcher, tmp_path):
    """An env file over 1 MiB is refused with one line."""
    launcher.write_job("noop", "from jobrunner import job\n@job\ndef noop(ctx):\n    pass\n")
    big = tmp_path / "big.env"
    big.write_text("A=" + "x" * (1 << 20) + "\n")
    assert "larger than" in one_line(bounded(launcher, "noop", "--env-file", str(big)), 78)


def test_units_render_into_proc_is_one_line(launcher, tmp_path):
    """`units render --out /proc/1` (nothing can be written there): exit 78, one line (before: a traceback)."""
    run = subprocess.run(
        [sys.executable, "-m", "jobrunner", "units", "render", "--out", "/proc/1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=launcher.env(),
        cwd=REPO,
    )
    assert "/proc/1" in one_line(run, 78)


@pytest.mark.parametrize(
    "flags",
    [["--lock", ""], ["--lock="], ["--redis="], ["--lease="], ["--lock-wait", ""], ["--cwd", ""], ["--retry", "0"]],
    ids=["lock", "lock=", "redis=", "lease=", "lock-wait", "cwd", "retry0"],
)
def test_exec_empty_flag_values_are_usage_errors(launcher, tmp_path, flags):
    """`exec --lock ''` and friends: exit 64 naming the flag (before: --lock '' silently ran with no lock)."""
    marker = tmp_path / "ran"
    run = launcher.run("exec", "x", *flags, "--", "touch", str(marker))
    assert flags[0].split("=")[0] in one_line(run, 64)
    assert not marker.exists()


def test_exec_empty_name_is_a_usage_error(launcher):
    """`exec '' -- true` does not run as a job called 'wrapped'."""
    assert "NAME" in one_line(launcher.run("exec", "", "--", "true"), 64)
