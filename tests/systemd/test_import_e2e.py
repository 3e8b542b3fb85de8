"""Imported jobs under a real systemd: crontab(5)'s examples and Debian's own cron lines and
timer units (from the packages), imported inside the sandbox with the installed
``jobrunner import``, rendered, verified, installed with ``jobrunner units install`` and
started; the original commands' output is in the journal as proc.output events.

Job modules live inside the sandbox in /etc/jobrunner/jobs/imported (JOBRUNNER_PATH from
/etc/jobrunner/jobrunner.env, which every unit loads).
"""

from __future__ import annotations

import os

import pytest

from ..debian_packages import CRON_D, crontab5_examples, debian

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

PY = "/opt/jobrunner/bin/python"
JOBS = "/etc/jobrunner/jobs"
PACKAGE = "imported"
ENV = {"JOBRUNNER_PATH": JOBS}
DEBIAN_LINES = ("e2fsprogs", "mdadm", "ntpsec")


@pytest.fixture(scope="module")
def imported(installed_sandbox, debian):
    sb = installed_sandbox
    example, _ = crontab5_examples(debian)
    sb.write_file("/root/import/root", example)  # root's crontab: its jobs are cron_root_1 … cron_root_6
    for package in DEBIAN_LINES:
        path = debian.file(package, CRON_D[package])
        sb.write_file(f"/root/import/{path.name}", path.read_text())
    # A stand-in for mail(1), inside the throwaway sandbox only: it prints its arguments and input.
    sb.write_file("/usr/bin/mail", '#!/bin/sh\necho "mail to $*"\ncat\n', mode=0o755)
    sb.write_file("/etc/jobrunner/jobrunner.env", f"JOBRUNNER_PATH={JOBS}\n")
    out = f"{JOBS}/{PACKAGE}"
    sb.run(["rm", "-rf", out, "/root/imported-units"])
    sb.run(
        [PY, "-m", "jobrunner", "import", "crontab", "--user", "root", "--out", out, "--strict", "/root/import/root"],
        env=ENV,
    )
    files = [f"/root/import/{debian.file(p, CRON_D[p]).name}" for p in DEBIAN_LINES]
    sb.run([PY, "-m", "jobrunner", "import", "crontab", "--out", out, "--strict", *files], env=ENV)
    units = {}
    if os.path.exists("/usr/lib/php/sessionclean"):  # php-common, which CI installs
        timer = debian.file("php-common", "lib/systemd/system/phpsessionclean.timer")
        sb.write_file(f"/root/import/units/{timer.name}", timer.read_text())
        sb.write_file("/root/import/units/phpsessionclean.service", timer.with_suffix(".service").read_text())
        sb.run([PY, "-m", "jobrunner", "import", "units", "/root/import/units", "--out", out, "--strict"], env=ENV)
        # The sandbox masks the timers of the host's packages (README): the imported unit,
        # which keeps its name, replaces that mask as it would replace the package's timer.
        sb.run(["rm", "-f", "/etc/systemd/system/phpsessionclean.timer"])
        units["php"] = True
    sb.run([PY, "-m", "jobrunner", "units", "render", "--out", "/root/imported-units", "--package", PACKAGE], env=ENV)
    verify = sb.run([PY, "-m", "jobrunner", "units", "verify", "--dir", "/root/imported-units"], env=ENV, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    sb.run([PY, "-m", "jobrunner", "units", "install", "--dir", "/root/imported-units"], env=ENV, timeout=120)
    names = sb.run("ls /root/imported-units").stdout.split()
    for name in names:
        if name.endswith(".service") and "@" not in name:
            sb.pin(name, reload=False)
    sb.daemon_reload()
    return sb, units


def _run(sb, unit: str) -> tuple[dict, list[dict]]:
    state = sb.start_oneshot(unit, timeout=120)
    return state, sb.job_events(state["InvocationID"], unit=unit)


def test_crontab5_lines_run_with_their_output_in_the_journal(imported):
    sb, _ = imported
    state, events = _run(sb, "cron-root-5.service")  # 5 4 * * sun  echo "run at 5 after 4 every sunday"
    assert state["Result"] == "success" and state["ExecMainStatus"] == "0"
    assert [e["line"] for e in events if e["event"] == "proc.output"] == ["run at 5 after 4 every sunday"]
    assert events[0]["event"] == "job.started" and events[-1]["event"] == "job.finished"
    timer = sb.read_file("/etc/systemd/system/cron-root-5.timer")
    assert "OnCalendar=Sun *-*-* 04:05:00" in timer


def test_percent_input_reaches_the_command(imported):
    """0 22 * * 1-5  mail -s "It's 10pm" joe%Joe,%%Where are your kids?%"""
    sb, _ = imported
    state, events = _run(sb, "cron-root-3.service")
    assert state["Result"] == "success"
    lines = [e["line"] for e in events if e["event"] == "proc.output"]
    assert lines == ["mail to -s It's 10pm joe", "Joe,", "", "Where are your kids?"]


def test_escaped_percent_is_a_literal(imported):
    """33 22 * * *  expr $(date +\\%s) / 60 / 60 / 24 \\% 9 > /dev/null || echo Wax the floor."""
    sb, _ = imported
    state, events = _run(sb, "cron-root-6.service")
    assert state["Result"] == "success"
    lines = [e["line"] for e in events if e["event"] == "proc.output"]
    assert lines in ([], ["Wax the floor."]) and not any("non-integer" in line or "syntax" in line for line in lines)


@pytest.mark.parametrize("unit", ["cron-mdadm"])
def test_debian_cron_lines_run_to_success(imported, unit):
    """Debian's own lines run to success (e2fsprogs' and ntpsec's, which step aside when systemd
    runs the machine, are skipped by the import: no unit is made for them)."""
    sb, _ = imported
    state, events = _run(sb, f"{unit}.service")
    assert state["Result"] == "success" and state["ExecMainStatus"] == "0", events
    assert events[-1]["event"] == "job.finished" and events[-1].get("outcome") in ("success", "succeeded", "ok")


def test_an_imported_timer_unit_runs(imported):
    """php-common's phpsessionclean.service, imported with its sandbox settings, runs to success."""
    sb, units = imported
    if not units.get("php"):
        pytest.skip("php-common's /usr/lib/php/sessionclean is not installed (CI installs it)")
    state, events = _run(sb, "phpsessionclean.service")
    assert state["Result"] == "success", events
    text = sb.read_file("/etc/systemd/system/phpsessionclean.service")
    assert "ProtectSystem=true" in text and "ProtectHome=true" in text
