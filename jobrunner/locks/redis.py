"""A Redis lease for fleets: one server of many runs a singleton job.

The lease is ``SET key token NX PX ttl`` in a Lua script; extend and release are
compare-and-… scripts, so only the owner's token can renew or delete the key. It speaks Redis's
protocol over one connection (``jobrunner.locks.resp``), without redis-py, whose import cost a
run 80-180 ms. With:

- a fencing token: acquiring also ``INCR``\\s ``jobrunner:fence:<name>`` in the same Lua script,
  so every grant carries a number larger than all earlier grants of that key (a counter lost
  with a restart starts again from Redis's clock in microseconds, above the old values);
- a holder identity as the token (``host:pid:random``), so a skipped run can say who holds it;
- a renewer thread that resets the TTL every ``ttl/3`` and, when it cannot, declares the lease
  lost while a third of the TTL is still left, so the runner can stop the job before the key
  can expire (see ``RedisLease`` for the timing);
- a restart guard: a Redis that has been up for less than the TTL may have forgotten a live
  lease (no persistence, or a stale snapshot), so no lease is granted until it has been up for
  a whole TTL (Redis's own advice of "delayed restarts", applied by the client).

What this is not: consensus. A single Redis (or a failover to a replica that missed the last
write) can lose a key; a holder paused longer than its stop budget (a VM frozen, swap storm)
may still act after its lease expired. Jobs that write to shared storage should pass
``fencing_token`` along and have the storage reject smaller ones.

Imported only for jobs that declare ``Lock(redis=...)`` (or a ``redis://`` lease URL), through
``jobrunner.locks.abc``'s registry; ``acquire_redis_lock`` is its ``AcquireLease``.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobrunner.errors import ConfigError, LockBusy
from jobrunner.locks.abc import LeaseGone, LeaseUnavailable, RenewedLease, lease_timing, warn_short_ttl
from jobrunner.locks.resp import Connection, RespError, key_prefix, park, parse_redis_url
from jobrunner.redact import default_redactor

# What the lease's calls raise: Redis unreachable or silent (OSError: refused, reset, timed
# out) or an error reply (RespError).
RedisError = (RespError, OSError)

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from jobrunner.declaration import Lock
    from jobrunner.locks.abc import LeaseJob

__all__ = ["ForeignLease", "RedisLease", "RedisUnavailable", "acquire_redis_lock", "redis_url"]

URL_ENV = "JOBRUNNER_REDIS_URL"
KEY_PREFIX = "jobrunner:lock:"
FENCE_PREFIX = "jobrunner:fence:"


class RedisUnavailable(LeaseUnavailable):
    """Redis could not be reached when the run started (``Lock(unavailable="local")`` falls back)."""


def _redact(text: str) -> str:
    return " ".join(default_redactor().redact(text).split())


def redis_url(spec: Any) -> str:
    """The lease's URL: ``spec.redis``, or ``$JOBRUNNER_REDIS_URL`` for ``redis=True``."""
    if spec.redis is True:
        url = os.environ.get(URL_ENV, "").strip()
        if not url:
            raise ConfigError(
                f"lock redis=True needs {URL_ENV} (set it in /etc/jobrunner/jobrunner.env, e.g. redis://redis.internal:6379/0)"
            )
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"{URL_ENV}: use a redis://, rediss:// or unix:// URL")
        return url
    return str(spec.redis)


class _FiringRan(Exception):
    """The run's firing was claimed already (by another host's run of it)."""


class _NotOwned(Exception):
    """The key no longer holds our token (expired, deleted, taken over, Redis restarted empty)."""


