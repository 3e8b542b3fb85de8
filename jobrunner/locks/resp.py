"""Redis URLs and a small Redis client: one parser for every Redis URL jobrunner reads.

``parse_redis_url`` reads a URL by redis-py's own rules (``redis.connection.parse_url``; the
table in ``tests/test_redis_url.py`` holds the two together): ``redis://[[user]:password@]host
[:port][/db][?db=N]``, ``rediss://`` (TLS), ``unix://[[user]:password@]/path/to.sock[?db=N]``;
``?db=`` wins over the path; a path that is not a number is no database (db 0); user, password
and host are percent-decoded. Every Redis client of jobrunner is built from its result: the
run's own publisher and lease (``call``, Redis's protocol over a plain socket: no redis-py
import on a timer tick) and redis-py's clients for the views (``redis_client``).

``call`` sends its commands after ``AUTH`` and ``SELECT`` as one write and reads every reply:
one connection and one round trip per use.

One connection per run: a run's lease, done with its connection (released, or found busy),
``park``s it; the run's fleet record then ``take``s it (same URL, same process) instead of
opening another, so a firing costs Redis one connection and one handshake per host.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

__all__ = [
    "Connection",
    "RedisURL",
    "RespError",
    "call",
    "key_prefix",
    "park",
    "parse_redis_url",
    "redis_client",
    "take",
]

SCHEMES = ("redis://", "rediss://", "unix://")


class RespError(RuntimeError):
    """Redis answered a command with an error reply (``-ERR …``, ``-NOPERM …``, ``-WRONGPASS …``)."""


@dataclass(frozen=True)
class RedisURL:
    """A parsed Redis URL: where to connect and as whom."""

    scheme: str
    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # unix://
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    query: tuple[tuple[str, str], ...] = ()  # other query arguments, for redis-py (rediss://)

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    def handshake(self) -> list[tuple[str, ...]]:
        """The commands a connection starts with: ``AUTH`` (when there is a password), ``SELECT``."""
        out: list[tuple[str, ...]] = []
        if self.password is not None:
            out.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            out.append(("SELECT", str(self.db)))
        return out


def parse_redis_url(url: str) -> RedisURL:
    """``url`` read by redis-py's rules; ``ValueError`` (no secret in it) when it is not one."""
    if not isinstance(url, str) or not url.lower().startswith(SCHEMES):
        raise ValueError("a Redis URL starts with redis://, rediss:// or unix://")
    parts = urlparse(url)
    db: int | None = None
    query: list[tuple[str, str]] = []
    for name, values in parse_qs(parts.query).items():
        if not values:
            continue
        if name == "db":
            try:
                db = int(values[0])
            except ValueError:
                raise ValueError("Invalid value for 'db' in connection URL.") from None
        else:
            query.append((name, values[0]))
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port of a Redis URL is a number from 0 to 65535") from None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    scheme = parts.scheme.lower()
    if scheme == "unix":
        return RedisURL(
            scheme,
            path=unquote(parts.path) if parts.path else None,
            db=db or 0,
            username=username,
            password=password,
            query=tuple(query),
        )
    if db is None and parts.path:
        try:
            db = int(unquote(parts.path).replace("/", ""))
        except ValueError:
            db = None
    return RedisURL(
        scheme,
        host=unquote(parts.hostname) if parts.hostname else "localhost",
        port=port if port is not None else 6379,
        db=db or 0,
        username=username,
        password=password,
        query=tuple(query),
    )


def key_prefix(uid: int | None = None) -> str:
    """Where a run's keys live: ``jobrunner:`` for root's runs, ``jobrunner:u:<user>:`` for
    another user's (its lease, fence, firings and fleet records), so a Redis ACL can give a
    non-root job's user its own namespace and nothing of root's (docs/fleets.md)."""
    import os
    import pwd

    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return "jobrunner:"
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return f"jobrunner:u:{name}:"


def redis_client(url: str | RedisURL, timeout: float, **options: Any) -> Any:
    """A redis-py client for ``url`` (imports redis): no hidden retries, no health checks, and
    no ``CLIENT SETINFO`` handshake (Redis 7.0 rejects it: two wasted commands a connection)."""
    import inspect

    import redis
    from redis.connection import URL_QUERY_ARGUMENT_PARSERS

    parsed = parse_redis_url(url) if isinstance(url, str) else url
    kwargs: dict[str, Any] = {}
    for name, value in parsed.query:
        parser = URL_QUERY_ARGUMENT_PARSERS.get(name)
        kwargs[name] = parser(value) if parser else value
    kwargs.update(
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=0,
    )
    # no CLIENT SETINFO: ``driver_info=None`` (redis-py ≥ 7), ``lib_name=None`` before
    if "driver_info" in inspect.signature(redis.Redis.__init__).parameters:
        kwargs["driver_info"] = None
    else:
        kwargs.update(lib_name=None, lib_version=None)
    if parsed.scheme == "unix":
        kwargs["unix_socket_path"] = parsed.path
    else:
        kwargs.update(host=parsed.host, port=parsed.port, ssl=parsed.tls)
    kwargs.update(options)
    return redis.Redis(**kwargs)


