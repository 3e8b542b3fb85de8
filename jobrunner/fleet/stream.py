"""The fleet's run history: every run's finish record published to a capped Redis stream.

Where ``$JOBRUNNER_REDIS_URL`` is set, ``FleetHook`` (registered by ``jobrunner.run.hooks``; this
module is imported only then, the redis client not even then but for ``rediss://``) adds the record (``jobrunner.store.history.RunRecord``) to
the stream ``jobrunner:runs`` (``$JOBRUNNER_FLEET_STREAM``), capped at about
``$JOBRUNNER_FLEET_MAXLEN`` entries (default 10000; ``XADD … MAXLEN ~``). The per-host
``history.jsonl`` stays the record of truth; the stream is the fleet's shared view of it, read
by ``jobrunner history --fleet``, ``jobrunner status --fleet`` and ``jobrunner health --fleet``
(through the redis client: those are commands, not timer ticks).

Publishing never changes a run's outcome (a hook's error is logged as ``fleet.publish_failed``)
and never holds the run up for more than ``PUBLISH_BOUND_S``: the publish runs in a daemon
thread the run waits for that long at most (socket timeouts inside it, no retries), so a Redis
that is down, or a host that swallows packets, costs a run one second, not its deadline. The
record is sent over a plain socket in Redis's own protocol (``publish``), so a run pays about a
millisecond, not the redis client's ~80 ms import; for ``rediss://`` (TLS) the client is
imported while the job runs, outside that bound (on a loaded machine its import alone could take
the second and lose the record).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from jobrunner.errors import ConfigError
from jobrunner.store.history import RunRecord, outcome_matches, record_of, summary

if TYPE_CHECKING:
    from jobrunner.run.model import Run

__all__ = [
    "PUBLISH_BOUND_S",
    "FleetHook",
    "check_fleet",
    "fleet_records",
    "host_silence_limit",
    "matrix",
    "publish",
    "read_fleet",
    "stream_name",
]

PUBLISH_BOUND_S = 1.0
DEFAULT_STREAM = "jobrunner:runs"
DEFAULT_MAXLEN = 10000


def stream_name(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("JOBRUNNER_FLEET_STREAM", "").strip() or DEFAULT_STREAM


def user_stream(uid: int | None = None) -> str:
    """A non-root user's stream: ``jobrunner:u:<user>:runs`` (its views beside it)."""
    from jobrunner.locks.resp import key_prefix

    return key_prefix(uid) + "runs"


def _maxlen(env: Mapping[str, str]) -> int:
    try:
        return max(100, int(env.get("JOBRUNNER_FLEET_MAXLEN", "") or DEFAULT_MAXLEN))
    except ValueError:
        return DEFAULT_MAXLEN


def _import_redis() -> None:
    import redis  # noqa: F401


def _client(url: str, timeout: float) -> Any:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from jobrunner.locks.resp import redis_client

    return redis_client(url, timeout, retry=Retry(NoBackoff(), 0))


# The views kept beside the stream (``S`` = the stream's name), each O(hosts × jobs), written
# with the record in one round trip: the field of a host's job is ``host<TAB>job``.
RAN, BRIEF, SEEN, OK_AT, STREAK, HOSTS = ":ran", ":brief", ":seen", ":ok", ":streak", ":hosts"
VIEW_KEYS = (RAN, BRIEF, SEEN, OK_AT, STREAK, HOSTS)


def _field(host: str, job: str) -> str:
    return f"{host}\t{job}"


