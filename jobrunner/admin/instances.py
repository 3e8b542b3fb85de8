"""``jobrunner instances add|remove|list``: managing the instances of a group, as library calls.

An instance of a group (``wp`` for the WordPress jobs, else a job's own name) is:

- its env file ``/etc/jobrunner/instances/<group>/<instance>.env``, written from ``KEY=VALUE``
  settings atomically, 0640 root:root (it may hold a database password), and beside it
  ``.<instance>.env.sha256``, the hash of what jobrunner wrote: an env file edited by hand
  since is never replaced or removed without ``force``. ``add`` on an existing instance
  merges: the settings given replace theirs, the others are kept (``force``: exactly the
  settings given). A key no job of the group reads (``keys_read``: the names its modules
  spell) is warned about, with the nearest one it does read;
- ``/etc/tmpfiles.d/jobrunner-<group>@<instance>.conf``: what the template units cannot make
  themselves (the lock files of non-root jobs in root's lock directory, the instance's write
  paths), applied with ``systemd-tmpfiles --create`` and made again at every boot;
- the timers ``<unit>@<instance>.timer`` of every scheduled job of the group, enabled and
  started (``systemctl enable --now``) when systemd runs here.

``remove`` undoes these (timers first) and keeps the instance's state, history and backups.
``$JOBRUNNER_INSTANCES_DIR`` and ``$JOBRUNNER_TMPFILES_DIR`` move the two directories (tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from jobrunner.envfile import _valid_name, parse_env
from jobrunner.errors import ConfigError, JobrunnerError, UsageError
from jobrunner.files import atomic_write
from jobrunner.instances import check_instance_name, group_of, instance_env_file, instances_dir, known_instances
from jobrunner.run.loader import closest
from jobrunner.store.state import StateStore
from jobrunner.systemd.systemctl import show_units
from jobrunner.unitgen.render import render_instance_tmpfiles

if TYPE_CHECKING:
    from jobrunner.declaration import Job

__all__ = [
    "Group",
    "add_instance",
    "find_group",
    "format_env",
    "instance_rows",
    "keys_read",
    "parse_settings",
    "remove_instance",
]

TMPFILES_DIR = "/etc/tmpfiles.d"


@dataclass
class Group:
    """The instantiable jobs that share one instance env file per instance."""

    name: str
    jobs: list[Job] = field(default_factory=list)

    @property
    def timers(self) -> list[str]:
        return [j.unit for j in self.jobs if j.schedule or j.on_boot is not None]


def groups_of(jobs: Sequence[Job]) -> dict[str, Group]:
    found: dict[str, Group] = {}
    for job in jobs:
        if job.instantiable:
            found.setdefault(group_of(job), Group(group_of(job))).jobs.append(job)
    return found


def find_group(jobs: Sequence[Job], name: str, package: str) -> Group:
    """The group called ``name``, or the group of the instantiable job called ``name``."""
    groups = groups_of(jobs)
    if name in groups:
        return groups[name]
    for job in jobs:
        if job.instantiable and name in (job.name, job.unit, job.ref):
            return groups[group_of(job)]

    have = ", ".join(sorted(groups)) or "none"
    hint = closest(name, [*groups, *(j.name for j in jobs if j.instantiable)])
    raise ConfigError(f"no instance group or instantiable job {name!r}{hint} in package {package!r} (groups: {have})")


def parse_settings(items: Sequence[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` flags as a dict; a usage error (64) for a bad one."""
    settings: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not _valid_name(key):
            raise UsageError(f"--set {key[:40]!r}…: use KEY=VALUE with KEY of letters, digits and '_'")
        if "\n" in value or "\r" in value or "\0" in value:
            raise UsageError(f"--set {key}: the value is one line")
        settings[key] = value
    return settings


def _quote(value: str) -> str:
    if value and all(c.isalnum() or c in "_-./:@,+=%" for c in value):
        return value
    if "'" not in value:
        return f"'{value}'"
    escaped = "".join("\\" + c if c in '"\\`$' else c for c in value)
    return f'"{escaped}"'


def format_env(group: str, instance: str, settings: dict[str, str]) -> str:
    """The env file text (checked: parsing it gives ``settings`` back)."""
    lines = [
        f"# jobrunner instance {instance} of {group}: written by 'jobrunner instances add'.",
        "# Edited by hand, it is kept: 'instances add/remove' then need --force.",
        *(f"{key}={_quote(value)}" for key, value in settings.items()),
    ]
    text = "\n".join(lines) + "\n"
    if parse_env(text, "<instance>") != settings:  # pragma: no cover - _quote is exact
        raise ConfigError(f"instance {instance}: the settings cannot be written as an env file")
    return text


