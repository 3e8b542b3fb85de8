"""Real receivers for notification tests (HTTP, healthchecks-style pings, SMTP, a black hole),
and tests proving the receivers themselves behave as the notification tests assume."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class HttpReceiver:
    """A threading HTTP server on 127.0.0.1 recording every request (path, query, headers, body).

    ``body_limit`` makes it answer with a ``Ping-Body-Limit`` header, as healthchecks.io does.
    ``status`` is the HTTP status it answers with.
    """

    def __init__(self, body_limit: int | None = None, status: int = 200) -> None:
        self.requests: list[dict[str, Any]] = []
        self.body_limit = body_limit
        self.status = status
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parsed = urllib.parse.urlsplit(self.path)
                entry = {
                    "method": self.command,
                    "path": parsed.path,
                    "query": dict(urllib.parse.parse_qsl(parsed.query)),
                    "headers": dict(self.headers),
                    "body": body,
                    "at": time.monotonic(),
                }
                self.send_response(receiver.status)
                if receiver.body_limit is not None:
                    self.send_header("Ping-Body-Limit", str(receiver.body_limit))
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")
                with receiver.cond:
                    receiver.requests.append(entry)
                    receiver.cond.notify_all()

            do_GET = do_POST = do_HEAD = _record

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, scheme: str = "json", path: str = "/hook") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def json_bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests if r["body"].startswith(b"{")]

    def wait(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < count and time.monotonic() < end:
                self.cond.wait(max(0.0, end - time.monotonic()))
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BlackHole:
    """Listens (the kernel completes TCP handshakes into the backlog) but never accepts or answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def closed_port() -> int:
    """A port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 keeping every message it gets."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Any] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                import email

                receiver.messages.append(email.message_from_bytes(envelope.original_content or envelope.content))
                return "250 OK"

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def url(self) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=jobrunner@example.com&to=ops@example.com"

    def wait(self, count: int, timeout: float = 10.0) -> list[Any]:
        end = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < end:
            time.sleep(0.05)
        return list(self.messages)

    def close(self) -> None:
        self.controller.stop()


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pinger() -> Iterator[HttpReceiver]:
    server = HttpReceiver(body_limit=100)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    try:
        yield hole
    finally:
        hole.close()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    server = SmtpReceiver()
    try:
        yield server
    finally:
        server.close()


def test_http_receiver_records_requests(receiver):
    """The HTTP receiver records path, query and body, and answers 200."""
    request = urllib.request.Request(f"http://127.0.0.1:{receiver.port}/a/b?rid=1", data=b"tail", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    (got,) = receiver.wait(1)
    assert (got["path"], got["query"], got["body"]) == ("/a/b", {"rid": "1"}, b"tail")


def test_black_hole_never_answers(black_hole):
    """The black hole accepts the TCP connection but a read times out."""
    with socket.create_connection(("127.0.0.1", black_hole.port), timeout=2) as sock:
        sock.settimeout(0.3)
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        with pytest.raises(socket.timeout):
            sock.recv(1)