def publish_commands(
    record: RunRecord, *, stream: str = DEFAULT_STREAM, maxlen: int = DEFAULT_MAXLEN
) -> list[tuple[str, ...]]:
    """The commands that publish ``record``: a run (not a skip) is added to the history stream
    (``XADD … MAXLEN maxlen``, exact: the stream holds the newest ``maxlen`` runs) and becomes
    its host's last run of the job (``S:ran``), its failure streak (``S:streak``) and, for a
    success, its last success (``S:ok``); any record, a skip too, is the host's last word on the
    job (``S:seen``) and its heartbeat (``S:hosts``, a sorted set, never moved back)."""
    payload = json.dumps(record.to_dict(), separators=(",", ":"), ensure_ascii=False)
    field, finish = _field(record.host, record.job), repr(round(record.finish, 3))
    out: list[tuple[str, ...]] = []
    if record.outcome != "skipped":
        out.append(("XADD", stream, "MAXLEN", str(maxlen), "*", "r", payload))
        out.append(("HSET", stream + RAN, field, payload))
        brief = f"{round(record.start, 3)!r} {round(record.duration_s, 3)!r} {record.outcome} {record.exit_code} {record.attempts}"
        out.append(("HSET", stream + BRIEF, field, brief))
        if record.failed:
            out.append(("HINCRBY", stream + STREAK, field, "1"))
        else:
            out.append(("HSET", stream + STREAK, field, "0"))
            out.append(("HSET", stream + OK_AT, field, finish))
    out.append(("HSET", stream + SEEN, field, finish))
    out.append(("ZADD", stream + HOSTS, "GT", finish, record.host))
    return out


def publish(url: str, record: RunRecord, *, stream: str = DEFAULT_STREAM, maxlen: int = DEFAULT_MAXLEN) -> None:
    """Publish ``record`` (``publish_commands``) in one round trip; raises on any failure.

    ``redis://`` and ``unix://`` URLs are spoken to directly (``jobrunner.locks.resp.call``:
    ``AUTH``, ``SELECT`` and the commands over one socket), which costs a run about a
    millisecond where importing the redis client costs ~80 ms on every timer tick
    (``bench/history.py``). ``rediss://`` (TLS) goes through the redis client."""
    from jobrunner.locks.resp import RespError, call

    commands = publish_commands(record, stream=stream, maxlen=maxlen)
    if url.startswith("rediss://"):
        client = _client(url, PUBLISH_BOUND_S / 2)
        try:
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            pipe.execute()
        finally:
            client.close()
        return
    for reply in call(url, commands, timeout=PUBLISH_BOUND_S / 2):
        if isinstance(reply, RespError):
            raise reply


class FleetHook:
    """Publishes the run's finish record to the fleet's stream, within ``PUBLISH_BOUND_S``."""

    name = "fleet"
    failure_event = "fleet.publish_failed"

    def __init__(self, url: str, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.url = url
        # root's runs publish to the fleet's stream; another user's to its own namespace,
        # which a Redis ACL can give that user alone (docs/fleets.md)
        self.stream = stream_name(env) if os.geteuid() == 0 else user_stream()
        self.maxlen = _maxlen(env)

    def on_start(self, run: Run) -> None:
        if self.url.startswith("rediss://"):
            # TLS goes through the redis client: it loads while the job runs (its import is
            # CPU work, ~0.1 s, not network: the bound is for a Redis that is down or silent).
            threading.Thread(target=_import_redis, name="jobrunner-fleet-import", daemon=True).start()

    def on_finish(self, run: Run) -> None:
        record = record_of(run)
        if self.url.startswith("rediss://"):
            _import_redis()  # done already, or finished here: outside the bound
        failure: list[BaseException] = []

        def work() -> None:
            try:
                publish(self.url, record, stream=self.stream, maxlen=self.maxlen)
            except BaseException as exc:  # reported by the run's thread
                failure.append(exc)

        thread = threading.Thread(target=work, name="jobrunner-fleet-publish", daemon=True)
        thread.start()
        thread.join(PUBLISH_BOUND_S)
        if thread.is_alive():
            raise TimeoutError(f"Redis did not take the record within {PUBLISH_BOUND_S:g}s")
        if failure:
            from jobrunner.redact import default_redactor

            # the URL may carry a password
            raise RuntimeError(default_redactor().redact(f"{type(failure[0]).__name__}: {failure[0]}")) from None


# -- reading -------------------------------------------------------------------------------------

# A record's times must be those of a run of this century: anything else (1e308, a negative
# start, a year-long run) is another writer's nonsense, skipped, never a crash of a view.
_EARLIEST, _LATEST, _LONGEST = 946684800.0, 4102444800.0, 366 * 86400.0


def _sane(record: RunRecord) -> bool:
    return _EARLIEST <= record.start <= _LATEST and 0 <= record.duration_s <= _LONGEST


def _record(raw: Any) -> RunRecord | None:
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw  # (json.loads of bytes sniffs the encoding)
        record = RunRecord.from_dict(json.loads(text or ""))
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError):
        return None
    return record if _sane(record) else None


