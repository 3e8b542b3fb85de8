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
from itertools import repeat
from math import isnan
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
# What a reader may ask for (``fleet_view(parts=…)``): each cell's last run (``brief``), its
# last record's time (``seen``), last success (``ok``), failure streak (``streak``), and the
# hosts' heartbeats (``hosts``).
ALL_PARTS = frozenset(("brief", "seen", "ok", "streak", "hosts"))


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
    (``bench/history.py``); over the run's lease's connection when it left one to this Redis
    (``jobrunner.locks.resp.take``). ``rediss://`` (TLS) goes through the redis client."""
    from jobrunner.locks.resp import RespError, call, take

    commands = publish_commands(record, stream=stream, maxlen=maxlen)
    conn = take(url)  # the run's lease's connection, when it left one to this Redis
    if conn is not None:
        try:
            conn.set_timeout(PUBLISH_BOUND_S / 2)
            replies = conn.pipeline(commands)
        finally:
            conn.close()
    elif url.startswith("rediss://"):
        client = _client(url, PUBLISH_BOUND_S / 2)
        try:
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            pipe.execute()
        finally:
            client.close()
        return
    else:
        replies = call(url, commands, timeout=PUBLISH_BOUND_S / 2)
    for reply in replies:
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


def _parse_record(raw: Any) -> RunRecord | None:
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
    parts: frozenset[str] = ALL_PARTS,
) -> FleetView:
    """The ``--fleet`` views' data from ``$JOBRUNNER_REDIS_URL``; ``ConfigError`` (one line,
    redacted) when the URL is missing or Redis cannot be read. ``history``: the stream's
    records too (from ``since``, a Unix time, when given). ``parts``: the views to read (a
    view that needs no last runs or last successes does not read or parse them)."""
    env = os.environ if env is None else env
    url = env.get("JOBRUNNER_REDIS_URL", "").strip()
    if not url:
        raise ConfigError("--fleet needs $JOBRUNNER_REDIS_URL (the fleet's Redis)")
    try:
        return read_view(url, stream=stream_name(env), history=history, since=since, owners=owners, parts=parts)
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
    parts: frozenset[str] = ALL_PARTS,
) -> FleetView:
    """Read the views (one pipelined round trip a namespace; the history stream too with
    ``history``): root's (``stream``), then every other user's (``jobrunner:u:<user>:runs``),
    believed only where ``trusted`` says so. Spoken over one connection of Redis's protocol
    (``jobrunner.locks.resp``): no redis-py import, whose parser was most of a view's time."""
    from jobrunner.locks.resp import Connection

    stream = stream or stream_name()
    conn = Connection(url, timeout)
    try:
        view = _read_namespace(conn, stream, history, since, parts)
        others: set[str] = set()
        cursor = b"0"
        while True:
            cursor, keys = conn.call("SCAN", cursor, "MATCH", "jobrunner:u:*:runs" + HOSTS, "COUNT", "1000")
            others.update(k.decode("utf-8", "replace")[: -len(":runs" + HOSTS)] for k in keys)
            if cursor in (b"0", 0):
                break
        for prefix in sorted(others):
            user = prefix.removeprefix("jobrunner:u:")
            theirs = _read_namespace(conn, prefix + ":runs", history, since, parts)
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


# Each view comes as one JSON document, made by a script (one C-speed json.loads instead of a
# Python parser walking 200,000 protocol elements at 1,000 hosts × 50 jobs); a script a view,
# all in one pipeline: Redis encodes three documents of 50,000 fields in 0.14 s where one of
# 150,000 took 0.24 s.
_HASH_SCRIPT = "return cjson.encode(redis.call('hgetall', KEYS[1]))"
_HOSTS_SCRIPT = "return cjson.encode(redis.call('zrange', KEYS[1], 0, -1, 'WITHSCORES'))"
_RUNS_SCRIPT = "return cjson.encode(redis.call('xrange', KEYS[1], ARGV[1], '+'))"


def _flat_pairs(items: Any) -> list[tuple[str, str]]:
    if not isinstance(items, list):
        return []  # an empty Lua table is {} in JSON
    return [(_text(a), _text(b)) for a, b in zip(items[::2], items[1::2], strict=False)]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _flat_dict(items: Any) -> dict[str, str]:
    """A flat ``[field, value, …]`` list of the script's JSON (strings already: Redis's replies
    are strings to Lua) as a dict, at C speed; anything not a string is dropped."""
    if not isinstance(items, list):
        return {}  # an empty Lua table is {} in JSON
    out = dict(zip(items[::2], items[1::2], strict=False))
    if set(map(type, out)) <= {str} and set(map(type, out.values())) <= {str}:
        return out
    return {k: v for k, v in out.items() if type(k) is str and type(v) is str}


