"""Restart PHP-FPM every Sunday at 05:00, then prove it serves again.

Settings, from the environment or ``/etc/default/php-fpm-restart``:

- ``PHP_FPM_SERVICE``: the unit to restart (default ``php8.2-fpm``)
- ``PHP_FPM_RESTART_COMMAND``: default ``systemctl restart <PHP_FPM_SERVICE>`` (shell-quoted
  words, no shell); e.g. ``systemctl reload php8.2-fpm`` for a graceful reload
- ``PHP_FPM_SOCKET``: the pool's FastCGI socket (default ``/run/php/<PHP_FPM_SERVICE>.sock``)
- ``PHP_FPM_PING_PATH`` / ``PHP_FPM_PING_RESPONSE``: the pool's ``ping.path`` and
  ``ping.response`` (default ``/ping`` and ``pong``). Enable them in the pool
  (``/etc/php/8.2/fpm/pool.d/www.conf``: ``ping.path = /ping``); Debian ships them commented out.
- ``PHP_FPM_CHECK_URL``: check through the web server instead (``http://127.0.0.1/fpm-ping``,
  a location that passes to FPM's ping); any 2xx whose body holds the ping response passes
- ``PHP_FPM_CHECK_TIMEOUT``: how long to keep trying after the restart (default 30 seconds;
  a number of seconds or a span such as ``1min``)

The check is a real request answered by an FPM worker: a FastCGI request for the ping path
straight to the pool's socket (a 60-line client below, no cgi-fcgi needed), or an HTTP GET.
It retries every half second, each attempt bounded by 5 s, until ``PHP_FPM_CHECK_TIMEOUT``;
if FPM still does not answer, the run fails with the last error (the alert fires).
"""

from __future__ import annotations

import http.client
import socket
import struct
import time
import urllib.request

from jobrunner import ConfigError, JobContext, job
from jobrunner.settings import env_span, env_words

_BEGIN, _END, _PARAMS, _STDIN, _STDOUT, _STDERR = 1, 3, 4, 5, 6, 7
_HEADER = struct.Struct(">BBHHBx")  # version, type, request id, content length, padding


def _record(kind: int, content: bytes = b"", request_id: int = 1) -> bytes:
    return _HEADER.pack(1, kind, request_id, len(content), 0) + content


def _pair(name: str, value: str) -> bytes:
    out = b""
    for item in (name.encode(), value.encode()):
        n = len(item)
        out += bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
    return out + name.encode() + value.encode()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("FastCGI connection closed mid-record")
        data += chunk
    return data


def fastcgi_get(sock_path: str, path: str, timeout: float) -> tuple[int, str]:
    """One FastCGI GET of ``path`` on a unix socket: (HTTP status, body)."""
    params = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": path,
        "SCRIPT_FILENAME": path,
        "REQUEST_URI": path,
        "DOCUMENT_URI": path,
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_LENGTH": "0",
    }
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(sock_path)
        body = b"".join(_pair(k, v) for k, v in params.items())
        sock.sendall(
            _record(_BEGIN, struct.pack(">HB5x", 1, 0)) + _record(_PARAMS, body) + _record(_PARAMS) + _record(_STDIN)
        )
        out, err = b"", b""
        while True:
            _, kind, _, length, padding = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
            content = _recv_exact(sock, length + padding)[:length]
            if kind == _STDOUT:
                out += content
            elif kind == _STDERR:
                err += content
            elif kind == _END:
                break
    head, _, text = out.partition(b"\r\n\r\n")
    status = 200
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"status:"):
            status = int(line.split()[1])
    if err and status == 200:
        status = 500
    return status, text.decode(errors="replace") or err.decode(errors="replace")


def http_get(url: str, timeout: float) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # 4xx/5xx raise HTTPError
        return response.status, response.read(65536).decode(errors="replace")


@job(
    schedule="Sun 05:00",
    persistent=False,  # a restart missed while the machine was down has nothing to catch up on
    accuracy="1m",
    lock=True,
    timeout="5m",
    env_files=["-/etc/default/php-fpm-restart"],
    # Runs as root, because PID 1 grants restart/reload to uid 0. That needs no capability and
    # no file-system access: systemctl reaches PID 1 over AF_UNIX (allowed at every level), and
    # the strict sandbox stays as it is (CapabilityBoundingSet= empty, read-only system) - the
    # systemd harness test proves the restart works under it. The one relaxation: the pool's
    # socket is srw-rw---- www-data:www-data, and root without CAP_DAC_OVERRIDE is refused
    # like anyone else, so the service joins the www-data group (instead of regaining the
    # capability) to make its FastCGI check request.
    systemd={"Service": {"SupplementaryGroups": "www-data"}},
    security_threshold=1.5,
)
def php_fpm_restart(ctx: JobContext) -> None:
    """Restart php-fpm, then check that it answers a real FastCGI (or HTTP) request."""
    service = ctx.env.get("PHP_FPM_SERVICE", "php8.2-fpm").strip()
    if not service or "/" in service:
        raise ConfigError(f"PHP_FPM_SERVICE={service!r}: must be a unit name")
    restart = env_words(ctx.env, "PHP_FPM_RESTART_COMMAND") or ["systemctl", "restart", service]
    check_timeout = env_span(ctx.env, "PHP_FPM_CHECK_TIMEOUT", 30)
    url = ctx.env.get("PHP_FPM_CHECK_URL", "").strip()
    sock_path = ctx.env.get("PHP_FPM_SOCKET", "").strip() or f"/run/php/{service}.sock"
    ping = ctx.env.get("PHP_FPM_PING_PATH", "/ping")
    expect = ctx.env.get("PHP_FPM_PING_RESPONSE", "pong")
    target = url or f"unix:{sock_path} {ping}"

    ctx.run(restart)
    if ctx.dry_run:
        return
    started = time.monotonic()
    deadline = started + check_timeout
    attempts, last = 0, ""
    while True:
        attempts += 1
        try:
            if url:
                status, body = http_get(url, min(5.0, max(0.1, deadline - time.monotonic())))
            else:
                status, body = fastcgi_get(sock_path, ping, min(5.0, max(0.1, deadline - time.monotonic())))
            if 200 <= status < 300 and expect in body:
                ctx.log.info(
                    "php_fpm.serving",
                    service=service,
                    check=target,
                    attempts=attempts,
                    seconds=round(time.monotonic() - started, 3),
                )
                return
            last = f"status {status}, body {body.strip()[:80]!r} (expected {expect!r})"
        except (OSError, ValueError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() + 0.5 >= deadline:
            break
        time.sleep(0.5)
    raise RuntimeError(
        f"{service} does not serve after restart: {attempts} checks of {target} failed "
        f"within {check_timeout:g}s; last: {last}"
    )
