"""The lease backend interface: how a fleet's singleton job acquires, renews, loses and releases
a lease, whatever store keeps it (Redis, etcd).

- ``BACKENDS``: the registry, a URL scheme to ``"module:factory"``; a backend's module is
  imported only when a job declares its scheme, so a timer tick never imports one it does not
  use (``acquire_lease``).
- A factory is an ``AcquireLease``: ``factory(job, spec, log, on_lost, run_id=)`` returns a
  held ``Lease`` or raises ``LockBusy`` (held elsewhere: exit 75), ``LeaseUnavailable`` (the
  store cannot be reached at start: ``Lock(unavailable="local")`` falls back to the file lock)
  or ``ConfigError`` (a bad URL, refused credentials: exit 78).
- A ``Lease`` has a ``fencing_token`` (a number larger than every earlier grant of that key),
  is renewed in the background, calls ``on_lost(reason)`` once when it can no longer be
  trusted (the runner then stops the job: ``LockLost``, exit 1) and is released at the end.
- ``lease_timing`` and ``RenewedLease``: the renew/lost clock all backends keep (a renewal every
  ttl/3; lost at 2/3 ttl without one, leaving ttl/3 to stop the job), for a backend to reuse.

``jobrunner.declaration`` names the schemes in ``LEASE_SCHEMES`` (the public surface does not
import this layer); ``tests/test_etcdlock.py`` checks the two lists agree.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable
from urllib.parse import urlsplit

from jobrunner.errors import ConfigError, JobrunnerError
from jobrunner.redact import default_redactor

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from jobrunner.declaration import Lock

__all__ = [
    "BACKENDS",
    "AcquireLease",
    "Lease",
    "LeaseGone",
    "LeaseJob",
    "LeaseUnavailable",
    "RenewedLease",
    "acquire_lease",
    "backend",
    "lease_timing",
    "scheme_of",
]

BACKENDS: dict[str, str] = {
    "redis": "jobrunner.locks.redis:acquire_redis_lock",
    "rediss": "jobrunner.locks.redis:acquire_redis_lock",
    "unix": "jobrunner.locks.redis:acquire_redis_lock",
    "etcd": "jobrunner.locks.etcd:acquire_etcd_lease",
}
"""URL scheme → ``"module:factory"`` (imported on first use)."""


class LeaseUnavailable(JobrunnerError):
    """The lease's store could not be reached when the run started (``Lock(unavailable="local")``
    falls back to the file lock)."""


class LeaseGone(Exception):
    """A renewal found the lease no longer ours (expired, deleted, taken over): lost at once."""


@runtime_checkable
class Lease(Protocol):
    """A held lease (it is also a ``jobrunner.types.HeldLock``)."""

    @property
    def name(self) -> str:
        """The lease's key in its store."""
        ...

    @property
    def held(self) -> bool: ...

    @property
    def fencing_token(self) -> int | None: ...

    @property
    def lost(self) -> str | None:
        """Why the lease was lost, or ``None`` while it is trusted."""
        ...

    def release(self) -> None:
        """Stop renewing and give the lease back if it is still ours; never raises; idempotent."""
        ...


class LeaseJob(Protocol):
    """What a lease reads of its job: the ``name`` (the key's default). A declared ``Job`` is
    one; so are the job-likes the lease tests and ``bench/_harness.py`` hand it, which is why this
    is a protocol and not ``Job`` (locks are also below the declaration). What a job may lack is
    read with ``getattr`` and a default: ``lock_name``, ``schedule`` (a fleet singleton's firing),
    ``kill_grace`` (``warn_short_ttl``)."""

    @property
    def name(self) -> str: ...


class AcquireLease(Protocol):
    def __call__(
        self,
        job: LeaseJob,
        spec: Lock,
        log: FilteringBoundLogger,
        on_lost: Callable[[str], None],
        *,
        run_id: str | None = None,
    ) -> Lease: ...


def scheme_of(url: str) -> str:
    """The URL's scheme, lower-cased (``""`` when it has none)."""
    return url.partition("://")[0].lower() if "://" in url else ""


