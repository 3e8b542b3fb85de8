"""The declaration: ``@job(...)``, ``Lock``, ``Retry`` and ``Alert``.

A declaration is a small immutable value checked when it is built, so a bad one fails at
import with a message naming the job and the field (the CLI turns that into exit 78).

>>> from jobrunner import job, JobContext, Lock, Retry
>>> @job(schedule="02:15", lock=Lock(wait="30s"), timeout="2h",
...      retry=Retry(attempts=3, on=(OSError,)))
... def nightly(ctx: JobContext) -> None:
...     ctx.run(["true"])
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from types import FunctionType
from typing import Any, Literal, Never, TypeAlias, get_overloads, overload
from urllib.parse import urlsplit

from jobrunner._datatype import datatype, replace
from jobrunner.errors import ConfigError, UsageError
from jobrunner.timespan import parse_timespan
from jobrunner.types import JobContext, JobFunction, Span

__all__ = ["HARDENING_LEVELS", "Alert", "Job", "Lock", "Retry", "Slots", "alert_variable", "job"]

HARDENING_LEVELS = ("basic", "standard", "strict")
SYSTEM_ENV_FILE = "/etc/jobrunner/jobrunner.env"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$")  # as useradd (Debian-exim, first.last)


def _span(value: Any, what: str = "", *, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    try:
        return parse_timespan(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}" if what else str(exc)) from None


LEASE_SCHEMES = ("redis", "rediss", "unix", "etcd")
"""The URL schemes of ``Lock(url=)``: the keys of ``jobrunner.locks.abc.BACKENDS`` (a test
checks they agree; the public surface does not import the locks layer)."""
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://\S+$")


def _lease_scheme(url: object) -> str:
    """The registered scheme of a lease URL, or ``ValueError`` naming the ones there are."""
    match = _URL.match(url) if isinstance(url, str) else None
    known = ", ".join(f"{s}://" for s in LEASE_SCHEMES)
    if match is None:
        raise ValueError(f"lock url={url!r}: not a URL; use {known}")
    scheme = match.group(1).lower()
    if scheme not in LEASE_SCHEMES:
        raise ValueError(f"lock url: unknown scheme {scheme + '://'!r}; use {known}")
    if scheme == "etcd":
        _check_etcd(url)  # type: ignore[arg-type]
    return scheme


def _check_etcd(url: str) -> None:
    """``etcd://[user[:password]@]host[:port][/]``: what the etcd backend can speak (plain HTTP;
    the same rules as ``jobrunner.locks.etcd.etcd_endpoint``, a layer down)."""

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError as exc:
        raise ValueError(f"lock url: {exc}") from None
    if parts.password is not None and not parts.username:
        raise ValueError("lock url: an etcd password needs its user (etcd://user:password@host:port)")
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("lock url: use etcd://host:port (no path or query)")


@datatype(frozen=True)
class Lock:
    """How a job's runs exclude each other (flock(1) semantics).

    - ``Lock()``: exclusive and non-blocking (``flock -n``): a second run is skipped, exit 75.
    - ``Lock(wait="30s")``: wait up to 30 s for the holder (``flock -w 30``), then skip.
    - ``Lock(shared=True)``: a shared lock (``flock -s``): shared holders run together and
      exclude exclusive ones, e.g. readers of a backup set against the pruner.
    - ``Lock(name="/var/lock/backup.lock")``: an absolute path locks that very file, so a job
      excludes legacy scripts that run under ``flock /var/lock/backup.lock``.
    - ``busy="fail"``: a held lock is a failure (exit 1, alerts) rather than a skip.
    - ``Lock(url="redis://host:6379/0", ttl="60s")`` or ``Lock(url="etcd://host:2379")``: a
      lease in Redis or etcd, so one server of a fleet runs the job, once per firing of its
      timer (``jobrunner.locks.firing``; ``jobrunner.locks.abc`` picks the backend by the URL's
      scheme). ``Lock(redis=URL)`` is the same as
      ``Lock(url=URL)`` for Redis; ``redis=True`` reads the URL from ``$JOBRUNNER_REDIS_URL``.
      When the lease's store cannot be reached at start, the default ``unavailable="skip"``
      skips the run (exit 75, a ``lock.unavailable`` warning, no alert: the fleet is told once,
      by ``health --fleet``), ``"local"`` falls back to the file lock, ``"fail"`` fails the run.
    """

    name: str | None = None
    wait: str | float | None = None
    shared: bool = False
    busy: Literal["skip", "fail"] = "skip"
    redis: str | bool | None = None
    ttl: str | float = "60s"
    unavailable: Literal["skip", "fail", "local"] = "skip"
    url: str | None = None
    wait_seconds: float | None = field(init=False, repr=False, compare=False)
    ttl_seconds: float = field(init=False, repr=False, compare=False)
    backend: str | None = field(init=False, repr=False, compare=False)
    """The lease's URL scheme (``"redis"``, ``"etcd"``…), ``None`` for a file lock."""

    def __post_init__(self) -> None:
        if self.name is not None:
            if not isinstance(self.name, str) or not (self.name.startswith("/") or _NAME.match(self.name)):
                raise ValueError(f"lock name {self.name!r}: use letters, digits, '_.-', or an absolute path")
        if not isinstance(self.shared, bool):
            raise ValueError(f"lock shared={self.shared!r}: must be True or False")
        if self.busy not in ("skip", "fail"):
            raise ValueError(f"lock busy={self.busy!r}: must be 'skip' or 'fail'")
        object.__setattr__(self, "wait_seconds", _span(self.wait, "lock wait"))
        object.__setattr__(self, "ttl_seconds", _span(self.ttl, "lock ttl", allow_none=False))
        if self.redis is not None and self.redis is not True:
            if not isinstance(self.redis, str) or not self.redis.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(
                    "lock redis=: use a redis://, rediss:// or unix:// URL, or True for $JOBRUNNER_REDIS_URL"
                )
        backend = "redis" if self.redis else None
        if self.url is not None:
            if self.redis is not None and self.redis != self.url:
                raise ValueError("lock: give the lease's URL once, as url= (redis= is its old name)")
            backend = _lease_scheme(self.url)
            if backend in _REDIS_SCHEMES:
                object.__setattr__(self, "redis", self.url)  # jobrunner.locks.redis reads .redis
        elif isinstance(self.redis, str):
            object.__setattr__(self, "url", self.redis)
        object.__setattr__(self, "backend", backend)
        if backend and self.shared:
            raise ValueError("lock: shared=True is for file locks; a lease is exclusive")
        if backend and self.ttl_seconds < 1:
            raise ValueError("lock ttl: a lease needs at least 1s")
        if self.unavailable not in ("skip", "fail", "local"):
            raise ValueError(f"lock unavailable={self.unavailable!r}: must be 'skip', 'fail' or 'local'")


