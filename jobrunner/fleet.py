"""The fleet's run history: every run's finish record published to a capped Redis stream.

Where ``$JOBRUNNER_REDIS_URL`` is set, ``FleetHook`` (registered by ``jobrunner.hooks``; this
module and redis are imported only then) adds the record (``jobrunner.history.RunRecord``) to
the stream ``jobrunner:runs`` (``$JOBRUNNER_FLEET_STREAM``), capped at about
``$JOBRUNNER_FLEET_MAXLEN`` entries (default 10000; ``XADD … MAXLEN ~``). The per-host
``history.jsonl`` stays the record of truth; the stream is the fleet's shared view of it, read
by ``jobrunner history --fleet`` and ``jobrunner status --fleet``.

Publishing never changes a run's outcome (a hook's error is logged as ``fleet.publish_failed``)
and never holds the run up for more than ``PUBLISH_BOUND_S``: the publish runs in a daemon
thread the run waits for that long at most (socket timeouts inside it, no retries), so a Redis
that is down, or a host that swallows packets, costs a run one second, not its deadline.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .history import RunRecord, record_of

if TYPE_CHECKING:
    from .run import Run

__all__ = ["PUBLISH_BOUND_S", "FleetHook", "publish", "read_fleet", "stream_name"]

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


def _client(url: str, timeout: float) -> Any:
    import redis

    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=0, retry_on_timeout=False
    )


def publish(url: str, record: RunRecord, *, stream: str = DEFAULT_STREAM, maxlen: int = DEFAULT_MAXLEN) -> None:
    """Add ``record`` to the capped stream (raises on any failure)."""
    client = _client(url, PUBLISH_BOUND_S / 2)
    try:
        payload = json.dumps(record.to_dict(), separators=(",", ":"), ensure_ascii=False)
        client.xadd(stream, {"r": payload}, maxlen=maxlen, approximate=True)
    finally:
        client.close()


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
        return None

    def on_finish(self, run: Run) -> None:
        record = record_of(run)
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
            from .redact import default_redactor

            # the URL may carry a password
            raise RuntimeError(default_redactor().redact(f"{type(failure[0]).__name__}: {failure[0]}")) from None


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
    from .history import summary

    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.host, r.job), []).append(r)
    out = {}
    for key, runs in sorted(groups.items()):
        ran = [r for r in runs if r.outcome != "skipped"] or runs
        out[key] = {"last_outcome": ran[-1].outcome, "last_start": ran[-1].start, **summary(runs)}
    return out