def backend(scheme: str) -> AcquireLease:
    """The factory registered for ``scheme``, its module imported now (``ConfigError`` if none)."""
    target = BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in BACKENDS)
        raise ConfigError(f"lock URL scheme {scheme or '(none)'!r}: use one of {known}")
    module, _, factory = target.partition(":")
    found: AcquireLease = getattr(importlib.import_module(module), factory)
    return found


def acquire_lease(
    job: LeaseJob, spec: Lock, log: FilteringBoundLogger, on_lost: Callable[[str], None], *, run_id: str | None = None
) -> Lease:
    """Take the lease ``spec`` (a ``Lock`` with ``backend`` set) declares, from its backend."""
    return backend(spec.backend or "")(job, spec, log, on_lost, run_id=run_id)  # no backend: "(none)", as before


def lease_timing(ttl: float) -> dict[str, float]:
    """The lease's clock, all derived from the TTL (seconds); the same as Redis's.

    - ``renew_every``: ttl/3 between successful renewals;
    - ``op_timeout``: connect and socket timeout of each call to the store (ttl/10, 0.1–2 s);
    - ``retry_every``: between failing renewals;
    - ``lost_after``: 2/3 ttl after the start of the last successful renewal (or of the
      grant), minus one attempt's worst case: past that the lease is declared lost;
    - ``stop_budget``: what remains (≥ ttl/3) to stop the job before the lease can expire.
    """
    op = min(2.0, max(0.1, ttl / 10))
    return {
        "renew_every": ttl / 3,
        "op_timeout": op,
        "retry_every": max(op, min(1.0, ttl / 10)),
        "lost_after": ttl * 2 / 3,
        "stop_budget": ttl / 3,
    }


def warn_short_ttl(job: LeaseJob, key: str, ttl: float, log: FilteringBoundLogger) -> None:
    """``lock.ttl_short`` when the job's ``kill_grace`` does not fit in what a lost lease
    leaves to stop it (``stop_budget``, ttl/3)."""
    kill_grace = float(getattr(job, "kill_grace", 0) or 0)
    if kill_grace >= lease_timing(ttl)["stop_budget"]:
        log.warning(
            "lock.ttl_short",
            key=key,
            ttl_s=ttl,
            kill_grace_s=kill_grace,
            hint="a lost lease leaves ttl/3 to stop the job: make ttl at least 3 × (kill_grace + cleanup time)",
        )


def redact_line(text: str) -> str:
    return " ".join(default_redactor().redact(text).split())