_VIEWS = ("brief", "seen", "ok", "streak", "hosts")


def _fetch(
    conn: Any, stream: str, history: bool, since: float | None, parts: frozenset[str] = ALL_PARTS
) -> dict[str, Any]:
    """The namespace's views in ``parts`` as dicts of strings (``hosts``: host → score) and,
    with ``history``, its stream's records as JSON texts (``runs``), in one round trip: through
    the scripts above where scripts may run, else plain reads."""
    from jobrunner.locks.resp import RespError

    keys = dict(
        zip(_VIEWS, (stream + BRIEF, stream + SEEN, stream + OK_AT, stream + STREAK, stream + HOSTS), strict=True)
    )
    names = [name for name in _VIEWS if name in parts]
    first = "-" if since is None else f"{max(0, int(since * 1000))}-0"
    scripted: list[tuple[str, ...]] = [
        ("EVAL", _HOSTS_SCRIPT if name == "hosts" else _HASH_SCRIPT, "1", keys[name]) for name in names
    ]
    if history:
        scripted.append(("EVAL", _RUNS_SCRIPT, "1", stream, first))
    replies = conn.pipeline(scripted) if scripted else []
    docs: list[Any] | None = None
    if not any(isinstance(r, RespError) for r in replies):  # (no scripts allowed: NOPERM)
        try:
            docs = [json.loads(r) for r in replies]
        except (ValueError, TypeError, UnicodeDecodeError, RecursionError):
            docs = None
    out: dict[str, Any] = {name: {} for name in _VIEWS}
    if docs is not None:
        for name, doc in zip(names, docs, strict=False):
            out[name] = _flat_dict(doc)
        runs = docs[-1] if history else []
        out["runs"] = [
            dict(_flat_pairs(entry[1])).get("r")
            for entry in (runs if isinstance(runs, list) else [])
            if isinstance(entry, list) and len(entry) == 2
        ]
        return out
    commands: list[tuple[str, ...]] = [
        ("ZRANGE", keys[name], "0", "-1", "WITHSCORES") if name == "hosts" else ("HGETALL", keys[name])
        for name in names
    ]
    if history:
        commands.append(("XRANGE", stream, first, "+"))
    replies = conn.pipeline(commands) if commands else []
    for name, r in zip(names, replies, strict=False):
        if isinstance(r, RespError):
            raise r
        out[name] = dict(_flat_pairs(r))
    out["runs"] = [_r_field(f) for _, f in _pairs_entries(replies[-1])] if history else []
    return out


def _floats(texts: Mapping[str, str], low: float, high: float) -> dict[str, float]:
    """The values of ``texts`` that are numbers from ``low`` to ``high``, as floats: converted
    all at once (``map``) where every one is, else one by one, the others left out."""
    try:
        values = list(map(float, texts.values()))
    except ValueError:
        values = []
    if values and low <= min(values) and max(values) <= high and not any(map(isnan, values)):
        return dict(zip(texts, values, strict=True))  # (min and max pass over a NaN)
    out = {}
    for key, text in texts.items():
        try:
            value = float(text)
        except ValueError:
            continue
        if low <= value <= high:
            out[key] = value
    return out


def _good_outcome(outcome: str) -> bool:
    return bool(outcome) and len(outcome) <= 40 and outcome.isprintable()


def _briefs(brief: Mapping[str, str]) -> dict[str, tuple[float, float, str, int, int]]:
    """Each cell's last run from its brief (``start duration outcome exit_code attempts``),
    the briefs of the wrong shape left out: all parsed at once where all are well formed (one
    split and a ``map`` per column: 50,000 at 1,000 hosts × 50 jobs), else one by one."""
    texts = list(brief.values())
    if texts and set(map(str.count, texts, repeat(" ", len(texts)))) == {4}:
        tokens = " ".join(texts).split(" ")
        try:
            starts, durations = list(map(float, tokens[0::5])), list(map(float, tokens[1::5]))
            codes, attempts = list(map(int, tokens[3::5])), list(map(int, tokens[4::5]))
        except ValueError:
            starts = []
        outcomes = tokens[2::5]
        if (
            starts
            and _EARLIEST <= min(starts)
            and max(starts) <= _LATEST
            and 0 <= min(durations)
            and max(durations) <= _LONGEST
            and not any(map(isnan, starts))
            and not any(map(isnan, durations))
            and all(map(_good_outcome, set(outcomes)))
        ):
            return dict(zip(brief, zip(starts, durations, outcomes, codes, attempts, strict=True), strict=True))
    out = {}
    for key, raw in brief.items():
        bits = raw.split(" ")
        try:
            if len(bits) != 5:
                continue
            start, duration, code, tries = float(bits[0]), float(bits[1]), int(bits[3]), int(bits[4])
        except ValueError:
            continue
        if _EARLIEST <= start <= _LATEST and 0 <= duration <= _LONGEST and _good_outcome(bits[2]):
            out[key] = (start, duration, bits[2], code, tries)
    return out


