"""Dead-man's switch: healthchecks.io-style pings, so silence (a run that never happened) alerts too.

The ping URL: ``$JOBRUNNER_PING_URL_<JOB>`` (the job name upper-cased, other characters as
``_``), else ``$JOBRUNNER_PING_URL``, where ``{job}`` stands for the job's unit name as a slug (``slug_of``:
an instance's ``wp-backup@shop.example`` is ``wp-backup-shop-example``) and
``{host}`` for the short host name (for ``https://hc-ping.com/<ping-key>/{job}`` slugs). Any
URL a user pastes works: a trailing slash, a self-hosted path prefix
(``https://mon.example.com/hc/ping/<uuid>``) and a query string (``?create=1``) are kept, and
the ping's own suffix goes into the *path*, before the query: ``<url>/start?create=1&rid=<run>``
when it starts, ``<url>?rid=<run>`` on success, ``<url>/<exit code>`` (``/fail`` for a code
over 255) otherwise, the error and the last log lines as the POST body, cut to the server's
``Ping-Body-Limit`` (its last announced value is remembered in the state; the end is kept).

What an answer means (``Sent``):

- 2xx: sent.
- 4xx other than 408 and 429 (``rejected``): the URL is wrong (a check that does not exist,
  a bad key): it will never succeed, so it is logged once (``ping.rejected`` with the status
  and the server's message) and dropped: not retried, not queued, and the run sends no more
  pings to that URL.
- 408, 429, 5xx, a timeout, a refused or reset connection: retried once within the time
  left; a finish ping that still fails is queued in the job's state and replayed, marked late,
  by the next runs. The queue is bounded: at most ``MAX_QUEUE`` pings, none older than
  ``MAX_AGE_S`` (older ones are dropped, with ``ping.dropped``): a ping replayed a day late
  would tell healthchecks the job ran when it did not.

Pings use urllib (imported only to send), within the run's one sending budget (no apprise,
no requests). Stale start pings are never queued.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jobrunner._datatype import datatype
from jobrunner.redact import default_redactor

if TYPE_CHECKING:
    from jobrunner.declaration import Job

__all__ = ["Sent", "build_url", "error_line", "finish_path", "ping_url", "replay", "send_ping"]

MAX_QUEUE = 20
MAX_AGE_S = 24 * 3600.0
DEFAULT_BODY_LIMIT = 10_000
_ATTEMPTS = 2
_RETRIABLE_4XX = (408, 429)


def ping_url(job: Job, env: Mapping[str, str] | None = None) -> str | None:
    """The job's ping base URL, or ``None``; registered with the redactor (it is a secret)."""
    env = os.environ if env is None else env
    own = "JOBRUNNER_PING_URL_" + re.sub(r"[^A-Za-z0-9]", "_", job.name).upper()
    url = (env.get(own) or env.get("JOBRUNNER_PING_URL") or "").strip()
    if not url:
        return None
    url = url.replace("{job}", slug_of(job.unit)).replace("{host}", os.uname().nodename.split(".")[0])
    default_redactor().add_env({"PING_URL": url})  # the uuid / ping key in the path is the secret
    return url


def slug_of(unit: str) -> str:
    """A unit name as a healthchecks slug (lowercase letters, digits, ``-``, ``_``): an
    instance's ``wp-backup@shop.example`` is ``wp-backup-shop-example``; a plain unit name is
    already one. What ``{job}`` stands for in a ping URL and in ``HC_SLUG``, so that each site's
    runs ping their own check."""
    return re.sub(r"[^a-z0-9_-]", "-", unit.lower())


def build_url(base: str, suffix: str = "", rid: str | None = None) -> str:
    """``base`` with ``suffix`` (``/start``, ``/fail``, ``/3``) appended to its path, before its
    query string, and ``rid`` added to (or replacing the ``rid`` of) that query. A trailing
    slash is dropped, everything else of the URL (host, port, path prefix, other query
    parameters) kept; a fragment is never sent."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(base.strip())
    path = parts.path.rstrip("/") + suffix
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "rid"]
    if rid:
        query.append(("rid", rid))
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query, safe="/:"), ""))


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


def error_line(error: str | None) -> str:
    """The error a job raised, as the body's first line (already redacted by the runner)."""
    return f"error: {error}" if error else ""


def body_text(*, error: str | None, tail: list[str], summary: str, limit: int) -> bytes:
    """The finish ping's body within ``limit`` bytes: the error line and the summary always,
    then as much of the end of the log tail as fits (the most recent lines are the useful
    ones; the server keeps only the *first* ``Ping-Body-Limit`` bytes of what it gets)."""
    head = (error_line(error) + "\n").encode("utf-8", "replace") if error else b""
    foot = ("\n" + summary).encode("utf-8", "replace")
    text = "\n".join(tail).encode("utf-8", "replace")
    room = limit - len(head) - len(foot)
    if room <= 0:
        return (head + foot.lstrip(b"\n"))[:limit]
    return head + _cut(text, room) + foot