def _hash_path(group: str, instance: str) -> str:
    return os.path.join(instances_dir(), group, f".{instance}.env.sha256")


def _tmpfiles_path(group: str, instance: str) -> str:
    base = os.environ.get("JOBRUNNER_TMPFILES_DIR") or TMPFILES_DIR
    return os.path.join(base, f"jobrunner-{group}@{instance}.conf")


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _edited(group: str, instance: str) -> bool | None:
    """None: no env file; False: as jobrunner wrote it; True: changed since (or not ours)."""
    path = instance_env_file(group, instance)
    try:
        with open(path, "rb") as handle:
            current = handle.read()
    except FileNotFoundError:
        return None
    try:
        with open(_hash_path(group, instance), encoding="ascii") as handle:
            written = handle.read().strip()
    except OSError:
        return True
    return _sha(current) != written


def _systemd_running() -> bool:
    return os.path.isdir("/run/systemd/system")


def _run(argv: list[str], out: TextIO) -> None:
    print("+ " + " ".join(argv), file=out)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    except FileNotFoundError:
        raise JobrunnerError(f"{argv[0]} not found") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise JobrunnerError(f"{' '.join(argv)} failed: {why}")


def _plain_timers_hint(group: Group, out: TextIO) -> None:
    """Say so when the single-site timers of the group's ``instances="optional"`` jobs are
    enabled too (``units install`` enables them): on a server of many sites they run the shared
    configuration, which usually names no site."""
    plain = [f"{j.unit}.timer" for j in group.jobs if j.instances == "optional" and j.schedule]
    try:
        shown = show_units(plain, ["Id", "UnitFileState"])
    except Exception:
        return
    enabled = [t for t in plain if shown.get(t, {}).get("UnitFileState") == "enabled"]
    if enabled:
        print(
            f"note: the single-site timers are enabled too ({' '.join(enabled)}); on a server without a "
            f"single site: systemctl disable --now {' '.join(enabled)}",
            file=out,
        )


def _not_installed(units: list[str]) -> list[str]:
    """The units whose template systemd does not know (``LoadState=not-found``)."""
    try:
        shown = show_units(units, ["Id", "LoadState"])
    except Exception:  # systemctl itself failed: let enable say what is wrong
        return []
    return [u for u in units if shown.get(u, {}).get("LoadState") == "not-found"]


def _private_dir(path: str, mode: int) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)
    info = os.stat(path)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise ConfigError(f"{path} can be changed by other users: make it root's and 0755")


def _module_files(module: str, seen: set[str]) -> None:
    """``module``'s file and those of the modules it imports from its own top package."""
    import ast
    import importlib.util

    if module in seen:
        return
    seen.add(module)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return
    try:
        with open(spec.origin, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return
    top = module.split(".")[0]
    package = module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level:
                name = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], name]).strip(".")
            if name.split(".")[0] == top:
                _module_files(name, seen)


def keys_read(group: Group) -> set[str]:
    """The setting names the group's job modules (and their helpers in the same package) spell
    as string constants: ``ctx.env["WP_PATH"]``, ``env_int(ctx.env, "KEEP_DAILY", …)``."""
    import ast
    import importlib.util
    import re

    modules: set[str] = set()
    for job in group.jobs:
        _module_files(job.ref.partition(":")[0], modules)
    keys: set[str] = set()
    shaped = re.compile(r"^[A-Z][A-Z0-9_]{1,}$")
    for module in modules:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            continue
        try:
            with open(spec.origin, encoding="utf-8") as handle:
                tree = ast.parse(handle.read())
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        keys |= {
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and shaped.match(n.value)
        }
    return keys


def _warn_unread(group: Group, settings: dict[str, str], err: TextIO) -> None:
    known = keys_read(group)
    if not known:
        return  # nothing to compare with: no warning rather than a wrong one
    for key in settings:
        if key not in known and not key.startswith("JOBRUNNER_"):
            print(
                f"jobrunner: warning: --set {key}: no job of {group.name} reads it{closest(key, known)}",
                file=err,
            )


