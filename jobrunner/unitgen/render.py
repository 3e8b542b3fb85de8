"""Render a job declaration into its systemd units, plus the shared files around them.

Per job: ``<unit>.service`` (and ``<unit>.timer`` when it has a schedule or ``on_boot``). Once:
``alert-failure@.service``, ``tmpfiles.d/jobrunner.conf`` (the lock directory, log files)
and, when a job has ``log_file``, ``logrotate.d/jobrunner``. Output is deterministic: stable
order, no timestamps, no host facts; ``render_all()`` twice gives identical text.

The formulas and decisions, in one place:

- ``TimeoutStartSec`` (the kill switch; systemd 252 ignores ``RuntimeMaxSec=`` for
  ``Type=oneshot``) = ``timeout + lock wait + kill_grace + cleanup_timeout + 60s``: the
  runner's own deadline fires first, kills the children, runs cleanup and reports; systemd's
  timeout is the backstop for a runner that hangs. No ``timeout``: 6h, so a hung run cannot
  hold the lock (and make every later run "skip" successfully) forever.
- ``TimeoutStopSec`` = ``kill_grace + cleanup_timeout + 15s``: ``systemctl stop`` (and the
  start timeout, which stops the same way) lets cleanup finish before SIGKILL.
  ``KillMode=control-group``: nothing outlives the unit.
- ``EnvironmentFile=``: ``-/etc/jobrunner/jobrunner.env`` (all jobs), then the job's
  ``env_files`` verbatim (systemd semantics: a leading ``-`` makes one optional, otherwise a
  missing file stops the unit from starting, which alerts), then ``-/etc/default/<unit>``
  last so the admin's per-unit file wins.
- Locks: ``JOBRUNNER_LOCK_DIR=/run/lock/jobrunner`` (mode 0755, root's, made by tmpfiles with
  a 0600 lock file for each non-root job and a 0660 root:<group> one for a lock shared across
  users), writable through ``ReadWritePaths=-/run/lock/jobrunner``; an absolute lock name opens
  its directory.
- State: ``StateDirectory=jobrunner/<job>`` + ``JOBRUNNER_STATE_DIR=/var/lib/jobrunner``.
- Instances (``@job(instances=...)``): ``<unit>@.service`` + ``<unit>@.timer`` templates
  rendered from the job bound to ``%i`` (``Job.for_instance("%i")``): ``ExecStart=… run
  MODULE:NAME --instance %i``, ``StateDirectory=jobrunner/<job>@%i``, the instance's env
  file ``/etc/jobrunner/instances/<group>/%i.env`` (required) last in the chain, and the
  instance's paths (``instance_write_paths``, ``%i`` kept as systemd's specifier; an instance
  name needs no escaping, so ``%i`` is the name). ``FixedRandomDelay=`` hashes the unit name
  (instance included), so the instances of one job spread over the jitter by themselves.
  ``instances="optional"`` jobs get the plain units too. What tmpfiles.d cannot make per
  instance (lock files of non-root jobs, ``%i`` write paths) ``jobrunner instances add`` does
  (``render_instance_tmpfiles``).
- Per-job unit overrides: ``systemd={"Service": {"Key": value|[..]|None,
  "+Key": value|[..]}, "Timer": {...}}}``; ``Key`` replaces, ``+Key`` appends, ``None``
  removes. ``Timer`` goes to the timer, every other section to the service. A job whose
  overrides relax the sandbox states its accepted exposure with
  ``security_threshold=4.5`` (recorded in the header; ``units verify`` uses it).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from jobrunner.declaration import CONDITIONS, Job
from jobrunner.errors import ConfigError
from jobrunner.run.loader import closest, default_package, discover, load_job
from jobrunner.systemd.calendar import invalid_schedules
from jobrunner.timespan import format_timespan
from jobrunner.unitgen.hardening import alert_directives, hardening_directives, under_home
from jobrunner.unitgen.ini import GENERATED_MARK, Unit
from jobrunner.unitgen.ownership import foreign_path

__all__ = [
    "ALERT_UNIT",
    "DEFAULT_PYTHON",
    "LOGROTATE_FILE",
    "merge_shared",
    "TMPFILES_FILE",
    "RenderOptions",
    "render_all",
    "render_instance_tmpfiles",
    "render_jobs",
    "select_jobs",
    "start_timeout",
    "stop_timeout",
]

DEFAULT_PYTHON = "/opt/jobrunner/bin/python"
LOCK_DIR = "/run/lock/jobrunner"
STATE_DIR = "/var/lib/jobrunner"
GLOBAL_ENV = "/etc/jobrunner/jobrunner.env"
ALERT_UNIT = "alert-failure@.service"
TMPFILES_FILE = "tmpfiles.d/jobrunner.conf"
LOGROTATE_FILE = "logrotate.d/jobrunner"
NO_TIMEOUT_BACKSTOP = 6 * 3600.0
START_MARGIN = 60.0
STOP_MARGIN = 15.0


@dataclass(frozen=True)
class RenderOptions:
    """Install-wide choices: the interpreter the units run and an optional metrics dir."""

    python: str = DEFAULT_PYTHON
    metrics_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.python.startswith("/") or any(c.isspace() for c in self.python):
            raise ConfigError(f"--python {self.python!r}: must be an absolute path without spaces")
        if self.metrics_dir is not None and not self.metrics_dir.startswith("/"):
            raise ConfigError(f"--metrics-dir {self.metrics_dir!r}: must be an absolute path")


def _esc(value: str) -> str:
    """Escape systemd specifiers: a literal ``%`` is ``%%`` in unit files."""
    return value.replace("%", "%%")


def _template(job: Job) -> bool:
    return job.instance == "%i"


def _esc_paths(job: Job, value: str) -> str:
    """A path of the job's: escaped, except a template's ``%i``, which stays the specifier."""
    escaped = _esc(value)
    return escaped.replace("%%i", "%i") if _template(job) else escaped


def _describe(job: Job, prefix: str, suffix: str = "") -> str:
    """``<prefix> <job name><suffix>``, escaped; a template's name ends in the ``%i`` specifier."""
    name = _esc(job.base_name) + "@%i" if _template(job) else _esc(job.name)
    return f"{_esc(prefix)} {name}{_esc(suffix)}"