def _time_of(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if _EARLIEST <= value <= _LATEST + _LONGEST else None


class LastRun(NamedTuple):
    """A cell's last run as the views keep it (``S:brief``): what its verdicts need."""

    job: str
    host: str
    start: float
    duration_s: float
    outcome: str
    exit_code: int
    attempts: int


@dataclass
class Cell:
    """One host's job: its last run (not a skip), when its last record of any kind (a skip
    too) finished, when its last success finished, and its failure streak."""

    last: RunRecord | LastRun | None = None
    seen: float | None = None
    ok_at: float | None = None
    streak: int = 0


@dataclass
class FleetView:
    """What the ``--fleet`` views show: each host's last word on each job (``cells``), each
    host's heartbeat (``hosts``: its newest record's finish), and the history stream's records
    where they were read (oldest first). ``invalid`` counts entries of the wrong shape skipped."""

    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    hosts: dict[str, float] = field(default_factory=dict)
    records: list[RunRecord] = field(default_factory=list)
    invalid: int = 0
    untrusted: int = 0  # cells from another user's namespace about a job not theirs

    @classmethod
    def from_records(cls, records: Sequence[RunRecord]) -> FleetView:
        """The view a stream of ``records`` (oldest first) leaves behind: what publishing them
        in order writes beside the stream."""
        view = cls(records=[r for r in records if r.outcome != "skipped"])
        for r in records:
            cell = view.cells.setdefault((r.host, r.job), Cell())
            if r.outcome != "skipped":
                cell.last = r
                cell.streak = cell.streak + 1 if r.failed else 0
                if not r.failed:
                    cell.ok_at = r.finish
            cell.seen = max(cell.seen or r.finish, r.finish)
            view.hosts[r.host] = max(view.hosts.get(r.host, r.finish), r.finish)
        return view

    def jobs(self) -> list[str]:
        return sorted({job for _, job in self.cells})


def _as_view(data: FleetView | Sequence[RunRecord]) -> FleetView:
    return data if isinstance(data, FleetView) else FleetView.from_records(data)


def fleet_view(
    env: Mapping[str, str] | None = None,
    *,
    history: bool = False,
    since: float | None = None,
    owners: Mapping[str, str] | None = None,
) -> FleetView:
    """The ``--fleet`` views' data from ``$JOBRUNNER_REDIS_URL``; ``ConfigError`` (one line,
    redacted) when the URL is missing or Redis cannot be read. ``history``: the stream's
    records too (from ``since``, a Unix time, when given)."""
    env = os.environ if env is None else env
    url = env.get("JOBRUNNER_REDIS_URL", "").strip()
    if not url:
        raise ConfigError("--fleet needs $JOBRUNNER_REDIS_URL (the fleet's Redis)")
    try:
        return read_view(url, stream=stream_name(env), history=history, since=since, owners=owners)
    except Exception as exc:  # redis.RedisError: down, refused, wrong password
        from jobrunner.redact import default_redactor

        raise ConfigError(default_redactor().redact(f"the fleet's Redis is unavailable: {exc}")) from None


def fleet_records(env: Mapping[str, str] | None = None) -> list[RunRecord]:
    """The history stream's records (``fleet_view(history=True).records``)."""
    return fleet_view(env, history=True).records


def read_view(
    url: str,
    *,
    stream: str | None = None,
    history: bool = False,
    since: float | None = None,
    timeout: float = 5.0,
    owners: Mapping[str, str] | None = None,
) -> FleetView:
    """Read the views (one pipelined round trip a namespace; the history stream too with
    ``history``): root's (``stream``), then every other user's (``jobrunner:u:<user>:runs``),
    believed only where ``trusted`` says so. Spoken over one connection of Redis's protocol
    (``jobrunner.locks.resp``): no redis-py import, whose parser was most of a view's time."""
    from jobrunner.locks.resp import Connection

    stream = stream or stream_name()
    conn = Connection(url, timeout)
    try:
        view = _read_namespace(conn, stream, history, since)
        others: set[str] = set()
        cursor = b"0"
        while True:
            cursor, keys = conn.call("SCAN", cursor, "MATCH", "jobrunner:u:*:runs" + HOSTS, "COUNT", "1000")
            others.update(k.decode("utf-8", "replace")[: -len(":runs" + HOSTS)] for k in keys)
            if cursor in (b"0", 0):
                break
        for prefix in sorted(others):
            user = prefix.removeprefix("jobrunner:u:")
            theirs = _read_namespace(conn, prefix + ":runs", history, since)
            _merge(view, theirs, user, owners or {})
    finally:
        conn.close()
    view.records.sort(key=lambda r: r.start)
    return view


def _pairs(reply: Any) -> list[tuple[Any, Any]]:
    from jobrunner.locks.resp import RespError

    if isinstance(reply, RespError):
        raise reply
    if not isinstance(reply, list):
        return []
    return list(zip(reply[::2], reply[1::2], strict=False))


def trusted(job: str, user: str, owners: Mapping[str, str], root_jobs: set[str]) -> bool:
    """Whether a record about ``job`` written in ``user``'s namespace is believed: when the job
    is declared here, only if it runs as that user (``owners``: job → its ``user=``, root's
    jobs absent or ``"root"``); when it is not, only if root publishes no job of that name."""
    if job in owners:
        return owners[job] == user
    return job not in root_jobs


def _merge(view: FleetView, theirs: FleetView, user: str, owners: Mapping[str, str]) -> None:
    root_jobs = {job for _, job in view.cells}
    for (host, job), cell in theirs.cells.items():
        if not trusted(job, user, owners, root_jobs) or (host, job) in view.cells:
            view.untrusted += 1
            continue
        view.cells[(host, job)] = cell
        if cell.seen is not None:
            view.hosts[host] = max(view.hosts.get(host, cell.seen), cell.seen)
    for r in theirs.records:
        if trusted(r.job, user, owners, root_jobs):
            view.records.append(r)
    view.invalid += theirs.invalid


# The views in one reply: a script returns them as one JSON document (one C-speed json.loads
# instead of a Python parser walking 200,000 protocol elements at 1,000 hosts × 50 jobs).
_VIEW_SCRIPT = """
    local out = {brief = redis.call('hgetall', KEYS[1]), seen = redis.call('hgetall', KEYS[2]),
                 ok = redis.call('hgetall', KEYS[3]), streak = redis.call('hgetall', KEYS[4]),
                 hosts = redis.call('zrange', KEYS[5], 0, -1, 'WITHSCORES')}
    if ARGV[1] == '1' then out.runs = redis.call('xrange', KEYS[6], ARGV[2], '+') end
    return cjson.encode(out)
"""


def _flat_pairs(items: Any) -> list[tuple[str, str]]:
    if not isinstance(items, list):
        return []  # an empty Lua table is {} in JSON
    return [(_text(a), _text(b)) for a, b in zip(items[::2], items[1::2], strict=False)]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _fetch(conn: Any, stream: str, history: bool, since: float | None) -> dict[str, Any]:
    """The namespace's views (and its stream's entries with ``history``) as lists of string
    pairs: through ``_VIEW_SCRIPT`` where scripts may run, else a pipeline of reads."""
    from jobrunner.locks.resp import RespError

    keys = [stream + BRIEF, stream + SEEN, stream + OK_AT, stream + STREAK, stream + HOSTS, stream]
    first = "-" if since is None else f"{max(0, int(since * 1000))}-0"
    reply = conn.pipeline([("EVAL", _VIEW_SCRIPT, "6", *keys, "1" if history else "0", first)])[0]
    if not isinstance(reply, RespError):
        try:
            doc = json.loads(reply)
        except (ValueError, TypeError, UnicodeDecodeError):
            doc = None
        if isinstance(doc, dict):
            out: dict[str, Any] = {
                name: _flat_pairs(doc.get(name)) for name in ("brief", "seen", "ok", "streak", "hosts")
            }
            runs = doc.get("runs")
            out["runs"] = [
                (None, dict(_flat_pairs(entry[1])))
                for entry in (runs if isinstance(runs, list) else [])
                if isinstance(entry, list) and len(entry) == 2
            ]
            return out
    commands: list[tuple[str, ...]] = [
        ("HGETALL", keys[0]),
        ("HGETALL", keys[1]),
        ("HGETALL", keys[2]),
        ("HGETALL", keys[3]),
        ("ZRANGE", keys[4], "0", "-1", "WITHSCORES"),
    ]
    if history:
        commands.append(("XRANGE", stream, first, "+"))
    replies = conn.pipeline(commands)
    out = {}
    for name, r in zip(("brief", "seen", "ok", "streak", "hosts"), replies, strict=False):
        if isinstance(r, RespError):
            raise r
        out[name] = _flat_pairs(r)
    out["runs"] = [(i, {_text(k): v for k, v in f.items()}) for i, f in _pairs_entries(replies[5])] if history else []
    return out


def _read_namespace(conn: Any, stream: str, history: bool, since: float | None) -> FleetView:
    data = _fetch(conn, stream, history, since)
    view = FleetView()
    cells = view.cells
    brief, seen, ok, streaks = (dict(data[name]) for name in ("brief", "seen", "ok", "streak"))
    for raw_field in brief.keys() | seen.keys():  # a cell is what ran or reported
        host, sep, job = raw_field.partition("\t")
        if not sep or not host or not job or len(host) > 200 or len(job) > 200:
            view.invalid += 1
            continue
        raw = brief.get(raw_field)
        last = None if raw is None else _brief(host, job, raw)
        if raw is not None and last is None:
            view.invalid += 1
        when = seen.get(raw_field)
        c = Cell(last, None if when is None else _time_of(when))
        if c.last is None and c.seen is None:
            continue  # nothing believable about it
        when = ok.get(raw_field)
        if when is not None:
            c.ok_at = _time_of(when)
        count = streaks.get(raw_field)
        if count is not None and count.isdigit() and len(count) < 10:
            c.streak = int(count)
        cells[(host, job)] = c
    for host, score in data["hosts"]:
        beat = _time_of(score)
        if beat is not None and 0 < len(host) <= 200:
            view.hosts[host] = beat
    if history:
        view.records = _entries(data["runs"], view)
    return view


def _brief(host: str, job: str, raw: str) -> LastRun | None:
    """A cell's last run from its brief (``start duration outcome exit_code attempts``)."""
    parts = raw.split(" ")
    if len(parts) != 5:
        return None
    try:
        start, duration, exit_code, attempts = float(parts[0]), float(parts[1]), int(parts[3]), int(parts[4])
    except ValueError:
        return None
    outcome = parts[2]
    if not outcome or len(outcome) > 40 or not outcome.isprintable():
        return None
    if not (_EARLIEST <= start <= _LATEST and 0 <= duration <= _LONGEST):
        return None
    return LastRun(job, host, start, duration, outcome, exit_code, attempts)


def _pairs_entries(reply: Any) -> list[tuple[Any, dict[bytes, Any]]]:
    """XRANGE's reply as (id, {field: value}) pairs."""
    out = []
    for entry in _pairs_list(reply):
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list):
            out.append((entry[0], dict(_pairs(entry[1]))))
    return out


