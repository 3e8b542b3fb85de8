"""Per-job state: what ran, when, how it ended. One small JSON file per job.

``$JOBRUNNER_STATE_DIR/<job>/state.json`` (default ``/var/lib/jobrunner`` as root, where the
rendered units' ``StateDirectory=jobrunner/<job>`` makes it writable under
``ProtectSystem=strict``; else ``$XDG_STATE_HOME/jobrunner`` or ``~/.local/state/jobrunner``).

Writes are atomic (temp file, fsync, rename, fsync of the directory) and serialised by a
flock on ``.state.lock`` beside it, so a skipped run recording itself never clobbers the
holder's record. A reader never sees half a file.

The job's directory belongs to the job's user, who may be the attacker of docs/security.md
(a www-data job whose state root reads): every file in it is opened relative to the
directory's descriptor with ``O_NOFOLLOW`` (a planted symlink is refused, never followed),
only regular files of a bounded size are read, the lock is waited on for a bounded time, and
what is read is checked against the schema (wrong types make the file "unreadable", never a
crash). Files are 0640 and directories 0750 whatever the umask.

What is read is a ``JobState``: every reader uses its attributes, never the file's keys.
``StateStore.load()`` reads it, ``StateStore.apply(*changes)`` changes it under the lock (the
runner folds what its hooks contribute into one write at the start of a run and one at the
end). ``read()``/``update()`` are the same file as a plain dict, for tools and tests.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import field
from typing import Any, ClassVar

from jobrunner import validate as v
from jobrunner._datatype import datatype
from jobrunner.errors import ConfigError
from jobrunner.files import _OPEN_DIR, atomic_write, poll_bounded, read_regular_file
from jobrunner.validate import loads

__all__ = [
    "SCHEMA_VERSION",
    "AlertingState",
    "JobState",
    "NotificationState",
    "SilencingState",
    "SkipState",
    "StateStore",
    "atomic_write",
    "default_state_dir",
    "note_finish",
    "note_start",
]

KEEP_DURATIONS = 10
FILE_MODE = 0o640
DIR_MODE = 0o750
MAX_STATE_BYTES = 1 << 20
LOCK_WAIT_S = 10.0


def default_state_dir() -> str:
    configured = os.environ.get("JOBRUNNER_STATE_DIR")
    if configured:
        return configured
    if os.geteuid() == 0:
        return "/var/lib/jobrunner"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "jobrunner")


# -- the typed state -------------------------------------------------------------------------

SCHEMA_VERSION = 1  # written as "schema"; files without it (older runners) are version 0 and load the same

_NUM = (int, float)


# The sections: a feature's own keys of the file, grouped. The file stays flat (a section's
# attribute names are its keys); ``owners`` are the modules that may write the section (the
# rest of the package reads it): tests/test_jobstate.py walks the package to hold them to it.
# Each section is named here, not imported: this layer is below its owners.


@datatype
class SkipState:
    """Runs skipped because the job's lock was held: the last skip, since when the job has been
    skipping (the first skip after the last run that ran), how many, and who held the lock
    (``pid``, ``user``, ``uid``). Written by ``JobState.note_finish`` (this module, for the
    run's end in ``jobrunner/run/lifecycle.py``): a skip counts, a run that runs clears them.
    Read by ``jobrunner/rules/skips.py`` (the skip notification), health and the metrics."""

    owners: ClassVar[tuple[str, ...]] = ("jobrunner.store.state",)

    last_skipped: float | None = None
    skipped_since: float | None = None
    consecutive_skips: int | None = None
    skip_holder: dict[str, Any] | None = None

    def note_skip(self, now: float, holder: dict[str, Any] | None) -> None:
        self.last_skipped = now
        if not self.skipped_since:
            self.skipped_since = now
        self.consecutive_skips = (self.consecutive_skips or 0) + 1
        if holder:
            self.skip_holder = holder

    def end(self) -> None:
        """A run ran: the job is not skipping any more (``last_skipped`` stays)."""
        self.skipped_since = self.consecutive_skips = self.skip_holder = None


@datatype
class NotificationState:
    """The notifications' memory, written by ``jobrunner/notify/`` (and by ``note_finish`` here,
    which ends a skip episode). ``notify``: the failure throttle's flags and counts
    (``notify/throttle.py``) and, under ``sent``, what was sent per kind (``failure``,
    ``skip``, ``anomaly:<kind>``: ``notify/memory.py``); ``ping``: the ping queue and the
    server's body limit (``notify/ping.py``); ``notify_tags``: the job's tags, for ``jobrunner
    alert``, which cannot import the job; ``notified_run_id``: the last run whose failure was
    handled (``notify/throttle.py``)."""

    owners: ClassVar[tuple[str, ...]] = ("jobrunner.notify", "jobrunner.store.state")

    notify: dict[str, Any] = field(default_factory=dict)
    ping: dict[str, Any] = field(default_factory=dict)
    notify_tags: list[str] | None = None
    notified_run_id: str | None = None

    def end_skip_episode(self) -> None:
        """A run ran: the next skip is a new episode, notified again (``notify/memory.py``)."""
        sent = self.notify.get("sent")
        if isinstance(sent, dict) and "skip" in sent:
            self.notify = {**self.notify, "sent": {k: v for k, v in sent.items() if k != "skip"}}
            if not self.notify["sent"]:
                del self.notify["sent"]


@datatype
class AlertingState:
    """What the alerting rules (``jobrunner/rules/alerting.py``) made of the runs, written by the
    run (``jobrunner/run/lifecycle.py``, which applies them; the rules module is not imported on
    a run that needs none of it): ``alert``, the rules the last run applied (``Alert.to_dict()``,
    when a run starts, for ``jobrunner alert`` and health, which cannot import the job);
    ``anomaly``, the last run's duration out of the ordinary (``None`` once a run is ordinary
    again) and ``anomalies``, their counts by kind (when a run ends)."""

    owners: ClassVar[tuple[str, ...]] = ("jobrunner.run.lifecycle",)

    alert: dict[str, Any] | None = None
    anomaly: dict[str, Any] | None = None
    anomalies: dict[str, int] = field(default_factory=dict)


@datatype
class SilencingState:
    """The job's silence (``until``, ``since``, ``by``, ``uid``, ``reason``), written by
    ``jobrunner/admin/silences.py`` (``jobrunner silence``, ``jobrunner unsilence``); judged
    by ``jobrunner/rules/alerting.py`` (``silence_active``)."""

    owners: ClassVar[tuple[str, ...]] = ("jobrunner.admin.silences",)

    silence: dict[str, Any] | None = None


@datatype
class JobState:
    """One job's ``state.json`` as attributes. ``None`` (or an empty collection) is "not
    recorded"; keys this version does not know ride along in ``extra`` and are written back.

    The run's own fields are here, written by ``note_start`` and ``note_finish`` (for
    ``jobrunner/run/lifecycle.py``): ``running`` is the run in progress (``run_id``, ``pid``,
    ``since``). A feature's fields are in its section (``skips``, ``notifications``,
    ``alerting``, ``silencing``), written only by the modules its ``owners`` name. The file is
    flat either way: ``from_dict`` distributes its keys, ``to_dict`` flattens them."""

    schema: int | None = None
    job: str | None = None
    last_run_id: str | None = None
    last_outcome: str | None = None
    last_exit_code: int | None = None
    last_error: str | None = None
    last_start: float | None = None
    last_finish: float | None = None
    last_success: float | None = None
    last_failure: float | None = None
    last_duration_s: float | None = None
    last_attempts: int | None = None
    consecutive_failures: int | None = None
    runs: dict[str, int] = field(default_factory=dict)
    durations_s: list[float] = field(default_factory=list)
    running: dict[str, Any] | None = None
    recovered_from_unreadable_state: bool | None = None
    skips: SkipState = field(default_factory=SkipState)
    notifications: NotificationState = field(default_factory=NotificationState)
    alerting: AlertingState = field(default_factory=AlertingState)
    silencing: SilencingState = field(default_factory=SilencingState)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> JobState:
        """The state in ``data`` (parsed JSON); ``ValueError`` naming the first field of a wrong
        type. Booleans are not numbers here (``json`` would accept ``true`` as 1)."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        data = _migrate_notify(data)
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            spec = _KEYS.get(key)
            if spec is None:
                extra[key] = value
                continue
            if value is None:
                continue
            types = spec.types
            if isinstance(value, bool) and bool not in types or not isinstance(value, types):
                raise ValueError(f"field {key!r} is {type(value).__name__}, not {'/'.join(t.__name__ for t in types)}")
            known[key] = value
        runs = known.get("runs") or {}
        if any(not isinstance(v, int) or isinstance(v, bool) for v in runs.values()):
            raise ValueError("field 'runs' must map outcomes to whole numbers")
        if any(not isinstance(v, _NUM) or isinstance(v, bool) for v in known.get("durations_s") or ()):
            raise ValueError("field 'durations_s' must be a list of numbers")
        if any(not isinstance(v, int) or isinstance(v, bool) for v in (known.get("anomalies") or {}).values()):
            raise ValueError("field 'anomalies' must map kinds to whole numbers")
        running = known.get("running") or {}
        if "since" in running and (not isinstance(running["since"], _NUM) or isinstance(running["since"], bool)):
            raise ValueError("field 'running.since' must be a number")
        _check_ranges(known)
        own: dict[str, Any] = {}
        parts: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        for key, value in known.items():
            section = _KEYS[key].section
            (own if section is None else parts[section])[key] = value
        return cls(**own, **{name: _SECTIONS[name](**part) for name, part in parts.items()}, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object to write: recorded fields only, unknown keys as they came."""
        out = dict(self.extra)
        for key, spec in _KEYS.items():
            value = getattr(self if spec.section is None else getattr(self, spec.section), key)
            if value is None or spec.collection and not value:
                continue
            out[key] = value
        return out

    def value_of(self, key: str) -> Any:
        """The value recorded under the file's ``key``, whichever section holds it."""
        section = _KEYS[key].section
        return getattr(self if section is None else getattr(self, section), key)

    @property
    def empty(self) -> bool:
        """Nothing recorded (no state file, or an empty one)."""
        return not self.to_dict()

    def note_start(self, *, run_id: str, pid: int, now: float | None = None) -> None:
        self.running = {"run_id": run_id, "pid": pid, "since": now or time.time()}
        self.last_start = self.running["since"]

    def note_finish(
        self,
        *,
        run_id: str,
        outcome: str,
        exit_code: int,
        started: float,
        duration_s: float,
        attempts: int,
        error: str | None = None,
        holder: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> None:
        """Fold one finished run in (skipped runs only count, they are not results).

        A skip also remembers since when the job has been skipping and who held the lock
        (``skips``), so a job kept from running is never silent (docs/security.md); a run that
        runs clears them and ends the skip episode of the notifications."""
        now = now or time.time()
        self.runs = {**self.runs, outcome: int(self.runs.get(outcome, 0)) + 1}
        if outcome == "skipped":
            self.skips.note_skip(now, holder)
            return
        self.skips.end()
        self.notifications.end_skip_episode()
        if (self.running or {}).get("run_id") == run_id:
            self.running = None
        self.last_run_id = run_id
        self.last_start = started
        self.last_finish = now
        self.last_outcome = outcome
        self.last_exit_code = exit_code
        self.last_duration_s = round(duration_s, 3)
        self.last_attempts = attempts
        self.durations_s = [*self.durations_s[-(KEEP_DURATIONS - 1) :], round(duration_s, 3)]
        if outcome == "success":
            self.last_success = now
            self.consecutive_failures = 0
            self.last_error = None
        else:
            self.last_failure = now
            self.consecutive_failures = (self.consecutive_failures or 0) + 1
            if error:
                self.last_error = error


# -- the schema, read off the annotations once -------------------------------------------------

_SCALARS: dict[str, tuple[type, ...]] = {"int": (int,), "float": _NUM, "str": (str,), "bool": (bool,)}
_CONTAINERS: dict[str, type] = {"dict": dict, "list": list}


class _Key:
    """One key of the file: the section holding it (``None``: ``JobState`` itself), the JSON
    types it accepts, and whether it is a collection written only when not empty."""

    __slots__ = ("section", "types", "collection")

    def __init__(self, section: str | None, types: tuple[type, ...], collection: bool) -> None:
        self.section, self.types, self.collection = section, types, collection


def json_types(annotation: str, where: str = "field") -> tuple[tuple[type, ...], bool]:
    """The JSON types a field's annotation accepts, and whether it may be ``None``: ``int``,
    ``float`` (an ``int`` too), ``str``, ``bool``, ``dict[...]``, ``list[...]``, joined by ``|``.
    ``TypeError`` for anything else: a field the file could not hold is a bug, found at import."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(annotation):
        depth += (char == "[") - (char == "]")
        if char == "|" and depth == 0:
            parts.append(annotation[start:i].strip())
            start = i + 1
    parts.append(annotation[start:].strip())
    types: list[type] = []
    nullable = False
    for part in parts:
        base, bracket, _ = part.partition("[")
        if part == "None":
            nullable = True
        elif not bracket and part in _SCALARS:
            types.extend(_SCALARS[part])
        elif base in _CONTAINERS and (not bracket or part.endswith("]")):
            types.append(_CONTAINERS[base])
        else:
            raise TypeError(f"{where}: {annotation!r} is not a type state.json can hold ({part!r})")
    if not types:
        raise TypeError(f"{where}: {annotation!r} is not a type state.json can hold")
    return tuple(dict.fromkeys(types)), nullable


def _annotations(cls: type) -> dict[str, str]:
    found: dict[str, str] = cls.__dict__.get("__annotations__", {})
    return {k: a for k, a in found.items() if not a.startswith("ClassVar")}


def _schema() -> tuple[dict[str, _Key], dict[str, type[Any]]]:
    known = {c.__name__: c for c in (SkipState, NotificationState, AlertingState, SilencingState)}
    keys: dict[str, _Key] = {}
    sections: dict[str, type[Any]] = {}
    for name, annotation in _annotations(JobState).items():
        if name == "extra":
            continue
        if annotation in known:
            sections[name] = known[annotation]
            for key, inner in _annotations(known[annotation]).items():
                if key in keys:
                    raise TypeError(f"JobState.{name}.{key}: the key {key!r} is already a field")
                types, nullable = json_types(inner, f"JobState.{name}.{key}")
                keys[key] = _Key(name, types, not nullable)
        else:
            if name in keys:
                raise TypeError(f"JobState.{name}: the key {name!r} is already a section's")
            types, nullable = json_types(annotation, f"JobState.{name}")
            keys[name] = _Key(None, types, not nullable)
    return keys, sections


_KEYS, _SECTIONS = _schema()


_TIMESTAMPS = (
    "last_start",
    "last_finish",
    "last_success",
    "last_failure",
    "last_skipped",
    "skipped_since",
)
_WHOLES = ("schema", "last_exit_code", "last_attempts", "consecutive_failures", "consecutive_skips")
_SHORT = ("job", "last_run_id", "last_outcome", "notified_run_id")
SHORT_TEXT = 200


def _check_ranges(known: dict[str, Any]) -> None:
    """The checks of ``jobrunner.validate`` on the fields the views compute with: the file
    belongs to the job's user, and a ``NaN``, a ``1e308`` or a megabyte of error must make this
    job's state unreadable (its UNKNOWN), never crash the view of every job."""
    for key in _TIMESTAMPS:
        if key in known:
            v.timestamp(known[key], key)
    for key in _WHOLES:
        if key in known:
            v.whole(known[key], key)
    for key in _SHORT:
        if key in known:
            v.text(known[key], key, SHORT_TEXT)
    if "last_error" in known:
        v.text(known["last_error"], "last_error")
    if "last_duration_s" in known:
        v.duration(known["last_duration_s"], "last_duration_s")
    for item in known.get("durations_s") or ():
        v.duration(item, "durations_s")
    for key in ("runs", "anomalies"):
        for value in (known.get(key) or {}).values():
            v.whole(value, key, 0)
    if "since" in (known.get("running") or {}):
        v.timestamp(known["running"]["since"], "running.since")
    sent = (known.get("notify") or {}).get("sent")
    if sent is not None:
        v.sent_entries(sent, "notify.sent", strict=True)
    for tag in known.get("notify_tags") or ():
        v.text(tag, "notify_tags", SHORT_TEXT)
    silence = known.get("silence")
    if silence is not None:
        for key in ("until", "since"):
            if key in silence:
                v.timestamp(silence[key], f"silence.{key}")
        if "uid" in silence:
            v.whole(silence["uid"], "silence.uid", 0)
        if "by" in silence:
            v.text(silence["by"], "silence.by", SHORT_TEXT)
        if silence.get("reason") is not None:
            v.text(silence["reason"], "silence.reason")


def _migrate_notify(data: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 file's notification memory in today's form: what was sent, per kind, under
    ``notify.sent`` (``jobrunner.notify.memory``). The old places: ``skip_notified`` (the last
    skip notification), ``notify.last_failure_sent`` (the last failure sent in the open
    episode) and ``notify.anomaly`` (the last send per anomaly kind); ``notify.last_sent`` was
    never read. Each becomes an entry whose first and last send are that time, so ``due``
    decides as the old fields did. ``data`` itself is not changed."""
    notify = data.get("notify")
    old_notify = isinstance(notify, dict) and any(k in notify for k in ("last_failure_sent", "last_sent", "anomaly"))
    if "skip_notified" not in data and not old_notify:
        return data
    data = dict(data)
    skip = data.pop("skip_notified", None)
    notify = dict(notify) if isinstance(notify, dict) else notify
    moved: dict[str, Any] = {}
    if skip is not None:
        if isinstance(skip, bool) or not isinstance(skip, _NUM):
            raise ValueError(f"field 'skip_notified' is {type(skip).__name__}, not int/float")
        moved["skip"] = {"first": v.timestamp(skip, "skip_notified"), "last": skip}
    if isinstance(notify, dict):
        last = notify.pop("last_failure_sent", None)
        notify.pop("last_sent", None)
        if notify.get("failure_notified") and isinstance(last, _NUM) and not isinstance(last, bool):
            moved["failure"] = {"first": last, "last": last}
        anomalies = notify.pop("anomaly", None)
        for kind, when in (anomalies or {}).items() if isinstance(anomalies, dict) else ():
            if isinstance(when, _NUM) and not isinstance(when, bool):
                moved[f"anomaly:{kind}"] = {"first": when, "last": when}
    if moved and (notify is None or isinstance(notify, dict)):
        notify = dict(notify or {})
        current = notify.get("sent")
        notify["sent"] = {**moved, **(current if isinstance(current, dict) else {})}
    if notify is not None:
        data["notify"] = notify
    return data


def note_start(state: JobState | dict[str, Any], **kwargs: Any) -> None:
    """``JobState.note_start`` (a plain dict is changed in place, for callers of the raw record)."""
    _on(state, lambda s: s.note_start(**kwargs))


def note_finish(state: JobState | dict[str, Any], **kwargs: Any) -> None:
    """``JobState.note_finish`` (a plain dict is changed in place, for callers of the raw record)."""
    _on(state, lambda s: s.note_finish(**kwargs))


def _on(state: JobState | dict[str, Any], change: Callable[[JobState], None]) -> None:
    if isinstance(state, JobState):
        change(state)
        return
    typed = JobState.from_dict(state)
    change(typed)
    state.clear()
    state.update(typed.to_dict())


# -- the store ------------------------------------------------------------------------------


class StateStore:
    """The state file of one job."""

    def __init__(self, job: str, root: str | None = None) -> None:
        if not job or "/" in job or job in (".", ".."):
            raise ConfigError(f"{job!r} is not a job name")
        self.job = job
        self.root = root or default_state_dir()
        self.dir = os.path.join(self.root, job)
        self.path = os.path.join(self.dir, "state.json")
        self.lock_waited = 0.0  # seconds the last write waited for the state lock

    def _open_dir(self, create: bool) -> int:
        """The job's directory, opened relative to the state root, never through a symlink."""
        if create:
            # The root holds only the jobs' directories, each private on its own; jobs of
            # other users must be able to reach theirs through it.
            os.makedirs(self.root, mode=0o755, exist_ok=True)
        rfd = os.open(self.root, _OPEN_DIR)
        try:
            if create:
                try:
                    os.mkdir(self.job, DIR_MODE, dir_fd=rfd)
                except FileExistsError:
                    pass
            dfd = os.open(self.job, _OPEN_DIR | os.O_NOFOLLOW, dir_fd=rfd)
        finally:
            os.close(rfd)
        if create:
            # 0750 whatever made it (systemd's StateDirectory= makes 0755; a StateDirectoryMode=
            # would also apply to the parent it creates, locking other jobs' users out of it).
            info = os.fstat(dfd)
            if info.st_uid == os.geteuid() and info.st_mode & 0o027:
                os.fchmod(dfd, info.st_mode & 0o750)
        return dfd

    def owner(self) -> int:
        """The uid the job's state directory belongs to (``OSError`` when there is none)."""
        dfd = self._open_dir(create=False)
        try:
            return os.fstat(dfd).st_uid
        finally:
            os.close(dfd)

    def load(self) -> JobState:
        """The recorded state (empty when there is none); ``ConfigError`` when unreadable."""
        try:
            dfd = self._open_dir(create=False)
        except FileNotFoundError:
            return JobState()
        except OSError as exc:
            raise ConfigError(f"state directory {self.dir} is unusable: {exc.strerror or exc}") from None
        try:
            return self._read_at(dfd)
        finally:
            os.close(dfd)

    def read(self) -> dict[str, Any]:
        """``load()`` as the plain JSON object (``{}`` when there is none)."""
        return self.load().to_dict()

    def _read_at(self, dfd: int) -> JobState:
        try:
            return JobState.from_dict(
                loads(read_regular_file("state.json", dir_fd=dfd, limit=MAX_STATE_BYTES) or b"{}")
            )
        except FileNotFoundError:
            return JobState()
        except (OSError, ValueError) as exc:  # ValueError: not JSON, or not the schema
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"state file {self.path} is unreadable: {why}") from None

    def apply(self, *changes: Callable[[JobState], None], wait: float = LOCK_WAIT_S) -> JobState:
        """Read, apply ``changes`` in order, write back atomically, all under the state lock
        (see ``_transact``); the state written, stamped with this ``SCHEMA_VERSION``."""
        written: list[JobState] = []

        def step(state: JobState) -> dict[str, Any]:
            for change in changes:
                change(state)
            state.job, state.schema = self.job, SCHEMA_VERSION
            written.append(state)
            return state.to_dict()

        self._transact(step, wait)
        return written[0]

    def try_apply(
        self, *changes: Callable[[JobState], None], report: Callable[[str], None], wait: float = LOCK_WAIT_S
    ) -> JobState | None:
        """``apply``, where a state that cannot be written (read-only or full disk, a held lock)
        is only reported (``report(why)``, ``None`` returned): a run's result stands without it."""
        try:
            return self.apply(*changes, wait=wait)
        except OSError as exc:
            report(exc.strerror or str(exc))
            return None

    def update(self, change: Callable[[dict[str, Any]], None], *, wait: float = LOCK_WAIT_S) -> dict[str, Any]:
        """``apply`` for a change of the plain JSON object; returns the object written."""

        def step(state: JobState) -> dict[str, Any]:
            data = state.to_dict()
            change(data)
            data["job"] = self.job
            return data

        return self._transact(step, wait)

    def _transact(self, step: Callable[[JobState], dict[str, Any]], wait: float) -> dict[str, Any]:
        """Under the state lock: read, ``step`` to the object to write, write it atomically.

        The lock is waited on for at most ``wait`` seconds (``TimeoutError`` after that: a
        held ``.state.lock`` must not hang a run past its deadline). An unreadable file is
        replaced by a fresh state marked ``recovered_from_unreadable_state``."""
        dfd = self._open_dir(create=True)
        try:
            lock_fd = os.open(
                ".state.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600, dir_fd=dfd
            )
            try:
                began = time.monotonic()
                try:
                    _flock_bounded(lock_fd, wait, self.dir)
                finally:
                    self.lock_waited = time.monotonic() - began
                try:
                    state = self._read_at(dfd)
                except ConfigError:
                    state = JobState(recovered_from_unreadable_state=True)
                data = step(state)
                payload = json.dumps(data, indent=1, sort_keys=True, default=str).encode() + b"\n"
                self._write_at(dfd, payload)
                return data
            finally:
                os.close(lock_fd)
        finally:
            os.close(dfd)

    def _write_at(self, dfd: int, payload: bytes) -> None:
        """Atomically, keeping the file its directory owner's: root recording into a job
        user's directory (``jobrunner alert``) gives the new file to that user through its
        descriptor. Where root may not chown (the alert unit has no CAP_CHOWN), the user's
        own file is rewritten in place instead, after checking it is one (regular, one link,
        owned by the directory's owner), so root never creates a file the job could not read."""
        owner = os.fstat(dfd)
        uid = os.geteuid()
        if owner.st_uid == uid:
            atomic_write("state.json", payload, dir_fd=dfd)
            return
        try:
            atomic_write("state.json", payload, dir_fd=dfd, owner=(owner.st_uid, owner.st_gid))
            return
        except PermissionError:
            pass
        fd = os.open("state.json", os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid != owner.st_uid:
                raise OSError(errno.EPERM, "state.json is not the job user's own regular file")
            os.pwrite(fd, payload, 0)
            os.ftruncate(fd, len(payload))
            os.fsync(fd)
        finally:
            os.close(fd)


def _flock_bounded(fd: int, wait: float, where: str) -> None:
    def attempt() -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    if not poll_bounded(attempt, wait, delay=0.005, max_delay=0.1):
        raise TimeoutError(errno.ETIMEDOUT, f"the state lock in {where} is held by another process after {wait:g}s")