def start_timeout(job: Job) -> float:
    """Seconds for ``TimeoutStartSec=`` (see the module docstring for the formula)."""
    if job.timeout is None:
        return NO_TIMEOUT_BACKSTOP
    wait = (job.lock.wait_seconds or 0.0) if job.lock else 0.0
    return job.timeout + wait + job.kill_grace + job.cleanup_timeout + START_MARGIN


def stop_timeout(job: Job) -> float:
    """Seconds for ``TimeoutStopSec=``: cleanup and the children's grace fit before SIGKILL."""
    return job.kill_grace + job.cleanup_timeout + STOP_MARGIN


def _span(seconds: float) -> str:
    return format_timespan(seconds) if seconds else "0"


def _header(job: Job, kind: str) -> list[str]:
    net = "yes" if job.network else "no"
    threshold = job.security_threshold
    if threshold is not None:
        net += f" threshold={float(threshold):g}"
    return [
        GENERATED_MARK[2:],
        f"{kind} of job {job.ref}: edit its @job declaration, not this file, then re-render.",
        f"jobrunner: job={job.ref} hardening={job.hardening} network={net}",
    ]


def _is_root(job: Job) -> bool:
    return job.user in (None, "root")


def _write_paths(job: Job, options: RenderOptions) -> list[str]:
    paths: list[str] = []
    if job.lock is not None:
        name = job.lock.name
        paths.append(os.path.dirname(name) or "/" if name and name.startswith("/") else f"-{LOCK_DIR}")
    paths.extend(job.write_paths)
    if job.log_file:
        paths.append(f"-{job.log_file}")
    if options.metrics_dir:
        paths.append(f"-{options.metrics_dir}")
    seen: list[str] = []
    for path in paths:
        if path not in seen:
            seen.append(path)
    return seen


