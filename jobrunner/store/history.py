"""Run history: every run's finish record, kept per job, bounded (issue #16).

The store is a file in the job's own state directory, ``<state dir>/<job>/history.jsonl``:
one JSON object a line, appended when a run finishes (``HistoryHook``, always on). Why there,
and not SQLite or the journal:

- the job's directory is the one place a hardened unit can write (``StateDirectory=`` per
  job, ``ProtectSystem=strict``) and it belongs to the job's user, so jobs of different users
  need no new permissions, no shared database and no shared lock;
- it survives reboots (``/var/lib``), where journald's default ``Storage=auto`` keeps the
  journal in ``/run`` (lost at reboot) on the many VPS images without ``/var/log/journal``;
- an append of one line is one ``write(2)`` with ``O_APPEND`` (no lock, no fsync on the
  run's path: the record is small and the state write that follows fsyncs its directory);
  past the bound the file is compacted: rewritten atomically (temp file, rename), keeping the
  newest ``max_runs`` records younger than ``max_age``;
- a reader (``jobrunner history``, the status page) needs no library and no lock: the file
  is 0640 and every admin (root, or the group) can read it.

The bound: ``$JOBRUNNER_HISTORY_MAX_RUNS`` records (default 1000) and
``$JOBRUNNER_HISTORY_MAX_AGE`` (a systemd time span, default ``90d``); the file is compacted
when it holds about 25 % more than that. ``$JOBRUNNER_HISTORY=off`` records nothing.

The file belongs to the job's user, who may be the attacker of docs/security.md: it is opened
relative to the job's directory with ``O_NOFOLLOW`` (a symlink is refused), only a regular
file of a bounded size is read, and each line is validated; a line of the wrong shape is
skipped and counted (``HistoryRead.skipped``), never a crash.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import field
from typing import TYPE_CHECKING, Any

from jobrunner._datatype import datatype
from jobrunner.files import _OPEN_DIR, atomic_write
from jobrunner.store.state import FILE_MODE, _flock_bounded
from jobrunner.timespan import parse_timespan
from jobrunner.validate import MAX_DURATION_S as _MAX_DURATION
from jobrunner.validate import MAX_TEXT as _MAX_TEXT
from jobrunner.validate import MAX_WHOLE as _MAX_WHOLE
from jobrunner.validate import TS_MAX as _TS_MAX
from jobrunner.validate import TS_MIN as _TS_MIN

if TYPE_CHECKING:
    from jobrunner.run.model import Run

__all__ = [
    "FILE_NAME",
    "HistoryHook",
    "HistoryRead",
    "RunRecord",
    "append",
    "failure_streak",
    "outcome_matches",
    "percentile",
    "read_history",
    "record_of",
    "recorded_jobs",
    "summary",
]

FILE_NAME = "history.jsonl"
DEFAULT_MAX_RUNS = 1000
DEFAULT_MAX_AGE_S = 90 * 86400.0
MAX_READ_BYTES = 16 << 20  # what a reader reads at most (the bound keeps a file far below it)
MAX_ERROR = 500  # characters of the error line kept
MAX_TAIL_LINES = 20  # output lines kept for a failure
MAX_TAIL_LINE = 300
LOCK_WAIT_S = 2.0  # compaction waits this long for the directory lock, then gives up (next run)
_SLACK = 1.25
_STR_FIELDS = ("job", "host", "run_id", "outcome")
_OUTCOMES_OK = ("success", "skipped")
_OK_SUCCESS, _OK_SKIPPED = b'"outcome":"success"', b'"outcome":"skipped"'


@datatype(frozen=True)
class RunRecord:
    """One finished run. ``run_id`` is systemd's ``INVOCATION_ID`` when the run was a unit's."""

    job: str
    host: str
    run_id: str
    start: float
    duration_s: float
    outcome: str
    exit_code: int
    attempts: int = 0
    error: str | None = None
    tail: tuple[str, ...] = ()

    @property
    def finish(self) -> float:
        return self.start + self.duration_s

    @property
    def failed(self) -> bool:
        return self.outcome not in _OUTCOMES_OK

    @property
    def log_command(self) -> str:
        """The command that shows this run's log."""
        return f"journalctl _SYSTEMD_INVOCATION_ID={self.run_id}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "job": self.job,
            "host": self.host,
            "run_id": self.run_id,
            "start": round(self.start, 3),
            "duration_s": round(self.duration_s, 3),
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "attempts": self.attempts,
        }
        if self.error:
            out["error"] = self.error
        if self.tail:
            out["tail"] = list(self.tail)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> RunRecord:
        """The record in ``data``; ``ValueError`` for anything of the wrong shape. (Unrolled:
        a history query checks thousands of lines.)"""
        if type(data) is not dict:
            raise ValueError("not an object")
        get: Callable[..., Any] = data.get
        strings = (get("job"), get("host"), get("run_id"), get("outcome"))
        for key, value in zip(_STR_FIELDS, strings, strict=True):
            if type(value) is not str or not value or len(value) > 200:
                raise ValueError(f"{key} is not a short string")
        start, duration = get("start"), get("duration_s")
        # The ranges of jobrunner.validate (a time the views can show, a duration under
        # ten years), unrolled: the file is the job's user's, the fleet's stream anyone's.
        if (type(start) is not float and type(start) is not int) or not _TS_MIN <= start <= _TS_MAX:
            raise ValueError("start is not a time between the epoch and 2200")
        if (
            type(duration) is not float and type(duration) is not int
        ) or not -_MAX_DURATION <= duration <= _MAX_DURATION:
            raise ValueError("duration_s is not a number of seconds under ten years")
        exit_code, attempts = get("exit_code", 0), get("attempts", 0)
        if type(exit_code) is not int or not -_MAX_WHOLE <= exit_code <= _MAX_WHOLE:
            raise ValueError("exit_code is not a whole number")
        if type(attempts) is not int or not -_MAX_WHOLE <= attempts <= _MAX_WHOLE:
            raise ValueError("attempts is not a whole number")
        error = get("error")
        if error is not None and (type(error) is not str or len(error) > _MAX_TEXT):
            raise ValueError("error is not a string")
        tail = get("tail")
        if tail is None:
            lines: tuple[str, ...] = ()
        elif type(tail) is not list or not all(type(x) is str and len(x) <= _MAX_TEXT for x in tail):
            raise ValueError("tail is not a list of strings")
        else:
            lines = tuple(x[:MAX_TAIL_LINE] for x in tail[-MAX_TAIL_LINES:])
        return cls(
            job=strings[0],
            host=strings[1],
            run_id=strings[2],
            start=float(start),
            duration_s=max(0.0, float(duration)),
            outcome=strings[3],
            exit_code=exit_code,
            attempts=attempts,
            error=error[:MAX_ERROR] if error else None,
            tail=lines,
        )