class _FencedLock:
    """The lease's Redis side, spoken over one connection (``jobrunner.locks.resp``: no
    redis-py import on a timer tick): acquisition draws a fencing token (and claims the run's
    firing) in one script; extend and release are compare-and-… scripts, so only the owner's
    token can renew or delete the key. A Redis restarted less than a TTL ago grants nothing
    (it may have forgotten a lease that its holder still trusts).
    """

    # A fencing token is never below Redis's clock in microseconds (TIME), so tokens keep
    # growing across a restart that lost the counter and a restore from an older snapshot
    # (which brings back a smaller one), as long as that clock does not go back.
    # KEYS[3], when given, is the run's firing (``jobrunner.locks.firing``): claimed with the
    # lease, and a firing claimed already grants nothing (-1) however free the lease is.
    LUA_ACQUIRE_SCRIPT = """
        if redis.replicate_commands then redis.replicate_commands() end
        if KEYS[3] and redis.call('exists', KEYS[3]) == 1 then
            return -1
        end
        if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
            return false
        end
        if KEYS[3] then
            redis.call('set', KEYS[3], ARGV[1], 'PX', ARGV[3])
        end
        local now = redis.call('time')
        local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
        local token = redis.call('incr', KEYS[2])
        if token < floor then
            redis.call('set', KEYS[2], string.format('%d', floor))
            token = floor
        end
        return token
    """

    LUA_EXTEND_SCRIPT = """
        if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
        return redis.call('pexpire', KEYS[1], ARGV[2])
    """
    LUA_RELEASE_SCRIPT = """
        if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
        return redis.call('del', KEYS[1])
    """

    def __init__(
        self,
        client: Connection,
        name: str,
        fence_key: str,
        *,
        timeout: float,
        firing: tuple[str, int] | None = None,
        sleep: float = 0.1,
        blocking: bool = False,
        blocking_timeout: float | None = None,
    ) -> None:
        self.redis = client
        self.name = name
        self.firing = firing  # (key, ttl ms) of the run's firing, or None (a run by hand)
        self.ttl = timeout
        self.fence_key = fence_key
        self.sleep = sleep
        self.blocking = blocking
        self.blocking_timeout = blocking_timeout
        self.token = ""
        self.fencing_token: int | None = None
        self.refusal: str | None = None
        self._settled = False  # the restart guard has passed once; no need to ask again
        self.granted_at = 0.0

    def acquire(self, token: str) -> bool:
        """Take the lease for ``token``, waiting up to ``blocking_timeout`` when ``blocking``."""
        deadline = time.monotonic() + (self.blocking_timeout or 0.0)
        while True:
            if self.do_acquire(token):
                return True
            if not self.blocking or time.monotonic() + self.sleep > deadline:
                return False
            time.sleep(self.sleep)

    def extend(self, ttl: float, replace_ttl: bool = True) -> None:
        """Reset the key's TTL to ``ttl`` if it still holds our token, else ``_NotOwned``."""
        done = self.redis.call("EVAL", self.LUA_EXTEND_SCRIPT, "1", self.name, self.token, str(int(ttl * 1000)))
        if not done:
            raise _NotOwned()

    def release(self) -> None:
        """Delete the key if it still holds our token, else ``_NotOwned``."""
        if not self.redis.call("EVAL", self.LUA_RELEASE_SCRIPT, "1", self.name, self.token):
            raise _NotOwned()

    def _restart_guard(self) -> bool:
        """True when Redis has been up for at least a TTL (or says nothing about its uptime)."""
        if self._settled:
            return True
        try:
            info = self.redis.call("INFO", "server")
        except RespError:  # INFO disabled, renamed or not allowed: nothing to go by
            self._settled = True
            return True
        uptime = 0
        for line in bytes(info or b"").decode("ascii", "replace").splitlines():
            if line.startswith("uptime_in_seconds:"):
                uptime = int(line.split(":", 1)[1].strip() or 0)
        # uptime_in_seconds is a difference of whole wall-clock seconds: it may be up to 1 s
        # ahead of the real uptime, hence the extra second.
        if uptime >= math.ceil(self.ttl) + 1:
            self._settled = True
            return True
        self.refusal = f"Redis restarted {uptime}s ago and may have forgotten a lease; no lease before it has been up {self.ttl:g}s (the ttl)"
        return False

    def do_acquire(self, token: str) -> bool:
        if not self._restart_guard():
            return False
        self.refusal = None
        self.token = token
        sent = time.monotonic()
        keys, args = [self.name, self.fence_key], [token, str(int(self.ttl * 1000))]
        if self.firing is not None:
            keys.append(self.firing[0])
            args.append(str(self.firing[1]))
        fence = self.redis.call("EVAL", self.LUA_ACQUIRE_SCRIPT, str(len(keys)), *keys, *args)
        if fence is None:
            return False
        if int(fence) == -1:
            raise _FiringRan()
        self.fencing_token = int(fence)
        self.granted_at = sent  # the key lives in Redis at least until sent + ttl
        return True