def _pairs_list(reply: Any) -> list[Any]:
    from jobrunner.locks.resp import RespError

    if isinstance(reply, RespError):
        raise reply
    return reply if isinstance(reply, list) else []


def _entries(entries: Any, view: FleetView) -> list[RunRecord]:
    records = []
    for _id, fields in entries:
        raw = (fields.get("r") or fields.get(b"r")) if isinstance(fields, dict) else None
        record = _record(raw)
        if record is None:
            view.invalid += 1
        else:
            records.append(record)
    return records


def read_fleet(
    url: str, *, count: int | None = None, stream: str | None = None, timeout: float = 5.0
) -> list[RunRecord]:
    """The history stream's records, oldest first (its newest ``count`` when given); entries
    of the wrong shape skipped."""
    from jobrunner.locks.resp import Connection

    conn = Connection(url, timeout)
    try:
        name = stream or stream_name()
        if count is None:
            entries = _pairs_entries(conn.pipeline([("XRANGE", name, "-", "+")])[0])
        else:
            entries = list(
                reversed(_pairs_entries(conn.pipeline([("XREVRANGE", name, "+", "-", "COUNT", str(count))])[0]))
            )
    finally:
        conn.close()
    return _entries(entries, FleetView())


def matrix(data: FleetView | Sequence[RunRecord]) -> dict[tuple[str, str], dict[str, Any]]:
    """``(host, job)`` -> its last run's outcome and start, when it last reported (a skip
    counts), its failure streak, and, where the history stream's runs of it were read, their
    number and p50/p95."""
    view = _as_view(data)
    runs: dict[tuple[str, str], list[RunRecord]] = {}
    for r in view.records:
        runs.setdefault((r.host, r.job), []).append(r)
    out = {}
    for key, cell in sorted(view.cells.items()):
        last = cell.last
        row: dict[str, Any] = {
            "last_outcome": last.outcome if last is not None else "skipped",
            "last_start": last.start if last is not None else cell.seen,
            "last_seen": cell.seen,
            "failure_streak": cell.streak,
        }
        if key in runs:
            stats = summary(runs[key])
            row.update(runs=stats["runs"], p50_s=stats["p50_s"], p95_s=stats["p95_s"])
        out[key] = row
    return out


