"""``units install`` / ``units uninstall``: put rendered files in place, exactly and reversibly.

- Source: a rendered directory (``units/``); only files carrying the generated header go.
- Targets (under ``--root``, default ``/``): ``*.service``/``*.timer`` and the per-environment
  drop-ins ``<unit>.service.d/<env>.conf`` in ``/etc/systemd/system``,
  ``/etc/tmpfiles.d/jobrunner.conf``, ``/etc/logrotate.d/jobrunner``.
- Manifest: ``/var/lib/jobrunner/units.manifest`` (JSON: path -> sha256 of what was written).
  A target may be overwritten or removed only if the manifest lists it with the hash it has
  now (jobrunner wrote it and nobody edited it since), or, absent from the manifest, if it
  carries the generated header. Anything else is refused unless ``--force``. Files that a
  previous install wrote and this one no longer renders (a deleted job, another ``--env``)
  are removed. ``uninstall`` removes exactly the manifest's files.
- Every change is shown as a unified diff; a second run changes nothing and says so.
- systemctl (``daemon-reload``, ``systemd-tmpfiles --create``, ``enable --now`` timers,
  ``disable --now`` timers before their files go) runs only for ``--root /`` on a machine
  booted with systemd; otherwise a message says what to run.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from jobrunner.errors import ConfigError, JobrunnerError
from jobrunner.store.state import atomic_write
from jobrunner.unitgen.ini import GENERATED_MARK, parse_unit
from jobrunner.unitgen.render import LOGROTATE_FILE, TMPFILES_FILE

__all__ = ["InstallConflict", "Plan", "env_dropin", "install", "plan_install", "uninstall"]

MANIFEST = "var/lib/jobrunner/units.manifest"
UNIT_DIR = "etc/systemd/system"
_SHARED = {TMPFILES_FILE: "etc/tmpfiles.d/jobrunner.conf", LOGROTATE_FILE: "etc/logrotate.d/jobrunner"}


class InstallConflict(JobrunnerError):
    """A target exists that jobrunner did not write (or that was edited since): exit 73."""

    exit_code = 73  # EX_CANTCREAT


@dataclass
class Plan:
    """What an install or uninstall will do: ``changes`` as ``(path, old, new)`` texts."""

    root: Path
    changes: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    manifest: dict[str, str] = field(default_factory=dict)
    timers: list[str] = field(default_factory=list)
    removed_timers: list[str] = field(default_factory=list)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        return "\0binary\0"


def _load_manifest(root: Path) -> dict[str, str]:
    text = _read(root / MANIFEST)
    if text is None:
        return {}
    try:
        files = json.loads(text)["files"]
        return {str(k): str(v) for k, v in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{root / MANIFEST}: not a jobrunner manifest (remove it or fix it)") from None


def env_dropin(service_text: str, unit: str, env: str) -> str:
    """``<unit>.service.d/<env>.conf``: the seed's reset-and-override of ``EnvironmentFile=``.

    The reset drops every file of the unit, so the unit's own list is repeated, followed by
    the environment's files (optional, as not every unit needs one for every environment).
    """
    files = [v for k, v in parse_unit(service_text).get("Service", []) if k == "EnvironmentFile" and v]
    lines = [
        GENERATED_MARK,
        f"# Environment {env!r} of {unit}.service (jobrunner units install --env {env}).",
        "[Service]",
        "EnvironmentFile=",
        *(f"EnvironmentFile={f}" for f in files),
        f"EnvironmentFile=-/etc/jobrunner/jobrunner-{env}.env",
        f"EnvironmentFile=-/etc/default/{unit}-{env}",
        f"Environment=JOBRUNNER_ENV={env}",
    ]
    return "\n".join(lines) + "\n"


def _desired(source: Path, env: str | None) -> tuple[dict[str, str], list[str]]:
    if not source.is_dir():
        raise ConfigError(f"{source}: no such directory (run 'jobrunner units render' first)")
    wanted: dict[str, str] = {}
    timers: list[str] = []
    for path in sorted(source.iterdir()):
        if path.suffix not in (".service", ".timer") or not path.is_file():
            continue
        text = path.read_text()
        if not text.startswith(GENERATED_MARK):
            continue
        wanted[f"/{UNIT_DIR}/{path.name}"] = text
        if path.suffix == ".timer":
            if "@." not in path.name:  # a template's timers are enabled per instance (instances add)
                timers.append(path.name)
        elif env and "@." not in path.name:
            unit = path.name[: -len(".service")]
            wanted[f"/{UNIT_DIR}/{unit}.service.d/{env}.conf"] = env_dropin(text, unit, env)
    for rel, target in _SHARED.items():
        shared = _read(source / rel)
        if shared is not None and shared.startswith(GENERATED_MARK):
            wanted[f"/{target}"] = shared
    if not wanted:
        raise ConfigError(f"{source}: no rendered units in it (run 'jobrunner units render' first)")
    return wanted, timers


def _may_replace(path: str, current: str, manifest: dict[str, str]) -> bool:
    if path in manifest:
        return _sha(current) == manifest[path]
    return current.startswith(GENERATED_MARK)


def plan_install(source: str | os.PathLike[str], root: str | os.PathLike[str] = "/", env: str | None = None) -> Plan:
    """Compare the rendered ``source`` with what is under ``root``; nothing is written."""
    if env is not None and (not env or not all(c.isalnum() or c in "_-." for c in env)):
        raise ConfigError(f"--env {env!r}: use letters, digits, '_', '-', '.'")
    plan = Plan(Path(root))
    wanted, plan.timers = _desired(Path(source), env)
    old = _load_manifest(plan.root)
    for path, text in wanted.items():
        current = _read(plan.root / path.lstrip("/"))
        plan.manifest[path] = _sha(text)
        if current == text:
            continue
        if current is not None and not _may_replace(path, current, old):
            plan.conflicts.append(path)
        plan.changes.append((path, current, text))
    for path in sorted(set(old) - set(wanted)):
        current = _read(plan.root / path.lstrip("/"))
        if current is None:
            continue
        if _sha(current) != old[path]:
            plan.conflicts.append(path)
        plan.changes.append((path, current, None))
        if path.endswith(".timer") and "@." not in path:  # a template: its instances' (instances remove)
            plan.removed_timers.append(os.path.basename(path))
    return plan


def _diff(path: str, old: str | None, new: str | None) -> str:
    return "".join(
        difflib.unified_diff(
            (old or "").splitlines(keepends=True),
            (new or "").splitlines(keepends=True),
            fromfile="/dev/null" if old is None else f"a{path}",
            tofile="/dev/null" if new is None else f"b{path}",
        )
    )


def _write(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    atomic_write(str(target), text.encode(), 0o644)


def _remove(root: Path, path: str) -> None:
    target = root / path.lstrip("/")
    target.unlink(missing_ok=True)
    if target.parent.name.endswith(".service.d"):
        try:
            target.parent.rmdir()
        except OSError:
            pass


def _systemd_here(root: Path) -> str | None:
    """None when systemctl may run; else why not."""
    if root.resolve() != Path("/"):
        return "--root was given"
    if not os.path.isdir("/run/systemd/system"):
        return "systemd is not running here (PID 1 is not systemd)"
    return None


def _run(argv: list[str], out: TextIO) -> None:
    print("+ " + " ".join(argv), file=out)
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise JobrunnerError(f"{' '.join(argv)} failed: {why}")


def _refuse(conflicts: list[str], verb: str) -> None:
    more = f" and {len(conflicts) - 1} more" if len(conflicts) > 1 else ""
    raise InstallConflict(
        f"refusing to {verb} {conflicts[0]}{more}: not written by jobrunner or changed since (use --force)"
    )


def _save_manifest(root: Path, files: dict[str, str]) -> None:
    _write(root / MANIFEST, json.dumps({"version": 1, "files": dict(sorted(files.items()))}, indent=2) + "\n")


def install(
    source: str | os.PathLike[str] = "units",
    root: str | os.PathLike[str] = "/",
    *,
    env: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    out: TextIO | None = None,
) -> Plan:
    """Install the rendered units of ``source`` under ``root``; print diffs; return the plan."""
    out = out or sys.stdout
    plan = plan_install(source, root, env)
    for path, old, new in plan.changes:
        out.write(_diff(path, old, new))
    if plan.conflicts and not force:
        _refuse(plan.conflicts, "overwrite or remove")
    if dry_run:
        print(f"dry run: {len(plan.changes)} file(s) would change under {plan.root}", file=out)
        return plan
    if not plan.changes:
        print(f"nothing to change under {plan.root}", file=out)
    why_not = _systemd_here(plan.root)
    if why_not is None:
        for timer in plan.removed_timers:
            _run(["systemctl", "disable", "--now", timer], out)
    for path, _, new in plan.changes:
        if new is None:
            _remove(plan.root, path)
        else:
            _write(plan.root / path.lstrip("/"), new)
    _save_manifest(plan.root, plan.manifest)
    if plan.changes:
        print(f"installed under {plan.root}: {len(plan.changes)} file(s) changed", file=out)
    if why_not is None:
        _run(["systemctl", "daemon-reload"], out)
        _run(["systemd-tmpfiles", "--create", "/" + _SHARED[TMPFILES_FILE]], out)
        if plan.timers:
            _run(["systemctl", "enable", "--now", *plan.timers], out)
    else:
        todo = "systemctl daemon-reload && systemd-tmpfiles --create"
        if plan.timers:
            todo += " && systemctl enable --now " + " ".join(plan.timers)
        print(f"not running systemctl: {why_not}; on the target run: {todo}", file=out)
    return plan


def uninstall(
    root: str | os.PathLike[str] = "/", *, dry_run: bool = False, force: bool = False, out: TextIO | None = None
) -> list[str]:
    """Remove exactly what ``install`` wrote (timers disabled first); return the removed paths."""
    out = out or sys.stdout
    base = Path(root)
    manifest = _load_manifest(base)
    if not manifest:
        print(f"nothing installed under {base} (no {MANIFEST})", file=out)
        return []
    present = {p: _read(base / p.lstrip("/")) for p in sorted(manifest)}
    conflicts = [p for p, text in present.items() if text is not None and _sha(text) != manifest[p]]
    if conflicts and not force:
        _refuse(conflicts, "remove")
    removed = [p for p, text in present.items() if text is not None]
    for path in removed:
        print(f"{'would remove' if dry_run else 'remove'} {path}", file=out)
    if dry_run:
        return removed
    why_not = _systemd_here(base)
    timers = [os.path.basename(p) for p in removed if p.endswith(".timer") and "@." not in p]
    if why_not is None and timers:
        _run(["systemctl", "disable", "--now", *timers], out)
    for path in removed:
        _remove(base, path)
    (base / MANIFEST).unlink(missing_ok=True)
    if why_not is None:
        _run(["systemctl", "daemon-reload"], out)
    else:
        print(f"not running systemctl: {why_not}", file=out)
    return removed