@datatype(frozen=True)
class Slots:
    """A host-wide limit on how many runs of a class run at once: a counting lock.

    ``@job(..., concurrency=Slots("backup", 2))``: at most 2 runs of every job that names the
    ``backup`` slots run at the same time on this host (e.g. fifty sites' 02:15 backups); a run
    that finds every slot taken waits for one (``lock.waiting`` with ``slots``), at most
    ``wait`` (default: until the job's deadline), then skips as a busy lock does (exit 75).
    The number can be changed per host without touching the code: ``JOBRUNNER_SLOTS_BACKUP=3``
    (the name upper-cased, other characters ``_``) in an env file. Built on flock(2) over
    ``<lock dir>/<name>.slot<N>.lock`` files, so a run killed with SIGKILL frees its slot.
    """

    name: str
    slots: int = 1
    wait: str | float | None = None
    wait_seconds: float | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"slots name {self.name!r}: use letters, digits, '_.-'")
        if isinstance(self.slots, bool) or not isinstance(self.slots, int) or not 1 <= self.slots <= 1024:
            raise ValueError(f"slots={self.slots!r}: must be a whole number from 1 to 1024")
        object.__setattr__(self, "wait_seconds", _span(self.wait, "slots wait"))

    @property
    def env_name(self) -> str:
        """The variable that overrides the number of slots on a host."""
        return "JOBRUNNER_SLOTS_" + re.sub(r"[^A-Za-z0-9]", "_", self.name).upper()


@datatype(frozen=True)
class Retry:
    """Retry the job when it raises one of ``on``, never past its deadline.

    ``Retry(attempts=3, backoff="exponential", delay="10s", max_delay="5min", on=(OSError,))``
    tries three times in all, sleeping 10 s then 20 s (capped at 5 min). ``backoff="fixed"``
    sleeps ``delay`` each time. Only the listed exception types are retried.
    """

    attempts: int = 3
    backoff: Literal["exponential", "fixed"] = "exponential"
    delay: str | float = "1s"
    max_delay: str | float = "5min"
    on: tuple[type[BaseException], ...] = (Exception,)
    delay_seconds: float = field(init=False, repr=False, compare=False)
    max_delay_seconds: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"retry attempts={self.attempts!r}: must be a whole number of 1 or more")
        if self.backoff not in ("exponential", "fixed"):
            raise ValueError(f"retry backoff={self.backoff!r}: must be 'exponential' or 'fixed'")
        on = self.on if isinstance(self.on, tuple) else (self.on,)
        if not on or not all(isinstance(t, type) and issubclass(t, Exception) for t in on):
            raise ValueError(f"retry on={self.on!r}: must be Exception subclasses")
        object.__setattr__(self, "on", on)
        object.__setattr__(self, "delay_seconds", _span(self.delay, "retry delay", allow_none=False))
        object.__setattr__(self, "max_delay_seconds", _span(self.max_delay, "retry max_delay", allow_none=False))