def _streaks(texts: Mapping[str, str]) -> dict[str, int]:
    """The failure streaks that are whole numbers under a billion (the rest left out)."""
    values = list(texts.values())
    if all(map(str.isdigit, values)) and max(map(len, values), default=0) < 10:
        return dict(zip(texts, map(int, values), strict=True))
    return {k: int(v) for k, v in texts.items() if v.isdigit() and len(v) < 10}


def _read_namespace(
    conn: Any, stream: str, history: bool, since: float | None, parts: frozenset[str] = ALL_PARTS
) -> FleetView:
    """One namespace's view. The hot path of every ``--fleet`` view (50,000 cells at 1,000
    hosts × 50 jobs): each view's values converted a column at a time, then one loop that only
    assembles the cells."""
    data = _fetch(conn, stream, history, since, parts)
    view = FleetView()
    cells = view.cells
    brief, seen = data["brief"], data["seen"]
    lasts = _briefs(brief)
    seens = _floats(seen, _EARLIEST, _LATEST + _LONGEST)
    oks = _floats(data["ok"], _EARLIEST, _LATEST + _LONGEST)
    streaks = _streaks(data["streak"])
    invalid = len(brief) - len(lasts)
    make = tuple.__new__
    no_ok: dict[str, float] = {}
    ok_get = (oks or no_ok).get
    fields = list(seen)
    if len(brief) > len(seen) or not brief.keys() <= seen.keys():
        fields += [f for f in brief if f not in seen]  # a cell is what ran or reported
    for raw_field in fields:
        host, sep, job = raw_field.partition("\t")
        if not sep or not host or not job or len(host) > 200 or len(job) > 200:
            invalid += 1
            continue
        b = lasts.get(raw_field)
        last = None if b is None else make(LastRun, (job, host, *b))
        when = seens.get(raw_field)
        if last is None and when is None:
            continue  # nothing believable about it
        cells[(host, job)] = Cell(last, when, ok_get(raw_field), streaks.get(raw_field, 0))
    view.invalid = invalid
    for host, beat in _floats(data["hosts"], _EARLIEST, _LATEST + _LONGEST).items():
        if 0 < len(host) <= 200:
            view.hosts[host] = beat
    if history:
        view.records = _entries(data["runs"], view)
    return view


def _r_field(fields: Mapping[Any, Any]) -> Any:
    """A stream entry's record (its ``r`` field)."""
    return fields.get(b"r", fields.get("r"))


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


def _entries(texts: Sequence[Any], view: FleetView) -> list[RunRecord]:
    """The records of the stream's entries (their ``r`` fields: JSON texts); an entry of the
    wrong shape counts in ``view.invalid``. Parsed in one ``json.loads`` where every entry is
    well formed (10,000 calls were a tenth of ``history --fleet``), else one by one."""
    docs: list[Any] | None = None
    if texts and all(type(t) is str for t in texts):
        try:
            docs = json.loads("[" + ",".join(texts) + "]")
        except (ValueError, RecursionError):
            docs = None
        if not isinstance(docs, list) or len(docs) != len(texts):
            docs = None
    records = []
    for i, raw in enumerate(texts):
        record: RunRecord | None
        if docs is None:
            record = _parse_record(raw)
        else:
            try:
                record = RunRecord.from_dict(docs[i])
            except (ValueError, TypeError):
                record = None
            if record is not None and not _sane(record):
                record = None
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
    return _entries([_r_field(f) for _, f in entries], FleetView())


def matrix(data: FleetView | Sequence[RunRecord]) -> dict[tuple[str, str], dict[str, Any]]:
    """``(host, job)`` -> its last run's outcome and start, when it last reported (a skip
    counts), its failure streak, and, where the history stream's runs of it were read, their
    number and p50/p95. (A dict per cell: for the views that show every cell; the verdicts and
    the page read ``FleetView.cells`` directly.)"""
    view = _as_view(data)
    runs: dict[tuple[str, str], list[RunRecord]] = {}
    for r in view.records:
        runs.setdefault((r.host, r.job), []).append(r)
    out = {}
    for key in sorted(view.cells):
        cell = view.cells[key]
        last = cell.last
        if last is not None:
            row: dict[str, Any] = {
                "last_outcome": last.outcome,
                "last_start": last.start,
                "last_seen": cell.seen,
                "failure_streak": cell.streak,
            }
        else:
            row = {
                "last_outcome": "skipped",
                "last_start": cell.seen,
                "last_seen": cell.seen,
                "failure_streak": cell.streak,
            }
        if runs and key in runs:
            stats = summary(runs[key])
            row.update(runs=stats["runs"], p50_s=stats["p50_s"], p95_s=stats["p95_s"])
        out[key] = row
    return out