@datatype
class Sent:
    """How one ping went. ``rejected``: a client error (4xx but 408/429) or an unusable URL,
    final: never retried or queued. ``limit``: the server's ``Ping-Body-Limit``, if it sent one."""

    ok: bool
    detail: str = ""
    status: int | None = None
    limit: int | None = None
    rejected: bool = False


def _message(exc: Any) -> str:
    """The server's own words for an HTTP error (one line, short, redacted)."""
    try:
        raw = exc.read(300)
    except Exception:
        raw = b""
    text = " ".join(raw.decode("utf-8", "replace").split())
    if text.startswith("<"):  # an HTML error page (a wrong path): its title, else the reason phrase
        title = re.search(r"<title>([^<]*)</title>", text, re.IGNORECASE)
        text = title.group(1).strip() if title else ""
    return default_redactor().redact(text[:200] or str(getattr(exc, "reason", "") or ""))


def send_ping(url: str, *, body: bytes | None, deadline: float) -> Sent:
    """One ping, retried once within the deadline when the failure may pass."""
    import urllib.error
    import urllib.request  # only when a ping is configured: it costs a timer tick ~20 ms

    sent = Sent(False, "no time left in the sending budget")
    for attempt in range(_ATTEMPTS):
        remaining = deadline - time.monotonic()
        if remaining <= 0.05:
            return sent
        try:
            request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
        except ValueError as exc:  # not an http(s) URL at all
            return Sent(False, default_redactor().redact(f"bad ping URL: {exc}"), rejected=True)
        request.add_header("User-Agent", "jobrunner")
        try:
            with urllib.request.urlopen(request, timeout=remaining) as response:
                response.read(1024)
                limit = response.headers.get("Ping-Body-Limit")
                return Sent(True, "", response.status, int(limit) if limit and limit.isdigit() else None)
        except urllib.error.HTTPError as exc:
            message = _message(exc)
            sent = Sent(False, f"HTTP {exc.code}: {message}" if message else f"HTTP {exc.code}", exc.code)
            if 400 <= exc.code < 500 and exc.code not in _RETRIABLE_4XX:
                sent.rejected = True
                return sent  # a wrong URL will not get better by retrying
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            sent = Sent(False, default_redactor().redact(f"{type(reason).__name__}: {reason}"))
            if isinstance(exc, ValueError) and not isinstance(exc, OSError):
                sent.rejected = True
                return sent
        if attempt + 1 < _ATTEMPTS:
            time.sleep(min(0.3, max(0.0, deadline - time.monotonic() - 0.1)))
    return sent


def replay(state: dict[str, Any], base: str, *, deadline: float, log: Any) -> bool:
    """Send queued finish pings (oldest first), each marked late; keep those that fail again.

    Pings older than ``MAX_AGE_S`` are dropped unsent (``ping.dropped``); one the server
    rejects is dropped (``ping.rejected``). Returns False when the server rejected the URL
    (the run sends nothing more to it)."""
    memory = state.setdefault("ping", {})
    queue = list(memory.get("queue") or [])
    left: list[dict[str, Any]] = []
    now = time.time()
    usable = True
    for item in queue:
        path = str(item.get("path") or "")
        if now - float(item.get("queued") or 0) > MAX_AGE_S:
            log.warning("ping.dropped", path=path or "/", rid=item.get("rid"), reason=f"older than {MAX_AGE_S:g}s")
            continue
        if left or not usable:  # keep the order: once one fails, the rest wait too
            if usable:
                left.append(item)
            continue
        note = (
            f"[late: queued at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(item.get('queued', 0)))}"
            f" by run {item.get('rid')}, replayed at {time.strftime('%H:%M:%S')}]\n"
        )
        body = note.encode() + str(item.get("body", "")).encode("utf-8", "replace")
        url = build_url(base, path, str(item.get("rid") or ""))
        sent = send_ping(url, body=_cut(body, body_limit(memory)), deadline=deadline)
        if sent.ok:
            log.info("ping.replayed", path=path or "/", rid=item.get("rid"))
            if sent.limit:
                memory["body_limit"] = sent.limit
        elif sent.rejected:
            log.warning("ping.rejected", path=path or "/", status=sent.status, error=sent.detail, queued=0)
            usable = False
        else:
            left.append(item)
            log.warning("ping.failed", path=path or "/", error=sent.detail, queued=len(queue))
    memory["queue"] = left[-MAX_QUEUE:]
    return usable


def enqueue(state: dict[str, Any], *, path: str, rid: str, body: str) -> None:
    memory = state.setdefault("ping", {})
    queue = list(memory.get("queue") or [])
    queue.append({"path": path, "rid": rid, "body": body[-DEFAULT_BODY_LIMIT:], "queued": time.time()})
    memory["queue"] = queue[-MAX_QUEUE:]


def body_limit(state: dict[str, Any]) -> int:
    memory = state.get("ping") if "ping" in state else state
    try:
        return int((memory or {}).get("body_limit") or DEFAULT_BODY_LIMIT)
    except (TypeError, ValueError):
        return DEFAULT_BODY_LIMIT


def cut(body: str, limit: int) -> bytes:
    return _cut(body.encode("utf-8", "replace"), limit)


def rid(run_id: str) -> str:
    return _rid(run_id)