def _unit_overrides(job: Job) -> dict[str, Any]:
    return job.systemd


def _apply(unit: Unit, job: Job, overrides: dict[str, Any]) -> None:
    if not overrides:
        return
    try:
        unit.apply_overrides(overrides, "systemd=")
    except ValueError as exc:
        raise ConfigError(f"job {job.ref}: {exc}") from None


def render_service(job: Job, options: RenderOptions = RenderOptions()) -> str:
    """The text of ``<unit>.service`` for ``job``."""
    unit = Unit(_header(job, "Service"))
    what = f": {job.description}" if job.description else ""
    unit.add("Unit", "Description", _describe(job, "jobrunner job", what))
    unit.add("Unit", "OnFailure", "alert-failure@%n.service")
    if job.network:
        unit.add("Unit", "Wants", "network-online.target")
        unit.add("Unit", "After", "network-online.target")
    if job.condition is not None:  # the same test the runner makes by hand (a skipped run, exit 0)
        unit.add("Unit", CONDITIONS[job.condition[0]], job.condition[1])
    s = "Service"
    unit.add(s, "Type", "oneshot")
    # ctx.progress() reports its step to `systemctl status` with sd_notify STATUS= (jobrunner.systemd.sdnotify).
    unit.add(s, "NotifyAccess", "main")
    if job.user:
        unit.add(s, "User", job.user)
    if job.group:
        unit.add(s, "Group", job.group)
    if job.working_dir:
        unit.add(s, "WorkingDirectory", _esc(job.working_dir))
    instance = " --instance %i" if _template(job) else ""
    unit.add(s, "ExecStart", _esc(f"{options.python} -m jobrunner run {shlex.quote(job.ref)}") + instance)
    # 75: skipped, the lock was busy. 143: stopped by `systemctl stop` or a shutdown after the
    # runner's cleanup; the runner reports that itself, so OnFailure= must not alert twice.
    # (TimeoutStartSec= expiring still fails the unit: Result=timeout, whatever the status.)
    unit.add(s, "SuccessExitStatus", "75 143")
    unit.extend(s, "EnvironmentFile", [_esc_paths(job, p) for p in job.env_file_chain])
    unit.add(s, "Environment", f"JOBRUNNER_STATE_DIR={STATE_DIR}")
    unit.add(s, "Environment", f"JOBRUNNER_LOCK_DIR={LOCK_DIR}")
    unit.add(s, "Environment", "JOBRUNNER_LOG_FORMAT=json")
    unit.add(s, "Environment", "PYTHONUNBUFFERED=1")
    if options.metrics_dir:
        unit.add(s, "Environment", _esc(f"JOBRUNNER_METRICS_DIR={options.metrics_dir}"))
    unit.add(s, "StateDirectory", f"jobrunner/{job.name}")
    unit.add(s, "SyslogIdentifier", job.unit)
    unit.add(s, "TimeoutStartSec", _span(start_timeout(job)))
    unit.add(s, "TimeoutStopSec", _span(stop_timeout(job)))
    unit.add(s, "KillMode", "control-group")
    declared = [job.working_dir or "", job.log_file or "", *job.write_paths, *job.read_paths, *job.env_files]
    for key, value in hardening_directives(
        job.hardening, root=_is_root(job), network=job.network, home_paths=under_home(p for p in declared if p)
    ):
        unit.add(s, key, value)
    unit.extend(s, "ReadWritePaths", [_esc_paths(job, p) for p in _write_paths(job, options)])
    unit.extend(s, "ReadOnlyPaths", [_esc_paths(job, p) for p in job.read_paths])
    overrides = {k: v for k, v in _unit_overrides(job).items() if k != "Timer"}
    _apply(unit, job, overrides)
    if unit.get(s, "RuntimeMaxSec") and unit.get(s, "Type") == ["oneshot"]:
        raise ConfigError(
            f"job {job.ref}: RuntimeMaxSec= has no effect with Type=oneshot (systemd ignores it); set timeout= instead"
        )
    return unit.text()


