"""The shipped jobs in their shipped units: installed with the project's own commands into a
real systemd, each runs to success inside its strict sandbox.

(The WordPress jobs, which need the stack, are run in their units by tests/wp/test_wp_units_e2e.py
and tests/systemd/test_php_fpm_restart.py.)
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

PY = "/opt/jobrunner/bin/python"
JOBS = ("noop", "dir_backup", "disk_check")


@pytest.fixture(scope="module")
def shipped(installed_sandbox):
    sb = installed_sandbox
    sb.run([PY, "-m", "jobrunner", "units", "render", "--out", "/root/shipped-units", *JOBS])
    sb.run([PY, "-m", "jobrunner", "units", "install", "--dir", "/root/shipped-units"], timeout=120)
    # The timers are enabled and active as installed; stop them so that they cannot fire in
    # the middle of other tests sharing this sandbox.
    for unit in ("dir-backup", "disk-check"):
        assert sb.show(f"{unit}.timer", "ActiveState")["ActiveState"] == "active"
        sb.systemctl("stop", f"{unit}.timer")
    for unit in ("noop", "dir-backup", "disk-check"):
        sb.pin(f"{unit}.service", reload=False)
    sb.daemon_reload()
    return sb


@pytest.mark.parametrize("unit", ["noop", "dir-backup", "disk-check"])
def test_shipped_job_succeeds_in_its_unit(shipped, unit):
    """systemctl start on the shipped unit: Result=success, exit 0, the runner's job.finished says success."""
    sb = shipped
    state = sb.start_oneshot(f"{unit}.service", timeout=120)
    assert (state["Result"], state["ExecMainStatus"]) == ("success", "0"), sb.run(
        ["journalctl", "-u", f"{unit}.service", "-n", "30", "--no-pager"], check=False
    ).stdout
    messages = [r.get("MESSAGE", "") for r in sb.journal_json(invocation=state["InvocationID"])]
    assert any('"event":"job.finished"' in m and '"outcome":"success"' in m for m in messages)


def test_dir_backup_wrote_a_checksummed_archive(shipped):
    """The shipped dir_backup unit (strict sandbox, write path /var/backups/jobrunner) leaves an
    archive whose .sha256 matches, and no partial file."""
    sb = shipped
    sb.systemctl("start", "dir-backup.service", timeout=120)  # waits: Type=oneshot
    listing = sb.run("ls -a /var/backups/jobrunner").stdout.split()
    archives = [name for name in listing if name.endswith(".tar.gz")]
    assert archives, listing
    assert not [name for name in listing if name.endswith(".part")]
    check = sb.run(f"cd /var/backups/jobrunner && sha256sum -c {archives[-1]}.sha256", check=False)
    assert check.returncode == 0, check.stdout + check.stderr