def shown_url(url: str) -> str:
    """The URL fit for a log line: its password (if any) registered with the redactor, masked."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        default_redactor().add(password)
    return redact_line(url)


class RenewedLease:
    """A held lease renewed by a thread until ``release()``: the clock of ``lease_timing``.

    A backend subclasses it with ``_renew()`` (one renewal: returns when the store confirmed
    the lease is still ours for another ttl; raises ``LeaseGone`` when it is not, or any
    ``Exception`` when the store could not answer) and ``_give_back()`` (delete the lease if
    still ours; raises ``LeaseGone`` when it no longer was). Each renewal is timed from when it
    was *sent*, so the lease lives in the store at least until ``sent + ttl``; after failures,
    ``on_lost`` is called once ``sent + 2 ttl/3`` would pass before the next attempt could end,
    leaving ``ttl/3`` to stop the job. After the loss the renewer keeps renewing if the store
    answers again, so a slow stop is covered whenever it can be.
    """

    kind = "lease"
    # What a failed renewal may raise and still be retried; anything else ends the renewer
    # (the lease is then declared lost). A backend narrows it to its store's errors.
    transient: type[Exception] | tuple[type[Exception], ...] = Exception

    def __init__(
        self,
        *,
        key: str,
        ttl: float,
        holder: str,
        fencing_token: int,
        granted_at: float,
        log: FilteringBoundLogger,
        on_lost: Callable[[str], None],
    ) -> None:
        self.key = key
        self.ttl = ttl
        self.holder = holder
        self._fencing_token = fencing_token
        self._log = log
        self._on_lost = on_lost
        self._timing = lease_timing(ttl)
        self.acquired_at = granted_at
        self.last_renewed = granted_at  # when the last successful renewal was *sent*
        self._lost: str | None = None
        self.renewals = 0
        self._stop = threading.Event()
        self._released = False
        self._thread = threading.Thread(target=self._renew_loop, name="jobrunner-lease", daemon=True)

    @property
    def name(self) -> str:
        return self.key

    @property
    def fencing_token(self) -> int:
        return self._fencing_token

    @property
    def lost(self) -> str | None:
        return self._lost

    @property
    def held(self) -> bool:
        return not self._stop.is_set() and self._lost is None

    def start(self) -> Self:
        self._thread.start()
        return self

    def _renew(self) -> None:  # pragma: no cover - every backend overrides it
        raise NotImplementedError

    def _give_back(self) -> None:  # pragma: no cover - every backend overrides it
        raise NotImplementedError

    def _close(self) -> None:
        """Let go of connections (after release)."""

    def _declare_lost(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
            try:
                self._on_lost(reason)
            except Exception as exc:  # pragma: no cover - the runner's callback only sets a flag and signals
                self._log.error(
                    "lock.lost_callback_failed", key=self.key, error=redact_line(f"{type(exc).__name__}: {exc}")
                )

    def _renew_loop(self) -> None:
        try:
            self._renew_until_stopped()
        except Exception as exc:  # a renewer that died would let the lease expire under a running job
            self._declare_lost(redact_line(f"lease {self.key} renewer failed: {type(exc).__name__}: {exc}"))

    def _renew_until_stopped(self) -> None:
        t = self._timing
        attempt_worst = 2 * t["op_timeout"]
        failing_since: float | None = None
        while True:
            now = time.monotonic()
            due = self.last_renewed + t["renew_every"] if failing_since is None else now + t["retry_every"]
            lost_at = self.last_renewed + t["lost_after"]
            if self._lost is None and failing_since is not None:
                due = min(due, lost_at - attempt_worst)
            if self._stop.wait(max(0.0, due - now)):
                return
            if self._lost is None and time.monotonic() + attempt_worst >= lost_at:
                self._declare_lost(
                    f"lease {self.key} not renewed for {time.monotonic() - self.last_renewed:.1f}s "
                    f"(ttl {self.ttl:g}s): stopping before it can expire"
                )
            sent = time.monotonic()
            try:
                self._renew()
            except LeaseGone as gone:
                self._declare_lost(f"lease {self.key} {gone}")
                self._stop.set()
                return
            except self.transient as exc:
                failing_since = failing_since or sent
                left = self.last_renewed + self.ttl - time.monotonic()
                self._log.warning(
                    "lock.renew_failed",
                    key=self.key,
                    error=redact_line(f"{type(exc).__name__}: {exc}"),
                    expires_in_s=round(max(left, 0.0), 2),
                    lost=self._lost is not None or None,
                )
                continue
            self.last_renewed = sent
            self.renewals += 1
            if failing_since is not None:
                self._log.info("lock.renewed", key=self.key, after_failing_s=round(sent - failing_since, 2))
                failing_since = None
            else:
                self._log.debug("lock.renewed", key=self.key, ttl_s=self.ttl)

    def release(self) -> None:
        """Stop renewing and give the lease back if it is still ours. Never raises; idempotent."""
        if self._released:
            return
        self._released = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(2 * self._timing["op_timeout"] + 1.0)
        held_s = round(time.monotonic() - self.acquired_at, 3)
        try:
            self._give_back()
        except LeaseGone:
            self._log.warning("lock.release_failed", key=self.key, error="the lease was no longer ours", held_s=held_s)
        except Exception as exc:  # the store is gone: the lease expires on its own after the ttl
            self._log.warning(
                "lock.release_failed",
                key=self.key,
                error=redact_line(f"{type(exc).__name__}: {exc}"),
                expires_in_s=round(max(self.last_renewed + self.ttl - time.monotonic(), 0.0), 2),
            )
        else:
            self._log.info("lock.released", key=self.key, held_s=held_s, renewals=self.renewals)
        finally:
            try:
                self._close()
            except Exception:  # pragma: no cover - closing never matters for the outcome
                pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
