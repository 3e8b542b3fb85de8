"""Silences: "I am migrating this server for two hours, don't page me" (``jobrunner silence``).

A silence is recorded in the job's own state (``JobState.silencing.silence``: ``until``, ``since``,
``by``, ``uid``, ``reason``), so it needs no new file, no new permission and no daemon: the
runner and ``jobrunner alert`` read it where they already read the job's memory. While it is
in force, failures are logged, recorded and counted but not sent (``jobrunner/rules/alerting.py``);
when it ends with the job still failing, exactly one notification says so.

Who may set one: whoever may write the job's state, i.e. root or the user its state directory
belongs to (the job's ``User=``). Who trusts one: the runner only from a state directory that
is its own user's or root's, ``jobrunner alert`` (root) only from one that belongs to the
unit's ``User=``, ``health`` from one of the job's user or root (docs/security.md), so a
silence planted by another user silences nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from jobrunner.errors import ConfigError
from jobrunner.rules.alerting import silence_active
from jobrunner.run.loader import discover
from jobrunner.store.history import recorded_jobs
from jobrunner.store.state import StateStore

__all__ = ["clear_silence", "invoking_user", "known_jobs", "list_silences", "set_silence"]

MAX_REASON = 200


def invoking_user() -> tuple[str, int]:
    """Who is silencing: ``$SUDO_USER`` behind sudo (root's own entry says who asked), else
    the effective user's name; and the effective uid."""
    uid = os.geteuid()
    sudo = os.environ.get("SUDO_USER", "").strip()
    if uid == 0 and sudo and sudo != "root":
        return f"{sudo} (sudo)", uid
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name, uid
    except KeyError:
        return str(uid), uid


def known_jobs(root: str, package: str | None) -> dict[str, str]:
    """Every name a job may be given by (its name, its unit, ``module:name``) -> its name: the
    jobs with a state under ``root`` and the jobs of ``package``."""
    names = {name: name for name in recorded_jobs(root, private=True)}
    if package:
        for job in discover(package):
            for alias in (job.name, job.unit, job.ref):
                names.setdefault(alias, job.name)
    return names


def _check_writable(store: Any) -> None:
    """Root, or the user the job's state directory belongs to (``ConfigError`` otherwise)."""
    uid = os.geteuid()
    if uid == 0:
        return
    import stat

    try:
        info = os.lstat(store.dir)  # not opened: a directory this user may not even read
    except FileNotFoundError:
        return  # made now, by and for this user
    except OSError as exc:
        raise ConfigError(f"state directory {store.dir} is unusable: {exc.strerror or exc}") from None
    owner = info.st_uid
    if not stat.S_ISDIR(info.st_mode) or owner != uid:
        raise ConfigError(
            f"cannot change the silence of {store.job}: its state ({store.dir}) belongs to uid {owner}; "
            "run as root or as the job's user"
        )


def set_silence(
    root: str, jobs: Sequence[str], *, seconds: float, reason: str | None = None, now: float | None = None
) -> dict[str, Any]:
    """Silence ``jobs`` for ``seconds`` from now; the silence written (the same for each)."""
    now = time.time() if now is None else now
    by, uid = invoking_user()
    record: dict[str, Any] = {"until": now + seconds, "since": now, "by": by, "uid": uid}
    if reason:
        record["reason"] = " ".join(reason.split())[:MAX_REASON]
    stores = [StateStore(job, root) for job in jobs]
    for store in stores:
        _check_writable(store)
    for store in stores:
        store.apply(lambda s: setattr(s.silencing, "silence", dict(record)))
    return record


def clear_silence(root: str, jobs: Sequence[str]) -> list[str]:
    """End the silences of ``jobs``; the jobs that had one in force. The next run (or alert)
    of a job still failing says so, once."""
    ended: list[str] = []
    stores = [StateStore(job, root) for job in jobs]
    for store in stores:
        _check_writable(store)
    for store in stores:
        if store.load().silencing.silence is None:
            continue

        def clear(s: Any, name: str = store.job) -> None:
            if silence_active(s) is not None:
                ended.append(name)
            s.silencing.silence = None

        store.apply(clear)
    return ended


def list_silences(
    root: str, now: float | None = None, *, warn: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """The silences in force under ``root``: one dict per job (``job`` and the record); a job
    whose state cannot be read (another user's bad record) is skipped, told to ``warn``."""
    now = time.time() if now is None else now
    out = []
    for name in recorded_jobs(root, private=True):
        try:
            state = StateStore(name, root).load()
        except (ConfigError, OSError) as exc:
            if warn is not None:
                warn(f"skipped {name}: {exc}")
            continue
        silence = silence_active(state, now)
        if silence is not None:
            out.append({"job": name, **silence})
    return out