def render_timer(job: Job) -> str:
    """The text of ``<unit>.timer`` for a job with a schedule or ``on_boot``."""
    if not job.schedule and job.on_boot is None:
        raise ConfigError(f"job {job.ref}: has no schedule, so no timer")
    unit = Unit(_header(job, "Timer"))
    unit.add("Unit", "Description", _describe(job, "Schedule of jobrunner job"))
    unit.extend("Timer", "OnCalendar", job.schedule)
    if job.on_boot is not None:
        unit.add("Timer", "OnBootSec", _span(job.on_boot))
    if job.schedule:
        unit.add("Timer", "Persistent", job.persistent)
    if job.jitter:
        unit.add("Timer", "RandomizedDelaySec", _span(job.jitter))
        unit.add("Timer", "FixedRandomDelay", job.fixed_jitter)
    elif job.fixed_jitter:
        raise ConfigError(f"job {job.ref}: fixed_jitter=True has no effect without jitter=")
    if job.accuracy is not None:
        unit.add("Timer", "AccuracySec", _span(job.accuracy) if job.accuracy else "1us")
    unit.add("Timer", "Unit", f"{job.unit}.service")
    unit.add("Install", "WantedBy", "timers.target")
    timer_overrides = _unit_overrides(job).get("Timer")
    if timer_overrides:
        _apply(unit, job, {"Timer": timer_overrides})
    return unit.text()


def render_alert(options: RenderOptions = RenderOptions()) -> str:
    """``alert-failure@.service``: ``jobrunner alert %i`` for whatever the runner could not report."""
    unit = Unit(
        [
            GENERATED_MARK[2:],
            "OnFailure= handler of every jobrunner job: reports failures the runner itself could not",
            "(SIGKILL, OOM, a crash before the runtime started); silent when the runner already did.",
            "jobrunner: job=- hardening=alert network=yes",
        ]
    )
    unit.add("Unit", "Description", "jobrunner alert: %i failed")
    unit.add("Unit", "Wants", "network-online.target")
    unit.add("Unit", "After", "network-online.target")
    s = "Service"
    unit.add(s, "Type", "oneshot")
    unit.add(s, "ExecStart", f"{options.python} -m jobrunner alert %i")
    unit.add(s, "EnvironmentFile", f"-{GLOBAL_ENV}")
    unit.add(s, "Environment", f"JOBRUNNER_STATE_DIR={STATE_DIR}")
    unit.add(s, "Environment", "JOBRUNNER_LOG_FORMAT=json")
    unit.add(s, "Environment", "PYTHONUNBUFFERED=1")
    unit.add(s, "StateDirectory", "jobrunner")
    unit.add(s, "SyslogIdentifier", "jobrunner-alert")
    unit.add(s, "TimeoutStartSec", "5min")
    for key, value in alert_directives():
        unit.add(s, key, value)
    return unit.text()


def _owner(job: Job) -> tuple[str, str]:
    user = job.user or "root"
    return user, job.group or user


def _dir_owner(path: str, jobs: list[Job]) -> tuple[str, str]:
    """Who owns a write path shared by ``jobs``: their one user; or the one non-root user when
    every root job sharing it keeps CAP_DAC_OVERRIDE (below ``strict``). Else a ConfigError:
    strict units drop every capability, so a directory owned by one user is not writable by
    another's job, root included; better said at render time than as EACCES at 02:15."""
    owners = {_owner(j) for j in jobs}
    if len(owners) == 1:
        return owners.pop()
    others = {_owner(j) for j in jobs if not _is_root(j)}
    roots_can_override = all(j.hardening != "strict" for j in jobs if _is_root(j))
    if len(others) == 1 and roots_can_override:
        return others.pop()
    refs = ", ".join(f"{j.ref} (user {_owner(j)[0]}, {j.hardening})" for j in jobs)
    raise ConfigError(f"write path {path} is shared by jobs {refs}: give them one user/group or separate directories")