# -- configuration ---------------------------------------------------------------------------


_HEAD = ("ts", "level", "event", "job", "run_id", "host")  # the fields every log line starts with


def format_tail_line(event: dict[str, Any]) -> str:
    """A compact human line for notification bodies: ``08:15:02 error job.failed key=value``."""
    if event.get("event") in ("proc.output", "job.output"):
        return str(event.get("line", ""))
    extras = " ".join(
        f"{k}={v}" for k, v in event.items() if k not in _HEAD and k not in ("exception",) and v is not None
    )
    ts = str(event.get("ts", ""))[11:19]
    return f"{ts} {event.get('level', '')} {event.get('event', '')} {extras}".rstrip()


def enabled(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("JOBRUNNER_HISTORY", "").strip().lower() not in ("off", "0", "no", "false")


def bounds(env: Mapping[str, str] | None = None) -> tuple[int, float]:
    """``(max_runs, max_age_s)`` from the environment; a bad value is the default."""
    env = os.environ if env is None else env
    max_runs, max_age = DEFAULT_MAX_RUNS, DEFAULT_MAX_AGE_S
    try:
        max_runs = max(1, int(env.get("JOBRUNNER_HISTORY_MAX_RUNS", "") or DEFAULT_MAX_RUNS))
    except ValueError:
        pass
    raw = env.get("JOBRUNNER_HISTORY_MAX_AGE", "").strip()
    if raw:
        try:
            max_age = parse_timespan(raw) or DEFAULT_MAX_AGE_S
        except ValueError:
            pass
    return max_runs, max_age


# -- writing ---------------------------------------------------------------------------------


def _line(record: RunRecord) -> bytes:
    return json.dumps(record.to_dict(), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def append(
    job_dir: str, record: RunRecord, *, max_runs: int = DEFAULT_MAX_RUNS, max_age_s: float = DEFAULT_MAX_AGE_S
) -> bool:
    """Append ``record`` to ``job_dir``'s history (the directory must exist: the state write
    at the start of the run made it); compact past the bound. True when compacted.

    The job's directory is opened without following a symlink; the file with ``O_NOFOLLOW``
    and refused unless it is a regular file with one link, owned by us."""
    dfd = os.open(job_dir, _OPEN_DIR | os.O_NOFOLLOW)
    try:
        fd = os.open(
            FILE_NAME,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            FILE_MODE,
            dir_fd=dfd,
        )
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid != os.geteuid():
                raise OSError(errno.EPERM, f"{FILE_NAME} is not our own regular file")
            if info.st_mode & 0o777 != FILE_MODE:
                os.fchmod(fd, FILE_MODE)  # whatever the umask (UMask=0077 in the units)
            line = _line(record)
            os.write(fd, line)
            size = info.st_size + len(line)
        finally:
            os.close(fd)
        # Compaction only when the file is clearly past the bound (bytes are a cheap proxy:
        # most runs pay one fstat for it).
        if size < max_runs * 120 * _SLACK:
            return False
        return _compact(dfd, max_runs, max_age_s)
    finally:
        os.close(dfd)


def _compact(dfd: int, max_runs: int, max_age_s: float) -> bool:
    # Compactions of the same job serialise on the directory (a flock on its descriptor: no
    # extra file); an append racing a compaction may land in the old file and be lost, which
    # the lock on the job's own runs makes rare, and which never breaks the file.
    lock_fd = os.open(".", _OPEN_DIR, dir_fd=dfd)
    try:
        try:
            _flock_bounded(lock_fd, LOCK_WAIT_S, FILE_NAME)
        except TimeoutError:
            return False
        data = read_regular_at(dfd)
        lines = [x for x in data.split(b"\n") if x.strip()]
        if len(lines) <= max_runs * _SLACK and not _has_old(lines, max_age_s):
            return False
        cutoff = time.time() - max_age_s
        kept: list[bytes] = []
        for raw in lines[-max_runs:]:
            try:
                record = RunRecord.from_dict(json.loads(raw))
            except (ValueError, RecursionError):
                continue
            if record.start >= cutoff:
                kept.append(_line(record))
        atomic_write(FILE_NAME, b"".join(kept), FILE_MODE, dir_fd=dfd)
        return True
    finally:
        os.close(lock_fd)


def _has_old(lines: Sequence[bytes], max_age_s: float) -> bool:
    try:
        first = json.loads(lines[0]) if lines else {}
        return isinstance(first, dict) and float(first.get("start", 0)) < time.time() - max_age_s
    except (ValueError, TypeError, RecursionError):
        return True


def read_regular_at(dfd: int, limit: int = MAX_READ_BYTES) -> bytes:
    """The history file's bytes: a regular file, not followed through a symlink; a file past
    ``limit`` is read from its last ``limit`` bytes (its newest records)."""
    fd = os.open(FILE_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        start = max(0, info.st_size - limit)
        chunks, size = [], 0
        while size < limit:
            chunk = os.pread(fd, limit - size, start + size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
        if start:  # the first line is cut: drop it
            data = data.partition(b"\n")[2]
        return data
    finally:
        os.close(fd)


class HistoryHook:
    """Appends the run's finish record to its job's history (``jobrunner.run.hooks.load_hooks``)."""

    name = "history"
    failure_event = "history.write_failed"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.max_runs, self.max_age_s = bounds(env)

    def on_start(self, run: Run) -> None:
        return None

    def on_finish(self, run: Run) -> None:
        record = record_of(run)
        # A first run that never started (the lock busy, a lock file refused) has no job
        # directory yet: made as the state write makes it, so its record is not lost.
        os.close(run.store._open_dir(create=True))
        append(run.store.dir, record, max_runs=self.max_runs, max_age_s=self.max_age_s)


def record_of(run: Run) -> RunRecord:
    """The finish record of ``run`` (the history's line, the fleet stream's entry)."""
    result = run.result
    tail: tuple[str, ...] = ()
    if result.outcome not in _OUTCOMES_OK:
        # The log sink's events passed the redactor; cut to a bound.
        events = [e for e in run.tail if e.get("event") != "job.finished"][-MAX_TAIL_LINES:]
        tail = tuple(format_tail_line(e)[:MAX_TAIL_LINE] for e in events)
    return RunRecord(
        job=run.job.name,
        host=os.uname().nodename,
        run_id=run.run_id,
        start=run.started_wall,
        duration_s=max(0.0, result.duration_s),
        outcome=result.outcome,
        exit_code=result.exit_code,
        attempts=result.attempts,
        error=" ".join(run.error.split())[:MAX_ERROR] if run.error else None,
        tail=tail,
    )


# -- reading ---------------------------------------------------------------------------------


@datatype
class HistoryRead:
    """What was read of one job's history: its records, oldest first, and how many lines were
    skipped (not JSON, or not a record); ``error`` when the file itself is unreadable."""

    job: str
    records: list[RunRecord] = field(default_factory=list)
    skipped: int = 0
    error: str | None = None


def outcome_matches(outcome: str, wanted: str | None) -> bool:
    """``wanted`` is an outcome, ``failed`` (any but success and skipped) or None (any)."""
    if wanted is None:
        return True
    if wanted == "failed":
        return outcome not in _OUTCOMES_OK
    return outcome == wanted


def _may_match(raw: bytes, wanted: str | None) -> bool:
    """Whether a line can hold a record of outcome ``wanted``, without parsing it. The writer
    writes ``"outcome":"…"`` compactly; inside a string value the quotes would be escaped, so a
    line without the bytes holds no such record (one with them is parsed and checked)."""
    if wanted is None:
        return True
    if wanted == "failed":
        return _OK_SUCCESS not in raw and _OK_SKIPPED not in raw
    return b'"outcome":"' + wanted.encode() + b'"' in raw


def read_history(
    root: str, job: str, *, last: int | None = None, since: float | None = None, outcome: str | None = None
) -> HistoryRead:
    """The history of ``job`` under the state root ``root``: at most its ``last`` newest
    records, those started at or after ``since``, of ``outcome`` (``outcome_matches``).
    Parses from the newest line back, so a query for the last few runs of a long history
    reads them alone, one since a date stops at the first older record, and one for an
    outcome parses only the lines that can hold it (malformed lines are counted among the
    lines parsed)."""
    out = HistoryRead(job)
    if not job or "/" in job or job in (".", ".."):
        out.error = "not a job name"
        return out
    try:
        rfd = os.open(root, _OPEN_DIR)
        try:
            dfd = os.open(job, _OPEN_DIR | os.O_NOFOLLOW, dir_fd=rfd)
        finally:
            os.close(rfd)
        try:
            data = read_regular_at(dfd)
        finally:
            os.close(dfd)
    except FileNotFoundError:
        return out
    except OSError as exc:
        out.error = exc.strerror or str(exc)
        return out
    records: list[RunRecord] = []
    for raw in _newest_first(data, last if outcome is None else None):
        if last is not None and len(records) >= last:
            break
        if not raw.strip() or not _may_match(raw, outcome):
            continue
        try:
            record = RunRecord.from_dict(json.loads(raw))
        except (ValueError, UnicodeDecodeError, RecursionError):
            out.skipped += 1
            continue
        if record.job != job:  # a line copied from another job's file
            out.skipped += 1
            continue
        if since is not None and record.start < since:
            break  # appended in order: everything before is older
        if outcome is not None and not outcome_matches(record.outcome, outcome):
            continue
        records.append(record)
    records.reverse()
    out.records = records
    return out


def _newest_first(data: bytes, wanted: int | None) -> Iterable[bytes]:
    """The lines of ``data``, newest (last) first; with ``wanted``, the newest ``wanted`` are
    split off alone first (a query for the last 100 of 1,000 does not split the rest unless
    malformed lines make it read further)."""
    if wanted is None:
        yield from reversed(data.split(b"\n"))
        return
    parts = data.rsplit(b"\n", wanted + 1)
    yield from reversed(parts[1:])
    yield from reversed(parts[0].split(b"\n"))


def recorded_jobs(root: str, *, private: bool = False) -> list[str]:
    """The jobs under the state directory ``root``, sorted: the one rule every view lists them
    by (``status``, ``history``, the status page, silences). A job is an entry not named with
    a leading dot that is a directory (a symlink is not one) holding a ``state.json`` or a
    ``history.jsonl`` (a job with a history alone, its state unwritable, say, counts too);
    none when ``root`` cannot be listed. ``private=True`` also counts a directory this user
    cannot look into (another user's job: silencing it is then refused as such, not as an
    unknown job); the views leave those out."""
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return []
    return [e for e in entries if not e.startswith(".") and _is_job_dir(os.path.join(root, e), private)]


def _is_job_dir(path: str, private: bool) -> bool:
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    for name in ("state.json", FILE_NAME):
        try:
            os.lstat(os.path.join(path, name))
            return True
        except PermissionError:  # a directory this user cannot look into
            return private
        except OSError:
            continue
    return False


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` (0..1) quantile by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def failure_streak(records: Sequence[RunRecord]) -> int:
    """How many of the newest runs failed in a row (skips neither count nor break it)."""
    streak = 0
    for run in reversed(records):
        if run.outcome == "skipped":
            continue
        if not run.failed:
            break
        streak += 1
    return streak


STATS_WINDOW = 100  # the runs p50/p95 are computed over


def summary(records: Iterable[RunRecord]) -> dict[str, Any]:
    """Per job: runs, p50/p95 duration (over the last ``STATS_WINDOW`` runs that ran) and the
    current failure streak."""
    records = list(records)
    ran = [r.duration_s for r in records if r.outcome != "skipped"][-STATS_WINDOW:]
    return {
        "runs": len(records),
        "p50_s": percentile(ran, 0.5),
        "p95_s": percentile(ran, 0.95),
        "failure_streak": failure_streak(records),
    }
