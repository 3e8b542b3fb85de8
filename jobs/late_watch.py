"""Tell of jobs whose timer did not start them: ``jobrunner health --notify`` every 15 minutes.

A job that is late (its timer disabled or masked, the machine off past its time, a broken
``OnCalendar=``) runs no code that could say so, and ``alert-failure@`` has no failed unit to
report. This job is the check from outside: ``jobrunner health --notify`` over the package's
jobs sends ``⏰ JOB is late on HOST`` once per late episode (again after the repeat window
while it stays late; never while the job is silenced) and ``✅ JOB started again`` when it
has (``jobrunner.observe.late``, docs/alerting.md).

Settings, from the environment or ``/etc/default/late-watch``:

- ``LATE_WATCH_PACKAGE``: the package of job modules to watch (default ``$JOBRUNNER_PACKAGE``,
  else ``jobs``)

It reads every job's state directory, which belongs to that job's user (0750): the unit runs
as root with ``CAP_DAC_READ_SEARCH`` back (read, never write, past file permissions) and
nothing else; what it told is kept in its own state directory.
"""

from __future__ import annotations

import os
import sys

from jobrunner import JobContext, job


@job(
    schedule="*:0/15",
    accuracy="1m",
    lock=True,
    timeout="5m",
    hardening="strict",
    network=True,  # the notifications
    env_files=["-/etc/default/late-watch"],
    systemd={"Service": {"CapabilityBoundingSet": "CAP_DAC_READ_SEARCH"}},
    security_threshold=2.0,
)
def late_watch(ctx: JobContext) -> None:
    """Notify of late jobs (their timer did not start them) and of their starting again."""
    package = (ctx.env.get("LATE_WATCH_PACKAGE") or ctx.env.get("JOBRUNNER_PACKAGE") or "jobs").strip()
    argv = [
        sys.executable,
        "-m",
        "jobrunner",
        "health",
        "--notify",
        "--package",
        package,
        "--state-dir",
        os.path.dirname(ctx.state_dir),
        "--notify-memory",
        os.path.join(ctx.state_dir, "late-notified.json"),
    ]
    done = ctx.run(argv, check=False, capture=True)
    lines = (done.stdout or "").splitlines()
    for line in lines:
        ctx.log.info("late_watch.health", line=line)
    verdict = health_verdict(lines[0] if lines else "", done.returncode)
    if verdict is None:  # a traceback's exit 1 is no WARNING: nothing was judged
        first = " ".join((lines[0] if lines else "nothing on stdout").split())[:200]
        raise RuntimeError(
            f"jobrunner health did not answer with a status line (exit {done.returncode}, said {first!r}): see its output above"
        )
    if verdict == "UNKNOWN":  # 3: the check could not judge
        raise RuntimeError(f"jobrunner health could not judge the jobs (exit {done.returncode}): see its output above")
    ctx.log.info("late_watch.checked", package=package, health_exit=done.returncode)


_VERDICTS = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def health_verdict(first_line: str, exit_code: int) -> str | None:
    """The verdict of a Nagios plugin's answer: its first line's status word when that line is
    ``STATUS: …`` and the word agrees with the exit code, else ``None`` (a crash, a traceback,
    a wrong binary: the jobs were not judged, whatever the exit code says)."""
    word, sep, _rest = first_line.partition(": ")
    if not sep or _VERDICTS.get(word) != exit_code:
        return None
    return word
