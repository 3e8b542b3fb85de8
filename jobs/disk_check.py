"""Disk space and inode thresholds on the web and backup volumes, hourly.

Settings, from the environment or ``/etc/default/disk-check``:

- ``DISK_CHECK_PATHS``: paths to check, space separated (default ``/var/www /mnt/backups``);
  each is measured on the file system holding it (``statvfs``), the mount point is reported
- ``DISK_WARN_PERCENT`` (default 80), ``DISK_CRIT_PERCENT`` (default 90): thresholds from 1 to
  100, applied to both block and inode usage
- ``DISK_CHECK_HEALTH``: ``1`` (or yes, true, on) also runs ``jobrunner health`` and fails on
  its CRITICAL verdict (default off)

Every path logs ``disk.usage`` (used %, free bytes, inode %). Crossing either threshold fails
the run (exit 1), so the failure alert fires: a warning is worth a message, and jobrunner
alerts on failures only. The failure names every volume over a threshold and whether it is a
warning or critical. A path that does not exist is logged (``disk.missing``, warning) and
skipped, so one absent optional mount does not page every hour.
"""

from __future__ import annotations

import math
import os
import sys

from jobrunner import ConfigError, JobContext, job
from jobrunner.settings import env_bool, env_percent

DEFAULT_PATHS = "/var/www /mnt/backups"
HEALTH_CRITICAL = 2  # jobrunner health's exit code for CRITICAL (Nagios)


def mount_point(path: str) -> str:
    """The mount point of the file system that holds ``path``."""
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def usage(path: str) -> dict[str, float | int | None]:
    """df's figures for ``path``: used % of blocks (as df rounds: up) and of inodes."""
    st = os.statvfs(path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    total = used + avail  # what a non-root user can reach, as df computes Use%
    used_pct = math.ceil(used * 100 / total) if total else 0
    inodes_pct = None  # some file systems (btrfs, vfat) have no fixed inode table
    if st.f_files:
        inodes_pct = math.ceil((st.f_files - st.f_ffree) * 100 / st.f_files)
    return {
        "used_percent": used_pct,
        "free_bytes": avail,
        "size_bytes": st.f_blocks * st.f_frsize,
        "inodes_percent": inodes_pct,
        "inodes_free": st.f_favail,
    }


@job(schedule="hourly", accuracy="1m", lock=True, timeout="5m", env_files=["-/etc/default/disk-check"])
def disk_check(ctx: JobContext) -> None:
    """Fail when a web or backup volume is above the disk or inode usage thresholds."""
    warn = env_percent(ctx.env, "DISK_WARN_PERCENT", 80, min=1)
    crit = env_percent(ctx.env, "DISK_CRIT_PERCENT", 90, min=1)
    if warn > crit:
        raise ConfigError(f"DISK_WARN_PERCENT={warn} is above DISK_CRIT_PERCENT={crit}")
    paths = ctx.env.get("DISK_CHECK_PATHS", DEFAULT_PATHS).split()
    if not paths:
        raise ConfigError("DISK_CHECK_PATHS is empty: name at least one path")
    problems: list[str] = []
    for path in paths:
        if not os.path.exists(path):
            ctx.log.warning("disk.missing", path=path)
            continue
        figures = usage(path)
        mount = mount_point(path)
        level = "ok"
        for what, pct in (("disk", figures["used_percent"]), ("inodes", figures["inodes_percent"])):
            if pct is None or pct < warn:
                continue
            severity = "CRITICAL" if pct >= crit else "WARNING"
            if severity == "CRITICAL" or level == "ok":
                level = severity.lower()
            limit = crit if severity == "CRITICAL" else warn
            problems.append(f"{severity} {path} (mount {mount}): {what} {pct}% used (>= {limit:g}%)")
        log = {"ok": ctx.log.info, "warning": ctx.log.warning, "critical": ctx.log.error}[level]
        log("disk.usage", path=path, mount=mount, level=level, warn_percent=warn, crit_percent=crit, **figures)
    if env_bool(ctx.env, "DISK_CHECK_HEALTH"):
        problems += _timer_health(ctx)
    if problems:
        raise RuntimeError("; ".join(problems))


def _timer_health(ctx: JobContext) -> list[str]:
    """``jobrunner health`` (the command line of this install) as an extra check: only its
    CRITICAL verdict is a problem; any other answer is logged."""
    result = ctx.run([sys.executable, "-m", "jobrunner", "health"], check=False, capture=True)
    lines = result.stdout.strip().splitlines()
    summary = lines[0] if lines else ""
    ctx.log.info("disk.health", exit_code=result.returncode, summary=summary)
    return [f"timer health: {summary}"] if result.returncode == HEALTH_CRITICAL else []