def _connect(url: RedisURL, timeout: float) -> socket.socket:
    if url.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(url.path or "")
        except BaseException:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((url.host, url.port), timeout=timeout)
    if url.tls:
        import ssl

        try:
            return ssl.create_default_context().wrap_socket(sock, server_hostname=url.host)
        except BaseException:
            sock.close()
            raise
    return sock


def call(url: str | RedisURL, commands: Sequence[Sequence[str | bytes]], *, timeout: float) -> list[Any]:
    """Send ``commands`` (after the URL's ``AUTH``/``SELECT``) in one write on one connection
    and return their replies, in order; an error reply is returned as a ``RespError`` instance
    (the caller decides), but an error in the handshake raises it."""
    parsed = parse_redis_url(url) if isinstance(url, str) else url
    first = parsed.handshake()
    wanted = [*first, *commands]
    sock = _connect(parsed, timeout)
    try:
        sock.settimeout(timeout)
        sock.sendall(b"".join(encode(c) for c in wanted))
        reader = sock.makefile("rb")
        replies = [_reply(reader) for _ in wanted]
    finally:
        sock.close()
    for reply in replies[: len(first)]:
        if isinstance(reply, RespError):
            raise reply
    return replies[len(first) :]


def encode(command: Sequence[str | bytes]) -> bytes:
    out = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
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
        return RespError(f"Redis said: {rest.decode(errors='replace')}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = reader.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("the connection closed mid-reply")
        return data[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_reply(reader) for _ in range(count)]
    raise ConnectionError(f"not a Redis reply: {line[:40]!r}")


class Connection:
    """One lasting connection (the lease's: acquire, renewals, release), opened on first use
    with the URL's handshake and dropped after any error (the next call reconnects). Calls
    from several threads take turns."""

    def __init__(self, url: str | RedisURL, timeout: float) -> None:
        import threading

        self.url = parse_redis_url(url) if isinstance(url, str) else url
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: Any = None
        self._turn = threading.Lock()

    def call(self, *command: str | bytes) -> Any:
        """One command's reply; an error reply raises ``RespError``."""
        reply = self.pipeline([command])[0]
        if isinstance(reply, RespError):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[Sequence[str | bytes]]) -> list[Any]:
        """The replies of ``commands`` sent in one write (error replies as ``RespError`` values)."""
        with self._turn:
            try:
                if self._sock is None:
                    self._open()
                assert self._sock is not None
                self._sock.sendall(b"".join(encode(c) for c in commands))
                return [_reply(self._reader) for _ in commands]
            except BaseException:
                self._close()
                raise

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def set_timeout(self, timeout: float) -> None:
        """Every later call's socket timeout."""
        with self._turn:
            self.timeout = timeout
            if self._sock is not None:
                self._sock.settimeout(timeout)

    def _open(self) -> None:
        sock = _connect(self.url, self.timeout)
        sock.settimeout(self.timeout)
        self._sock, self._reader = sock, sock.makefile("rb")
        first = self.url.handshake()
        if first:
            sock.sendall(b"".join(encode(c) for c in first))
            for reply in [_reply(self._reader) for _ in first]:
                if isinstance(reply, RespError):
                    raise reply

    def _close(self) -> None:
        sock, self._sock, self._reader = self._sock, None, None
        if sock is not None:
            try:
                sock.close()
            except OSError:  # pragma: no cover - closing never matters
                pass

    def close(self) -> None:
        with self._turn:
            self._close()


# The connection a run's lease left open for the run's fleet record (``park``/``take``).
_parked: tuple[int, Connection] | None = None
_parking = threading.Lock()


def park(conn: Connection) -> None:
    """Keep ``conn`` (done with: no thread uses it any more) open for this process's next
    ``take`` of its URL, instead of closing it; a connection parked before is closed. A broken
    connection (dropped after an error) is not kept."""
    global _parked
    with _parking:
        old, _parked = _parked, ((os.getpid(), conn) if conn.connected else None)
    if old is not None and old[1] is not conn:
        old[1].close()


def take(url: str | RedisURL) -> Connection | None:
    """The connection parked for ``url`` (same server, database and user) by this process,
    handed over (the caller closes it), or None."""
    global _parked
    parsed = parse_redis_url(url) if isinstance(url, str) else url
    with _parking:
        found, _parked = _parked, None
    if found is None:
        return None
    pid, conn = found
    if pid == os.getpid() and conn.url == parsed and conn.connected:
        return conn
    if pid == os.getpid():
        conn.close()  # another URL's: nobody will take it now
    return None
