"""An etcd lease for fleets: one server of many runs a singleton job (``Lock(url="etcd://host:2379")``).

Spoken over etcd 3.4's JSON gateway with ``http.client`` (no client library: ``etcd3`` has been
unmaintained since 2020 and pulls in grpc); keys and values are base64:

- acquire: ``/v3/kv/range`` (held? by whom), ``/v3/lease/grant`` (a lease of ``ceil(ttl)``
  seconds), ``/v3/kv/txn`` putting ``jobrunner/lock/<name>`` = ``host:pid:run_id`` on that lease
  only if the key's ``create_revision`` is 0 (absent); a lost race revokes the lease;
- once per firing (``jobrunner.locks.firing``): a run started by its timer reads
  ``jobrunner/firing/<name>:<elapse>`` with the key (claimed already: skip, naming who ran
  it), grants a second lease of ``Firing.ttl_ms`` (never kept alive) and puts that key on it in
  the same transaction, compared absent too; a failed transaction revokes both leases. A run by
  hand claims nothing;
- the fencing token is the key's create revision: etcd's revision grows with every write of the
  cluster and is persisted and replicated, so it survives restarts and failovers (a Redis
  counter needs its clock trick for that);
- renew: ``/v3/lease/keepalive`` every ttl/3, then ``/v3/kv/range`` checks the key is still ours
  (same create revision); a lease etcd no longer knows, or a key deleted or re-created, is
  lost at once; an etcd that does not answer is retried until 2/3 ttl, then the lease is
  declared lost, leaving ttl/3 to stop the job (``jobrunner.locks.abc.RenewedLease``);
- release: ``/v3/lease/revoke``, which deletes the key with it (only ours: it is on our lease).

Users (etcd's auth, the counterpart of the Redis ACLs, docs/fleets.md): credentials come from
the URL (``etcd://user:password@host:port``, percent-decoded) or, better for the password, from
``$JOBRUNNER_ETCD_USER`` / ``$JOBRUNNER_ETCD_PASSWORD`` (the job's env files); a URL naming only
a user takes the password from the environment. ``/v3/auth/authenticate`` gives a token, sent as
``Authorization`` on every call; a token etcd no longer knows (``--auth-token-ttl`` passed,
etcd restarted) is replaced once and the call retried once. A non-root job's keys live under
``jobrunner/u/<user>/`` (its lease and firing keys), root's under ``jobrunner/``, so a role
allowed ``jobrunner/u/www-data/`` alone cannot touch root's. Wrong credentials, or a role that
may not write the job's keys, are a ``ConfigError`` (exit 78), the password never shown.

Unlike Redis, etcd keeps leases across its restarts (and extends them when a leader is
elected), so no restart guard is needed. Not supported (a ``ConfigError``, exit 78): TLS,
several endpoints. Imported only for jobs that declare an ``etcd://`` lease.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import pwd
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from jobrunner.errors import ConfigError, LockBusy
from jobrunner.locks.abc import (
    LeaseGone,
    LeaseUnavailable,
    RenewedLease,
    lease_timing,
    redact_line,
    shown_url,
    warn_short_ttl,
)
from jobrunner.locks.firing import current_firing, firing_key, ran_already
from jobrunner.redact import default_redactor

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from jobrunner.declaration import Lock
    from jobrunner.locks.abc import LeaseJob

__all__ = ["EtcdLease", "acquire_etcd_lease", "etcd_credentials", "etcd_endpoint", "key_prefix"]

KEY_PREFIX = "jobrunner/lock/"  # root's; another user's: jobrunner/u/<user>/lock/ (key_prefix)
FIRING_KEY_PREFIX = "jobrunner/firing/"  # + <lock name>:<elapse> (jobrunner.locks.firing)
USER_ENV, PASSWORD_ENV = "JOBRUNNER_ETCD_USER", "JOBRUNNER_ETCD_PASSWORD"
DEFAULT_PORT = 2379
ACQUIRE_TIMEOUT = 2.0  # each call while acquiring (no lease is at stake yet)
POLL = 0.1  # between attempts while waiting for a held lease


class EtcdError(Exception):
    """etcd answered with an error (``code`` is the gRPC status: 5 = not found, 7 = permission
    denied, 16 = unauthenticated)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class EtcdAuthError(EtcdError):
    """etcd refused our credentials (a wrong user or password, or auth off and a user given)."""


def key_prefix(uid: int | None = None) -> str:
    """Where a run's etcd keys live: ``jobrunner/`` for root's runs, ``jobrunner/u/<user>/`` for
    another user's (its lease and firing keys), so an etcd role can give a non-root job's user
    its own prefix and nothing of root's (docs/fleets.md)."""
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return "jobrunner/"
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return f"jobrunner/u/{name}/"


