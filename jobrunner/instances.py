"""Job instances: names, and where an instance's configuration lives.

An instantiable job (``@job(instances=True)``) runs once per instance (a WordPress site, a
database, a customer): ``jobrunner run MODULE:NAME --instance shop.example`` by hand, or the
template unit ``wp-backup@shop.example.service`` under systemd. The instance name becomes part
of unit names (``%i``), state and lock paths and env file names, so it is checked here, once,
before anything uses it.

A valid name needs no systemd escaping (``%i`` and ``%I`` are the name itself): ASCII letters,
digits, ``_``, ``.`` and ``-``, starting with a letter or digit, no ``..``, at most
``MAX_INSTANCE_NAME`` (64) characters. Domain names (``shop.example.com``) fit.

Each instance's env file is ``/etc/jobrunner/instances/<group>/<instance>.env``, read after the
shared ones (``$JOBRUNNER_INSTANCES_DIR`` moves the directory, for tests and unusual hosts). The
group is the job's ``instance_group=`` (the WordPress jobs share ``wp``: one file per site), else
the job's name.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from jobrunner.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from jobrunner.declaration import Job

__all__ = [
    "INSTANCES_DIR",
    "MAX_INSTANCE_NAME",
    "check_instance_name",
    "expand_instances",
    "group_of",
    "instance_env_file",
    "instances_dir",
    "known_instances",
]

INSTANCES_DIR = "/etc/jobrunner/instances"
MAX_INSTANCE_NAME = 64
_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ALLOWED = _FIRST | frozenset("_.-")


def check_instance_name(name: str) -> str:
    """``name`` if it is a valid instance name, else ``UsageError`` (exit 64), one line."""
    shown = repr(name[:40] + ("…" if len(name) > 40 else ""))
    if not isinstance(name, str) or not name:
        raise UsageError("instance name is empty: give one like shop.example")
    if len(name) > MAX_INSTANCE_NAME:
        raise UsageError(f"instance name {shown} is {len(name)} characters: at most {MAX_INSTANCE_NAME}")
    if "/" in name or ".." in name:
        raise UsageError(f"instance name {shown}: no '/' and no '..' (it becomes a unit name and a path)")
    if name[0] not in _FIRST or not all(c in _ALLOWED for c in name):
        raise UsageError(
            f"instance name {shown}: use ASCII letters, digits, '_', '.' and '-', starting with a letter or digit"
        )
    return name


def instances_dir() -> str:
    """``$JOBRUNNER_INSTANCES_DIR``, else ``/etc/jobrunner/instances``."""
    return os.environ.get("JOBRUNNER_INSTANCES_DIR") or INSTANCES_DIR


def instance_env_file(group: str, instance: str, base: str | None = None) -> str:
    """``<instances dir>/<group>/<instance>.env``."""
    return os.path.join(base or instances_dir(), group, f"{instance}.env")


def known_instances(group: str, base: str | None = None) -> list[str]:
    """The instances of ``group`` that have an env file (sorted); names that are not valid
    instance names (an editor's backup, ``x.env~``) are left out."""
    directory = os.path.join(base or instances_dir(), group)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for entry in names:
        if not entry.endswith(".env"):
            continue
        name = entry[: -len(".env")]
        try:
            check_instance_name(name)
        except UsageError:
            continue
        found.append(name)
    return sorted(found)


def group_of(job: Job) -> str:
    """The instance group of a job: its ``instance_group=``, else its (declared) name."""
    return job.instance_group or job.base_name


def expand_instances(jobs: Iterable[Job], state_root: str | None = None) -> list[Job]:
    """Each instantiable job as its configured instances (those with an env file), for
    ``health``, ``status`` and ``instances list``; plain jobs as they are. A job with
    ``instances="optional"`` also stays as the plain job when it has no instance, or when the
    plain job has run here (its ``state.json`` exists)."""
    out: list[Job] = []
    for job in jobs:
        if not job.instantiable:
            out.append(job)
            continue
        names = known_instances(group_of(job))
        if job.instances == "optional" and (not names or _has_state(job.name, state_root)):
            out.append(job)
        out.extend(job.for_instance(name) for name in names)
    return out


def _has_state(name: str, state_root: str | None) -> bool:
    if state_root is None:
        from jobrunner.store.state import default_state_dir

        state_root = default_state_dir()
    return os.path.exists(os.path.join(state_root, name, "state.json"))