class RedisLease(RenewedLease):
    """A held lease: renewed in the background until ``release()`` (``RenewedLease``'s clock).

    Timing (``T`` = ttl, monotonic clock; ``lease_timing``): the key's expiry is reset to ``T``
    every ``T/3``. Each renewal is timed from the moment its command was *sent*, so the key
    lives in Redis at least until ``sent + T``. When renewals fail (Redis unreachable), they
    are retried often; once ``sent + 2T/3`` would be passed before the next attempt could end,
    ``on_lost`` is called: the runner then has ``T/3`` to stop the job before any other server
    can acquire the key. A renewal answered "not your token" (key expired, deleted, taken over,
    Redis restarted empty) calls ``on_lost`` at once; any other error than Redis's stops the
    renewer and calls it too.

    After the loss is declared the renewer keeps extending if Redis answers again, so a slow
    stop is covered whenever it can be; ``release()`` deletes the key only if the token still
    matches (redis-py's compare-and-delete).
    """

    kind = "redis"
    transient = RedisError  # a renewal failing so is retried; anything else ends the renewer

    def __init__(
        self,
        lock: _FencedLock,
        *,
        key: str,
        ttl: float,
        url: str,
        log: FilteringBoundLogger,
        on_lost: Callable[[str], None],
    ) -> None:
        assert lock.fencing_token is not None  # granted
        super().__init__(
            key=key,
            ttl=ttl,
            holder=lock.token,
            fencing_token=lock.fencing_token,
            granted_at=lock.granted_at,
            log=log,
            on_lost=on_lost,
        )
        self._lock = lock
        self.url = url

    @property
    def held(self) -> bool:
        """False as soon as the lease may have been lost: declared lost, released, or not
        renewed for ``2/3 ttl`` by this process's clock (a holder paused past that, by SIGSTOP
        or a C call holding the GIL, sees False at once, before its renewer could say so)."""
        return super().held and time.monotonic() < self.last_renewed + self._timing["lost_after"]

    def _renew(self) -> None:
        try:
            self._lock.extend(self.ttl, replace_ttl=True)
        except _NotOwned:
            holder = self._current_holder()
            raise LeaseGone(
                f"taken over by {holder}" if holder else "gone (expired, deleted, or Redis restarted empty)"
            ) from None

    def _current_holder(self) -> str | None:
        try:
            value = self._lock.redis.call("GET", self.key)
        except RedisError:
            return None
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

    def _give_back(self) -> None:
        try:
            self._lock.release()
        except _NotOwned:
            raise LeaseGone("the lease was no longer ours") from None

    def _close(self) -> None:
        park(self._lock.redis)  # kept open for the run's fleet record: one connection per run


def _client(url: str, op_timeout: float) -> Connection:
    try:
        return Connection(parse_redis_url(url), op_timeout)  # one connection, no hidden retries
    except ValueError as exc:
        raise ConfigError(_redact(f"lock redis URL {url}: {exc}")) from None


def _holder_identity(run_id: str | None) -> str:
    return f"{os.uname().nodename}:{os.getpid()}:{run_id or os.urandom(8).hex()}"