@datatype(frozen=True)
class Alert:
    """When a failure is worth a notification, and which durations are out of the ordinary
    (docs/alerting.md has the rules in one table).

    - ``after``: notify once this many runs failed in a row (default 1: the first failure).
    - ``rate``: or once this share of the last ``over`` runs failed (``0.3`` or ``"30%"``;
      ``over`` defaults to 10 runs; skipped runs do not count).
    - ``min_duration``, ``max_duration``: a successful run shorter or longer than this is
      out of the ordinary: a ``job.duration_anomaly`` warning, a metric, a health WARNING and
      its own notification, without changing the run's outcome. A run still running past
      ``max_duration`` is "running long": a warning while it runs, and in ``jobrunner health``.
    - ``slower_than_p95``: a successful run slower than this many times the p95 of the
      recent successful runs (once at least 10 exist in the history) is out of the ordinary too.

    ``$JOBRUNNER_ALERT_<JOB>`` (the job name upper-cased, other characters ``_``) overrides
    these per host, read when the job runs: ``after=3, min_duration=30s``.
    """

    after: int = 1
    rate: float | str | None = None
    over: int = 10
    min_duration: str | float | None = None
    max_duration: str | float | None = None
    slower_than_p95: float | None = None
    rate_fraction: float | None = field(init=False, repr=False, compare=False)
    min_seconds: float | None = field(init=False, repr=False, compare=False)
    max_seconds: float | None = field(init=False, repr=False, compare=False)
    problem: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Checked here, raised by @job (``check``), so the error names the job and the field.
        object.__setattr__(self, "rate_fraction", None)
        object.__setattr__(self, "min_seconds", None)
        object.__setattr__(self, "max_seconds", None)
        try:
            self._validate()
            problem = None
        except (ValueError, TypeError) as exc:
            problem = str(exc)
        object.__setattr__(self, "problem", problem)

    def check(self) -> Alert:
        """This, or ``ValueError`` saying what is wrong with it."""
        if self.problem:
            raise ValueError(self.problem)
        return self

    def _validate(self) -> None:
        for name in ("after", "over"):
            value = getattr(self, name)
            least = 1 if name == "after" else 2
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name}={value!r}: must be a whole number of {least} or more")
        object.__setattr__(self, "rate_fraction", _fraction(self.rate))
        low = _span(self.min_duration, "min_duration")
        high = _span(self.max_duration, "max_duration")
        if high is not None and high <= 0:
            raise ValueError(f"max_duration={self.max_duration!r}: must be more than 0")
        if low is not None and high is not None and low >= high:
            raise ValueError(f"min_duration={self.min_duration!r} is not below max_duration={self.max_duration!r}")
        object.__setattr__(self, "min_seconds", low or None)
        object.__setattr__(self, "max_seconds", high)
        k = self.slower_than_p95
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, float)) or not 1 <= k <= 1000):
            raise ValueError(f"slower_than_p95={k!r}: must be a number from 1 to 1000 (times the p95)")

    @property
    def checks_duration(self) -> bool:
        """Whether a successful run's duration is judged at all."""
        return bool(self.min_seconds or self.max_seconds or self.slower_than_p95)

    def to_dict(self) -> dict[str, Any]:
        """The rules as plain numbers, kept in the job's state for ``jobrunner alert`` and
        ``health`` (which cannot know a host's ``$JOBRUNNER_ALERT_<JOB>``)."""
        out: dict[str, Any] = {"after": self.after, "over": self.over}
        for key, value in (
            ("rate", self.rate_fraction),
            ("min_duration_s", self.min_seconds),
            ("max_duration_s", self.max_seconds),
            ("slower_than_p95", self.slower_than_p95),
        ):
            if value is not None:
                out[key] = value
        return out

    def record(self) -> dict[str, Any]:
        """The old name of :meth:`to_dict`, kept for code written against it ("record" now means
        a run's stored entry: docs/design.md, "Words")."""
        return self.to_dict()