# -- the fleet's health (``jobrunner health --fleet``) -------------------------------------------

MIN_SILENCE_S = 900.0  # a host is never called silent sooner than this
SILENCE_GAPS = 3.0  # ... nor before this many of its usual gaps between records passed


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# Up to this many hosts ran a job, its facts name each host's last outcome; past it, only the
# failing ones (1,000 hosts × 50 jobs of facts made health --json a 1 s render).
HOST_FACTS = 100

# A host none of whose jobs are declared here, with too few runs in the stream to learn its
# cadence, has stopped reporting after a day and an hour (a daily job's host, late).
UNKNOWN_CADENCE_SILENCE_S = 25 * 3600.0


def host_silence_limit(records: Sequence[RunRecord], intervals: Mapping[str, float]) -> float | None:
    """Seconds without any record (a skip counts: the host is alive) after which a host has
    stopped reporting: twice the shortest declared interval of the jobs it ran (``intervals``,
    job → seconds, from the declarations) plus ``MIN_SILENCE_S``; for a host whose jobs are not
    declared here, ``SILENCE_GAPS`` × its median gap between records, at least
    ``MIN_SILENCE_S``; None (no judgement) with fewer than three records."""
    known = [intervals[r.job] for r in records if r.job in intervals]
    if known:
        return 2 * min(known) + MIN_SILENCE_S
    starts = sorted(r.start for r in records)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False) if b > a]
    median = _median(gaps) if len(starts) >= 3 else None
    return None if median is None else max(SILENCE_GAPS * median, MIN_SILENCE_S)


