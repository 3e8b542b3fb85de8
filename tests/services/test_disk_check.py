"""disk_check on real statvfs figures: a small tmpfs filled past the thresholds."""

from __future__ import annotations

import os
from pathlib import Path

from jobs.disk_check import mount_point, usage


def test_below_thresholds_succeeds_and_logs_each_volume(launcher, tmpfs: Path, tmp_path: Path):
    """Volumes under both thresholds: exit 0, one disk.usage event per path with its mount and figures."""
    (tmpfs / "small").write_bytes(b"x" * 100_000)
    run = launcher.run("run", "jobs.disk_check", env=launcher.env(DISK_CHECK_PATHS=f"{tmpfs} {tmp_path}"))
    assert run.returncode == 0, run.stdout + run.stderr
    usages = [e for e in run.events if e["event"] == "disk.usage"]
    assert [e["path"] for e in usages] == [str(tmpfs), str(tmp_path)]
    assert usages[0]["mount"] == str(tmpfs)
    assert usages[0]["level"] == "ok" and 0 < usages[0]["used_percent"] < 80
    assert usages[0]["size_bytes"] == 4 * 1024 * 1024


def test_space_over_critical_fails_naming_the_volume(launcher, tmpfs: Path):
    """A tmpfs filled to ~95%: exit 1, job.failed names the volume, its mount and CRITICAL."""
    (tmpfs / "big").write_bytes(b"x" * int(3.8 * 1024 * 1024))
    sub = tmpfs / "uploads"
    sub.mkdir()
    run = launcher.run("run", "jobs.disk_check", env=launcher.env(DISK_CHECK_PATHS=str(sub)))
    assert run.returncode == 1, run.stdout
    failed = run.event("job.failed")
    message = failed["exception"]["message"]
    assert f"CRITICAL {sub} (mount {tmpfs}): disk" in message
    assert run.event("disk.usage")["level"] == "critical"


def test_warning_threshold_also_fails(launcher, tmpfs: Path):
    """Between warn and crit: still exit 1 (jobrunner alerts on failures only), marked WARNING."""
    (tmpfs / "mid").write_bytes(b"x" * int(3.4 * 1024 * 1024))
    run = launcher.run("run", "jobs.disk_check", env=launcher.env(DISK_CHECK_PATHS=str(tmpfs)))
    assert run.returncode == 1
    assert "WARNING" in str(run.event("job.failed")) and "CRITICAL" not in str(run.event("job.failed"))
    ok = launcher.run(
        "run",
        "jobs.disk_check",
        env=launcher.env(DISK_CHECK_PATHS=str(tmpfs), DISK_WARN_PERCENT="95", DISK_CRIT_PERCENT="99"),
    )
    assert ok.returncode == 0


def test_inode_exhaustion_fails(launcher, tmpfs: Path):
    """Nearly all of the tmpfs's 64 inodes used (tiny files, little space): inode usage trips the check."""
    for i in range(60):
        (tmpfs / f"f{i}").touch()
    run = launcher.run("run", "jobs.disk_check", env=launcher.env(DISK_CHECK_PATHS=str(tmpfs)))
    assert run.returncode == 1
    assert "inodes" in str(run.event("job.failed"))
    assert run.event("disk.usage")["used_percent"] < 80


def test_missing_path_is_a_warning_and_bad_config_exits_78(launcher, tmpfs: Path):
    """A path that does not exist is logged and skipped; a bad threshold is a config error (78)."""
    run = launcher.run("run", "jobs.disk_check", env=launcher.env(DISK_CHECK_PATHS=f"/nonexistent/x {tmpfs}"))
    assert run.returncode == 0
    assert run.event("disk.missing")["path"] == "/nonexistent/x"
    bad = launcher.run("run", "jobs.disk_check", env=launcher.env(DISK_CHECK_PATHS=str(tmpfs), DISK_WARN_PERCENT="abc"))
    assert bad.returncode == 78


def test_usage_matches_df(tmpfs: Path):
    """The percentages are df's (Use% and IUse%), from the same statvfs."""
    (tmpfs / "a").write_bytes(b"x" * 1_500_000)
    import subprocess

    df = subprocess.run(["df", "--output=pcent,ipcent", str(tmpfs)], capture_output=True, text=True, check=True)
    pcent, ipcent = (int(v.rstrip("%")) for v in df.stdout.splitlines()[1].split())
    got = usage(str(tmpfs))
    assert (got["used_percent"], got["inodes_percent"]) == (pcent, ipcent)
    assert mount_point(os.path.join(tmpfs, "a")) == str(tmpfs)
