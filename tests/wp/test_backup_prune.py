"""backup_prune on fabricated sets: the retention rules, the refusals, the lock."""

from __future__ import annotations

import fcntl
import json
import os
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from .conftest import WpEnv


@pytest.fixture
def backups(launcher, tmp_path) -> WpEnv:
    env = WpEnv(launcher, tmp_path, tmp_path / "no-site")
    env.backup_dir.mkdir()
    return env


def make_set(
    root: Path, when: datetime, *, kind: str = "full", verified: bool | None = True, site: str = "testsite"
) -> Path:
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    path = root / (f"{site}-{stamp}" if kind == "full" else f"{site}-{kind}-{stamp}")
    path.mkdir()
    (path / "db.sql.zst").write_bytes(b"x")
    if verified is not None:
        manifest = {"site": site, "kind": kind, "verified": verified, "files": {}}
        if not verified:
            manifest["verify_error"] = "the dump restored 3 tables, the source had 12"
        (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def day(d: str) -> datetime:
    return datetime.strptime(d, "%Y-%m-%d").replace(hour=2, minute=15, tzinfo=UTC)


def names(env: WpEnv) -> list[str]:
    return [p.name[len("testsite-") :][:8] for p in env.sets()]


def test_keeps_daily_weekly_monthly(backups):
    """100 nightly sets: the last 7 days, 4 ISO weeks and 6 months (that exist) remain."""
    start = day("2024-01-01")
    for i in range(100):  # up to Tue 2024-04-09
        make_set(backups.backup_dir, start + timedelta(days=i))
    run = backups.run("backup_prune")
    assert run.returncode == 0, run.stdout[-2000:]
    assert names(backups) == [
        "20240131",
        "20240229",  # monthly (Jan, Feb; Mar and Apr kept anyway)
        "20240324",
        "20240331",  # weekly (weeks 12, 13; 14 and 15 are daily)
        "20240403",
        "20240404",
        "20240405",
        "20240406",
        "20240407",
        "20240408",
        "20240409",  # daily
    ]
    deleted = [e for e in run.events if e["event"] == "prune.deleted"]
    assert len(deleted) == 89 and all(e["reason"] == "outside the daily/weekly/monthly retention" for e in deleted)
    assert run.event("prune.done")["deleted"] == 89


def test_keep_counts_come_from_the_env_file(backups):
    """KEEP_DAILY=2 KEEP_WEEKLY=0 KEEP_MONTHLY=0 keeps the two newest days."""
    for i in range(5):
        make_set(backups.backup_dir, day("2024-05-01") + timedelta(days=i))
    run = backups.run("backup_prune", KEEP_DAILY="2", KEEP_WEEKLY="0", KEEP_MONTHLY="0")
    assert run.returncode == 0
    assert names(backups) == ["20240504", "20240505"]


def test_newest_verified_is_kept_even_with_zero_retention(backups):
    """All KEEP_* = 0 still leaves the newest verified set."""
    for i in range(3):
        make_set(backups.backup_dir, day("2024-05-01") + timedelta(days=i))
    run = backups.run("backup_prune", KEEP_DAILY="0", KEEP_WEEKLY="0", KEEP_MONTHLY="0")
    assert run.returncode == 0
    assert names(backups) == ["20240503"]


def test_unverified_newest_set_stops_all_deletion(backups):
    """The newest set failed verification: nothing is deleted and the reason is logged."""
    for i in range(20):
        make_set(backups.backup_dir, day("2024-05-01") + timedelta(days=i))
    make_set(backups.backup_dir, day("2024-05-21"), verified=False)
    run = backups.run("backup_prune", KEEP_DAILY="1", KEEP_WEEKLY="0", KEEP_MONTHLY="0")
    assert run.returncode == 0
    assert len(backups.sets()) == 21
    refused = run.event("prune.refused")
    assert (
        refused["level"] == "error" and "unverified" in refused["reason"] and "restored 3 tables" in refused["reason"]
    )


def test_failed_writer_run_stops_deletion(backups):
    """wp_backup's last run failed after the newest set (nothing left on disk): delete nothing."""
    for i in range(5):
        make_set(backups.backup_dir, day("2024-05-01") + timedelta(days=i))
    state = backups.launcher.state_dir / "wp_backup"
    state.mkdir(parents=True)
    (state / "state.json").write_text(json.dumps({"last_outcome": "failure", "last_finish": time.time()}))
    run = backups.run("backup_prune", KEEP_DAILY="1", KEEP_WEEKLY="0", KEEP_MONTHLY="0")
    assert run.returncode == 0
    assert len(backups.sets()) == 5
    assert "wp_backup run failed" in run.event("prune.refused")["reason"]


def test_groups_are_pruned_separately(backups):
    """A failed database-only set blocks pruning of db sets, not of full sets."""
    for i in range(4):
        make_set(backups.backup_dir, day("2024-05-01") + timedelta(days=i))
        make_set(backups.backup_dir, day("2024-05-01") + timedelta(days=i, minutes=15), kind="db", verified=(i != 3))
    run = backups.run("backup_prune", KEEP_DAILY="1", KEEP_WEEKLY="0", KEEP_MONTHLY="0")
    assert run.returncode == 0
    left = [p.name for p in backups.sets()]
    assert [n for n in left if "-db-" not in n] == ["testsite-20240504T021500Z"]
    assert len([n for n in left if "-db-" in n]) == 4


def test_older_unverified_sets_go_and_foreign_dirs_stay(backups):
    """Superseded unverified sets are deleted with that reason; a set without manifest is untouched."""
    bad = make_set(backups.backup_dir, day("2024-05-01"), verified=False)
    foreign = make_set(backups.backup_dir, day("2024-05-02"), verified=None)
    good = make_set(backups.backup_dir, day("2024-05-03"))
    run = backups.run("backup_prune")
    assert run.returncode == 0
    assert not bad.exists() and foreign.exists() and good.exists()
    assert run.event("prune.deleted")["reason"] == "unverified, and a newer verified set exists"
    assert run.event("prune.skipped")["path"] == str(foreign)


def test_stale_partials_are_removed_fresh_ones_kept(backups):
    """A .partial older than a day is a crashed run's: removed; a younger one may be live: kept."""
    make_set(backups.backup_dir, day("2024-05-03"))
    stale = backups.backup_dir / ".testsite-20240501T021500Z.partial"
    fresh = backups.backup_dir / ".testsite-20240503T021500Z.partial"
    for p in (stale, fresh):
        p.mkdir()
        (p / "files.tar.zst").write_bytes(b"half")
    old = time.time() - 2 * 86400
    os.utime(stale, (old, old))
    run = backups.run("backup_prune")
    assert run.returncode == 0
    assert not stale.exists() and fresh.exists()
    assert "stale partial" in run.event("prune.deleted")["reason"]


def test_dry_run_deletes_nothing(backups):
    """--dry-run logs what would go."""
    for i in range(3):
        make_set(backups.backup_dir, day("2024-05-01") + timedelta(days=i))
    run = backups.run("backup_prune", "--dry-run", KEEP_DAILY="1", KEEP_WEEKLY="0", KEEP_MONTHLY="0")
    assert run.returncode == 0
    assert len(backups.sets()) == 3
    assert len([e for e in run.events if e["event"] == "prune.would_delete"]) == 2


def test_prune_waits_for_a_backup_holding_the_shared_lock(backups):
    """While a writer holds wp-backups shared, the pruner (exclusive) waits; then it prunes."""
    for i in range(3):
        make_set(backups.backup_dir, day("2024-05-01") + timedelta(days=i))
    backups.launcher.lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(backups.launcher.lock_dir / "wp-backups.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        backups.env_file.write_text(f"BACKUP_DIR={backups.backup_dir}\nKEEP_DAILY=1\nKEEP_WEEKLY=0\nKEEP_MONTHLY=0\n")
        proc = backups.launcher.start("run", "jobs.backup_prune", "--env-file", str(backups.env_file))
        time.sleep(1.5)
        assert proc.poll() is None and len(backups.sets()) == 3
    finally:
        os.close(fd)
    run = backups.launcher.finish(proc)
    assert run.returncode == 0, run.stdout[-2000:]
    assert len(backups.sets()) == 1
    assert run.event("lock.waiting")