def _fraction(value: Any) -> float | None:
    if value is None:
        return None
    text = value
    if isinstance(value, str):
        raw = value.strip()
        try:
            number = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
        except ValueError:
            number = -1.0
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        number = -1.0
    if not 0 < number <= 1:
        raise ValueError(f"rate={text!r}: must be a share above 0 and at most 1 (0.3 or '30%')")
    return number


def alert_variable(name: str) -> str:
    """``$JOBRUNNER_ALERT_<JOB>``: the job name upper-cased, other characters as ``_``."""
    return "JOBRUNNER_ALERT_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else tuple(value)
    for item in items:
        if not isinstance(item, str) or not item.strip() or "\n" in item:
            raise ValueError(f"{what}: {item!r} is not a non-empty one-line string")
    return items


def _paths(value: Any, what: str) -> tuple[str, ...]:
    items = _strings(value, what)
    for item in items:
        path = item.lstrip("-")
        if not path.startswith("/"):
            raise ValueError(f"{what}: {item!r} must be an absolute path")
    return items


@datatype(frozen=True)
class Job:
    """A declared job: the function plus everything operational about it.

    Built by ``@job``, whose docstring says what each setting means; here they are as checked
    and normalised (time spans in seconds, lists as tuples, ``lock=True`` as ``Lock()``).
    Calling a Job calls the function with a context.
    """

    func: JobFunction
    name: str
    module: str
    description: str = ""
    schedule: tuple[str, ...] = ()
    persistent: bool = False
    jitter: float | None = None
    fixed_jitter: bool = False
    accuracy: float | None = None
    on_boot: float | None = None
    lock: Lock | None = None
    timeout: float | None = None
    retry: Retry | None = None
    alert: Alert | None = None
    user: str | None = None
    group: str | None = None
    hardening: str = "strict"
    write_paths: tuple[str, ...] = ()
    read_paths: tuple[str, ...] = ()
    env_files: tuple[str, ...] = ()
    notify: tuple[str, ...] = ()
    network: bool = False
    working_dir: str | None = None
    log_file: str | None = None
    cleanup_timeout: float = 60.0
    kill_grace: float = 10.0
    unit: str = ""
    systemd: dict[str, Any] = field(default_factory=dict)
    security_threshold: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    instances: bool | str = False
    instance_group: str | None = None
    instance_write_paths: tuple[str, ...] | None = None
    instance_read_paths: tuple[str, ...] | None = None
    concurrency: Slots | None = None
    condition: tuple[str, str] | None = None
    instance: str | None = None  # set by ``for_instance``: this is the job bound to one instance

    def __call__(self, ctx: JobContext) -> object:
        return self.func(ctx)

    @property
    def env_file_chain(self) -> list[str]:
        """The job's ``EnvironmentFile=`` list, in order; a leading ``-`` marks an optional file.

        The unit loads these; a run by hand (no ``$INVOCATION_ID``) loads the same ones."""
        chain = [f"-{SYSTEM_ENV_FILE}", *self.env_files, f"-/etc/default/{self.base_unit}"]
        if self.instance is not None:  # the instance's own file, required, after the shared ones
            from jobrunner.instances import INSTANCES_DIR, instance_env_file

            base = INSTANCES_DIR if self.instance == "%i" else None
            chain.append(instance_env_file(self.instance_group or self.base_name, self.instance, base))
        # A file listed twice is read once, at its last place (later files win).
        last = {path.lstrip("-"): i for i, path in enumerate(chain)}
        return [path for i, path in enumerate(chain) if last[path.lstrip("-")] == i]

    @property
    def ref(self) -> str:
        """``module:name``, what ``jobrunner run`` takes."""
        return f"{self.module}:{self.base_name}"

    @property
    def base_name(self) -> str:
        """The declared name: ``wp_backup`` for ``wp_backup@shop.example`` too."""
        return self.name.split("@", 1)[0]

    @property
    def base_unit(self) -> str:
        """The declared unit name, without an instance (``wp-backup``)."""
        return self.unit.split("@", 1)[0]

    @property
    def instantiable(self) -> bool:
        """Declared ``instances=True`` or ``"optional"`` (and not yet bound to an instance)."""
        return bool(self.instances) and self.instance is None

    @property
    def lock_name(self) -> str | None:
        """The file lock's (or Redis lease's) name: the declared one, else the job's name; for
        an instance, a name (not an absolute path) gets ``@<instance>``: sites exclude their
        own runs, not each other's (``concurrency=`` limits them host-wide)."""
        if self.lock is None:
            return None
        name = self.lock.name or self.base_name
        if self.instance is not None and not name.startswith("/"):
            return f"{name}@{self.instance}"
        return name

    def for_instance(self, instance: str) -> Job:
        """This job bound to ``instance`` (checked: ``UsageError`` for a bad name): its name and
        unit become ``name@instance`` / ``unit@instance``, so state, history, metrics, health
        and notifications are per instance, and ``%i`` in its paths becomes the instance.
        ``"%i"`` itself gives the template the units are rendered from."""
        if self.instance is not None:
            raise UsageError(f"job {self.name} is already bound to an instance")
        if not self.instances:
            raise UsageError(
                f"job {self.name} is not instantiable: run it without --instance (or declare it instances=True)"
            )
        if instance != "%i":
            from jobrunner.instances import check_instance_name

            check_instance_name(instance)

        def sub(paths: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(p.replace("%i", instance) for p in paths)

        write = self.write_paths if self.instance_write_paths is None else self.instance_write_paths
        read = self.read_paths if self.instance_read_paths is None else self.instance_read_paths
        return replace(
            self,
            name=f"{self.name}@{instance}",
            unit=f"{self.unit}@{instance}",
            instance=instance,
            write_paths=sub(write),
            read_paths=sub(read),
        )


Paths: TypeAlias = str | Sequence[str]
Hardening: TypeAlias = Literal["basic", "standard", "strict"]
ConditionTest: TypeAlias = Literal["-x", "-e", "-d"]
# test(1)'s operator -> the unit's condition (checked by systemd before the unit starts)
CONDITIONS = {"-x": "ConditionFileIsExecutable", "-e": "ConditionPathExists", "-d": "ConditionPathIsDirectory"}
Directives: TypeAlias = Mapping[str, Mapping[str, Any]]


# The per-setting checks. Each takes the value given (or the table's default) and the setting's
# name, and returns the value as the ``Job`` record holds it (its return annotation is that
# field's type: tests/test_declaration_settings.py compares them), or raises ValueError/TypeError
# saying what is wrong; ``_build`` puts the job and the setting in front.


def _kept(value: Any, key: str) -> Any:
    """``name`` and ``unit``: checked by ``_build``, which knows the job's name."""
    return value


def _seconds_or_none(value: Any, key: str) -> float | None:
    return _span(value)


def _timeout(value: Any, key: str) -> float | None:
    seconds = _span(value)
    if seconds == 0:
        raise ValueError("must be more than 0 (or None for no timeout)")
    return seconds


def _seconds(value: Any, key: str) -> float:
    return parse_timespan(value)


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} must be True or False")
    return value