def add_instance(
    group: Group,
    instance: str,
    settings: dict[str, str],
    *,
    force: bool = False,
    enable: bool = True,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> str:
    """Write the instance's env file and tmpfiles.d snippet, enable its timers; its env file path.

    An existing env file is changed only when it is exactly what jobrunner wrote (or with
    ``force``); its settings are kept where ``settings`` does not give them (``force``:
    replaced by ``settings`` alone)."""
    check_instance_name(instance)
    edited = _edited(group.name, instance)
    if edited and not force:
        raise ConfigError(
            f"{instance_env_file(group.name, instance)} was edited by hand since jobrunner wrote it: "
            "keep it, or replace it with --force"
        )
    _warn_unread(group, settings, err)
    if edited is False and not force:
        path = instance_env_file(group.name, instance)
        with open(path, encoding="utf-8") as handle:
            current = parse_env(handle.read(), path)
        kept = [k for k in current if k not in settings]
        changed = [k for k in settings if k in current and current[k] != settings[k]]
        settings = {**current, **settings}
        print(
            f"{instance} exists: kept {', '.join(kept) or 'nothing'}; changed {', '.join(changed) or 'nothing'} "
            "(--force: only the settings given)",
            file=out,
        )
    bound = [job.for_instance(instance) for job in group.jobs]
    tmpfiles = render_instance_tmpfiles(bound, f"instance {instance} of {group.name} ('jobrunner instances add')")
    text = format_env(group.name, instance, settings).encode()
    _private_dir(instances_dir(), 0o755)
    _private_dir(os.path.join(instances_dir(), group.name), 0o750)
    env_path = instance_env_file(group.name, instance)
    atomic_write(env_path, text, mode=0o640)
    atomic_write(_hash_path(group.name, instance), (_sha(text) + "\n").encode(), mode=0o600)
    print(f"wrote {env_path}", file=out)
    conf = _tmpfiles_path(group.name, instance)
    os.makedirs(os.path.dirname(conf), exist_ok=True)
    atomic_write(conf, tmpfiles.encode(), mode=0o644)
    print(f"wrote {conf}", file=out)
    if enable:
        _run(["systemd-tmpfiles", "--create", conf], out)
    timers = [f"{unit}@{instance}.timer" for unit in group.timers]
    if enable and timers and _systemd_running():
        missing = _not_installed(timers)
        if missing:
            print(f"not installed (jobrunner units install): {' '.join(missing)}", file=out)
        timers = [t for t in timers if t not in missing]
        if timers:
            _run(["systemctl", "enable", "--now", *timers], out)
        _plain_timers_hint(group, out)
    elif timers:
        why = "--no-enable" if not enable else "systemd is not running here"
        print(f"timers not enabled ({why}): systemctl enable --now {' '.join(timers)}", file=out)
    return env_path


def remove_instance(
    group: Group, instance: str, *, force: bool = False, enable: bool = True, out: TextIO = sys.stdout
) -> None:
    """Disable the instance's timers, remove its env file and tmpfiles.d snippet; refused for
    an env file edited by hand unless ``force``. Its state, history and backups stay."""
    check_instance_name(instance)
    edited = _edited(group.name, instance)
    env_path = instance_env_file(group.name, instance)
    if edited is None and not force:
        raise ConfigError(f"no instance {instance!r} of {group.name} ({env_path} does not exist)")
    if edited and not force:
        raise ConfigError(f"{env_path} was edited by hand since jobrunner wrote it: remove it with --force")
    timers = [f"{unit}@{instance}.timer" for unit in group.timers]
    if enable and timers and _systemd_running():
        missing = _not_installed(timers)
        timers = [t for t in timers if t not in missing]
        if timers:
            _run(["systemctl", "disable", "--now", *timers], out)
    for path in (env_path, _hash_path(group.name, instance), _tmpfiles_path(group.name, instance)):
        try:
            os.unlink(path)
            print(f"removed {path}", file=out)
        except FileNotFoundError:
            pass
    print(f"kept the state of {instance} (/var/lib/jobrunner/<job>@{instance}) and its backups", file=out)


def instance_rows(groups: Sequence[Group], state_root: str) -> list[dict[str, Any]]:
    """One row per instance and job: the last outcome from its state."""
    rows: list[dict[str, Any]] = []
    for group in groups:
        for instance in known_instances(group.name):
            edited = bool(_edited(group.name, instance))
            for job in group.jobs:
                bound = job.for_instance(instance)
                row: dict[str, Any] = {
                    "group": group.name,
                    "instance": instance,
                    "job": bound.name,
                    "unit": f"{bound.unit}.service",
                    "edited": edited,
                }
                try:
                    state = StateStore(bound.name, state_root).load()
                except ConfigError as exc:
                    row["error"] = " ".join(str(exc).split())
                else:
                    row.update(
                        last_outcome=state.last_outcome,
                        last_start=state.last_start,
                        last_success=state.last_success,
                        consecutive_failures=state.consecutive_failures,
                    )
                rows.append(row)
    return rows