def render_tmpfiles(jobs: Sequence[Job]) -> str:
    """``tmpfiles.d/jobrunner.conf``: the shared lock dir; each ``log_file`` made and owned.

    A non-root job's ``log_file`` and ``write_paths`` are refused (``ConfigError``) unless they
    are already its user's or new outside the system's trees (``ownership.foreign_path``):
    the ``f``/``d`` lines below would otherwise re-own someone else's file to that user.
    """
    check_given_paths(jobs)
    lines = [
        GENERATED_MARK,
        "# tmpfiles.d(5) for jobrunner: the lock directory the units open with ReadWritePaths=",
        "# (root's alone: nobody else can add a lock file and hold it), a lock file for each",
        "# non-root job and for each lock shared across users (by a group), each job's",
        "# write_paths and log file, owned by its user (the sandbox cannot create them).",
        f"d {LOCK_DIR} 0755 root root -",
        *_lock_files(jobs),
    ]
    dirs: list[str] = []
    # Each job's write_paths must exist before its unit starts (a missing ReadWritePaths= dir
    # fails the unit with 226/NAMESPACE, and the sandbox cannot create it): made here, owned
    # as _dir_owner says; '-'-prefixed paths are optional and left alone.
    sharers: dict[str, list[Job]] = {}
    for job in sorted(jobs, key=lambda j: j.name):
        for path in job.write_paths:
            if not path.startswith("-") and "%i" not in path:  # an instance's: instances add
                sharers.setdefault(path, []).append(job)
    for path, users in sharers.items():
        owner = _dir_owner(path, users)
        dirs.append(path)
        lines.append(f"d {path} 0750 {owner[0]} {owner[1]} -")
    for job in sorted((j for j in jobs if j.log_file), key=lambda j: j.name):
        path = job.log_file.lstrip("-")  # type: ignore[union-attr]
        parent = os.path.dirname(path)
        if parent not in ("/var/log", "/") and parent not in dirs:
            dirs.append(parent)
            lines.append(f"d {parent} - - - -")
        user, group = _owner(job)
        lines.append(f"f {path} 0640 {user} {group} -")
    return "\n".join(lines) + "\n"


def check_given_paths(jobs: Iterable[Job]) -> None:
    """Refuse a non-root job's log file or write path that root would give away (one line, exit 78)."""
    for job in jobs:
        if _is_root(job):
            continue
        user = _owner(job)[0]
        given = [(job.log_file.lstrip("-"), "log_file", "file")] if job.log_file else []
        given += [(p, "write_paths", "directory") for p in job.write_paths if not p.startswith("-") and "%i" not in p]
        for path, field, kind in given:
            why = foreign_path(path, user, kind=kind)
            if why:
                raise ConfigError(
                    f"job {job.ref}: {field} {path} {why}: jobrunner will not make it or give it to {user} "
                    f"(tmpfiles.d and logrotate would re-own it); use a path of {user}'s own"
                )


def _lock_files(jobs: Sequence[Job]) -> list[str]:
    """``f`` lines for the lock files root must make: a non-root job cannot create one in the
    0755 lock directory. One user: 0600, theirs. Users sharing a lock: 0660 root:<group>, with
    the group all its non-root jobs declare (``group=``), else a ConfigError."""
    users: dict[str, list[Job]] = {}
    for job in sorted(jobs, key=lambda j: j.name):
        if job.lock is None or job.lock.backend or (job.lock.name or "").startswith("/"):
            continue
        if job.instances is True or _template(job):  # per instance: instances add makes them
            continue
        users.setdefault(job.lock_name or job.name, []).append(job)
    lines = []
    for name, sharing in sorted(users.items()):
        path = f"{LOCK_DIR}/{name}.lock"
        owners = {_owner(j)[0] for j in sharing}
        if owners == {"root"}:
            continue
        if len(owners) == 1:
            lines.append(f"f {path} 0600 {owners.pop()} - -")
            continue
        groups = {j.group for j in sharing if not _is_root(j)}
        if len(groups) != 1 or None in groups:
            refs = ", ".join(f"{j.ref} (user {_owner(j)[0]})" for j in sharing)
            raise ConfigError(f"lock {name} is shared by jobs {refs}: give their non-root jobs one group= to share it")
        lines.append(f"f {path} 0660 root {groups.pop()} -")
    return lines