def acquire_redis_lock(
    job: LeaseJob, spec: Lock, log: FilteringBoundLogger, on_lost: Callable[[str], None], *, run_id: str | None = None
) -> RedisLease:
    """Take the job's Redis lease or raise ``LockBusy`` / ``RedisUnavailable`` / ``ConfigError``.

    ``on_lost(reason)`` is called (from the renewer thread, at most once) when the lease can no
    longer be trusted; the runner stops the job then. The key's value, ``host:pid:run_id``,
    names the holder (``run_id`` is random when not given).
    """
    url = redis_url(spec)
    try:
        password = parse_redis_url(url).password
    except ValueError:
        password = None
    if password:
        default_redactor().add(password)
    shown = _redact(url)
    ttl = float(spec.ttl_seconds)
    timing = lease_timing(ttl)
    name = getattr(job, "lock_name", None) or spec.name or job.name
    prefix = key_prefix()  # root's keys, or the job's user's own namespace (an ACL's pattern)
    key = f"{prefix}lock:{name}"
    client = _client(url, timing["op_timeout"])
    wait = spec.wait_seconds or 0.0
    firing = None
    schedule = getattr(job, "schedule", None)
    if schedule:
        from jobrunner.locks.firing import current_firing, firing_key

        now_firing = current_firing(schedule)
        if now_firing is not None:
            firing = (firing_key(f"{prefix}firing:", name, now_firing), now_firing.ttl_ms)
    lock = _FencedLock(
        client,
        key,
        f"{prefix}fence:{name}",
        timeout=ttl,
        firing=firing,
        sleep=0.1,
        blocking=wait > 0,
        blocking_timeout=wait or None,
    )
    if wait:
        log.info("lock.waiting", key=key, wait_s=wait)
    try:
        got = lock.acquire(token=_holder_identity(run_id))
    except _FiringRan:
        raise _firing_ran(firing, client) from None
    except RespError as exc:
        client.close()
        if any(word in str(exc) for word in ("WRONGPASS", "NOAUTH", "invalid password", "invalid username", "NOPERM")):
            raise ConfigError(_redact(f"Redis at {shown} refused our credentials: {exc}")) from None
        raise RedisUnavailable(_redact(f"Redis at {shown} is unusable: {exc}")) from None
    except OSError as exc:
        client.close()
        raise RedisUnavailable(_redact(f"Redis at {shown} is unreachable: {type(exc).__name__}: {exc}")) from None
    except BaseException:
        client.close()
        raise
    if not got:
        raise _busy(lock, key, wait, client, ttl)
    lease = RedisLease(lock, key=key, ttl=ttl, url=shown, log=log, on_lost=on_lost)
    log.info(
        "lock.acquired",
        key=key,
        ttl_s=ttl,
        fencing_token=lease.fencing_token,
        holder=lease.holder,
        redis=shown,
    )
    warn_short_ttl(job, key, ttl, log)
    return lease.start()


def _firing_ran(firing: tuple[str, int] | None, client: Any) -> LockBusy:
    assert firing is not None
    key = firing[0]
    try:
        holder = client.call("GET", key)
        who = holder.decode("utf-8", "replace") if isinstance(holder, bytes) else "another run"
    except RedisError:
        who = "another run"
    finally:
        park(client)  # for the skip's fleet record
    from jobrunner.locks.firing import ran_already

    return LockBusy(_redact(ran_already(key, who)), key)


class ForeignLease(LockBusy):
    """The lease's key holds what no run of jobrunner sets: a value not of the form
    ``host:pid:run``, or a TTL longer than the job's (or none): another writer's, or stale."""

    def __init__(self, message: str, path: str = "", holder: str = "") -> None:
        super().__init__(message, path)
        self.holder = holder


_HOLDER = re.compile(r"[A-Za-z0-9_.-]{1,253}:[0-9]{1,10}:[A-Za-z0-9-]{1,64}")


def _busy(lock: _FencedLock, key: str, wait: float, client: Any, ttl: float | None = None) -> LockBusy:
    waited = f" after waiting {wait:g}s" if wait else ""
    try:
        if lock.refusal:
            return LockBusy(f"Redis lease {key}: {lock.refusal}{waited}", key)
        holder, pttl = client.pipeline([("GET", key), ("PTTL", key)])
        if isinstance(holder, RespError) or isinstance(pttl, RespError):
            raise holder if isinstance(holder, RespError) else pttl
        who = holder.decode("utf-8", "replace") if isinstance(holder, bytes) else "another run"
        shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in " ".join(who.split())[:120])
        left = f", expires in {pttl / 1000:.1f}s unless renewed" if pttl and pttl > 0 else ""
        if ttl is not None and isinstance(holder, bytes):
            why = None
            if not _HOLDER.fullmatch(who):
                why = "a value no jobrunner run sets"
            elif pttl is not None and (pttl < 0 or pttl > ttl * 1000 + 1000):
                why = "no expiry" if pttl < 0 else f"a TTL of {pttl / 1000:.0f}s, longer than the job's {ttl:g}s"
            if why:
                return ForeignLease(
                    _redact(f"Redis lease {key} is held by a foreign or stale holder {shown!r} ({why}){waited}"),
                    key,
                    holder=shown,
                )
        return LockBusy(_redact(f"Redis lease {key} is held by {shown}{left}{waited}"), key)
    except RedisError:
        return LockBusy(f"Redis lease {key} is held by another run{waited}", key)
    finally:
        park(client)  # for the skip's fleet record