def _network(value: Any, key: str) -> bool | None:
    """None: not said; ``_build`` makes it False, or True with a lease."""
    return None if value is None else _flag(value, key)


def _paths_or_none(value: Any, key: str) -> tuple[str, ...] | None:
    return None if value is None else _paths(value, key)


def _path_or_none(value: Any, key: str) -> str | None:
    if value is not None:
        _paths(value, key)
    return value  # type: ignore[no-any-return]


def _instances(value: Any, key: str) -> bool | str:
    if value is not True and value is not False and value != "optional":  # not 1 or 0
        raise ValueError(f"{value!r}: use True, False or 'optional'")
    return value  # type: ignore[no-any-return]


def _group_name(value: Any, key: str) -> str | None:
    if value is not None and not (isinstance(value, str) and _NAME.match(value)):
        raise ValueError(f"{value!r} is not a group name (letters, digits, '_.-')")
    return value


def _account(value: Any, key: str) -> str | None:
    if value is not None and not (isinstance(value, str) and _USER.match(value)):
        raise ValueError(f"{value!r} is not a user/group name")
    return value


def _condition(value: Any, key: str) -> tuple[str, str] | None:
    if value is None:
        return None
    if not (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and value[0] in CONDITIONS
        and isinstance(value[1], str)
        and value[1].startswith("/")
    ):
        raise ValueError(f"{value!r}: use ('-x' | '-e' | '-d', '/absolute/path'), as test(1) reads it")
    return (value[0], value[1])


def _slots(value: Any, key: str) -> Slots | None:
    if value is not None and not isinstance(value, Slots):
        raise ValueError(f"{value!r}: use Slots(name, slots)")
    return value


def _lock(value: Any, key: str) -> Lock | None:
    if value is None or value is False:
        return None
    if value is True:
        return Lock()
    if isinstance(value, str):
        if "://" in value:
            return Lock(url=value)
        return Lock(name=value)
    if isinstance(value, Lock):
        return value
    raise ValueError(f"{value!r}: use True, a lock name, or Lock(...)")