def etcd_endpoint(url: str) -> tuple[str, int]:
    """``etcd://[user[:password]@]host[:port][/]`` → ``(host, port)``; anything else is a
    ``ConfigError`` (the same rules as ``jobrunner.declaration._check_etcd``, a layer up)."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ConfigError(redact_line(f"lock URL {url}: {exc}")) from None
    if parts.scheme.lower() != "etcd":
        raise ConfigError(f"lock URL {redact_line(url)}: not an etcd:// URL")
    if parts.password is not None and not parts.username:
        raise ConfigError("lock URL: an etcd password needs its user (etcd://user:password@host:port)")
    if not parts.hostname:
        raise ConfigError(redact_line(f"lock URL {url}: no host (use etcd://host:port)"))
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(redact_line(f"lock URL {url}: use etcd://host:port, without a path or query"))
    return parts.hostname, port


def etcd_credentials(url: str, env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(user, password)`` to authenticate with, or ``None`` (etcd without auth): the URL's
    (percent-decoded), else ``$JOBRUNNER_ETCD_USER`` / ``$JOBRUNNER_ETCD_PASSWORD``; a URL
    naming only its user takes the password from the environment. The password is registered
    with the redactor. A user without a password, or the reverse, is a ``ConfigError``."""
    env = os.environ if env is None else env
    parts = urlsplit(url)
    user = unquote(parts.username) if parts.username else env.get(USER_ENV, "").strip()
    password = unquote(parts.password) if parts.password else env.get(PASSWORD_ENV, "")
    if password:
        default_redactor().add(password)
    if not user and not password:
        return None
    if not user:
        raise ConfigError(f"etcd: {PASSWORD_ENV} is set but no user: set {USER_ENV} too")
    if not password:
        raise ConfigError(f"etcd user {user!r} has no password: set {PASSWORD_ENV} in the job's env file")
    return user, password


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode("utf-8", "replace")