def cell_lines(view: FleetView) -> list[str]:
    """``status --fleet --json``'s lines, one per cell in (host, job) order: what
    ``json.dumps({"host": …, "job": …, **matrix(view)[(host, job)]})`` writes, built from the
    cells directly, each name and outcome encoded once (50,000 dicts and their encoding were a
    third of the view at 1,000 hosts)."""
    cells = view.cells
    names = {name for key in cells for name in key}
    names.update(c.last.outcome for c in cells.values() if c.last is not None)
    quoted = {name: json.dumps(name) for name in names}
    out = []
    for key in sorted(cells):
        c = cells[key]
        last = c.last
        seen = "null" if c.seen is None else repr(c.seen)
        if last is None:
            outcome, start = '"skipped"', seen
        else:
            outcome, start = quoted[last.outcome], repr(last.start)
        out.append(
            f'{{"host": {quoted[key[0]]}, "job": {quoted[key[1]]}, "last_outcome": {outcome}, "last_start": {start}, '
            f'"last_seen": {seen}, "failure_streak": {c.streak}}}\n'
        )
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
    by_job: dict[str, dict[str, Cell]] = {}
    by_host: dict[str, list[str]] = {}
    for (host, job), c in view.cells.items():
        by_job.setdefault(job, {})[host] = c
        by_host.setdefault(host, []).append(job)
    outcomes = {c.last.outcome for c in view.cells.values() if c.last is not None}
    failed = {o for o in outcomes if outcome_matches(o, "failed")}  # each outcome judged once
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
            h.find(WARNING, "declared, but no host has reported it", "unreported")
            results.append(h)
            continue
        ran = [c.last for c in hosts.values() if c.last is not None]
        if ran:
            last = max(ran, key=lambda r: r.start)
            h.facts["last_host"] = last.host
            h.facts["last_start"] = last.start
        failing = []
        every = len(hosts) <= HOST_FACTS
        facts = h.facts["hosts"]
        for host in sorted(hosts):
            c = hosts[host]
            outcome = c.last.outcome if c.last is not None else "skipped"
            bad = outcome in failed
            if every or bad:
                start = c.last.start if c.last is not None else c.seen
                facts[host] = {"last_outcome": outcome, "last_start": start, "failure_streak": c.streak}
            if bad:
                failing.append((host, c.streak))
        if not every:
            h.facts["hosts_not_failing"] = len(hosts) - len(failing)  # named only up to HOST_FACTS hosts
        if failing:
            worst_streak = max(s for _, s in failing)
            names = ", ".join(f"{host} ({s} in a row)" if s > 1 else host for host, s in failing)
            status = CRITICAL if worst_streak >= fail_threshold else WARNING
            h.find(status, f"failing on {len(failing)} of {len(hosts)} hosts: {names}", "failing")
        interval = intervals.get(name)
        if interval is not None:
            limit = stale_after(interval, None, durations.get(name, [])[-10:])
            newest = max((c.ok_at for c in hosts.values() if c.ok_at is not None), default=None)
            age = None if newest is None else now - newest
            # As on one host: no record at all (a skip too) within the limit is late (no timer
            # fired it anywhere), records without a success are failing.
            seen = max((c.seen for c in hosts.values() if c.seen is not None), default=None)
            stale = "late" if seen is None or now - seen > limit else "failing"
            if age is None:
                h.find(WARNING, "no host has succeeded in the fleet's records", stale)
            elif age > 2 * limit:
                h.find(CRITICAL, f"no success on any host for {format_age(age)}", stale)
            elif age > limit:
                h.find(WARNING, f"no success on any host for {format_age(age)}", stale)
        if h.status == OK:
            if ran:
                h.notes.append(f"last ran on {last.host} {format_age(now - last.start)} ago: {last.outcome}")
            else:
                h.notes.append("only skips reported")
        results.append(h)
    for host in sorted(set(view.hosts) | set(by_host)):
        newest = view.hosts.get(host)
        if newest is None:  # no heartbeat kept: its cells' newest record
            newest = max((c.seen or 0.0 for c in (view.cells[(host, j)] for j in by_host.get(host, []))), default=0.0)
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
            h.find(CRITICAL, f"stopped reporting: last record {format_age(now - newest)} ago", "silent")
            results.append(h)
    return results