def _retry(value: Any, key: str) -> Retry | None:
    if value is None or isinstance(value, Retry):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Retry(attempts=value)
    raise ValueError(f"{value!r}: use Retry(...) or a number of attempts")


def _alert(value: Any, key: str) -> Alert | None:
    if value is None:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = Alert(after=value)
    if isinstance(value, Alert):
        return value.check()
    raise ValueError(f"{value!r}: use Alert(...) or a number of failures in a row")


def _hardening(value: Any, key: str) -> str:
    if value not in HARDENING_LEVELS:
        raise ValueError(f"{value!r}: use one of {', '.join(HARDENING_LEVELS)}")
    return value  # type: ignore[no-any-return]


def _options(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{value!r} must be a dict")
    return dict(value)


def _directives(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError("must be a dict like {'Service': {'User': 'root'}}")
    return {section: dict(directives) for section, directives in value.items()}


def _threshold(value: Any, key: str) -> float | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10):
        raise ValueError(f"{value!r} must be a number from 0 to 10")
    return value


@datatype(frozen=True)
class Setting:
    """One ``@job`` setting: its default, its check (the value as given -> the ``Job`` field, or
    ValueError), the section of ``job()``'s docstring it is documented in, and that text."""

    name: str
    default: Any
    check: Callable[[Any, str], Any]
    section: str
    doc: str


_WHEN = "When it runs (the ``.timer``):"
_RUN = "How a run behaves:"
_INSTANCES = "Instances (one job, many sites; docs/sites.md):"
_UNIT = "Its unit (the ``.service``):"
SECTIONS = (_WHEN, _RUN, _INSTANCES, _UNIT)
"""The sections of ``job()``'s docstring, in order."""

# fmt: off
SETTINGS = (
    Setting("schedule", (), _strings, _WHEN,
            'an ``OnCalendar=`` expression, or a list of them (``"02:15"``,\n'
            '``"Mon..Fri 08..20:0/10"``, ``"hourly"``). None: the job runs only by hand.'),
    Setting("persistent", False, _flag, _WHEN,
            "catch up a run missed while the machine was off (``Persistent=``)."),
    Setting("jitter", None, _seconds_or_none, _WHEN,
            "a random delay up to this span (``RandomizedDelaySec=``)."),
    Setting("fixed_jitter", False, _flag, _WHEN,
            "the same ``jitter`` delay on every run of a host (``FixedRandomDelay=``)."),
    Setting("accuracy", None, _seconds_or_none, _WHEN,
            "how late systemd may start it to batch wake-ups (``AccuracySec=``)."),
    Setting("on_boot", None, _seconds_or_none, _WHEN,
            'also run once this span after boot (``OnBootSec=``; ``"0"`` is at once),\n'
            "cron's ``@reboot``; with or without a ``schedule``. The timer also fires when it is\n"
            "first started after that moment (``units install``), as systemd does."),
    Setting("lock", None, _lock, _RUN,
            "``True`` (exclusive, non-blocking: a second run is skipped, exit 75), a lock\n"
            "name, an absolute path (that very file: excludes ``flock(1)`` scripts), a\n"
            "lease URL (``redis://…``, ``etcd://host:2379``), or ``Lock(...)`` for wait, shared, busy\n"
            "and lease options."),
    Setting("timeout", None, _timeout, _RUN,
            "the deadline: the process tree is killed, cleanups run, exit 124."),
    Setting("retry", None, _retry, _RUN,
            "``Retry(...)``, or a number of attempts; never past the deadline."),
    Setting("alert", None, _alert, _RUN,
            "``Alert(...)`` (when a failure notifies: after N in a row, or a failure\n"
            "rate; durations out of the ordinary), or a number: notify after that many failures\n"
            "in a row. Overridable per host by ``$JOBRUNNER_ALERT_<JOB>``."),
    Setting("user", None, _account, _UNIT,
            "run as this user (default root)."),
    Setting("group", None, _account, _UNIT,
            "and this group (default: the user's)."),
    Setting("hardening", "strict", _hardening, _UNIT,
            'the sandbox level, ``"basic"``, ``"standard"`` or ``"strict"`` (default).'),
    Setting("network", None, _network, _UNIT,
            "the job needs the network (default False; a lease implies True)."),
    Setting("write_paths", (), _paths, _UNIT,
            "absolute paths made writable in the sandbox; a leading ``-`` marks\n"
            "one that may be missing."),
    Setting("read_paths", (), _paths, _UNIT,
            "the same, made readable."),
    Setting("env_files", (), _paths, _UNIT,
            "``EnvironmentFile=`` paths (``-`` prefix: optional), also read by a run\n"
            "by hand."),
    Setting("working_dir", None, _path_or_none, _UNIT,
            "the working directory."),
    Setting("log_file", None, _path_or_none, _RUN,
            "also append the JSON lines to this file."),
    Setting("notify", (), _strings, _RUN,
            "Apprise tags the failure (and recovery) notifications go to."),
    Setting("cleanup_timeout", "60s", _seconds, _RUN,
            "each cleanup's budget (default 60s)."),
    Setting("kill_grace", "10s", _seconds, _RUN,
            "from SIGTERM to SIGKILL for a command's process group (default 10s)."),
    Setting("name", None, _kept, _UNIT,
            "the job's name (default: the function's)."),
    Setting("unit", None, _kept, _UNIT,
            "the unit's name (default: the name with ``_`` as ``-``)."),
    Setting("systemd", None, _directives, _UNIT,
            "unit directives to replace, add or drop, for jobs that need a privilege:\n"
            '``{"Service": {"Key": value, "+Key": added, "Key": None}}``.'),
    Setting("security_threshold", None, _threshold, _UNIT,
            "the ``systemd-analyze security`` score (0-10) accepted when\n"
            "``systemd`` overrides raise it."),
    Setting("options", None, _options, _RUN,
            "free-form settings the job reads as ``ctx.options``."),
    Setting("instances", False, _instances, _INSTANCES,
            "``True``: the job runs per instance only (``run --instance NAME``, the\n"
            "template unit ``<unit>@.service``, ``ctx.instance``); ``\"optional\"``: also as a plain job\n"
            "(one site configured by the shared env file, the simple case)."),
    Setting("instance_group", None, _group_name, _INSTANCES,
            "the instances' env-file directory,\n"
            "``/etc/jobrunner/instances/<group>/<instance>.env`` (default: the job's name); jobs of\n"
            "one group share one file per instance."),
    Setting("instance_write_paths", None, _paths_or_none, _INSTANCES,
            "the writable paths of an instance's unit\n"
            "(default: ``write_paths``); ``%i`` is the instance name."),
    Setting("instance_read_paths", None, _paths_or_none, _INSTANCES,
            "the readable ones (default: ``read_paths``)."),
    Setting("concurrency", None, _slots, _RUN,
            '``Slots("backup", 2)``: at most 2 runs of the jobs naming ``backup``\n'
            "at once on this host, the others wait (within the deadline) for a slot."),
    Setting("condition", None, _condition, _RUN,
            '``("-x", "/usr/sbin/cron-apt")``: run only while this test(1) holds\n'
            "(``-x`` executable, ``-e`` exists, ``-d`` a directory); otherwise the run is skipped,\n"
            "exit 0, and the record names the condition. The unit gets the same check as\n"
            "``ConditionFileIsExecutable=``/``ConditionPathExists=``/``ConditionPathIsDirectory=``."),
)
# fmt: on
"""Every ``@job`` setting, once, in the order of ``job()``'s typed overload (a test holds the
overload, the ``Job`` fields and the docstring to this table)."""
_DEFAULTS = {s.name: s.default for s in SETTINGS}


@overload
def job(func: JobFunction, /) -> Job: ...
@overload
def job(
    func: None = None,
    /,
    *,
    schedule: str | Sequence[str] = ...,
    persistent: bool = ...,
    jitter: Span | None = ...,
    fixed_jitter: bool = ...,
    accuracy: Span | None = ...,
    on_boot: Span | None = ...,
    lock: bool | str | Lock | None = ...,
    timeout: Span | None = ...,
    retry: Retry | int | None = ...,
    alert: Alert | int | None = ...,
    user: str | None = ...,
    group: str | None = ...,
    hardening: Hardening = ...,
    network: bool | None = ...,
    write_paths: Paths = ...,
    read_paths: Paths = ...,
    env_files: Paths = ...,
    working_dir: str | None = ...,
    log_file: str | None = ...,
    notify: str | Sequence[str] = ...,
    cleanup_timeout: Span = ...,
    kill_grace: Span = ...,
    name: str | None = ...,
    unit: str | None = ...,
    systemd: Directives | None = ...,
    security_threshold: float | None = ...,
    options: Mapping[str, Any] | None = ...,
    instances: bool | Literal["optional"] = ...,
    instance_group: str | None = ...,
    instance_write_paths: Paths | None = ...,
    instance_read_paths: Paths | None = ...,
    concurrency: Slots | None = ...,
    condition: tuple[ConditionTest, str] | None = ...,
    **unknown: Never,
) -> Callable[[JobFunction], Job]: ...


def job(func: JobFunction | None = None, /, **settings: Any) -> Job | Callable[[JobFunction], Job]:
    """Declare a job: bare (``@job``) or with settings (``@job(schedule="02:15", ...)``).

    This docstring is where each setting is documented (docs/writing-jobs.md points here),
    made from the table ``SETTINGS`` (jobrunner/declaration.py).
    All are optional and keyword-only. A bad value raises ``ConfigError`` naming the job and
    the setting when the module is imported (the CLI exits 78). Time spans are seconds or
    systemd's syntax: ``"90s"``, ``"5m"``, ``"2h 30min"``, ``"1d"``.
    """
    if func is not None:
        if not callable(func) or any(key not in _DEFAULTS for key in settings) or _given(settings):
            raise TypeError("use @job or @job(setting=...), not @job(positional)")
        return _build(func, settings)

    def decorate(fn: JobFunction) -> Job:
        return _build(fn, settings)

    return decorate


def _document(intro: str) -> str:
    """``job()``'s docstring: its intro, then each section's settings as bullets, in table order."""
    indent = "\n    "
    parts = [intro.rstrip()]
    for section in SECTIONS:
        parts.append(f"{indent}{indent}{section}{indent}")
        for s in SETTINGS:
            if s.section == section:
                parts.append(f"{indent}- ``{s.name}``: " + s.doc.replace("\n", indent + "  "))
    return "".join(parts) + indent


def _show_signature() -> None:
    """``help(job)`` shows the settings with their defaults, as when ``job`` spelt them out:
    ``inspect.signature`` follows ``__wrapped__`` to a copy of the typed overload's code with
    the table's defaults (no ``inspect`` here: the timer tick imports this module)."""
    typed = get_overloads(job)[-1]
    shown = FunctionType(typed.__code__, typed.__globals__, "job", (None,), typed.__closure__)
    shown.__kwdefaults__ = dict(_DEFAULTS)
    shown.__annotations__ = {**typed.__annotations__, "func": "JobFunction | None"}
    shown.__annotations__["return"] = "Job | Callable[[JobFunction], Job]"
    shown.__doc__ = job.__doc__
    job.__wrapped__ = shown  # type: ignore[attr-defined]


job.__doc__ = _document(job.__doc__ or "")
_show_signature()


def _given(settings: dict[str, Any]) -> list[str]:
    """The settings that differ from their defaults."""
    return [key for key, value in settings.items() if value != _DEFAULTS[key]]


def _build(fn: Callable[..., Any], settings: dict[str, Any]) -> Job:
    name = settings.get("name") or getattr(fn, "__name__", "")
    where = f"job {name!r} in {getattr(fn, '__module__', '?')}"
    unknown = [key for key in settings if key not in _DEFAULTS]
    if unknown:
        raise ConfigError(f"{where}: unknown setting {sorted(unknown)[0]!r}")
    current = "name"
    try:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{name!r} is not a job name (letters, digits, '_.-')")
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            current = setting.name
            values[current] = setting.check(settings.get(current, setting.default), current)
        lock = values["lock"]
        current = "network"
        if lock is not None and lock.backend:
            if values["network"] is False:
                raise ValueError("a lease needs the network: drop network=False")
            values["network"] = True  # its unit must reach the lease's store
        values["network"] = bool(values["network"])
        current = "unit"
        values["unit"] = values["unit"] or name.replace("_", "-")
        if not _NAME.match(values["unit"]):
            raise ValueError(f"{values['unit']!r} is not a unit name")
        values.pop("name")
        current = "instances"
        _check_instances(values)
        doc = (fn.__doc__ or "").strip().splitlines()
        return Job(
            func=fn,
            name=name,
            module=getattr(fn, "__module__", "__main__"),
            description=doc[0] if doc else "",
            **values,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {current}: {exc}") from None


def _check_instances(values: dict[str, Any]) -> None:
    """``%i`` only where an instance fills it in; instance settings only with instances."""
    if not values["instances"]:
        for key in ("instance_group", "instance_write_paths", "instance_read_paths"):
            if values[key]:
                raise ValueError(f"{key}= needs instances=True or 'optional'")
    plain = ["write_paths", "read_paths", "env_files", "working_dir", "log_file"]
    if values["instances"] is True:
        plain = ["env_files", "working_dir", "log_file"]
    for key in plain:
        value = values[key]
        items = (value,) if isinstance(value, str) else (value or ())
        if any("%i" in item for item in items):
            where = "instance_write_paths/instance_read_paths" if values["instances"] else "an instantiable job"
            raise ValueError(f"{key}: '%i' (the instance name) belongs in {where}")