class _Gateway:
    """One HTTP/1.1 connection to etcd's JSON gateway, re-opened after any failure; with
    ``auth`` (user, password), every call carries a token, renewed once when etcd forgot it."""

    def __init__(self, host: str, port: int, timeout: float, auth: tuple[str, str] | None = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.auth = auth
        self.token: str | None = None
        self._conn: http.client.HTTPConnection | None = None

    def twin(self) -> _Gateway:
        """Another connection to the same etcd, as the same user (its token shared)."""
        other = _Gateway(self.host, self.port, self.timeout, self.auth)
        other.token = self.token
        return other

    def authenticate(self, timeout: float | None = None) -> None:
        assert self.auth is not None
        user, password = self.auth
        try:
            answer = self._post("/v3/auth/authenticate", {"name": user, "password": password}, timeout, None)
        except EtcdError as exc:
            raise EtcdAuthError(f"etcd refused user {user!r}: {exc}", exc.code) from None
        if not answer.get("token"):
            raise EtcdAuthError(f"etcd gave user {user!r} no token (is auth enabled?)", 0)
        self.token = str(answer["token"])

    def call(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        if self.auth is None:
            return self._post(path, body, timeout, None)
        if self.token is None:
            self.authenticate(timeout)
        try:
            return self._post(path, body, timeout, self.token)
        except EtcdError as exc:
            if "invalid auth token" not in str(exc):
                raise
        self.authenticate(timeout)  # expired (--auth-token-ttl) or etcd restarted: once more
        return self._post(path, body, timeout, self.token)

    def _post(self, path: str, body: dict[str, Any], timeout: float | None, token: str | None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = token
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)
        conn = self._conn
        if conn.sock is not None:
            conn.sock.settimeout(timeout or self.timeout)
        else:
            conn.timeout = timeout or self.timeout
        try:
            conn.request("POST", path, json.dumps(body), headers)
            response = conn.getresponse()
            raw = response.read()
        except BaseException:
            self.close()
            raise
        try:
            # keepalive is a stream: one JSON message a line, {"result": ...} or {"error": ...}
            answer = json.loads(raw.splitlines()[0] if raw.strip() else b"{}")
        except ValueError:
            self.close()
            raise EtcdError(f"{path}: HTTP {response.status}, not JSON", 0) from None
        if isinstance(answer.get("error"), dict):
            answer = answer["error"]
        if "error" in answer or response.status != 200:
            raise EtcdError(
                str(answer.get("message") or answer.get("error") or f"HTTP {response.status}"),
                int(answer.get("code", 0)),
            )
        result = answer.get("result", answer)
        return result if isinstance(result, dict) else {}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class EtcdLease(RenewedLease):
    """A held etcd lease: ``lease_id`` kept alive, the key checked, until ``release()``."""

    kind = "etcd"

    def __init__(self, gateway: _Gateway, lease_id: str, url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._gateway = gateway
        self.lease_id = lease_id
        self.url = url

    def _renew(self) -> None:
        answer = self._gateway.call("/v3/lease/keepalive", {"ID": self.lease_id})
        if int(answer.get("TTL", 0)) <= 0:
            raise LeaseGone("gone (expired or revoked in etcd)")
        kvs = self._gateway.call("/v3/kv/range", {"key": _b64(self.key)}).get("kvs") or []
        if not kvs:
            raise LeaseGone("gone (its key was deleted)")
        if int(kvs[0].get("create_revision", 0)) != self.fencing_token or kvs[0].get("lease") != self.lease_id:
            raise LeaseGone(f"taken over by {_unb64(kvs[0].get('value', ''))}")

    def _give_back(self) -> None:
        gateway = self._gateway
        if self._thread.is_alive():  # the renewer is still in a call: never share its connection
            gateway = gateway.twin()
        try:
            gateway.call("/v3/lease/revoke", {"ID": self.lease_id})
        except EtcdError as exc:
            if exc.code == 5:
                raise LeaseGone(str(exc)) from None
            raise
        finally:
            if gateway is not self._gateway:
                gateway.close()

    def _close(self) -> None:
        self._gateway.close()


def _holder_identity(run_id: str | None) -> str:
    return f"{os.uname().nodename}:{os.getpid()}:{run_id or os.urandom(8).hex()}"


@dataclass(frozen=True)
class _Refused:
    """An attempt that granted nothing: ``who`` holds the lease, or (``ran``) claimed the firing."""

    who: str
    ran: bool = False


def _look(gateway: _Gateway, key: str, firing: tuple[str, int] | None) -> _Refused | None:
    """One read before any lease is granted: the lease key's holder and, for a timer's run, the
    firing's claimant (a transaction with no compare reads both at one revision)."""
    if firing is None:
        kvs = gateway.call("/v3/kv/range", {"key": _b64(key)}, ACQUIRE_TIMEOUT).get("kvs") or []
        return _Refused(_unb64(kvs[0].get("value", ""))) if kvs else None
    both = gateway.call(
        "/v3/kv/txn",
        {"success": [{"request_range": {"key": _b64(key)}}, {"request_range": {"key": _b64(firing[0])}}]},
        ACQUIRE_TIMEOUT,
    )
    return _refusal(both)


def _refusal(txn: dict[str, Any]) -> _Refused | None:
    """Who refused us, from a transaction's two ranges (lease key, firing key): the firing's
    claimant first (as Redis: a claimed firing grants nothing, held or not), then the holder."""
    values = []
    for response in txn.get("responses") or []:
        kvs = response.get("response_range", {}).get("kvs") or [{}]
        values.append(_unb64(kvs[0].get("value", "")) if "key" in kvs[0] else None)
    holder, claimant = (values + [None, None])[:2]
    if claimant is not None:
        return _Refused(claimant or "another run", ran=True)
    if holder is not None:
        return _Refused(holder or "another run")
    return None


def _claim(
    gateway: _Gateway, key: str, ttl: int, holder: str, firing: tuple[str, int] | None
) -> tuple[str, int, float] | _Refused:
    """Grant a lease of ``ttl`` s and put ``key`` on it if absent; for a timer's run, in the same
    transaction, the firing's key (``firing`` = key, ttl ms) on a lease of its own, if both are
    absent. ``(lease id, create revision, sent)`` when granted; else every lease granted here is
    revoked and the refusal says who holds the key or claimed the firing."""
    sent = time.monotonic()
    leases = [str(gateway.call("/v3/lease/grant", {"TTL": ttl}, ACQUIRE_TIMEOUT)["ID"])]
    compare = [{"key": _b64(key), "target": "CREATE", "create_revision": "0"}]
    put = [{"request_put": {"key": _b64(key), "value": _b64(holder), "lease": leases[0]}}]
    read = [{"request_range": {"key": _b64(key)}}]
    granted = False
    try:
        if firing is not None:
            # no keep-alive: the claim outlives the run and expires on its own (Firing.ttl_ms)
            ttl_s = math.ceil(firing[1] / 1000)
            leases.append(str(gateway.call("/v3/lease/grant", {"TTL": ttl_s}, ACQUIRE_TIMEOUT)["ID"]))
            compare.append({"key": _b64(firing[0]), "target": "CREATE", "create_revision": "0"})
            put.append({"request_put": {"key": _b64(firing[0]), "value": _b64(holder), "lease": leases[1]}})
            read.append({"request_range": {"key": _b64(firing[0])}})
        txn = gateway.call("/v3/kv/txn", {"compare": compare, "success": put, "failure": read}, ACQUIRE_TIMEOUT)
        granted = bool(txn.get("succeeded"))
    finally:
        if not granted:
            for lease_id in leases:
                _revoke_quietly(gateway, lease_id)
    if granted:
        return leases[0], int(txn["header"]["revision"]), sent
    return _refusal(txn) or _Refused("another run")


def _try_once(
    gateway: _Gateway, key: str, ttl: int, holder: str, firing: tuple[str, int] | None = None
) -> tuple[str, int, float] | _Refused:
    """One attempt: ``(lease id, create revision, sent)`` when granted, else who refused it."""
    return _look(gateway, key, firing) or _claim(gateway, key, ttl, holder, firing)


def _revoke_quietly(gateway: _Gateway, lease_id: str) -> None:
    try:
        gateway.call("/v3/lease/revoke", {"ID": lease_id}, ACQUIRE_TIMEOUT)
    except Exception:  # it expires on its own after the ttl
        pass


def _refused_credentials(exc: EtcdError, url: str, auth: tuple[str, str] | None, prefix: str) -> ConfigError | None:
    """The one line for an etcd that refused who we are or what we may write, else ``None``."""
    if isinstance(exc, EtcdAuthError):
        return ConfigError(redact_line(f"etcd at {url} refused our credentials: {exc}"))
    if "user name is empty" in str(exc):
        return ConfigError(
            f"etcd at {url} has auth enabled: set {USER_ENV} and {PASSWORD_ENV} in the job's env file (docs/fleets.md)"
        )
    if exc.code == 7 or "permission denied" in str(exc):
        who = f"etcd user {auth[0]!r}" if auth else "this etcd user"
        return ConfigError(
            redact_line(f"{who} may not write {prefix}: grant its role readwrite on that prefix (docs/fleets.md)")
        )
    return None


def acquire_etcd_lease(
    job: LeaseJob, spec: Lock, log: FilteringBoundLogger, on_lost: Callable[[str], None], *, run_id: str | None = None
) -> EtcdLease:
    """Take the job's etcd lease or raise ``LockBusy`` / ``LeaseUnavailable`` / ``ConfigError``
    (``jobrunner.locks.abc.AcquireLease``)."""
    url = str(spec.url)
    host, port = etcd_endpoint(url)
    auth = etcd_credentials(url)
    url = shown_url(url)  # its password, if any, masked from here on
    ttl = float(spec.ttl_seconds)
    timing = lease_timing(ttl)
    name = getattr(job, "lock_name", None) or spec.name or job.name
    prefix = key_prefix()  # root's keys, or the job's user's own (what an etcd role allows)
    key = f"{prefix}lock/{name}"
    schedule = getattr(job, "schedule", None)
    now_firing = current_firing(schedule) if schedule else None
    firing = None if now_firing is None else (firing_key(f"{prefix}firing/", name, now_firing), now_firing.ttl_ms)
    holder = _holder_identity(run_id)
    gateway = _Gateway(host, port, timing["op_timeout"], auth)
    wait = spec.wait_seconds or 0.0
    if wait:
        log.info("lock.waiting", key=key, wait_s=wait)
    give_up = time.monotonic() + wait
    try:
        while True:
            got = _try_once(gateway, key, math.ceil(ttl), holder, firing)
            if not isinstance(got, _Refused) or got.ran or time.monotonic() >= give_up:
                break
            time.sleep(min(POLL, max(0.0, give_up - time.monotonic())))
    except EtcdError as exc:
        gateway.close()
        refused = _refused_credentials(exc, url, auth, prefix)
        if refused is not None:
            raise refused from None
        raise LeaseUnavailable(redact_line(f"etcd at {url} is unusable: {exc}")) from None
    except (OSError, KeyError, ValueError) as exc:
        gateway.close()
        raise LeaseUnavailable(redact_line(f"etcd at {url} is unreachable: {type(exc).__name__}: {exc}")) from None
    except BaseException:
        gateway.close()
        raise
    if isinstance(got, _Refused):
        gateway.close()
        if got.ran:
            assert firing is not None
            raise LockBusy(redact_line(ran_already(firing[0], got.who)), firing[0])
        waited = f" after waiting {wait:g}s" if wait else ""
        raise LockBusy(redact_line(f"etcd lease {key} is held by {got.who}{waited}"), key)
    lease_id, revision, sent = got
    lease = EtcdLease(
        gateway,
        lease_id,
        url,
        key=key,
        ttl=ttl,
        holder=holder,
        fencing_token=revision,
        granted_at=sent,
        log=log,
        on_lost=on_lost,
    )
    log.info("lock.acquired", key=key, ttl_s=ttl, fencing_token=revision, holder=holder, etcd=url)
    warn_short_ttl(job, key, ttl, log)
    lease.start()
    return lease