def render_instance_tmpfiles(bound: Sequence[Job], header: str) -> str:
    """tmpfiles.d(5) lines for the instances' jobs (``Job.for_instance``): the lock file of each
    non-root job and each required write path (``d``, owned as for the plain jobs), which the
    template's sandbox cannot create. ``jobrunner instances add`` writes one such file per
    instance and applies it (``systemd-tmpfiles --create``); it comes back after a reboot."""
    lines = [GENERATED_MARK, f"# {header}"]
    for job in sorted(bound, key=lambda j: j.name):
        if job.lock is not None and not job.lock.backend and not (job.lock_name or "").startswith("/"):
            user = _owner(job)[0]
            if user != "root":
                lines.append(f"f {LOCK_DIR}/{job.lock_name}.lock 0600 {user} - -")
    sharers: dict[str, list[Job]] = {}
    for job in sorted(bound, key=lambda j: j.name):
        for path in job.write_paths:
            if not path.startswith("-"):
                sharers.setdefault(path, []).append(job)
    for path, users in sharers.items():
        owner = _dir_owner(path, users)
        lines.append(f"d {path} 0750 {owner[0]} {owner[1]} -")
    return "\n".join(lines) + "\n"


def render_logrotate(jobs: Sequence[Job]) -> str | None:
    """``logrotate.d/jobrunner`` for jobs with ``log_file`` (None when there are none).

    The seed's policy plus ``delaycompress``: a run still appending (O_APPEND) to the file
    just rotated keeps writing to ``.1`` until it ends, so ``.1`` must not be compressed yet.
    """
    logged = sorted((j for j in jobs if j.log_file), key=lambda j: j.name)
    if not logged:
        return None
    lines = [GENERATED_MARK, "# logrotate(8) for the log files of jobrunner jobs; no copytruncate (O_APPEND)."]
    for job in logged:
        user, group = _owner(job)
        lines += [
            "",
            f"# {job.ref}",
            f"{job.log_file.lstrip('-')} {{",  # type: ignore[union-attr]
            "    daily",
            "    rotate 14",
            "    compress",
            "    delaycompress",
            "    missingok",
            "    notifempty",
            f"    create 0640 {user} {group}",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _check_schedules(jobs: Iterable[Job]) -> None:
    jobs = list(jobs)
    bad = invalid_schedules(s for j in jobs for s in j.schedule)
    for job in jobs:
        for spec in job.schedule:
            if spec in bad:
                raise ConfigError(f"job {job.ref}: schedule: {bad[spec]}")


def render_jobs(
    jobs: Sequence[Job], options: RenderOptions = RenderOptions(), *, shared_from: Sequence[Job] | None = None
) -> dict[str, str]:
    """``{relative file name: text}`` for ``jobs`` plus the shared files, sorted by name.

    ``shared_from`` (default ``jobs``) are the jobs the tmpfiles/logrotate snippets cover, so
    rendering a few jobs does not shrink the shared files to those few.
    """
    shared = list(shared_from if shared_from is not None else jobs)
    _check_schedules([*jobs, *shared])
    files: dict[str, str] = {ALERT_UNIT: render_alert(options)}
    for job in jobs:
        variants = []
        if job.instances is not True:
            variants.append((job, job.unit))
        if job.instances:
            variants.append((job.for_instance("%i"), f"{job.unit}@"))
        for variant, name in variants:
            files[f"{name}.service"] = render_service(variant, options)
            if variant.schedule or variant.on_boot is not None:
                files[f"{name}.timer"] = render_timer(variant)
    files[TMPFILES_FILE] = render_tmpfiles(shared)
    logrotate = render_logrotate(shared)
    if logrotate is not None:
        files[LOGROTATE_FILE] = logrotate
    return dict(sorted(files.items()))


def select_jobs(package: str, names: Sequence[str] = ()) -> tuple[list[Job], list[Job]]:
    """(selected jobs, all jobs of ``package``). ``names``: job names, unit names or ``MODULE:NAME``."""
    every = discover(package)
    if not names:
        return every, every
    chosen: list[Job] = []
    for name in names:
        match = [
            j for j in every if name in (j.name, j.unit, j.ref, f"{j.unit}.service", f"{j.unit}@", f"{j.unit}@.service")
        ]
        if not match and (":" in name or "." in name):
            match = [load_job(name)]
        if not match:
            have = ", ".join(j.name for j in every) or "none"
            hint = closest(name, [j.name for j in every])
            raise ConfigError(f"no job {name!r}{hint} in package {package!r} (jobs: {have})")
        chosen.extend(j for j in match if j not in chosen)
    extra = [j for j in chosen if j not in every]
    return sorted(chosen, key=lambda j: j.name), every + extra


def render_all(
    package: str | None = None,
    names: Sequence[str] = (),
    *,
    python: str = DEFAULT_PYTHON,
    metrics_dir: str | None = None,
) -> dict[str, str]:
    """Render every job of ``package`` (default ``$JOBRUNNER_PACKAGE`` or ``jobs``), or the
    ``names`` among them: ``{file name: text}``. With ``names``, the shared tmpfiles/logrotate
    files cover those jobs alone (``merge_shared`` merges them into an output directory).

    What ``units render`` writes; a drift test compares it with the committed ``units/``.
    """
    if package is None:
        package = default_package()
    selected, every = select_jobs(package, names)
    # Named jobs: their files alone, checked alone (another job's paths are not theirs to
    # judge); the shared files then hold their lines only, for merge_shared.
    shared = selected if names else every
    return render_jobs(selected, RenderOptions(python=python, metrics_dir=metrics_dir), shared_from=shared)


def _tmpfiles_key(line: str) -> tuple[str, str] | None:
    fields = line.split()
    return (fields[0], fields[1]) if len(fields) >= 2 and not line.startswith("#") else None


def _merge_tmpfiles(current: str, mine: str, where: str) -> str:
    lines = current.rstrip("\n").split("\n")
    have = {key: line for line in lines if (key := _tmpfiles_key(line))}
    for line in mine.rstrip("\n").split("\n"):
        key = _tmpfiles_key(line)
        if key is None or have.get(key) == line:
            continue
        if key in have:
            raise ConfigError(
                f"{where} has {have[key]!r} (another job's) where this job needs {line!r}: "
                "give the jobs one user/group or separate paths, or render into another --out"
            )
        lines.append(line)
        have[key] = line
    return "\n".join(lines) + "\n"


def _merge_logrotate(current: str, mine: str) -> str:
    head, *blocks = current.rstrip("\n").split("\n\n")
    _, *new = mine.rstrip("\n").split("\n\n")
    by_ref = {block.split("\n", 1)[0]: block for block in blocks}
    for block in new:
        by_ref[block.split("\n", 1)[0]] = block
    return "\n\n".join([head, *by_ref.values()]) + "\n"


def merge_shared(files: dict[str, str], out: str) -> dict[str, str]:
    """``files`` rendered for a few jobs, with the shared tmpfiles.d and logrotate.d files
    merged into what ``out`` already has (generated by jobrunner): the jobs' lines added or
    kept, every other job's kept, never rewritten from this partial view. A line for the same
    path that differs from another job's is a ``ConfigError`` (the two would fight)."""
    merged = dict(files)
    for rel in (TMPFILES_FILE, LOGROTATE_FILE):
        if rel not in files:
            continue
        try:
            with open(os.path.join(out, rel), encoding="utf-8") as handle:
                current = handle.read()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"units render: cannot read {os.path.join(out, rel)}: {exc}") from None
        if not current.startswith(GENERATED_MARK):
            continue  # not jobrunner's: write_rendered's caller decides (it is replaced as before)
        if rel == TMPFILES_FILE:
            merged[rel] = _merge_tmpfiles(current, files[rel], os.path.join(out, rel))
        else:
            merged[rel] = _merge_logrotate(current, files[rel])
    return merged
