"""Dead-man's switch: healthchecks.io-style pings, so silence (a run that never happened) alerts too.

The ping URL: ``$JOBRUNNER_PING_URL_<JOB>`` (the job name upper-cased, other characters as
``_``), else ``$JOBRUNNER_PING_URL``, where ``{job}`` stands for the job's unit name (for
``https://hc-ping.com/<ping-key>/{job}`` slugs). Per run: ``<url>/start?rid=<run>`` when it
starts, ``<url>?rid=<run>`` on success, ``<url>/<exit code>?rid=<run>`` otherwise, the last
log lines as the POST body (cut to the server's ``Ping-Body-Limit``, remembered in state).

Pings use urllib (imported only to send) with timeouts inside the notification budget (no apprise, no requests).
A finish ping that cannot be sent is queued in the job's state and replayed, marked late,
at the next run: a network blip must not look like an outage. Stale start pings are dropped.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any

from ..redact import default_redactor

__all__ = ["finish_path", "ping_url", "replay", "send_ping"]

MAX_QUEUE = 20
DEFAULT_BODY_LIMIT = 10_000
_ATTEMPTS = 2


def ping_url(job: Any, env: Mapping[str, str] | None = None) -> str | None:
    """The job's ping base URL, or ``None``; registered with the redactor (it is a secret)."""
    env = os.environ if env is None else env
    own = "JOBRUNNER_PING_URL_" + re.sub(r"[^A-Za-z0-9]", "_", job.name).upper()
    url = (env.get(own) or env.get("JOBRUNNER_PING_URL") or "").strip()
    if not url:
        return None
    url = url.replace("{job}", job.unit).rstrip("/")
    default_redactor().add_env({"PING_URL": url})  # the uuid / ping key in the path is the secret
    return url


def _rid(run_id: str) -> str:
    import uuid

    try:
        return str(uuid.UUID(run_id))  # systemd's INVOCATION_ID (32 hex) as the UUID healthchecks wants
    except ValueError:
        return run_id


def finish_path(outcome: str, exit_code: int) -> str:
    return "" if outcome == "success" else f"/{exit_code if 0 < exit_code < 256 else 'fail'}"


def _cut(body: bytes, limit: int) -> bytes:
    """Keep the end of the body (the most recent lines) within ``limit`` bytes."""
    if len(body) <= limit:
        return body
    marker = b"[...]\n"
    return marker + body[len(body) - max(0, limit - len(marker)) :] if limit > len(marker) else body[-limit:]


def send_ping(url: str, *, body: bytes | None, deadline: float) -> tuple[bool, str, int | None]:
    """One ping, retried once within the deadline: ``(ok, detail, Ping-Body-Limit or None)``."""
    import urllib.error
    import urllib.request  # only when a ping is configured: it costs a timer tick ~20 ms

    detail = ""
    for attempt in range(_ATTEMPTS):
        remaining = deadline - time.monotonic()
        if remaining <= 0.05:
            return False, detail or "no time left in the notification budget", None
        request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
        request.add_header("User-Agent", "jobrunner")
        try:
            with urllib.request.urlopen(request, timeout=min(remaining, 5.0)) as response:
                response.read(1024)
                limit = response.headers.get("Ping-Body-Limit")
                return True, "", int(limit) if limit and limit.isdigit() else None
        except urllib.error.HTTPError as exc:
            detail = f"HTTP {exc.code}"
            if exc.code < 500:
                return False, detail, None  # a 4xx will not get better by retrying
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            detail = default_redactor().redact(f"{type(exc).__name__}: {reason}")
        if attempt + 1 < _ATTEMPTS:
            time.sleep(min(0.3, max(0.0, deadline - time.monotonic() - 0.1)))
    return False, detail, None


def replay(state: dict[str, Any], base: str, *, deadline: float, log: Any) -> None:
    """Send queued finish pings (oldest first), each marked late; keep those that fail again."""
    memory = state.setdefault("ping", {})
    queue = list(memory.get("queue") or [])
    left: list[dict[str, Any]] = []
    for item in queue:
        if left:  # keep the order: once one fails, the rest wait too
            left.append(item)
            continue
        note = (
            f"[late: queued at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(item.get('queued', 0)))}"
            f" by run {item.get('rid')}, replayed at {time.strftime('%H:%M:%S')}]\n"
        )
        body = note.encode() + str(item.get("body", "")).encode("utf-8", "replace")
        url = f"{base}{item.get('path', '')}?rid={item.get('rid', '')}"
        ok, detail, limit = send_ping(
            url, body=_cut(body, int(memory.get("body_limit") or DEFAULT_BODY_LIMIT)), deadline=deadline
        )
        if ok:
            log.info("ping.replayed", path=item.get("path") or "/", rid=item.get("rid"))
            if limit:
                memory["body_limit"] = limit
        else:
            left.append(item)
            log.warning("ping.failed", path=item.get("path") or "/", error=detail, queued=len(queue))
    memory["queue"] = left[-MAX_QUEUE:]


def enqueue(state: dict[str, Any], *, path: str, rid: str, body: str) -> None:
    memory = state.setdefault("ping", {})
    queue = list(memory.get("queue") or [])
    queue.append({"path": path, "rid": rid, "body": body[-DEFAULT_BODY_LIMIT:], "queued": time.time()})
    memory["queue"] = queue[-MAX_QUEUE:]


def body_limit(state: dict[str, Any]) -> int:
    return int((state.get("ping") or {}).get("body_limit") or DEFAULT_BODY_LIMIT)


def cut(body: str, limit: int) -> bytes:
    return _cut(body.encode("utf-8", "replace"), limit)


def rid(run_id: str) -> str:
    return _rid(run_id)