def check_fleet(
    data: FleetView | Sequence[RunRecord],
    *,
    now: float,
    fail_threshold: int = 3,
    intervals: Mapping[str, float] | None = None,
    silent_after: float | None = None,
    jobs: Sequence[str] = (),
    declared: Sequence[str] = (),
) -> list[Any]:
    """The fleet's verdicts (``jobrunner.rules.verdict.JobHealth``): one per job, over every host that
    ran it, then one per host that stopped reporting (``host <name>``).

    A job is WARNING when its last run failed on any host ("failing on 3 of 20 hosts: …"),
    CRITICAL when a host's failure streak reaches ``fail_threshold``, and, where its interval is
    known (``intervals``), WARNING/CRITICAL when no host has succeeded for one/two stale limits
    (``jobrunner.rules.schedule.stale_after``). A job declared here (``declared``, or named in
    ``jobs``) that no host reported is WARNING. A host is CRITICAL when its heartbeat (its newest
    record, a skip too) is older than ``silent_after`` (default: ``host_silence_limit`` over
    the jobs it reported, else ``UNKNOWN_CADENCE_SILENCE_S``). Facts name the last host to run
    each job (a fleet singleton's current runner) and each host's last outcome."""
    from jobrunner.rules.schedule import format_age, stale_after
    from jobrunner.rules.verdict import CRITICAL, OK, WARNING, JobHealth

    view = _as_view(data)
    intervals = intervals or {}
    cells = matrix(view)
    by_job: dict[str, dict[str, Cell]] = {}
    by_host: dict[str, list[str]] = {}
    for (host, job), c in view.cells.items():
        by_job.setdefault(job, {})[host] = c
        by_host.setdefault(host, []).append(job)
    durations: dict[str, list[float]] = {}
    for r in view.records:
        durations.setdefault(r.job, []).append(r.duration_s)
    runs_of_host: dict[str, list[RunRecord]] = {}
    for r in view.records:
        runs_of_host.setdefault(r.host, []).append(r)
    results = []
    for name in sorted(set(by_job) | set(jobs) | set(declared)):
        if jobs and name not in jobs:
            continue
        hosts = by_job.get(name, {})
        h = JobHealth(name, name.replace("_", "-"), facts={"hosts": {}})
        if not hosts:
            h.find(WARNING, "declared, but no host has reported it")
            results.append(h)
            continue
        ran = [c.last for c in hosts.values() if c.last is not None]
        if ran:
            last = max(ran, key=lambda r: r.start)
            h.facts["last_host"] = last.host
            h.facts["last_start"] = last.start
        failing = []
        every = len(hosts) <= HOST_FACTS
        for host in sorted(hosts):
            cell = cells[(host, name)]
            bad = outcome_matches(cell["last_outcome"], "failed")
            if every or bad:
                h.facts["hosts"][host] = {k: cell[k] for k in ("last_outcome", "last_start", "failure_streak")}
            if bad:
                failing.append((host, cell["failure_streak"]))
        if not every:
            h.facts["hosts_not_failing"] = len(hosts) - len(failing)  # named only up to HOST_FACTS hosts
        if failing:
            worst_streak = max(s for _, s in failing)
            names = ", ".join(f"{host} ({s} in a row)" if s > 1 else host for host, s in failing)
            status = CRITICAL if worst_streak >= fail_threshold else WARNING
            h.find(status, f"failing on {len(failing)} of {len(hosts)} hosts: {names}")
        interval = intervals.get(name)
        if interval is not None:
            limit = stale_after(interval, None, durations.get(name, [])[-10:])
            newest = max((c.ok_at for c in hosts.values() if c.ok_at is not None), default=None)
            age = None if newest is None else now - newest
            if age is None:
                h.find(WARNING, "no host has succeeded in the fleet's records")
            elif age > 2 * limit:
                h.find(CRITICAL, f"no success on any host for {format_age(age)}")
            elif age > limit:
                h.find(WARNING, f"no success on any host for {format_age(age)}")
        if h.status == OK:
            if ran:
                h.notes.append(f"last ran on {last.host} {format_age(now - last.start)} ago: {last.outcome}")
            else:
                h.notes.append("only skips reported")
        results.append(h)
    for host in sorted(set(view.hosts) | set(by_host)):
        newest = view.hosts.get(host)
        if newest is None:
            newest = max((c.seen or 0.0 for (ho, _), c in view.cells.items() if ho == host), default=0.0)
        silence: float
        if silent_after is not None:
            silence = silent_after
        else:
            known = [intervals[j] for j in by_host.get(host, []) if j in intervals]
            if known:
                silence = 2 * min(known) + MIN_SILENCE_S
            else:
                silence = host_silence_limit(runs_of_host.get(host, []), intervals) or UNKNOWN_CADENCE_SILENCE_S
        if now - newest > silence:
            h = JobHealth(f"host {host}", "", facts={"host": host, "last_record": newest, "silent_after_s": silence})
            h.find(CRITICAL, f"stopped reporting: last record {format_age(now - newest)} ago")
            results.append(h)
    return results
