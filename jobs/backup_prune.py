"""Backup retention for the sets ``wp_backup`` and ``wp_db_export`` write (daily at 04:00).

Rules, applied to each (site, kind) group of sets in ``BACKUP_DIR`` on its own — full sets and
database-only sets never compete:

- keep the newest set of each of the last ``KEEP_DAILY`` days, ``KEEP_WEEKLY`` ISO weeks and
  ``KEEP_MONTHLY`` months that have a verified set (7 / 4 / 6 by default; borg's
  ``--keep-daily`` style: periods without a backup do not use up a slot), in UTC, by the
  timestamp in the set's name (mtime changes when sets are copied; names do not);
- never delete the newest verified set;
- delete nothing at all in a group whose newest set is unverified (failed verification, no
  manifest), or whose writing job's last run failed after that set: a broken backup pipeline
  must not also eat the old backups. The refusal is logged with the reason;
- sets without a manifest are left alone (not ours, or being inspected by someone);
- ``.<name>.partial`` directories older than a day (a crashed writer's leftovers) are removed.

``BACKUP_DIR`` and the directories above it must be root's and not writable by others (as for
the writers), or the run stops with exit 78 and deletes nothing: sets planted by another user
could otherwise fill the retention slots and push the real backups out. Symlinks are never
followed or removed.

Each deletion is logged (``prune.deleted``) with its reason. The job takes the backup area
lock ``wp-backups`` exclusive (writers and restores hold it shared), so it never deletes a set
being written or read.
"""

from __future__ import annotations

import json
import shutil
import stat
import time
from collections import defaultdict
from pathlib import Path

from jobrunner import JobContext, Lock, job
from jobs._backupsets import BACKUP_LOCK, BackupSet, list_sets, private_dir
from jobs._wp import DEFAULT_BACKUP_DIR, INSTANCE_BACKUP_DIR, SITE_INSTANCES, settings

PARTIAL_MAX_AGE_S = 86400
WRITERS = {"full": "wp_backup", "db": "wp_db_export"}


@job(
    schedule="04:00",
    persistent=True,
    accuracy="1m",
    timeout="1h",
    lock=Lock(name=BACKUP_LOCK, wait="2h"),  # exclusive; waits for a backup still running
    hardening="strict",
    write_paths=[DEFAULT_BACKUP_DIR],
    instance_write_paths=[INSTANCE_BACKUP_DIR],
    network=False,
    **SITE_INSTANCES,
)
def backup_prune(ctx: JobContext) -> None:
    """Delete old backup sets: keep N daily/weekly/monthly, never the newest verified one."""
    s = settings(ctx)
    ctx.log.info(
        "prune.policy",
        backup_dir=str(s.backup_dir),
        keep_daily=s.keep_daily,
        keep_weekly=s.keep_weekly,
        keep_monthly=s.keep_monthly,
    )
    if not s.backup_dir.is_dir():
        ctx.log.info("prune.nothing", reason=f"{s.backup_dir} does not exist")
        return
    backup_dir = private_dir(s.backup_dir, "BACKUP_DIR")
    _remove_stale_partials(ctx, backup_dir)
    groups: dict[tuple[str, str], list[BackupSet]] = defaultdict(list)
    for found in list_sets(backup_dir):
        if found.manifest is None:
            ctx.log.warning("prune.skipped", path=str(found.path), reason="no manifest.json: not touched")
            continue
        groups[(found.site or "?", found.kind)].append(found)
    deleted = kept = 0
    with ctx.progress("sets", total=sum(len(sets) for sets in groups.values()), unit="sets") as p:
        for (site, kind), sets in sorted(groups.items()):
            refusal = _refusal(ctx, sets, kind)
            if refusal:
                ctx.log.error("prune.refused", site=site, kind=kind, reason=refusal, sets=len(sets))
                kept += len(sets)
                p.advance(len(sets))
                continue
            keep = plan(sets, s.keep_daily, s.keep_weekly, s.keep_monthly)
            for item in sets:
                p.advance()
                if item.path in keep:
                    kept += 1
                    ctx.log.debug("prune.kept", path=str(item.path), reason=", ".join(keep[item.path]))
                    continue
                reason = _delete_reason(item)
                if ctx.dry_run:
                    ctx.log.info("prune.would_delete", path=str(item.path), reason=reason)
                    continue
                shutil.rmtree(item.path)
                deleted += 1
                ctx.log.info("prune.deleted", path=str(item.path), reason=reason)
    ctx.log.info("prune.done", deleted=deleted, kept=kept)


def plan(sets: list[BackupSet], daily: int, weekly: int, monthly: int) -> dict[Path, list[str]]:
    """Which sets to keep and why: ``{path: ["daily 2024-05-01", ...]}`` (sets oldest first)."""
    verified = [s for s in sets if s.verified]
    keep: dict[Path, list[str]] = defaultdict(list)
    if verified:
        keep[verified[-1].path].append("newest verified")
    rules = (
        ("daily", daily, lambda d: d.strftime("%Y-%m-%d")),
        ("weekly", weekly, lambda d: f"{d.isocalendar().year}-W{d.isocalendar().week:02d}"),
        ("monthly", monthly, lambda d: d.strftime("%Y-%m")),
    )
    for label, count, period in rules:
        seen: list[str] = []
        for item in reversed(verified):  # newest first: the newest set of a period stands for it
            key = period(item.created)
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(key)
            keep[item.path].append(f"{label} {key}")
    return dict(keep)


def _delete_reason(item: BackupSet) -> str:
    if not item.verified:
        return "unverified, and a newer verified set exists"
    return "outside the daily/weekly/monthly retention"


def _refusal(ctx: JobContext, sets: list[BackupSet], kind: str) -> str | None:
    newest = sets[-1]
    if not newest.verified:
        why = (newest.manifest or {}).get("verify_error") or "not verified"
        return (
            f"the newest set {newest.path.name} is unverified ({why}); deleting nothing until a verified backup exists"
        )
    writer = WRITERS.get(kind)
    state_file = Path(ctx.state_dir).parent / writer / "state.json" if writer else None
    try:
        state = json.loads(state_file.read_text()) if state_file else {}
    except (OSError, ValueError):
        state = {}
    finished = state.get("last_finish")
    if state.get("last_outcome") in ("failure", "timeout", "terminated") and isinstance(finished, (int, float)):
        if finished > newest.created.timestamp():
            return f"the last {writer} run failed after the newest set {newest.path.name}; deleting nothing"
    return None


def _remove_stale_partials(ctx: JobContext, backup_dir: Path) -> None:
    now = time.time()
    for path in backup_dir.iterdir():
        if not (path.name.startswith(".") and path.name.endswith(".partial")):
            continue
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode):  # a symlink is not a partial set: never followed
            continue
        age = now - st.st_mtime
        if age < PARTIAL_MAX_AGE_S:
            ctx.log.info("prune.partial_kept", path=str(path), reason="younger than a day", age_s=round(age))
            continue
        if ctx.dry_run:
            ctx.log.info("prune.would_delete", path=str(path), reason="stale partial set (a crashed run's)")
            continue
        shutil.rmtree(path)
        ctx.log.info("prune.deleted", path=str(path), reason=f"stale partial set, {age / 3600:.0f}h old")
