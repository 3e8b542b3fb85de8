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
from typing import TYPE_CHECKING, Any

from jobrunner.store.history import RunRecord, record_of

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


def _maxlen(env: Mapping[str, str]) -> int:
    try:
        return max(100, int(env.get("JOBRUNNER_FLEET_MAXLEN", "") or DEFAULT_MAXLEN))
    except ValueError:
        return DEFAULT_MAXLEN


def _import_redis() -> None:
    import redis  # noqa: F401


def _client(url: str, timeout: float) -> Any:
    import redis

    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=0, retry_on_timeout=False
    )


def publish(url: str, record: RunRecord, *, stream: str = DEFAULT_STREAM, maxlen: int = DEFAULT_MAXLEN) -> None:
    """Add ``record`` to the capped stream (raises on any failure).

    ``redis://`` and ``unix://`` URLs are spoken to directly: three RESP commands (``AUTH``,
    ``SELECT``, ``XADD … MAXLEN ~ N * r RECORD``) over one socket, which costs a run about a
    millisecond where importing the redis client costs ~80 ms on every timer tick
    (``bench/history.py``). ``rediss://`` (TLS) goes through the redis client."""
    payload = json.dumps(record.to_dict(), separators=(",", ":"), ensure_ascii=False)
    if url.startswith("rediss://"):
        client = _client(url, PUBLISH_BOUND_S / 2)
        try:
            client.xadd(stream, {"r": payload}, maxlen=maxlen, approximate=True)
        finally:
            client.close()
        return
    xadd = ("XADD", stream, "MAXLEN", "~", str(maxlen), "*", "r", payload)
    _resp_commands(url, [xadd], timeout=PUBLISH_BOUND_S / 2)


def _resp_commands(url: str, commands: list[tuple[str, ...]], *, timeout: float) -> list[Any]:
    """Send ``commands`` (after ``AUTH``/``SELECT`` from the URL) on one connection and return
    their replies; an error reply raises ``RuntimeError`` with the server's message."""
    import socket
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(url)
    first: list[tuple[str, ...]] = []
    if parts.password is not None:
        password = unquote(parts.password)
        first.append(("AUTH", unquote(parts.username), password) if parts.username else ("AUTH", password))
    if parts.scheme == "unix":
        db = (parse_qs(parts.query).get("db") or ["0"])[0]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(parts.path)
    elif parts.scheme == "redis":
        db = parts.path.strip("/") or "0"
        sock = socket.create_connection((parts.hostname or "localhost", parts.port or 6379), timeout=timeout)
    else:
        raise ValueError(f"not a redis:// or unix:// URL: {parts.scheme}://")
    if db != "0":
        first.append(("SELECT", db))
    try:
        sock.settimeout(timeout)
        wanted = first + commands
        sock.sendall(b"".join(_encode(c) for c in wanted))
        reader = sock.makefile("rb")
        replies = [_reply(reader) for _ in wanted]
    finally:
        sock.close()
    return replies[len(first) :]


def _encode(command: tuple[str, ...]) -> bytes:
    out = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _reply(reader: Any) -> Any:
    line = reader.readline(1 << 16)
    if not line.endswith(b"\r\n"):
        raise ConnectionError("the connection closed mid-reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(f"Redis said: {rest.decode(errors='replace')}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else reader.read(size + 2)[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_reply(reader) for _ in range(count)]
    raise ConnectionError(f"not a Redis reply: {line[:40]!r}")


class FleetHook:
    """Publishes the run's finish record to the fleet's stream, within ``PUBLISH_BOUND_S``."""

    name = "fleet"
    failure_event = "fleet.publish_failed"

    def __init__(self, url: str, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.url = url
        self.stream = stream_name(env)
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


def fleet_records(env: Mapping[str, str] | None = None) -> list[RunRecord]:
    """The records the ``--fleet`` views show: the stream of ``$JOBRUNNER_REDIS_URL``;
    ``ConfigError`` (one line, redacted) when the URL is missing or Redis cannot be read."""
    from jobrunner.errors import ConfigError

    env = os.environ if env is None else env
    url = env.get("JOBRUNNER_REDIS_URL", "").strip()
    if not url:
        raise ConfigError("--fleet needs $JOBRUNNER_REDIS_URL (the fleet's Redis)")
    try:
        return read_fleet(url)
    except Exception as exc:  # redis.RedisError: down, refused, wrong password
        from jobrunner.redact import default_redactor

        raise ConfigError(default_redactor().redact(f"the fleet's Redis is unavailable: {exc}")) from None


def read_fleet(url: str, *, count: int = 10000, stream: str | None = None, timeout: float = 5.0) -> list[RunRecord]:
    """The stream's newest ``count`` records, oldest first; entries of the wrong shape skipped."""
    client = _client(url, timeout)
    try:
        entries = client.xrevrange(stream or stream_name(), count=count)
    finally:
        client.close()
    records = []
    for _id, fields in reversed(entries):
        raw = fields.get(b"r") if isinstance(fields, dict) else None
        try:
            records.append(RunRecord.from_dict(json.loads(raw or b"")))
        except (ValueError, UnicodeDecodeError, RecursionError):
            continue
    return records


def matrix(records: list[RunRecord]) -> dict[tuple[str, str], dict[str, Any]]:
    """``(host, job)`` -> its last run's outcome and start, its p95 and failure streak."""
    from jobrunner.store.history import summary

    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.host, r.job), []).append(r)
    out = {}
    for key, runs in sorted(groups.items()):
        ran = [r for r in runs if r.outcome != "skipped"] or runs
        out[key] = {"last_outcome": ran[-1].outcome, "last_start": ran[-1].start, **summary(runs)}
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


def host_silence_limit(records: list[RunRecord], intervals: Mapping[str, float]) -> float | None:
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
    records: list[RunRecord],
    *,
    now: float,
    fail_threshold: int = 3,
    intervals: Mapping[str, float] | None = None,
    silent_after: float | None = None,
    jobs: Sequence[str] = (),
) -> list[Any]:
    """The fleet's verdicts (``jobrunner.observe.health.JobHealth``): one per job, over every host that
    ran it, then one per host that stopped reporting (``host <name>``).

    A job is WARNING when its last run failed on any host ("failing on 3 of 20 hosts: …"),
    CRITICAL when a host's failure streak reaches ``fail_threshold``, and, where its interval is
    known (``intervals``), WARNING/CRITICAL when no host has succeeded for one/two stale limits
    (``jobrunner.observe.health.stale_after``). A host is CRITICAL when its newest record is older than
    ``silent_after`` (default ``host_silence_limit``). Facts name the last host to run each job
    (a fleet singleton's current runner) and each host's last outcome."""
    from jobrunner.rules.schedule import format_age, stale_after
    from jobrunner.rules.verdict import CRITICAL, OK, WARNING, JobHealth
    from jobrunner.store.history import outcome_matches

    intervals = intervals or {}
    cells = matrix(records)  # each host's last outcome and streak per job, as status --fleet shows them
    by_job: dict[str, dict[str, list[RunRecord]]] = {}
    by_host: dict[str, list[RunRecord]] = {}
    for r in records:
        by_job.setdefault(r.job, {}).setdefault(r.host, []).append(r)
        by_host.setdefault(r.host, []).append(r)
    results = []
    for name in sorted(set(by_job) | set(jobs)):
        if jobs and name not in jobs:
            continue
        hosts = by_job.get(name, {})
        h = JobHealth(name, name.replace("_", "-"), facts={"hosts": {}})
        if not hosts:
            h.find(WARNING, "no run of it in the fleet's stream")
            results.append(h)
            continue
        ran = [r for runs in hosts.values() for r in runs if r.outcome != "skipped"]
        last = max(ran or [r for runs in hosts.values() for r in runs], key=lambda r: r.start)
        h.facts["last_host"] = last.host
        h.facts["last_start"] = last.start
        failing = []
        for host in sorted(hosts):
            cell = cells[(host, name)]
            h.facts["hosts"][host] = {k: cell[k] for k in ("last_outcome", "last_start", "failure_streak")}
            if outcome_matches(cell["last_outcome"], "failed"):
                failing.append((host, cell["failure_streak"]))
        if failing:
            worst_streak = max(s for _, s in failing)
            names = ", ".join(f"{host} ({s} in a row)" if s > 1 else host for host, s in failing)
            status = CRITICAL if worst_streak >= fail_threshold else WARNING
            h.find(status, f"failing on {len(failing)} of {len(hosts)} hosts: {names}")
        interval = intervals.get(name)
        successes = [r.start + r.duration_s for r in ran if not r.failed]
        if interval is not None:
            limit = stale_after(interval, None, [r.duration_s for r in ran[-10:]])
            newest = max(successes, default=None)
            age = None if newest is None else now - newest
            if age is None:
                h.find(WARNING, "no host has succeeded in the stream's runs")
            elif age > 2 * limit:
                h.find(CRITICAL, f"no success on any host for {format_age(age)}")
            elif age > limit:
                h.find(WARNING, f"no success on any host for {format_age(age)}")
        if h.status == OK:
            h.notes.append(f"last ran on {last.host} {format_age(now - last.start)} ago: {last.outcome}")
        results.append(h)
    for host, runs in sorted(by_host.items()):
        newest = max(r.start + r.duration_s for r in runs)
        silence = silent_after if silent_after is not None else host_silence_limit(runs, intervals)
        if silence is not None and now - newest > silence:
            h = JobHealth(f"host {host}", "", facts={"host": host, "last_record": newest, "silent_after_s": silence})
            h.find(CRITICAL, f"stopped reporting: last record {format_age(now - newest)} ago")
            results.append(h)
    return results
